package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/mercato/mercato/platform/problem"
)

// Page size limits from the API contract.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// Page is one page of a list response.
type Page[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// MarshalJSON writes a page with "items": [] rather than null when it holds
// no items, as the list contract promises an array.
func (p Page[T]) MarshalJSON() ([]byte, error) {
	items := p.Items
	if items == nil {
		items = []T{}
	}
	return json.Marshal(struct {
		Items         []T    `json:"items"`
		NextPageToken string `json:"next_page_token,omitempty"`
	}{items, p.NextPageToken})
}

// PageSize reads ?page_size=, defaulting to 20 and refusing values outside
// 1..100.
func PageSize(q url.Values) (int, error) {
	raw := q.Get("page_size")
	if raw == "" {
		return DefaultPageSize, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > MaxPageSize {
		return 0, problem.Invalid(problem.FieldError{Field: "page_size", Message: "must be an integer from 1 to 100"})
	}
	return n, nil
}

// EncodeToken makes an opaque page token from a cursor value.
func EncodeToken(cursor any) (string, error) {
	b, err := json.Marshal(cursor)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// DecodeToken reads ?page_token= into cursor; it reports false when there is
// no token and a 400 problem when the token is not one this API made.
func DecodeToken(q url.Values, cursor any) (bool, error) {
	raw := q.Get("page_token")
	if raw == "" {
		return false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil || json.Unmarshal(b, cursor) != nil {
		return false, &problem.Problem{Type: problem.TypeURI("bad-request"), Title: http.StatusText(http.StatusBadRequest), Status: http.StatusBadRequest,
			Detail: "page_token is not valid", Errors: []problem.FieldError{{Field: "page_token", Message: "is not a token returned by this list"}}}
	}
	return true, nil
}
