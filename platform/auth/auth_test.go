package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mercato/mercato/platform/config"
)

func TestRequireAdmin(t *testing.T) {
	cfg := config.Defaults()
	cfg.Admin.Token = "s3cret-admin-token"
	h := RequireAdmin(config.Static(cfg))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"basic scheme", "Basic czNjcmV0", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"token prefix only", "Bearer s3cret", http.StatusUnauthorized},
		{"right token", "Bearer s3cret-admin-token", http.StatusNoContent},
		{"scheme is case-insensitive", "bearer s3cret-admin-token", http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/admin/products", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d", w.Code, tt.want)
			}
			if tt.want == http.StatusUnauthorized && w.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("content type %q", w.Header().Get("Content-Type"))
			}
		})
	}
}

func TestEmptyConfiguredTokenRefusesEverything(t *testing.T) {
	h := RequireAdmin(config.Static(config.Defaults()))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Fatal("handler reached without a configured admin token")
	}))
	r := httptest.NewRequest(http.MethodPost, "/v1/admin/products", nil)
	r.Header.Set("Authorization", "Bearer ")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("status %d", w.Code)
	}
}
