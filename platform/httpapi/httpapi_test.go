package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/mercato/mercato/platform/httpapi"
	"github.com/mercato/mercato/platform/problem"
)

type price struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

type variant struct {
	SKU   string `json:"sku"`
	Price price  `json:"price"`
}

type kind string

type productInput struct {
	Title    string    `json:"title"`
	Quantity int       `json:"quantity"`
	Active   bool      `json:"active"`
	Kind     kind      `json:"kind"`
	Ratio    float64   `json:"ratio"`
	Limit    *int      `json:"limit"`
	Tags     []string  `json:"tags"`
	Price    price     `json:"price"`
	Variants []variant `json:"variants"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		limit       int64 // wraps the body in http.MaxBytesReader when positive
		wantStatus  int   // 0: no error
		wantType    string
		wantDetail  string // a part of the detail
		wantField   string // the field errors[0] names
		wantMessage string // errors[0].message
	}{
		{name: "valid object", contentType: "application/json",
			body: `{"title":"Oak Chair","quantity":2,"active":true,"price":{"amount":1999,"currency":"EUR"},"variants":[{"sku":"OAK-1","price":{"amount":1,"currency":"EUR"}}]}`},
		{name: "valid object with surrounding whitespace", body: " \n\t{\"title\":\"x\"} \r\n"},
		{name: "no Content-Type", body: `{}`},
		{name: "charset parameter", contentType: "application/json; charset=utf-8", body: `{}`},
		{name: "media type in capitals", contentType: "Application/JSON", body: `{}`},
		{name: "merge patch", contentType: "application/merge-patch+json", body: `{"title":"New"}`},
		{name: "merge patch with parameter", contentType: "application/merge-patch+json ; charset=utf-8", body: `{}`},

		{name: "empty body", body: ``, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "empty"},
		{name: "only whitespace", body: " \n ", wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "empty"},
		{name: "malformed JSON", body: `{"title":x}`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "at byte 10"},
		{name: "missing value", body: `{"title": }`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "at byte 11"},
		{name: "body ends early", body: `{"title":"Oak"`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "ends early"},
		{name: "two objects", body: `{}{}`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "more than one"},
		{name: "two objects apart", body: `{"title":"a"} {"title":"b"}`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "more than one"},
		{name: "trailing garbage", body: `{} x`, wantStatus: 400, wantType: "/problems/bad-request"},
		{name: "trailing bracket", body: `{}]`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "after the JSON object"},
		{name: "array instead of object", body: `[{"title":"x"}]`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "JSON object"},
		{name: "string instead of object", body: `"title"`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "JSON object"},
		{name: "number instead of object", body: `42`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "JSON object"},
		{name: "null instead of object", body: `null`, wantStatus: 400, wantType: "/problems/bad-request", wantDetail: "JSON object"},

		{name: "unknown field", body: `{"title":"x","colour":"red"}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "colour", wantMessage: "is not a known field"},
		{name: "wrong type: string for integer", body: `{"quantity":"two"}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "quantity", wantMessage: "must be an integer"},
		{name: "wrong type: fraction for integer", body: `{"quantity":1.5}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "quantity", wantMessage: "must be an integer"},
		{name: "wrong type: number for string", body: `{"title":5}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "title", wantMessage: "must be a string"},
		{name: "wrong type: number for named string type", body: `{"kind":5}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "kind", wantMessage: "must be a string"},
		{name: "wrong type: string for bool", body: `{"active":"yes"}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "active", wantMessage: "must be true or false"},
		{name: "wrong type: string for number", body: `{"ratio":"half"}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "ratio", wantMessage: "must be a number"},
		{name: "wrong type: string for pointer to integer", body: `{"limit":"ten"}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "limit", wantMessage: "must be an integer"},
		{name: "wrong type: string for array", body: `{"tags":"a,b"}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "tags", wantMessage: "must be an array"},
		{name: "wrong type: array for object", body: `{"price":[1]}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "price", wantMessage: "must be an object"},
		{name: "nested wrong type", body: `{"price":{"amount":"a lot","currency":"EUR"}}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "price.amount", wantMessage: "must be an integer"},
		// encoding/json drops array indices; Decode puts them back.
		{name: "wrong type inside an array", body: `{"variants":[{"price":{"amount":"x"}}]}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "variants[0].price.amount", wantMessage: "must be an integer"},
		{name: "wrong type in a later element", body: `{"title":"t","variants":[{"price":{"amount":1}},{"sku":"a"},{"price":{"amount":true}}]}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "variants[2].price.amount", wantMessage: "must be an integer"},
		{name: "unknown nested field", body: `{"title":"x","price":{"amount":1,"colour":"red"}}`, wantStatus: 422, wantType: "/problems/validation-failed",
			wantField: "price.colour", wantMessage: "is not a known field"},

		{name: "body over the limit", body: `{"title":"` + strings.Repeat("a", 100) + `"}`, limit: 64,
			wantStatus: 413, wantType: "/problems/body-too-large", wantDetail: "64 bytes"},
		{name: "limit reached after the object", body: `{"title":"a"}` + strings.Repeat(" ", 100), limit: 64,
			wantStatus: 413, wantType: "/problems/body-too-large", wantDetail: "64 bytes"},
		{name: "body exactly at the limit", body: `{"title":"` + strings.Repeat("a", 50) + `"}`, limit: 62},

		{name: "plain text", contentType: "text/plain", body: `{}`, wantStatus: 415, wantType: "/problems/unsupported-media-type"},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: `title=x`, wantStatus: 415, wantType: "/problems/unsupported-media-type"},
		{name: "json look-alike", contentType: "application/jsonl", body: `{}`, wantStatus: 415, wantType: "/problems/unsupported-media-type"},
		{name: "garbage media type", contentType: ";;", body: `{}`, wantStatus: 415, wantType: "/problems/unsupported-media-type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/products", strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			if tt.limit > 0 {
				r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, tt.limit)
			}
			var in productInput
			err := httpapi.Decode(r, &in)

			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Decode(%s) = %v, want nil", tt.body, err)
				}
				return
			}
			p := problem.From(err)
			if p == nil {
				t.Fatalf("Decode(%s) = %v, want a problem", tt.body, err)
			}
			if p.Status != tt.wantStatus || p.Type != tt.wantType {
				t.Errorf("problem = %d %s, want %d %s (%v)", p.Status, p.Type, tt.wantStatus, tt.wantType, p)
			}
			if !strings.Contains(p.Detail, tt.wantDetail) {
				t.Errorf("detail %q does not contain %q", p.Detail, tt.wantDetail)
			}
			if tt.wantField != "" {
				if len(p.Errors) != 1 {
					t.Fatalf("errors = %+v, want one naming %s", p.Errors, tt.wantField)
				}
				if got := p.Errors[0]; got.Field != tt.wantField || got.Message != tt.wantMessage {
					t.Errorf("errors[0] = %+v, want {%s %s}", got, tt.wantField, tt.wantMessage)
				}
			}
		})
	}

	t.Run("fills the value", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"title":"Oak","limit":3,"variants":[{"sku":"A","price":{"amount":5,"currency":"EUR"}}]}`))
		var in productInput
		if err := httpapi.Decode(r, &in); err != nil {
			t.Fatal(err)
		}
		if in.Title != "Oak" || in.Limit == nil || *in.Limit != 3 || len(in.Variants) != 1 || in.Variants[0].Price.Amount != 5 {
			t.Errorf("decoded %+v", in)
		}
	})

	t.Run("a non-pointer target is the caller's bug, not the client's", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
		err := httpapi.Decode(r, productInput{})
		if err == nil || problem.From(err) != nil {
			t.Errorf("Decode into a non-pointer = %v, want a plain error (a 500)", err)
		}
	})

	t.Run("a read failure is a 400", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/", io.MultiReader(strings.NewReader(`{"title":`), errReader{}))
		err := httpapi.Decode(r, &productInput{})
		if p := problem.From(err); p == nil || p.Status != http.StatusBadRequest {
			t.Errorf("Decode = %v, want a 400 problem", err)
		}
	})
}

// errReader fails like a connection dropped mid-body.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

func TestWriteJSON(t *testing.T) {
	t.Run("writes the value with its length", func(t *testing.T) {
		rec := httptest.NewRecorder()
		httpapi.WriteJSON(rec, http.StatusCreated, map[string]any{"id": "prod_1", "title": "Oak Chair"})

		res := rec.Result()
		if res.StatusCode != http.StatusCreated {
			t.Errorf("status = %d, want 201", res.StatusCode)
		}
		if got := res.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", got)
		}
		if got, want := res.Header.Get("Content-Length"), strconv.Itoa(rec.Body.Len()); got != want {
			t.Errorf("Content-Length = %q, body has %s bytes", got, want)
		}
		var got map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("body %q: %v", rec.Body, err)
		}
		if got["id"] != "prod_1" || got["title"] != "Oak Chair" {
			t.Errorf("body = %v", got)
		}
	})

	t.Run("a value JSON cannot encode is a 500 problem", func(t *testing.T) {
		rec := httptest.NewRecorder()
		httpapi.WriteJSON(rec, http.StatusOK, map[string]float64{"price": math.Inf(1)})

		if rec.Code != http.StatusInternalServerError {
			t.Errorf("status = %d, want 500", rec.Code)
		}
		if got := rec.Header().Get("Content-Type"); got != problem.ContentType {
			t.Errorf("Content-Type = %q, want %s", got, problem.ContentType)
		}
	})
}

func TestPageJSON(t *testing.T) {
	tests := []struct {
		name string
		page httpapi.Page[string]
		want string
	}{
		{"items and a next page", httpapi.Page[string]{Items: []string{"a", "b"}, NextPageToken: "tok"}, `{"items":["a","b"],"next_page_token":"tok"}`},
		{"last page", httpapi.Page[string]{Items: []string{"a"}}, `{"items":["a"]}`},
		{"no items is an empty array, not null", httpapi.Page[string]{}, `{"items":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.page)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON = %s, want %s", b, tt.want)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantType   string
		wantLogged bool
	}{
		{"a problem as itself", problem.NotFound("no such cart"), 404, "/problems/not-found", false},
		{"a wrapped problem as itself", fmt.Errorf("get cart: %w", problem.Conflict("cart-closed", "checked out")), 409, "/problems/cart-closed", false},
		{"anything else as a 500", errors.New("dial tcp 10.0.0.7:5432: password authentication failed for user shop"), 500, "/problems/internal", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, logs := captureLog(t)
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/v1/carts/c_1", nil)
			httpapi.WriteError(rec, r, log, tt.err)

			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if got := rec.Header().Get("Content-Type"); got != problem.ContentType {
				t.Errorf("Content-Type = %q, want %s", got, problem.ContentType)
			}
			var body problem.Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if body.Type != tt.wantType || body.Status != tt.wantStatus {
				t.Errorf("body = %+v, want type %s status %d", body, tt.wantType, tt.wantStatus)
			}
			if tt.wantLogged {
				if strings.Contains(rec.Body.String(), "password") || strings.Contains(rec.Body.String(), "10.0.0.7") {
					t.Errorf("the 500 body reveals the error: %s", rec.Body)
				}
				for _, want := range []string{"level=ERROR", "password authentication failed", "method=GET", "path=/v1/carts/c_1"} {
					if !strings.Contains(logs.String(), want) {
						t.Errorf("log %q lacks %q", logs, want)
					}
				}
			} else if logs.Len() != 0 {
				t.Errorf("a client error was logged: %s", logs)
			}
		})
	}
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name       string
		handler    httpapi.HandlerFunc
		wantStatus int
		wantBody   string // a part of the body
		wantLogged bool
	}{
		{"a handler that writes its response",
			func(w http.ResponseWriter, r *http.Request) error {
				httpapi.WriteJSON(w, http.StatusOK, map[string]string{"path": r.URL.Path})
				return nil
			}, 200, `"path":"/v1/things"`, false},
		{"a handler that returns a problem",
			func(http.ResponseWriter, *http.Request) error { return problem.Forbidden("admins only") },
			403, `"type":"/problems/forbidden"`, false},
		{"a handler that fails",
			func(http.ResponseWriter, *http.Request) error { return errors.New("disk on fire") },
			500, `"type":"/problems/internal"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, logs := captureLog(t)
			rec := httptest.NewRecorder()
			httpapi.Handle(log, tt.handler).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/things", nil))

			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body %s lacks %s", rec.Body, tt.wantBody)
			}
			if logged := strings.Contains(logs.String(), "disk on fire"); logged != tt.wantLogged {
				t.Errorf("logged = %v, want %v (log %q)", logged, tt.wantLogged, logs)
			}
		})
	}
}

// captureLog returns a logger whose text output the test can inspect.
func captureLog(t *testing.T) (*slog.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}
