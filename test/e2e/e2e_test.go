package e2e

import (
	"bytes"
	"encoding/json"
	"github.com/mercato/mercato/platform/platformtest"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPlatform starts the whole platform, one process per service, and drives
// the public API through the gateway.
func TestPlatform(t *testing.T) {
	cfg := testNamespace(t)
	p := startPlatform(t, cfg, nil)
	admin := bearer(p.login(adminEmail, adminPassword).AccessToken)

	t.Run("demo catalog and categories", func(t *testing.T) {
		var page struct {
			Items []struct {
				ID       string
				Variants []struct{ Price struct{ Amount int64 } }
			}
			NextPageToken string `json:"next_page_token"`
		}
		r := p.do("GET", "/v1/products?page_size=100", nil)
		r.decode(t, &page)
		if len(page.Items) != 100 || page.NextPageToken == "" || len(page.Items[0].Variants) == 0 {
			t.Fatalf("demo catalog page: %d items, token %q", len(page.Items), page.NextPageToken)
		}
		if r.header.Get("X-Request-Id") == "" {
			t.Fatal("no X-Request-Id")
		}
		var cats struct{ Items []struct{ ID, Slug string } }
		p.do("GET", "/v1/categories", nil).decode(t, &cats)
		if len(cats.Items) < 5 {
			t.Fatalf("%d categories", len(cats.Items))
		}
	})

	t.Run("errors are problems", func(t *testing.T) {
		p.do("GET", "/v1/no-such-thing", nil).isProblem(t, 404)
		p.do("GET", "/", nil).isProblem(t, 404)
		p.do("DELETE", "/v1/products", nil).isProblem(t, 405)
		p.do("POST", "/v1/admin/products", `{"title":"x"}`).isProblem(t, 401)
		p.do("POST", "/v1/admin/products", `{"title":"x"}`, "Authorization", "Bearer wrong").isProblem(t, 401)
		p.do("GET", "/v1/products/prod_01jbx6m1t3k9e2f5ag7h8j9k0m", nil).isProblem(t, 404)
		p.do("POST", "/v1/admin/products", `{"title":`+strings.Repeat(" ", 1<<20)+`"x"}`, admin...).isProblem(t, 413)
		r := p.do("POST", "/v1/admin/products", `{"title":"","variants":[{"sku":"A","price":{"amount":1,"currency":"eur"}}]}`, admin...)
		r.isProblem(t, 422)
		if !bytes.Contains(r.body, []byte(`"field":"title"`)) || !bytes.Contains(r.body, []byte(`"field":"variants[0].price.currency"`)) {
			t.Fatalf("422 does not name the fields: %s", r.body)
		}
	})

	t.Run("trace context is honoured", func(t *testing.T) {
		const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		r := p.do("GET", "/v1/categories", nil, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		if got := r.header.Get("X-Request-Id"); got != traceID {
			t.Fatalf("request id %q, want the incoming trace id", got)
		}
	})

	t.Run("CORS preflight", func(t *testing.T) {
		r := p.do("OPTIONS", "/v1/admin/products", nil, "Origin", "https://shop.example", "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "authorization,content-type,idempotency-key")
		if r.status >= 300 || r.header.Get("Access-Control-Allow-Origin") == "" {
			t.Fatalf("preflight: %d %v", r.status, r.header)
		}
	})

	t.Run("admin writes reach readers within a second", func(t *testing.T) {
		var cat struct{ ID string }
		r := p.do("POST", "/v1/admin/categories", map[string]any{"slug": "e2e-kites", "name": "Kites"}, admin...)
		if r.status != 201 {
			t.Fatalf("create category: %d %s", r.status, r.body)
		}
		r.decode(t, &cat)
		body := map[string]any{"title": "Stunt Kite Zephyr", "description": "A dual-line stunt kite.", "category_ids": []string{cat.ID},
			"variants": []map[string]any{{"sku": "E2E-KITE-1", "title": "Red", "price": map[string]any{"amount": 8900, "currency": "EUR"}}}}
		r = p.do("POST", "/v1/admin/products", body, append(admin, "Idempotency-Key", "e2e-kite-1")...)
		if r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		var prod struct{ ID string }
		r.decode(t, &prod)
		if again := p.do("POST", "/v1/admin/products", body, append(admin, "Idempotency-Key", "e2e-kite-1")...); !bytes.Equal(again.body, r.body) {
			t.Fatalf("idempotent replay differs: %s", again.body)
		}

		detail := p.do("GET", "/v1/products/"+prod.ID, nil)
		tag := detail.header.Get("ETag")
		if detail.status != 200 || tag == "" || !strings.Contains(detail.header.Get("Cache-Control"), "public") {
			t.Fatalf("detail: %d %v", detail.status, detail.header)
		}
		if r := p.do("GET", "/v1/products/"+prod.ID, nil, "If-None-Match", tag); r.status != 304 {
			t.Fatalf("conditional get: %d", r.status)
		}
		platformtest.EventuallyWithin(t, 5*time.Second, "search finds the new product", func() bool {
			return bytes.Contains(p.do("GET", "/v1/products?q=zephyr", nil).body, []byte(prod.ID))
		})
		if r := p.do("GET", "/v1/products?category="+cat.ID, nil); !bytes.Contains(r.body, []byte(prod.ID)) {
			t.Fatalf("category filter misses the product: %s", r.body)
		}

		if r := p.do("PATCH", "/v1/admin/products/"+prod.ID, map[string]any{"title": "Stunt Kite Boreas"}, admin...); r.status != 200 {
			t.Fatalf("patch: %d %s", r.status, r.body)
		}
		took := platformtest.EventuallyWithin(t, 5*time.Second, "the change is visible", func() bool {
			return bytes.Contains(p.do("GET", "/v1/products/"+prod.ID, nil).body, []byte("Boreas"))
		})
		if took > time.Second {
			t.Errorf("the change took %s to be visible", took)
		}
		if r := p.do("DELETE", "/v1/admin/products/"+prod.ID, nil, admin...); r.status != 204 {
			t.Fatalf("delete: %d", r.status)
		}
		platformtest.EventuallyWithin(t, time.Second, "the deletion is visible", func() bool {
			return p.do("GET", "/v1/products/"+prod.ID, nil).status == 404
		})
	})

	t.Run("openapi document covers the routes", func(t *testing.T) {
		var doc struct {
			OpenAPI string                    `json:"openapi"`
			Paths   map[string]map[string]any `json:"paths"`
		}
		p.do("GET", "/openapi.json", nil).decode(t, &doc)
		if doc.OpenAPI != "3.1.0" {
			t.Fatalf("openapi %q", doc.OpenAPI)
		}
		for _, path := range []string{"/v1/products", "/v1/products/{id}", "/v1/categories", "/v1/admin/products", "/v1/admin/products/{id}",
			"/v1/customers", "/v1/auth/login", "/v1/auth/refresh", "/v1/me", "/.well-known/openid-configuration", "/authorize", "/oauth/token", "/keys"} {
			if doc.Paths[path] == nil {
				t.Errorf("openapi.json lacks %s", path)
			}
		}
		// Every documented operation is routed: none answers the gateway's
		// "no route" 404. A session of its own, since the loop also calls
		// logout and session deletion.
		admin := bearer(p.login(adminEmail, adminPassword).AccessToken)
		for path, ops := range doc.Paths {
			concrete := strings.NewReplacer("{id}", "prod_01jbx6m1t3k9e2f5ag7h8j9k0m").Replace(path)
			for method := range ops {
				r := p.do(strings.ToUpper(method), concrete, "{}", admin...)
				if bytes.Contains(r.body, []byte("no route for")) || r.status == 405 {
					t.Errorf("%s %s is documented but not routed: %d %s", method, path, r.status, r.body)
				}
			}
		}
	})

	identityChecks(t, p)
	inventoryChecks(t, p)

	t.Run("live rate limit", func(t *testing.T) {
		live := filepath.Join(p.data, "live.yaml")
		if err := os.WriteFile(live, []byte("gateway:\n  rate_limit_per_ip: 1\n  rate_limit_burst: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		var limited response
		platformtest.EventuallyWithin(t, 10*time.Second, "the live rate limit applies", func() bool {
			limited = p.do("GET", "/v1/categories", nil)
			return limited.status == 429
		})
		limited.isProblem(t, 429)
		if limited.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		if err := os.WriteFile(live, []byte("gateway:\n  rate_limit_per_ip: 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		platformtest.EventuallyWithin(t, 10*time.Second, "the limit is lifted", func() bool {
			for range 20 {
				if p.do("GET", "/v1/categories", nil).status != 200 {
					return false
				}
			}
			return true
		})
		if m := p.do("GET", "/metrics", nil); !bytes.Contains(m.body, []byte(`mercato_config_changes_total{key="gateway.rate_limit_per_ip"}`)) {
			t.Fatal("the live change is not counted in /metrics")
		}
	})

	t.Run("a killed service is restarted", func(t *testing.T) {
		pid := p.servicePID("catalog")
		if pid == 0 {
			t.Fatal("no catalog process found")
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		platformtest.Eventually(t, "the catalog is back", func() bool {
			r, err := http.Get(p.url + "/v1/products?page_size=1")
			if err != nil {
				return false
			}
			r.Body.Close()
			return r.StatusCode == 200 && p.servicePID("catalog") != pid
		})
		if !regexp.MustCompile(`(?m)^catalog +\| `).MatchString(p.out.String()) {
			t.Fatal("service logs are not prefixed")
		}
	})

	t.Run("readiness follows the upstreams", func(t *testing.T) {
		// The catalog was just restarted: the gateway sees it again at its
		// next probe.
		var ready struct{ Checks map[string]string }
		platformtest.EventuallyWithin(t, 10*time.Second, "the gateway sees the catalog ready", func() bool {
			p.do("GET", "/readyz", nil).decode(t, &ready)
			return ready.Checks["upstream:catalog"] == "ok"
		})
	})

	p.stop()
}

// TestSingleProcess runs every service in one process.
func TestSingleProcess(t *testing.T) {
	cfg := testNamespace(t)
	p := startPlatform(t, cfg, []string{"--single-process"}, "MERCATO_NATS_URL=nats://127.0.0.1:4222")
	platformtest.CleanBroker(t, cfg)
	if pid := p.servicePID("catalog"); pid != 0 {
		t.Fatalf("--single-process started a catalog process %d", pid)
	}
	var page struct{ Items []json.RawMessage }
	p.do("GET", "/v1/products?q=chair", nil).decode(t, &page)
	if len(page.Items) == 0 {
		t.Fatal("search over the demo catalog found no chair")
	}
	p.stop()
}

// TestUpExplainsMissingInfrastructure checks the one clear message when
// PostgreSQL or Redis cannot be reached.
func TestUpExplainsMissingInfrastructure(t *testing.T) {
	dead := platformtest.ClosedAddr(t)
	tests := []struct {
		name string
		env  string
		want []string
	}{
		{"postgres", "MERCATO_POSTGRES_URL=postgres://postgres@" + dead + "/postgres?sslmode=disable", []string{"PostgreSQL is not reachable at", dead, "pg_ctlcluster"}},
		{"redis", "MERCATO_REDIS_URL=redis://" + dead + "/0", []string{"Redis is not reachable at", dead, "redis-server"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(binary, "up", "--http", platformtest.ClosedAddr(t), "--data", t.TempDir())
			cmd.Env = append(os.Environ(), "MERCATO_NAMESPACE=e2e_unreachable", tt.env)
			out, err := cmd.CombinedOutput()
			exit, ok := err.(*exec.ExitError)
			if !ok || exit.ExitCode() == 0 {
				t.Fatalf("up did not fail: %v\n%s", err, out)
			}
			for _, want := range tt.want {
				if !bytes.Contains(out, []byte(want)) {
					t.Errorf("message lacks %q:\n%s", want, out)
				}
			}
			if bytes.Contains(out, []byte("goroutine ")) || bytes.Contains(out, []byte("panic")) {
				t.Errorf("stack trace in output:\n%s", out)
			}
			// One message, not a driver's retry log in front of it.
			if n := bytes.Count(out, []byte("\n")); n > 12 {
				t.Errorf("%d lines of output for one missing server:\n%s", n, out)
			}
		})
	}
}
