package httpapi_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"testing"

	"github.com/mercato/mercato/platform/httpapi"
	"github.com/mercato/mercato/platform/problem"
)

func TestPageSize(t *testing.T) {
	tests := []struct {
		raw     string // "-" means no page_size parameter
		want    int
		wantErr bool
	}{
		{raw: "-", want: 20},
		{raw: "", want: 20},
		{raw: "1", want: 1},
		{raw: "20", want: 20},
		{raw: "99", want: 99},
		{raw: "100", want: 100},
		{raw: "0", wantErr: true},
		{raw: "101", wantErr: true},
		{raw: "-1", wantErr: true},
		{raw: "abc", wantErr: true},
		{raw: "1.5", wantErr: true},
		{raw: " 5", wantErr: true},
		{raw: "99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run("page_size="+tt.raw, func(t *testing.T) {
			q := url.Values{}
			if tt.raw != "-" {
				q.Set("page_size", tt.raw)
			}
			got, err := httpapi.PageSize(q)
			if !tt.wantErr {
				if err != nil || got != tt.want {
					t.Errorf("PageSize(%q) = %d, %v; want %d", tt.raw, got, err, tt.want)
				}
				return
			}
			p := problem.From(err)
			if p == nil {
				t.Fatalf("PageSize(%q) = %d, %v; want a problem", tt.raw, got, err)
			}
			if p.Status != http.StatusUnprocessableEntity {
				t.Errorf("status = %d, want 422", p.Status)
			}
			if len(p.Errors) != 1 || p.Errors[0].Field != "page_size" {
				t.Errorf("errors = %+v, want one naming page_size", p.Errors)
			}
		})
	}
}

type cursor struct {
	After  string `json:"a"`
	Offset int    `json:"o,omitempty"`
}

func TestPageTokens(t *testing.T) {
	urlSafe := regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

	t.Run("round trip", func(t *testing.T) {
		for _, c := range []cursor{
			{After: "prod_01hzx8k3v7q9w2e4r6t8y0u1i3"},
			{After: "cat/with?odd&chars=", Offset: 40},
			{After: "ünïcödé ~~~ >>> ???", Offset: 1},
		} {
			tok, err := httpapi.EncodeToken(c)
			if err != nil {
				t.Fatalf("EncodeToken(%+v): %v", c, err)
			}
			if !urlSafe.MatchString(tok) {
				t.Errorf("token %q is not URL-safe", tok)
			}
			var got cursor
			ok, err := httpapi.DecodeToken(url.Values{"page_token": {tok}}, &got)
			if err != nil || !ok {
				t.Fatalf("DecodeToken(%q) = %v, %v", tok, ok, err)
			}
			if got != c {
				t.Errorf("round trip of %+v gave %+v", c, got)
			}
		}
	})

	t.Run("no token", func(t *testing.T) {
		got := cursor{After: "untouched"}
		for _, q := range []url.Values{{}, {"page_token": {""}}} {
			ok, err := httpapi.DecodeToken(q, &got)
			if ok || err != nil {
				t.Errorf("DecodeToken(%v) = %v, %v; want false, nil", q, ok, err)
			}
		}
		if got.After != "untouched" {
			t.Errorf("DecodeToken without a token changed the cursor to %+v", got)
		}
	})

	t.Run("a value JSON cannot encode", func(t *testing.T) {
		if _, err := httpapi.EncodeToken(func() {}); err == nil {
			t.Error("EncodeToken(func) succeeded")
		}
	})

	bad := []struct{ name, token string }{
		{"not base64", "!!!not-a-token!!!"},
		{"padded standard base64", base64.StdEncoding.EncodeToString([]byte(`{"a":"x"}`)) + "=="},
		{"base64 of non-JSON", base64.RawURLEncoding.EncodeToString([]byte("after=prod_1"))},
		{"JSON of the wrong shape", base64.RawURLEncoding.EncodeToString([]byte(`{"a":42}`))},
		{"truncated token", mustToken(t, cursor{After: "prod_1"})[:5]},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			var got cursor
			ok, err := httpapi.DecodeToken(url.Values{"page_token": {tt.token}}, &got)
			if ok {
				t.Error("DecodeToken reported a token")
			}
			p := problem.From(err)
			if p == nil {
				t.Fatalf("DecodeToken(%q) = %v, want a problem", tt.token, err)
			}
			if p.Status != http.StatusBadRequest || p.Type != problem.TypeURI("bad-request") {
				t.Errorf("problem = %d %s, want 400 bad-request", p.Status, p.Type)
			}
			if len(p.Errors) != 1 || p.Errors[0].Field != "page_token" {
				t.Errorf("errors = %+v, want one naming page_token", p.Errors)
			}
		})
	}
}

// mustToken encodes c as a page token.
func mustToken(t *testing.T, c cursor) string {
	t.Helper()
	tok, err := httpapi.EncodeToken(c)
	if err != nil {
		t.Fatalf("EncodeToken: %v", err)
	}
	return tok
}
