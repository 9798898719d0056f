// Package problem is Mercato's one way to report an error over HTTP: an RFC
// 9457 application/problem+json body whose type names the kind of failure and
// whose errors list names each offending field.
package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// ContentType is the media type of every error body.
const ContentType = "application/problem+json"

// FieldError names one invalid input field, as a JSON path such as
// variants[0].price.amount.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an error that knows how it looks to a client.
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header.
	RetryAfter time.Duration `json:"-"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Title)
}

// TypeURI turns a problem slug into its type URI, relative to the API root.
func TypeURI(slug string) string { return "/problems/" + slug }

// New makes a problem of the given status; slug names its type.
func New(status int, slug, detail string) *Problem {
	return &Problem{Type: TypeURI(slug), Title: http.StatusText(status), Status: status, Detail: detail}
}

// Common problems, one constructor each so their types stay consistent.

// BadRequest is a malformed request (unparseable body, bad query syntax).
func BadRequest(detail string) *Problem { return New(http.StatusBadRequest, "bad-request", detail) }

// Invalid is a well-formed request whose fields break the rules.
func Invalid(errs ...FieldError) *Problem {
	p := New(http.StatusUnprocessableEntity, "validation-failed", "one or more fields are invalid")
	p.Errors = errs
	return p
}

// NotFound is a resource that does not exist or that the caller may not see.
func NotFound(detail string) *Problem { return New(http.StatusNotFound, "not-found", detail) }

// Conflict is a request that clashes with the current state.
func Conflict(slug, detail string) *Problem { return New(http.StatusConflict, slug, detail) }

// Unauthorized is a missing or bad credential.
func Unauthorized(detail string) *Problem {
	return New(http.StatusUnauthorized, "unauthorized", detail)
}

// Forbidden is a valid credential without the needed permission.
func Forbidden(detail string) *Problem { return New(http.StatusForbidden, "forbidden", detail) }

// TooLarge is a body over the limit.
func TooLarge(limit int64) *Problem {
	return New(http.StatusRequestEntityTooLarge, "body-too-large", "request body exceeds "+strconv.FormatInt(limit, 10)+" bytes")
}

// TooManyRequests is a rate limit hit; the client may retry after retry.
func TooManyRequests(detail string, retry time.Duration) *Problem {
	p := New(http.StatusTooManyRequests, "rate-limited", detail)
	p.RetryAfter = retry
	return p
}

// Unavailable is a dependency that is down; the client may retry after retry.
func Unavailable(detail string, retry time.Duration) *Problem {
	p := New(http.StatusServiceUnavailable, "unavailable", detail)
	p.RetryAfter = retry
	return p
}

// Internal is a failure that is not the client's fault. Its detail never
// carries the underlying error.
func Internal() *Problem {
	return New(http.StatusInternalServerError, "internal", "the server failed to handle the request; it has been logged")
}

// Write sends p as the response.
func Write(w http.ResponseWriter, p *Problem) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		secs := int64((p.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// From returns the problem inside err, or nil.
func From(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}
