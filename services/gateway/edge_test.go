package gateway

import (
	"bufio"
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/redisx"
)

// TestRateLimitsPerClientAddress runs the limiter against the real Redis.
func TestRateLimitsPerClientAddress(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cfg := testConfig(t)
	cfg.Gateway.RateLimitPerIP = 2
	cfg.Gateway.RateLimitBurst = 2
	g := startGateway(t, cfg, catalog)

	for i := range 2 {
		resp := g.get(t, "/v1/products")
		resp.wantStatus(t, http.StatusOK)
		if got := resp.header.Get("RateLimit-Limit"); got != "2" {
			t.Fatalf("request %d: RateLimit-Limit %q, want 2", i+1, got)
		}
		if got := resp.header.Get("RateLimit-Remaining"); got != strconv.Itoa(1-i) {
			t.Fatalf("request %d: RateLimit-Remaining %q, want %d", i+1, got, 1-i)
		}
	}
	resp := g.get(t, "/v1/products")
	resp.wantProblem(t, http.StatusTooManyRequests)
	if s, err := strconv.Atoi(resp.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q, want at least 1 second", resp.header.Get("Retry-After"))
	}
	if resp.header.Get("RateLimit-Limit") != "2" || resp.header.Get("RateLimit-Remaining") != "0" {
		t.Fatalf("RateLimit-Limit %q, RateLimit-Remaining %q; want 2 and 0",
			resp.header.Get("RateLimit-Limit"), resp.header.Get("RateLimit-Remaining"))
	}
	if n := len(catalog.seen()); n != 2 {
		t.Fatalf("the upstream got %d requests, want the 2 allowed", n)
	}
	// Every route shares the client's budget.
	g.get(t, "/v1/products/p-1").wantProblem(t, http.StatusTooManyRequests)
	if got := metric(t, g, "gateway_rate_limited_total"); got < 2 {
		t.Fatalf("gateway_rate_limited_total %v, want at least 2", got)
	}

	// The edge's own endpoints are never limited: probes and scrapers must
	// not be refused because the same address also calls the API.
	for range 5 {
		for _, path := range []string{"/livez", "/readyz", "/metrics", "/openapi.json"} {
			g.get(t, path).wantStatus(t, http.StatusOK)
		}
	}
}

// TestRateLimitIsLive changes the limit through the store while the gateway
// runs.
func TestRateLimitIsLive(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cfg := testConfig(t)
	cfg.Gateway.RateLimitPerIP = 0
	g := startGateway(t, cfg, catalog)

	for range 30 {
		resp := g.get(t, "/v1/products")
		resp.wantStatus(t, http.StatusOK)
		if resp.header.Get("RateLimit-Limit") != "" {
			t.Fatal("RateLimit-Limit sent while the limit is off")
		}
	}

	next := *g.store.Get()
	next.Gateway.RateLimitPerIP = 1
	next.Gateway.RateLimitBurst = 1
	if changed := g.store.Set(next); len(changed) == 0 {
		t.Fatal("store.Set changed no key")
	}
	g.get(t, "/v1/products").wantStatus(t, http.StatusOK)
	g.get(t, "/v1/products").wantProblem(t, http.StatusTooManyRequests)

	next.Gateway.RateLimitPerIP = 0
	g.store.Set(next)
	for range 10 {
		g.get(t, "/v1/products").wantStatus(t, http.StatusOK)
	}
}

// TestRateLimiterLetsRequestsThroughWhenRedisFails checks that a broken
// limiter does not take the API down, and that the failures are counted.
func TestRateLimiterLetsRequestsThroughWhenRedisFails(t *testing.T) {
	cfg := platformtest.Config(t)
	cfg.Gateway.RateLimitPerIP = 1
	cfg.Gateway.RateLimitBurst = 1
	rdb := redis.NewClient(&redis.Options{Addr: platformtest.ClosedAddr(t), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	ip, err := newClientIP(nil)
	if err != nil {
		t.Fatal(err)
	}
	rl := newRateLimiter(config.Static(cfg), rdb, redisx.NewKeys(cfg.Namespace, Name), ip, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	calls := 0
	h := rl.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.WriteHeader(http.StatusNoContent)
	}))
	// Five failed checks open the breaker; the next requests skip Redis
	// instead of each waiting for the check to time out.
	for i := range 8 {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/v1/products", nil)
		r.RemoteAddr = "192.0.2.1:5555"
		h.ServeHTTP(w, r)
		if w.Code != http.StatusNoContent {
			t.Fatalf("request %d: status %d, want it let through", i+1, w.Code)
		}
	}
	if calls != 8 {
		t.Fatalf("handler called %d times, want 8", calls)
	}
	if got := testutil.ToFloat64(rl.failures); got != 5 {
		t.Fatalf("gateway_rate_limit_errors_total %v, want 5", got)
	}
	if got := testutil.ToFloat64(rl.skipped); got != 3 {
		t.Fatalf("gateway_rate_limit_skipped_total %v, want 3", got)
	}
	if got := testutil.ToFloat64(rl.limited); got != 0 {
		t.Fatalf("gateway_rate_limited_total %v, want 0", got)
	}
}

// metric reads an unlabelled sample from the gateway's /metrics.
func metric(t *testing.T, g *gw, name string) float64 {
	t.Helper()
	resp := g.get(t, "/metrics")
	resp.wantStatus(t, http.StatusOK)
	sc := bufio.NewScanner(bytes.NewReader(resp.body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported", name)
	return 0
}

func TestClientIP(t *testing.T) {
	cases := []struct {
		name    string
		trusted []string
		peer    string
		xff     []string
		want    string
	}{
		{"no trusted proxies: the peer", nil, "203.0.113.7:4000", nil, "203.0.113.7"},
		{"no trusted proxies: X-Forwarded-For ignored", nil, "203.0.113.7:4000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"untrusted peer: X-Forwarded-For ignored", []string{"10.0.0.0/8"}, "203.0.113.7:4000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"trusted peer: the hop it saw", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"trusted chain: rightmost untrusted hop", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"1.1.1.1, 198.51.100.1, 10.0.0.9"}, "198.51.100.1"},
		{"hops over several header lines", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"1.1.1.1, 198.51.100.1", "10.0.0.9"}, "198.51.100.1"},
		{"spaces around hops", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{" 198.51.100.1 ,  10.0.0.9 "}, "198.51.100.1"},
		{"all hops trusted: the peer", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"10.0.0.8, 10.0.0.9"}, "10.0.0.2"},
		{"trusted peer without X-Forwarded-For", []string{"10.0.0.0/8"}, "10.0.0.2:4000", nil, "10.0.0.2"},
		{"garbage: the peer", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"not an address"}, "10.0.0.2"},
		{"garbage right of the client: the peer", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"198.51.100.1, <script>"}, "10.0.0.2"},
		{"garbage left of the client is not read", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"<script>, 198.51.100.1"}, "198.51.100.1"},
		{"empty hop: the peer", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"198.51.100.1, "}, "10.0.0.2"},
		{"hop with a port is not an address", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"198.51.100.1:80"}, "10.0.0.2"},
		{"IPv6 peer", nil, "[2001:db8::1]:4000", nil, "2001:db8::1"},
		{"IPv6 hop behind a trusted IPv6 proxy", []string{"fd00::/8"}, "[fd00::2]:4000", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv4-mapped trusted hop", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"198.51.100.1, ::ffff:10.0.0.9"}, "198.51.100.1"},
		{"IPv4-mapped client", []string{"10.0.0.0/8"}, "10.0.0.2:4000", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"peer without a port", []string{"10.0.0.0/8"}, "10.0.0.2", []string{"198.51.100.1"}, "198.51.100.1"},
		{"unparseable peer", []string{"10.0.0.0/8"}, "@", []string{"198.51.100.1"}, "@"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ip, err := newClientIP(c.trusted)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = c.peer
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ip.of(r); got != c.want {
				t.Fatalf("of(peer %s, X-Forwarded-For %q) = %s, want %s", c.peer, c.xff, got, c.want)
			}
		})
	}
	t.Run("bad CIDR refused", func(t *testing.T) {
		if _, err := newClientIP([]string{"10.0.0.0/33"}); err == nil {
			t.Fatal("newClientIP accepted 10.0.0.0/33")
		}
	})
}

// TestCORS checks preflights and response marking against live origins.
func TestCORS(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cfg := testConfig(t)
	cfg.Gateway.CORSOrigins = []string{"https://shop.example"}
	g := startGateway(t, cfg, catalog)

	preflight := func(t *testing.T, origin string) response {
		t.Helper()
		return g.do(t, request{method: http.MethodOptions, path: "/v1/admin/products", header: []string{
			"Origin", origin,
			"Access-Control-Request-Method", http.MethodPost,
			"Access-Control-Request-Headers", "authorization, content-type, idempotency-key",
		}})
	}

	t.Run("preflight from an allowed origin", func(t *testing.T) {
		resp := preflight(t, "https://shop.example")
		if resp.status/100 != 2 {
			t.Fatalf("preflight status %d, body %s", resp.status, resp.body)
		}
		if got := resp.header.Get("Access-Control-Allow-Origin"); got != "https://shop.example" {
			t.Fatalf("Access-Control-Allow-Origin %q", got)
		}
		if got := resp.header.Get("Access-Control-Allow-Methods"); !containsFold(got, http.MethodPost) {
			t.Fatalf("Access-Control-Allow-Methods %q, want POST", got)
		}
		got := resp.header.Get("Access-Control-Allow-Headers")
		for _, h := range []string{"Authorization", "Content-Type", "Idempotency-Key"} {
			if !containsFold(got, h) {
				t.Fatalf("Access-Control-Allow-Headers %q, want %s", got, h)
			}
		}
		catalog.wantUntouched(t)
	})
	t.Run("preflight from another origin", func(t *testing.T) {
		resp := preflight(t, "https://evil.example")
		if got := resp.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("Access-Control-Allow-Origin %q for a disallowed origin", got)
		}
		catalog.wantUntouched(t)
	})
	t.Run("response exposes the headers clients read", func(t *testing.T) {
		resp := g.get(t, "/v1/products/p-1", "Origin", "https://shop.example")
		resp.wantStatus(t, http.StatusOK)
		if got := resp.header.Get("Access-Control-Allow-Origin"); got != "https://shop.example" {
			t.Fatalf("Access-Control-Allow-Origin %q", got)
		}
		exposed := strings.Join(resp.header.Values("Access-Control-Expose-Headers"), ",")
		for _, h := range []string{"ETag", "X-Request-Id", "Retry-After", "Location"} {
			if !containsFold(exposed, h) {
				t.Fatalf("Access-Control-Expose-Headers %q, want %s", exposed, h)
			}
		}
		resp = g.get(t, "/v1/products/p-1", "Origin", "https://evil.example")
		resp.wantStatus(t, http.StatusOK)
		if got := resp.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("Access-Control-Allow-Origin %q for a disallowed origin", got)
		}
	})
	t.Run("origins are live", func(t *testing.T) {
		before := len(catalog.seen())
		next := *g.store.Get()
		next.Gateway.CORSOrigins = []string{"https://evil.example"}
		g.store.Set(next)
		if got := preflight(t, "https://evil.example").header.Get("Access-Control-Allow-Origin"); got != "https://evil.example" {
			t.Fatalf("newly allowed origin: Access-Control-Allow-Origin %q", got)
		}
		if got := preflight(t, "https://shop.example").header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("no longer allowed origin: Access-Control-Allow-Origin %q", got)
		}
		next.Gateway.CORSOrigins = []string{"*"}
		g.store.Set(next)
		if got := preflight(t, "https://any.example").header.Get("Access-Control-Allow-Origin"); got == "" {
			t.Fatal(`with "*" an origin is refused`)
		}
		if n := len(catalog.seen()); n != before {
			t.Fatalf("preflights reached the upstream %d times", n-before)
		}
	})
}

// containsFold reports whether the comma-separated list holds item, in any
// case.
func containsFold(list, item string) bool {
	for _, v := range strings.Split(list, ",") {
		if strings.EqualFold(strings.TrimSpace(v), item) {
			return true
		}
	}
	return false
}

// TestReadinessFollowsUpstreams checks /readyz against upstreams that are
// ready, not ready and down.
func TestReadinessFollowsUpstreams(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cart := newUpstream(t, "cart", cartFragment, nil)
	g := startGateway(t, testConfig(t), catalog, cart)

	ready := func(t *testing.T) {
		t.Helper()
		platformtest.Eventually(t, "gateway ready", func() bool {
			return g.get(t, "/readyz").status == http.StatusOK
		})
	}
	notReady := func(t *testing.T, name string) {
		t.Helper()
		var last problemBody
		platformtest.Eventually(t, "gateway not ready because of "+name, func() bool {
			resp := g.get(t, "/readyz")
			if resp.status != http.StatusServiceUnavailable {
				return false
			}
			last = resp.wantProblem(t, http.StatusServiceUnavailable)
			return strings.Contains(last.Detail, "upstream:"+name)
		})
		if last.Checks["upstream:"+name] == "ok" {
			t.Fatalf("checks %v report upstream:%s ok", last.Checks, name)
		}
		for _, other := range []string{"catalog", "cart"} {
			if other != name && last.Checks["upstream:"+other] != "ok" {
				t.Fatalf("checks %v: upstream:%s should be ok", last.Checks, other)
			}
		}
	}

	ready(t)
	catalog.notReady.Store(true)
	notReady(t, "catalog")
	catalog.notReady.Store(false)
	ready(t)
	cart.srv.Close()
	notReady(t, "cart")
}
