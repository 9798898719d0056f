package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/openapi"
	"github.com/mercato/mercato/platform/platformtest"
)

// TestRoutesEachDocumentedOperationToItsOwner calls every operation of both
// fragments and checks that exactly its owner received it, unchanged.
func TestRoutesEachDocumentedOperationToItsOwner(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cart := newUpstream(t, "cart", cartFragment, nil)
	g := startGateway(t, testConfig(t), catalog, cart)

	calls := []struct {
		owner, other *upstream
		method, path string // path is a concrete instance of the operation
		query, body  string
	}{
		{catalog, cart, http.MethodGet, "/v1/products", "q=red+shoes&page_size=5&category=a%2Fb", ""},
		{catalog, cart, http.MethodGet, "/v1/products/p-42", "", ""},
		{catalog, cart, http.MethodPost, "/v1/admin/products", "", `{"title":"Tee"}`},
		{catalog, cart, http.MethodPatch, "/v1/admin/products/p-42", "dry_run=true", `{"title":"Shirt"}`},
		{catalog, cart, http.MethodDelete, "/v1/admin/products/p-42", "", ""},
		{cart, catalog, http.MethodPost, "/v1/carts", "", `{"currency":"EUR"}`},
		{cart, catalog, http.MethodGet, "/v1/carts/c-7", "expand=items", ""},
		{cart, catalog, http.MethodPut, "/v1/carts/c-7/items/i%2F1", "", `{"quantity":2}`},
	}
	// Every operation of the fragments is called.
	var want, got []string
	for _, u := range []*upstream{catalog, cart} {
		f, err := openapi.ParseFragment([]byte(u.fragment))
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range f.Operations() {
			want = append(want, op.Pattern())
		}
	}
	for _, c := range calls {
		got = append(got, c.method+" "+templateOf(c.path))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		t.Fatalf("the table calls %v, the fragments document %v", got, want)
	}

	admin := g.issuer.AdminToken(t)
	for _, c := range calls {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			before, otherBefore := len(c.owner.seen()), len(c.other.seen())
			path := c.path
			if c.query != "" {
				path += "?" + c.query
			}
			resp := g.do(t, request{method: c.method, path: path, body: c.body,
				header: []string{"Authorization", "Bearer " + admin, "Content-Type", "application/json"}})
			resp.wantStatus(t, http.StatusOK)
			var body map[string]string
			if err := json.Unmarshal(resp.body, &body); err != nil || body["upstream"] != c.owner.name {
				t.Fatalf("answer %s, want the echo of %s", resp.body, c.owner.name)
			}
			if n := len(c.owner.seen()); n != before+1 {
				t.Fatalf("%s got %d requests, want 1", c.owner.name, n-before)
			}
			if n := len(c.other.seen()); n != otherBefore {
				t.Fatalf("%s, which does not own %s, was reached", c.other.name, c.path)
			}
			s := c.owner.last(t)
			if s.Method != c.method || s.Path != c.path || s.RawQuery != c.query || s.Body != c.body {
				t.Fatalf("upstream saw %s %s?%s %q, want %s %s?%s %q", s.Method, s.Path, s.RawQuery, s.Body, c.method, c.path, c.query, c.body)
			}
		})
	}
}

// templateOf turns a concrete test path back into its operation's template.
func templateOf(path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		switch {
		case i > 0 && parts[i-1] == "items" && p != "":
			parts[i] = "{item_id}"
		case strings.HasPrefix(p, "p-"), strings.HasPrefix(p, "c-"):
			parts[i] = "{id}"
		}
	}
	return strings.Join(parts, "/")
}

// TestRefusesWhatIsNotDocumented checks that the edge answers unknown paths
// and methods itself, with problems, without a hop.
func TestRefusesWhatIsNotDocumented(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cart := newUpstream(t, "cart", cartFragment, nil)
	g := startGateway(t, testConfig(t), catalog, cart)

	for _, path := range []string{"/v1/orders", "/v1/products/p-1/reviews", "/v1/admin/secrets", "/", "/v2/products", "/v1/products/"} {
		t.Run("404 "+path, func(t *testing.T) {
			g.get(t, path).wantProblem(t, http.StatusNotFound)
		})
	}
	t.Run("405 on a documented path", func(t *testing.T) {
		resp := g.do(t, request{method: http.MethodPut, path: "/v1/products", body: "{}"})
		resp.wantProblem(t, http.StatusMethodNotAllowed)
		if allow := resp.header.Values("Allow"); !slices.Contains(allow, http.MethodGet) {
			t.Fatalf("Allow %v, want GET among them", allow)
		}
		g.do(t, request{method: http.MethodDelete, path: "/v1/carts/c-1"}).wantProblem(t, http.StatusMethodNotAllowed)
	})
	catalog.wantUntouched(t)
	cart.wantUntouched(t)
}

// TestServesTheAssembledDocument checks /openapi.json: OpenAPI 3.1 with every
// fragment's paths and both the shared and the fragments' components.
func TestServesTheAssembledDocument(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cart := newUpstream(t, "cart", cartFragment, nil)
	g := startGateway(t, testConfig(t), catalog, cart)

	resp := g.get(t, "/openapi.json")
	resp.wantStatus(t, http.StatusOK)
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas    map[string]json.RawMessage `json:"schemas"`
			Parameters map[string]json.RawMessage `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(resp.body, &doc); err != nil {
		t.Fatalf("document: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	for _, p := range []string{"/v1/products", "/v1/products/{id}", "/v1/admin/products", "/v1/admin/products/{id}", "/v1/carts", "/v1/carts/{id}", "/v1/carts/{id}/items/{item_id}"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("path %s missing from the document", p)
		}
	}
	if len(doc.Paths) != 7 {
		t.Errorf("document has %d paths, want the fragments' 7", len(doc.Paths))
	}
	for _, s := range []string{"Problem", "Money", "FieldError", "Product", "Cart"} {
		if _, ok := doc.Components.Schemas[s]; !ok {
			t.Errorf("schema %s missing from the document", s)
		}
	}
	if _, ok := doc.Components.Parameters["PageSize"]; !ok {
		t.Error("shared parameter PageSize missing from the document")
	}
	catalog.wantUntouched(t)
	cart.wantUntouched(t)
}

// TestSetupRefusesAmbiguousFragments checks that two upstreams claiming one
// route stop the gateway at start with an error, not a panic.
func TestSetupRefusesAmbiguousFragments(t *testing.T) {
	cases := []struct {
		name   string
		other  string
		reason string
	}{
		{"same path", `
paths:
  /v1/products/{id}:
    get: {responses: {"200": {description: ok}}}
`, "/v1/products/{id}"},
		{"same path, other method", `
paths:
  /v1/products:
    post: {responses: {"201": {description: ok}}}
`, "/v1/products"},
		{"same route, other wildcard name", `
paths:
  /v1/products/{product_id}:
    get: {responses: {"200": {description: ok}}}
`, "/v1/products/{product_id}"},
		{"a route of the gateway itself", `
paths:
  /openapi.json:
    get: {responses: {"200": {description: ok}}}
`, "/openapi.json"},
		{"not a route pattern", `
paths:
  /v1/bad/{id:
    get: {responses: {"200": {description: ok}}}
`, "/v1/bad/{id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Services["catalog"] = cfgURL(platformtest.ClosedAddr(t))
			cfg.Services["intruder"] = cfgURL(platformtest.ClosedAddr(t))
			err := setupError(t, cfg,
				Upstream{Name: "catalog", OpenAPI: []byte(catalogFragment)},
				Upstream{Name: "intruder", OpenAPI: []byte(c.other)})
			if err == nil {
				t.Fatal("setup succeeded, want an error")
			}
			t.Logf("setup: %v", err)
			if !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("error %q does not name %s", err, c.reason)
			}
		})
	}
	t.Run("distinct fragments start", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Services["catalog"] = cfgURL(platformtest.ClosedAddr(t))
		cfg.Services["cart"] = cfgURL(platformtest.ClosedAddr(t))
		err := setupError(t, cfg,
			Upstream{Name: "catalog", OpenAPI: []byte(catalogFragment)},
			Upstream{Name: "cart", OpenAPI: []byte(cartFragment)})
		if err != nil {
			t.Fatalf("setup failed: %v", err)
		}
	})
}

// TestSetupRefusesBadConfiguration checks that settings the gateway cannot
// use stop it at start, naming the key.
func TestSetupRefusesBadConfiguration(t *testing.T) {
	t.Run("trusted proxy that is not a CIDR", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Services["catalog"] = cfgURL(platformtest.ClosedAddr(t))
		cfg.Gateway.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.1"}
		err := setupError(t, cfg, Upstream{Name: "catalog", OpenAPI: []byte(catalogFragment)})
		if err == nil || !strings.Contains(err.Error(), "gateway.trusted_proxies") {
			t.Fatalf("setup error %v, want one naming gateway.trusted_proxies", err)
		}
	})
	t.Run("service URL that is not a URL", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Services["catalog"] = config.ServiceConfig{URL: "http://[::1"}
		err := setupError(t, cfg, Upstream{Name: "catalog", OpenAPI: []byte(catalogFragment)})
		if err == nil || !strings.Contains(err.Error(), "services.catalog.url") {
			t.Fatalf("setup error %v, want one naming services.catalog.url", err)
		}
	})
	t.Run("fragment that is not OpenAPI", func(t *testing.T) {
		cfg := testConfig(t)
		err := setupError(t, cfg, Upstream{Name: "catalog", OpenAPI: []byte("openapi: 3.1.0\n")})
		if err == nil || !strings.Contains(err.Error(), "catalog") {
			t.Fatalf("setup error %v, want one naming catalog", err)
		}
	})
}
