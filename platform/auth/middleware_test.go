package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// okHandler answers 200 with the caller it sees: "anonymous" or the subject.
func okHandler(t *testing.T) http.Handler {
	t.Helper()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "anonymous"
		if id, ok := FromContext(r.Context()); ok {
			who = id.Subject
		}
		_, _ = w.Write([]byte(who))
	})
}

// bearer is a request carrying token as a bearer token.
func bearer(token string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/admin/products", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	customer := f.issuer.Token(t, "cus_customer", "openid")
	admin := f.issuer.Token(t, "cus_admin", "openid", "admin")
	support := f.issuer.Token(t, "cus_support", "support", "orders:read")

	authenticate := Authenticate(f.v)
	stacks := map[string]http.Handler{
		"Authenticate":                 authenticate(okHandler(t)),
		"Authenticate+LeaveOther":      Authenticate(f.v, LeaveOtherSchemes())(okHandler(t)),
		"RequireAdmin":                 RequireAdmin(f.v)(okHandler(t)),
		"Require() alone":              Require()(okHandler(t)),
		"Authenticate+Require()":       authenticate(Require()(okHandler(t))),
		"Authenticate+RequireOneOf":    authenticate(RequireOneOf([]string{"admin"}, []string{"support", "orders:read"})(okHandler(t))),
		"Authenticate twice+Require()": authenticate(authenticate(Require()(okHandler(t)))),
	}
	tests := []struct {
		stack     string
		header    []string // Authorization values
		status    int
		body      string // for 200
		challenge string // part of WWW-Authenticate, for 401 and 403
	}{
		{"Authenticate", nil, 200, "anonymous", ""},
		{"Authenticate", []string{"Bearer " + customer}, 200, "cus_customer", ""},
		{"Authenticate", []string{"bearer " + customer}, 200, "cus_customer", ""},
		{"Authenticate", []string{"Bearer not-a-token"}, 401, "", `error="invalid_token"`},
		{"Authenticate", []string{"Bearer "}, 401, "", `error="invalid_request"`},
		{"Authenticate", []string{"Basic Y3VzdG9tZXI6c2VjcmV0"}, 401, "", `error="invalid_request"`},
		{"Authenticate", []string{customer}, 401, "", `error="invalid_request"`},
		{"Authenticate", []string{"Bearer " + customer, "Bearer " + admin}, 401, "", `error="invalid_request"`},
		{"Authenticate+LeaveOther", []string{"Basic Y3VzdG9tZXI6c2VjcmV0"}, 200, "anonymous", ""},
		{"Authenticate+LeaveOther", []string{"Bearer not-a-token"}, 401, "", `error="invalid_token"`},
		{"Authenticate+LeaveOther", []string{"Bearer " + customer}, 200, "cus_customer", ""},
		{"RequireAdmin", nil, 401, "", `Bearer realm="mercato"`},
		{"RequireAdmin", []string{"Bearer not-a-token"}, 401, "", `error="invalid_token"`},
		{"RequireAdmin", []string{"Bearer " + customer}, 403, "", `error="insufficient_scope", scope="admin"`},
		{"RequireAdmin", []string{"Bearer " + admin}, 200, "cus_admin", ""},
		{"Require() alone", []string{"Bearer " + admin}, 401, "", `Bearer realm="mercato"`},
		{"Authenticate+Require()", nil, 401, "", `Bearer realm="mercato"`},
		{"Authenticate+Require()", []string{"Bearer " + customer}, 200, "cus_customer", ""},
		{"Authenticate+RequireOneOf", []string{"Bearer " + customer}, 403, "", `error="insufficient_scope"`},
		{"Authenticate+RequireOneOf", []string{"Bearer " + admin}, 200, "cus_admin", ""},
		{"Authenticate+RequireOneOf", []string{"Bearer " + support}, 200, "cus_support", ""},
		{"Authenticate twice+Require()", []string{"Bearer " + customer}, 200, "cus_customer", ""},
	}
	for _, tt := range tests {
		t.Run(tt.stack+" "+strings.Join(tt.header, ","), func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/admin/products", nil)
			for _, h := range tt.header {
				r.Header.Add("Authorization", h)
			}
			w := serve(stacks[tt.stack], r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if tt.status == 200 {
				if w.Body.String() != tt.body {
					t.Fatalf("handler saw %q, want %q", w.Body, tt.body)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("content type %q, want a problem", ct)
			}
			var p struct {
				Status int    `json:"status"`
				Type   string `json:"type"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != tt.status || p.Type == "" {
				t.Fatalf("problem %s (%v)", w.Body, err)
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.Contains(got, tt.challenge) || !strings.HasPrefix(got, "Bearer ") {
				t.Fatalf("WWW-Authenticate %q, want it to contain %q", got, tt.challenge)
			}
		})
	}

	t.Run("verified once per request", func(t *testing.T) {
		before := f.count("ok")
		serve(stacks["Authenticate twice+Require()"], bearer(customer))
		if got := f.count("ok") - before; got != 1 {
			t.Fatalf("%v verifications for one request through two Authenticates, want 1", got)
		}
	})
}
