package gateway

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/auth/authtest"
	"github.com/mercato/mercato/platform/openapi"
	"github.com/mercato/mercato/platform/platformtest"
)

// shopFragment describes operations with every kind of security the
// gateway enforces; the /v1/admin/ ones include some whose fragment forgot
// the admin scope.
const shopFragment = `
paths:
  /v1/me:
    get:
      security: [{bearer: []}]
      responses: {"200": {description: the caller}}
  /v1/orders:
    get:
      security: [{bearer: ["orders:read"]}, {bearer: [admin]}]
      responses: {"200": {description: orders}}
  /v1/wishlist:
    get:
      security: [{}, {bearer: []}]
      responses: {"200": {description: a wishlist, personal with a token}}
  /v1/catalogue:
    get:
      responses: {"200": {description: public}}
  /v1/login:
    post:
      security: []
      responses: {"200": {description: takes no credential; a stale token must not stop it}}
  /v1/admin/public:
    get:
      security: []
      responses: {"200": {description: an admin operation declared public by mistake}}
  /v1/admin/declared:
    post:
      security: [{bearer: [admin]}]
      responses: {"200": {description: ok}}
  /v1/admin/forgotten:
    post:
      responses: {"200": {description: no security declared}}
  /v1/admin/weak:
    get:
      security: [{bearer: []}]
      responses: {"200": {description: any token declared}}
  /v1/admin/open:
    get:
      security: [{}]
      responses: {"200": {description: anonymous declared}}
  /oauth/token:
    post:
      security: [{clientBasic: []}, {}]
      responses: {"200": {description: tokens}}
components:
  securitySchemes:
    clientBasic: {type: http, scheme: basic}
`

// TestEnforcesOperationSecurity calls each operation with each kind of
// credential: the gateway must answer 401 or 403 itself, without a hop, or
// forward the request with its Authorization header unchanged.
func TestEnforcesOperationSecurity(t *testing.T) {
	shop := newUpstream(t, "shop", shopFragment, nil)
	g := startGateway(t, testConfig(t), shop)
	iss := g.issuer

	expired := iss.Claims("cus_late")
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	revoked := iss.Claims("cus_gone")
	revokedToken := iss.Mint(t, revoked)
	iss.Revoke(revoked.SessionID)

	creds := map[string]string{
		"none":     "",
		"customer": "Bearer " + iss.Token(t, "cus_customer", "openid"),
		"orders":   "Bearer " + iss.Token(t, "cus_clerk", "openid", "orders:read"),
		"admin":    "Bearer " + iss.AdminToken(t),
		"invalid":  "Bearer not.a.token",
		"forged":   "Bearer " + iss.Mint(t, iss.Claims("cus_x", "admin"), authtest.SignedBy(iss.NewKey(t)), authtest.KeyID(iss.SigningKey().ID)),
		"expired":  "Bearer " + iss.Mint(t, expired),
		"revoked":  "Bearer " + revokedToken,
		"basic":    "Basic c3RvcmVmcm9udDpzZWNyZXQ=",
	}
	platformtest.Eventually(t, "the gateway learns of the revocation", func() bool {
		return g.do(t, request{path: "/v1/me", header: []string{"Authorization", creds["revoked"]}}).status == http.StatusUnauthorized
	})
	before := len(shop.seen())

	tests := []struct {
		method, path string
		want         map[string]int // credential → status; 200 means forwarded
	}{
		{"GET", "/v1/me", map[string]int{"none": 401, "customer": 200, "admin": 200, "invalid": 401, "forged": 401, "expired": 401, "revoked": 401, "basic": 401}},
		{"GET", "/v1/orders", map[string]int{"none": 401, "customer": 403, "orders": 200, "admin": 200, "invalid": 401}},
		{"GET", "/v1/wishlist", map[string]int{"none": 200, "customer": 200, "invalid": 401, "expired": 401, "revoked": 401, "basic": 401}},
		{"GET", "/v1/catalogue", map[string]int{"none": 200, "customer": 200, "invalid": 401, "forged": 401, "expired": 401}},
		{"POST", "/v1/login", map[string]int{"none": 200, "customer": 200, "invalid": 200, "expired": 200, "revoked": 200, "basic": 200}},
		{"GET", "/v1/admin/public", map[string]int{"none": 401, "customer": 403, "admin": 200, "invalid": 401}},
		{"POST", "/v1/admin/declared", map[string]int{"none": 401, "customer": 403, "orders": 403, "admin": 200, "forged": 401}},
		{"POST", "/v1/admin/forgotten", map[string]int{"none": 401, "customer": 403, "admin": 200, "basic": 401}},
		{"GET", "/v1/admin/weak", map[string]int{"none": 401, "customer": 403, "admin": 200}},
		{"GET", "/v1/admin/open", map[string]int{"none": 401, "customer": 403, "admin": 200}},
		{"POST", "/oauth/token", map[string]int{"none": 200, "basic": 200, "customer": 200, "invalid": 401}},
	}
	for _, tt := range tests {
		for cred, status := range tt.want {
			t.Run(fmt.Sprintf("%s %s with %s", tt.method, tt.path, cred), func(t *testing.T) {
				var header []string
				if creds[cred] != "" {
					header = []string{"Authorization", creds[cred]}
				}
				n := len(shop.seen())
				resp := g.do(t, request{method: tt.method, path: tt.path, header: header})
				if status != http.StatusOK {
					resp.wantProblem(t, status)
					if got := resp.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
						t.Fatalf("%d without a Bearer challenge (WWW-Authenticate %q)", status, got)
					}
					if len(shop.seen()) != n {
						t.Fatalf("refused with %d, yet the request reached the upstream", status)
					}
					return
				}
				resp.wantStatus(t, http.StatusOK)
				s := shop.last(t)
				if s.Method != tt.method || s.Path != tt.path {
					t.Fatalf("upstream saw %s %s", s.Method, s.Path)
				}
				if got := s.Header.Get("Authorization"); got != creds[cred] {
					t.Fatalf("upstream saw Authorization %q, want the client's %q", got, creds[cred])
				}
			})
		}
	}
	if before == len(shop.seen()) {
		t.Fatal("nothing reached the upstream; the table checks nothing")
	}
}

// TestForgedIdentityHeadersNeverReachServices sends every header a service
// might be tempted to trust for identity: none reaches the upstream, with
// or without a valid token.
func TestForgedIdentityHeadersNeverReachServices(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	g := startGateway(t, testConfig(t), catalog)
	admin := "Bearer " + g.issuer.AdminToken(t)
	forged := []string{
		"X-Mercato-Subject", "cus_victim",
		"X-Mercato-Scopes", "admin",
		"x-mercato-identity", `{"sub":"cus_victim"}`,
		"X_Mercato_Subject", "cus_victim",
		"X-User-Id", "cus_victim",
		"X-User", "cus_victim",
		"X-Forwarded-User", "cus_victim",
		"X-Forwarded-Email", "victim@example.com",
		"X-Forwarded-Preferred-Username", "victim",
		"X-Auth-Request-User", "cus_victim",
		"X-Auth-Request-Email", "victim@example.com",
		"X-Authenticated-Userid", "cus_victim",
		"X-Consumer-Id", "cus_victim",
		"X-Consumer-Username", "victim",
		"X-Userinfo", "eyJzdWIiOiJjdXNfdmljdGltIn0",
		"X-Jwt-Payload", "eyJzdWIiOiJjdXNfdmljdGltIn0",
		"Remote-User", "cus_victim",
		"X-Remote-User", "cus_victim",
		"x_user_id", "cus_victim",
	}
	for _, c := range []struct {
		name, path, auth string
	}{
		{"anonymous", "/v1/products", ""},
		{"with an admin token", "/v1/admin/products/p-1", admin},
	} {
		t.Run(c.name, func(t *testing.T) {
			header := slices.Clone(forged)
			if c.auth != "" {
				header = append(header, "Authorization", c.auth)
			}
			method := http.MethodGet
			if c.auth != "" {
				method = http.MethodPatch
			}
			g.do(t, request{method: method, path: c.path, body: "{}", header: append(header, "X-Harmless", "kept")}).wantStatus(t, http.StatusOK)
			s := catalog.last(t)
			for name := range s.Header {
				if identityLike(name) {
					t.Errorf("upstream received %s: %q", name, s.Header.Values(name))
				}
			}
			for i := 0; i < len(forged); i += 2 {
				if v := s.Header.Values(forged[i]); len(v) > 0 {
					t.Errorf("upstream received %s: %q", forged[i], v)
				}
			}
			if s.Header.Get("X-Harmless") != "kept" {
				t.Error("an ordinary header was dropped too")
			}
			if got := s.Header.Get("Authorization"); got != c.auth {
				t.Errorf("upstream saw Authorization %q, want %q", got, c.auth)
			}
		})
	}
}

// TestIdentityUnreachableAtStart checks the start-up policy: until the
// gateway has loaded identity's keys and revocations it is not ready and
// answers requests with tokens 503 with Retry-After (they are not the
// client's fault), while anonymous requests pass.
func TestIdentityUnreachableAtStart(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	iss := authtest.New(t)
	iss.SetDown(true)
	cfg := testConfig(t)
	iss.Config(&cfg)
	cfg.RPC.BreakerDelay = 200 * time.Millisecond
	g := startGateway(t, cfg, catalog)
	admin := []string{"Authorization", "Bearer " + iss.AdminToken(t)}

	resp := g.do(t, request{method: http.MethodDelete, path: "/v1/admin/products/p-1", header: admin})
	resp.wantProblem(t, http.StatusServiceUnavailable)
	if resp.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	g.get(t, "/v1/products", "Authorization", "Bearer "+iss.Token(t, "cus_1")).wantProblem(t, http.StatusServiceUnavailable)
	catalog.wantUntouched(t)
	g.get(t, "/v1/products").wantStatus(t, http.StatusOK)
	if p := g.get(t, "/readyz").wantProblem(t, http.StatusServiceUnavailable); p.Checks["auth"] == "ok" {
		t.Fatalf("readiness checks %v: auth passes before anything was loaded", p.Checks)
	}

	iss.SetDown(false)
	platformtest.Eventually(t, "admin requests pass once identity answers", func() bool {
		return g.do(t, request{method: http.MethodDelete, path: "/v1/admin/products/p-1", header: admin}).status == http.StatusOK
	})
}

// TestSetupRefusesSecurityItCannotEnforce checks that a fragment whose
// security the gateway cannot read stops it at start.
func TestSetupRefusesSecurityItCannotEnforce(t *testing.T) {
	tests := []struct {
		name, fragment, reason string
	}{
		{"undeclared scheme", `
paths:
  /v1/things:
    get:
      security: [{oauth: [read]}]
      responses: {"200": {description: ok}}
`, `"oauth"`},
		{"misspelt bearer", `
paths:
  /v1/things:
    get:
      security: [{Bearer: []}]
      responses: {"200": {description: ok}}
`, `"Bearer"`},
		{"security not a list", `
paths:
  /v1/things:
    get:
      security: {bearer: []}
      responses: {"200": {description: ok}}
`, "security"},
		{"scopes not a list", `
paths:
  /v1/things:
    get:
      security: [{bearer: admin}]
      responses: {"200": {description: ok}}
`, "security"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Services["things"] = cfgURL(platformtest.ClosedAddr(t))
			err := setupError(t, cfg, Upstream{Name: "things", OpenAPI: []byte(tt.fragment)})
			if err == nil {
				t.Fatal("setup succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), "things") {
				t.Fatalf("error %q does not name %s and the upstream", err, tt.reason)
			}
		})
	}
}

// TestPolicyFor reads security requirements into policies, including the
// admin scope added to every /v1/admin/ operation.
func TestPolicyFor(t *testing.T) {
	known := []string{"bearer", "clientBasic"}
	req := func(pairs ...any) openapi.SecurityRequirement {
		r := openapi.SecurityRequirement{}
		for i := 0; i+1 < len(pairs); i += 2 {
			r[pairs[i].(string)] = pairs[i+1].([]string)
		}
		return r
	}
	tests := []struct {
		name   string
		op     openapi.Operation
		want   policy
		errHas string
	}{
		{"no security", openapi.Operation{Path: "/v1/products"}, policy{anonymous: true}, ""},
		{"empty list", openapi.Operation{Path: "/v1/products", Security: []openapi.SecurityRequirement{}}, policy{anonymous: true}, ""},
		{"any token", openapi.Operation{Path: "/v1/me", Security: []openapi.SecurityRequirement{req("bearer", []string{})}}, policy{scopes: [][]string{{}}}, ""},
		{"optional token", openapi.Operation{Path: "/v1/w", Security: []openapi.SecurityRequirement{{}, req("bearer", []string{})}}, policy{anonymous: true, scopes: [][]string{{}}}, ""},
		{"alternatives", openapi.Operation{Path: "/v1/orders", Security: []openapi.SecurityRequirement{req("bearer", []string{"a", "b"}), req("bearer", []string{"admin"})}},
			policy{scopes: [][]string{{"a", "b"}, {"admin"}}}, ""},
		{"another scheme", openapi.Operation{Path: "/oauth/token", Security: []openapi.SecurityRequirement{req("clientBasic", []string{})}}, policy{otherSchemes: true}, ""},
		{"admin declared", openapi.Operation{Path: "/v1/admin/x", Security: []openapi.SecurityRequirement{req("bearer", []string{"admin"})}}, policy{scopes: [][]string{{"admin"}}}, ""},
		{"admin forgotten", openapi.Operation{Path: "/v1/admin/x"}, policy{scopes: [][]string{{"admin"}}, forcedAdmin: true}, ""},
		{"admin root forgotten", openapi.Operation{Path: "/v1/admin"}, policy{scopes: [][]string{{"admin"}}, forcedAdmin: true}, ""},
		{"admin with any token", openapi.Operation{Path: "/v1/admin/x", Security: []openapi.SecurityRequirement{req("bearer", []string{})}}, policy{scopes: [][]string{{"admin"}}, forcedAdmin: true}, ""},
		{"admin with another scope", openapi.Operation{Path: "/v1/admin/x", Security: []openapi.SecurityRequirement{req("bearer", []string{"catalog:write"})}},
			policy{scopes: [][]string{{"catalog:write", "admin"}}, forcedAdmin: true}, ""},
		{"admin via another scheme", openapi.Operation{Path: "/v1/admin/x", Security: []openapi.SecurityRequirement{req("clientBasic", []string{})}}, policy{scopes: [][]string{{"admin"}}, forcedAdmin: true}, ""},
		{"not admin: a prefix lookalike", openapi.Operation{Path: "/v1/administrators"}, policy{anonymous: true}, ""},
		{"undeclared scheme", openapi.Operation{Method: "GET", Path: "/v1/x", Security: []openapi.SecurityRequirement{req("apiKey", []string{})}}, policy{}, `"apiKey"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policyFor(tt.op, known)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("policyFor error %v, want one naming %s", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.anonymous != tt.want.anonymous || got.otherSchemes != tt.want.otherSchemes || got.forcedAdmin != tt.want.forcedAdmin ||
				!slices.EqualFunc(got.scopes, tt.want.scopes, func(a, b []string) bool { return slices.Equal(a, b) }) {
				t.Fatalf("policyFor = %+v, want %+v", got, tt.want)
			}
		})
	}
}
