package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	identityv1 "github.com/mercato/mercato/proto/gen/mercato/identity/v1"
)

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header string
		want   string
		ok     bool
	}{
		{"", "", false},
		{"Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer abc", "abc", true},
		{"BEARER  abc ", "abc", true},
		{"Bearer ", "", false},
		{"Bearer", "", false},
		{"Basic YTpi", "", false},
		{"abc.def.ghi", "", false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		got, ok := BearerToken(r)
		if got != tt.want || ok != tt.ok {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCallerScope(t *testing.T) {
	withID := func(r *http.Request, id *Identity) *http.Request { return r.WithContext(withResult(r.Context(), id)) }
	req := func(headers ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/v1/admin/products", nil)
		r.RemoteAddr = "10.0.0.9:5555"
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Add(headers[i], headers[i+1])
		}
		return r
	}
	tests := []struct {
		name string
		r    *http.Request
		want string
	}{
		{"verified caller", withID(req("Authorization", "Bearer t1"), &Identity{Subject: "cus_1"}), "subject:cus_1"},
		{"same subject, another token", withID(req("Authorization", "Bearer t2"), &Identity{Subject: "cus_1"}), "subject:cus_1"},
		{"anonymous after Authenticate", withID(req(), nil), "anonymous:10.0.0.9"},
		{"unverified token: the credential", req("Authorization", "Bearer t3"), "bearer:t3"},
		{"caller set by NewContext", req().WithContext(NewContext(context.Background(), &Identity{Subject: "cus_2"})), "subject:cus_2"},
		{"forwarded client", req("X-Forwarded-For", "203.0.113.7"), "anonymous:203.0.113.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CallerScope(tt.r); got != tt.want {
				t.Fatalf("CallerScope = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClientAddr(t *testing.T) {
	tests := []struct {
		remote string
		xff    []string
		want   string
	}{
		{"192.0.2.1:1234", nil, "192.0.2.1"},
		{"192.0.2.1:1234", []string{"203.0.113.7"}, "203.0.113.7"},
		{"192.0.2.1:1234", []string{"6.6.6.6", "198.51.100.2, 203.0.113.7"}, "203.0.113.7"},
		{"192.0.2.1:1234", []string{" "}, "192.0.2.1"},
		{"not-an-addr", nil, "not-an-addr"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tt.remote
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := ClientAddr(r); got != tt.want {
			t.Errorf("ClientAddr(%s, %q) = %q, want %q", tt.remote, tt.xff, got, tt.want)
		}
	}
}

func TestIssuer(t *testing.T) {
	tests := []struct {
		public, listen, want string
	}{
		{"https://shop.example.com/", ":8080", "https://shop.example.com"},
		{"https://shop.example.com", ":8080", "https://shop.example.com"},
		{"", ":9090", "http://127.0.0.1:9090"},
		{"", "10.1.2.3:8080", "http://10.1.2.3:8080"},
	}
	for _, tt := range tests {
		cfg := config.Defaults()
		cfg.PublicURL = tt.public
		cfg.Services["gateway"] = config.ServiceConfig{Listen: tt.listen}
		if got := Issuer(&cfg); got != tt.want {
			t.Errorf("Issuer(public_url %q, listen %q) = %q, want %q", tt.public, tt.listen, got, tt.want)
		}
	}
}

func TestNewVerifierRefusesAnEmptyAudience(t *testing.T) {
	cfg := config.Defaults()
	cfg.Auth.Audience = ""
	_, err := NewVerifier(config.Static(cfg), http.DefaultClient, &fakeLister{}, platformtest.Logger(t), prometheus.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("NewVerifier = %v, want an error naming the audience", err)
	}
}

func TestParseJWKS(t *testing.T) {
	f := newFixture(t, nil)
	good := f.v.keys.current()
	if len(good.byKID) != 1 {
		t.Fatalf("fixture has %d keys", len(good.byKID))
	}
	var kid string
	for k := range good.byKID {
		kid = k
	}
	n := good.byKID[kid].N
	e := "AQAB"
	nB64 := b64(n.Bytes())
	tests := []struct {
		name    string
		doc     string
		keys    int
		skipped int
		wantErr bool
	}{
		{"one RS256 signing key", `{"keys":[{"kty":"RSA","kid":"a","use":"sig","alg":"RS256","n":"` + nB64 + `","e":"` + e + `"}]}`, 1, 0, false},
		{"use and alg may be absent", `{"keys":[{"kty":"RSA","kid":"a","n":"` + nB64 + `","e":"` + e + `"}]}`, 1, 0, false},
		{"unusable keys skipped one by one", `{"keys":[
			{"kty":"RSA","kid":"a","use":"sig","alg":"RS256","n":"` + nB64 + `","e":"` + e + `"},
			{"kty":"RSA","kid":"enc","use":"enc","n":"` + nB64 + `","e":"` + e + `"},
			{"kty":"RSA","kid":"ps","alg":"PS256","n":"` + nB64 + `","e":"` + e + `"},
			{"kty":"RSA","n":"` + nB64 + `","e":"` + e + `"},
			{"kty":"RSA","kid":"short","n":"` + b64(n.Bytes()[:128]) + `","e":"` + e + `"},
			{"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
			{"kty":"EC","kid":"ec","crv":"P-256","x":"","y":""},
			{"kty":"whatever","kid":"new"}]}`, 1, 7, false},
		{"nothing usable", `{"keys":[{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}]}`, 0, 1, true},
		{"no keys", `{"keys":[]}`, 0, 0, true},
		{"not JSON", `<html>`, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, skipped, err := parseJWKS([]byte(tt.doc))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseJWKS error %v, want error %v", err, tt.wantErr)
			}
			if skipped != tt.skipped {
				t.Errorf("skipped %d, want %d", skipped, tt.skipped)
			}
			if err == nil && len(set.byKID) != tt.keys {
				t.Errorf("%d keys, want %d", len(set.byKID), tt.keys)
			}
		})
	}
}

// fakeLister answers ListRevokedSessions from a script, one answer per call.
type fakeLister struct {
	answers []func(cursor string) (*identityv1.ListRevokedSessionsResponse, error)
	cursors []string
}

func (l *fakeLister) ListRevokedSessions(_ context.Context, req *connect.Request[identityv1.ListRevokedSessionsRequest]) (*connect.Response[identityv1.ListRevokedSessionsResponse], error) {
	l.cursors = append(l.cursors, req.Msg.GetCursor())
	if len(l.answers) == 0 {
		return connect.NewResponse(&identityv1.ListRevokedSessionsResponse{Cursor: req.Msg.GetCursor()}), nil
	}
	next := l.answers[0]
	l.answers = l.answers[1:]
	resp, err := next(req.Msg.GetCursor())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func revokedUntil(sid string, until time.Time) *identityv1.RevokedSession {
	return &identityv1.RevokedSession{SessionId: sid, ExpiresAt: timestamppb.New(until)}
}

// TestRevocationPolling drives the poller with a scripted identity: pages,
// a refused cursor, a failure, and the pruning of revocations that no
// longer matter.
func TestRevocationPolling(t *testing.T) {
	now := time.Now()
	clock := now
	soon := now.Add(time.Minute)
	lister := &fakeLister{answers: []func(string) (*identityv1.ListRevokedSessionsResponse, error){
		// First poll: two pages, then an empty answer.
		func(string) (*identityv1.ListRevokedSessionsResponse, error) {
			return &identityv1.ListRevokedSessionsResponse{Sessions: []*identityv1.RevokedSession{revokedUntil("s1", soon), revokedUntil("s2", now.Add(time.Hour))}, Cursor: "c1"}, nil
		},
		func(string) (*identityv1.ListRevokedSessionsResponse, error) {
			return &identityv1.ListRevokedSessionsResponse{Sessions: []*identityv1.RevokedSession{revokedUntil("s3", now.Add(time.Hour))}, Cursor: "c2"}, nil
		},
		func(string) (*identityv1.ListRevokedSessionsResponse, error) {
			return &identityv1.ListRevokedSessionsResponse{Cursor: "c2"}, nil
		},
		// Second poll: identity is down.
		func(string) (*identityv1.ListRevokedSessionsResponse, error) {
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
		},
		// Third poll: the cursor is refused, so everything is reloaded.
		func(string) (*identityv1.ListRevokedSessionsResponse, error) {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("unknown cursor"))
		},
		func(string) (*identityv1.ListRevokedSessionsResponse, error) {
			return &identityv1.ListRevokedSessionsResponse{Sessions: []*identityv1.RevokedSession{revokedUntil("s4", now.Add(time.Hour))}, Cursor: "d1"}, nil
		},
	}}
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	r := &revocations{sessions: lister, store: config.Static(config.Defaults()), log: platformtest.Logger(t), m: m, now: func() time.Time { return clock }}
	ctx := t.Context()

	if err := r.poll(ctx); err != nil {
		t.Fatalf("first poll: %v", err)
	}
	for _, sid := range []string{"s1", "s2", "s3"} {
		if !r.revoked(sid) {
			t.Errorf("%s not revoked after the first poll", sid)
		}
	}
	if !r.synced.Load() || r.size.Load() != 3 {
		t.Fatalf("synced %v, size %d; want true, 3", r.synced.Load(), r.size.Load())
	}

	if err := r.poll(ctx); err == nil {
		t.Fatal("a poll while identity is down succeeded")
	}
	if !r.revoked("s1") || testutil.ToFloat64(m.revocationPolls.WithLabelValues("error")) != 1 {
		t.Fatal("a failed poll lost revocations or was not counted")
	}

	// Past s1's expiry plus the leeway, its revocation no longer matters.
	clock = soon.Add(config.Defaults().Auth.Leeway + 2*time.Second)
	if err := r.poll(ctx); err != nil {
		t.Fatalf("poll after a refused cursor: %v", err)
	}
	if r.revoked("s1") {
		t.Error("s1 is still held after its tokens expired")
	}
	for _, sid := range []string{"s2", "s3", "s4"} {
		if !r.revoked(sid) {
			t.Errorf("%s lost", sid)
		}
	}
	if got := testutil.ToFloat64(m.revokedSessions); got != 3 {
		t.Errorf("auth_revoked_sessions = %v, want 3", got)
	}
	want := []string{"", "c1", "c2", "c2", "c2", "", "d1"}
	if strings.Join(lister.cursors, ",") != strings.Join(want, ",") {
		t.Errorf("cursors sent %q, want %q", lister.cursors, want)
	}
}

// TestRevocationKeptThroughTheLeeway checks that a revocation outlives its
// session's last exp by the leeway, during which its tokens are still
// accepted by the expiry check.
func TestRevocationKeptThroughTheLeeway(t *testing.T) {
	exp := time.Now()
	clock := exp.Add(config.Defaults().Auth.Leeway / 2)
	lister := &fakeLister{answers: []func(string) (*identityv1.ListRevokedSessionsResponse, error){
		func(string) (*identityv1.ListRevokedSessionsResponse, error) {
			return &identityv1.ListRevokedSessionsResponse{Sessions: []*identityv1.RevokedSession{revokedUntil("s1", exp)}, Cursor: "c1"}, nil
		},
	}}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := &revocations{sessions: lister, store: config.Static(config.Defaults()), log: platformtest.Logger(t), m: m, now: func() time.Time { return clock }}
	if err := r.poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !r.revoked("s1") {
		t.Fatal("a revocation within the leeway after its expiry was dropped")
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
