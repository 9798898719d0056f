package problem_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/problem"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name           string
		problem        *problem.Problem
		wantRetryAfter string // "" means no header
		wantFields     []string
	}{
		{name: "plain problem", problem: problem.NotFound("no such product"),
			wantFields: []string{"detail", "status", "title", "type"}},
		{name: "field errors", problem: problem.Invalid(problem.FieldError{Field: "variants[0].price.amount", Message: "must be at least 0"}),
			wantFields: []string{"detail", "errors", "status", "title", "type"}},
		{name: "no detail", problem: &problem.Problem{Type: problem.TypeURI("gone"), Title: "Gone", Status: http.StatusGone},
			wantFields: []string{"status", "title", "type"}},
		{name: "instance", problem: &problem.Problem{Type: problem.TypeURI("x"), Title: "Bad Request", Status: 400, Instance: "/v1/carts/c_1"},
			wantFields: []string{"instance", "status", "title", "type"}},
		{name: "retry after whole seconds", problem: problem.TooManyRequests("slow down", 2*time.Second),
			wantRetryAfter: "2", wantFields: []string{"detail", "status", "title", "type"}},
		{name: "retry after rounds 1500ms up", problem: problem.Unavailable("db down", 1500*time.Millisecond),
			wantRetryAfter: "2", wantFields: []string{"detail", "status", "title", "type"}},
		{name: "retry after rounds 1ms up", problem: problem.Unavailable("db down", time.Millisecond),
			wantRetryAfter: "1", wantFields: []string{"detail", "status", "title", "type"}},
		{name: "retry after a minute", problem: problem.TooManyRequests("slow down", time.Minute),
			wantRetryAfter: "60", wantFields: []string{"detail", "status", "title", "type"}},
		{name: "no retry after when zero", problem: problem.Unavailable("db down", 0),
			wantFields: []string{"detail", "status", "title", "type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			problem.Write(rec, tt.problem)

			res := rec.Result()
			if res.StatusCode != tt.problem.Status {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.problem.Status)
			}
			if got := res.Header.Get("Content-Type"); got != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", got)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			if got, ok := res.Header["Retry-After"]; tt.wantRetryAfter == "" && ok {
				t.Errorf("Retry-After = %q, want none", got)
			} else if tt.wantRetryAfter != "" && res.Header.Get("Retry-After") != tt.wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", res.Header.Get("Retry-After"), tt.wantRetryAfter)
			}

			body := decodeBody(t, rec.Body.Bytes())
			if got := keys(body); !slices.Equal(got, tt.wantFields) {
				t.Errorf("body fields = %v, want %v (body %s)", got, tt.wantFields, rec.Body)
			}
			p := tt.problem
			want := map[string]any{"type": p.Type, "title": p.Title, "status": float64(p.Status)}
			if p.Detail != "" {
				want["detail"] = p.Detail
			}
			if p.Instance != "" {
				want["instance"] = p.Instance
			}
			for k, v := range want {
				if body[k] != v {
					t.Errorf("body %s = %v, want %v", k, body[k], v)
				}
			}
			if len(p.Errors) > 0 {
				var got struct{ Errors []problem.FieldError }
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got.Errors, p.Errors) {
					t.Errorf("errors = %+v, want %+v", got.Errors, p.Errors)
				}
			}
		})
	}
}

func TestConstructors(t *testing.T) {
	fe := problem.FieldError{Field: "email", Message: "is not an email address"}
	tests := []struct {
		name       string
		problem    *problem.Problem
		status     int
		typeURI    string
		detail     string // a part of the detail
		retryAfter time.Duration
	}{
		{"BadRequest", problem.BadRequest("bad query"), 400, "/problems/bad-request", "bad query", 0},
		{"Unauthorized", problem.Unauthorized("token expired"), 401, "/problems/unauthorized", "token expired", 0},
		{"Forbidden", problem.Forbidden("admins only"), 403, "/problems/forbidden", "admins only", 0},
		{"NotFound", problem.NotFound("no such cart"), 404, "/problems/not-found", "no such cart", 0},
		{"Conflict", problem.Conflict("out-of-stock", "sku A-1"), 409, "/problems/out-of-stock", "sku A-1", 0},
		{"TooLarge", problem.TooLarge(1 << 20), 413, "/problems/body-too-large", "1048576 bytes", 0},
		{"Invalid", problem.Invalid(fe), 422, "/problems/validation-failed", "invalid", 0},
		{"TooManyRequests", problem.TooManyRequests("slow down", 3*time.Second), 429, "/problems/rate-limited", "slow down", 3 * time.Second},
		{"Internal", problem.Internal(), 500, "/problems/internal", "logged", 0},
		{"Unavailable", problem.Unavailable("inventory is down", time.Second), 503, "/problems/unavailable", "inventory is down", time.Second},
		{"New", problem.New(http.StatusPaymentRequired, "payment-declined", "card declined"), 402, "/problems/payment-declined", "card declined", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.problem
			if p.Status != tt.status {
				t.Errorf("Status = %d, want %d", p.Status, tt.status)
			}
			if p.Type != tt.typeURI {
				t.Errorf("Type = %q, want %q", p.Type, tt.typeURI)
			}
			if p.Title != http.StatusText(tt.status) {
				t.Errorf("Title = %q, want %q", p.Title, http.StatusText(tt.status))
			}
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("Detail = %q, want it to contain %q", p.Detail, tt.detail)
			}
			if p.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", p.RetryAfter, tt.retryAfter)
			}
		})
	}

	t.Run("Invalid keeps its field errors", func(t *testing.T) {
		other := problem.FieldError{Field: "password", Message: "is too short"}
		p := problem.Invalid(fe, other)
		if !slices.Equal(p.Errors, []problem.FieldError{fe, other}) {
			t.Errorf("Errors = %+v", p.Errors)
		}
	})
}

func TestError(t *testing.T) {
	tests := []struct {
		problem *problem.Problem
		want    string
	}{
		{problem.NotFound("no such cart"), "404 Not Found: no such cart"},
		{&problem.Problem{Title: "Gone", Status: 410}, "410 Gone"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.problem.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFrom(t *testing.T) {
	p := problem.Conflict("email-taken", "that email is registered")
	tests := []struct {
		name string
		err  error
		want *problem.Problem
	}{
		{"the problem itself", p, p},
		{"wrapped once", fmt.Errorf("register: %w", p), p},
		{"wrapped twice", fmt.Errorf("api: %w", fmt.Errorf("register: %w", p)), p},
		{"joined", errors.Join(errors.New("other"), p), p},
		{"formatted with %v, not wrapped", fmt.Errorf("register: %v", p), nil},
		{"a plain error", errors.New("boom"), nil},
		{"nil", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := problem.From(tt.err); got != tt.want {
				t.Errorf("From(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// decodeBody parses a problem body into its JSON fields.
func decodeBody(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	return m
}

// keys lists a JSON object's field names, sorted.
func keys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
