package gateway

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/auth"
)

// TestForwardsRequestIdentity checks the headers the gateway adds on the way
// to a service and on the way back.
func TestForwardsRequestIdentity(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	g := startGateway(t, testConfig(t), catalog)

	t.Run("request id made at the edge", func(t *testing.T) {
		resp := g.get(t, "/v1/products")
		resp.wantStatus(t, http.StatusOK)
		ids := resp.header.Values("X-Request-Id")
		if len(ids) != 1 {
			t.Fatalf("response carries X-Request-Id %q, want exactly one", ids)
		}
		if ids[0] == upstreamOwnRequestID || ids[0] == "" {
			t.Fatalf("response X-Request-Id %q, want the gateway's", ids[0])
		}
		if got := catalog.last(t).Header.Values("X-Request-Id"); len(got) != 1 || got[0] != ids[0] {
			t.Fatalf("upstream saw X-Request-Id %q, client got %q", got, ids[0])
		}
	})
	t.Run("request id chosen by the client", func(t *testing.T) {
		resp := g.get(t, "/v1/products", "X-Request-Id", "client-chosen.id_1")
		if ids := resp.header.Values("X-Request-Id"); len(ids) != 1 || ids[0] != "client-chosen.id_1" {
			t.Fatalf("response X-Request-Id %q, want the client's", ids)
		}
		if got := catalog.last(t).Header.Get("X-Request-Id"); got != "client-chosen.id_1" {
			t.Fatalf("upstream saw X-Request-Id %q", got)
		}
	})
	t.Run("unusable request id replaced", func(t *testing.T) {
		resp := g.get(t, "/v1/products", "X-Request-Id", "no spaces <allowed>")
		ids := resp.header.Values("X-Request-Id")
		if len(ids) != 1 || ids[0] == "no spaces <allowed>" {
			t.Fatalf("response X-Request-Id %q, want one made by the gateway", ids)
		}
		if got := catalog.last(t).Header.Get("X-Request-Id"); got != ids[0] {
			t.Fatalf("upstream saw X-Request-Id %q, client got %q", got, ids[0])
		}
	})
	t.Run("forwarding headers, spoofed X-Forwarded-For dropped", func(t *testing.T) {
		g.get(t, "/v1/products",
			"X-Forwarded-For", "6.6.6.6",
			"X-Forwarded-For", "7.7.7.7, 8.8.8.8",
			"X-Forwarded-Host", "evil.example",
			"X-Forwarded-Proto", "https",
			"Forwarded", "for=6.6.6.6").wantStatus(t, http.StatusOK)
		s := catalog.last(t)
		if got := s.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Fatalf("upstream saw X-Forwarded-For %q, want only the peer 127.0.0.1", got)
		}
		if got := s.Header.Get("X-Forwarded-Host"); got != g.addr {
			t.Fatalf("upstream saw X-Forwarded-Host %q, want %s", got, g.addr)
		}
		if got := s.Header.Get("X-Forwarded-Proto"); got != "http" {
			t.Fatalf("upstream saw X-Forwarded-Proto %q, want http", got)
		}
		if got := s.Header.Get("Forwarded"); got != "" {
			t.Fatalf("upstream saw the client's Forwarded %q", got)
		}
		// What services make of it.
		if got := auth.ClientAddr(&http.Request{Header: s.Header, RemoteAddr: s.RemoteAddr}); got != "127.0.0.1" {
			t.Fatalf("the upstream takes the client to be %s, want 127.0.0.1", got)
		}
	})
	t.Run("host preserved", func(t *testing.T) {
		g.do(t, request{path: "/v1/products/p-1", host: "shop.example"}).wantStatus(t, http.StatusOK)
		s := catalog.last(t)
		if s.Host != "shop.example" {
			t.Fatalf("upstream saw Host %q, want shop.example", s.Host)
		}
		if got := s.Header.Get("X-Forwarded-Host"); got != "shop.example" {
			t.Fatalf("upstream saw X-Forwarded-Host %q, want shop.example", got)
		}
	})
	t.Run("trace context continued", func(t *testing.T) {
		const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		g.get(t, "/v1/products", "traceparent", "00-"+traceID+"-"+clientSpan+"-01").wantStatus(t, http.StatusOK)
		tp := catalog.last(t).Header.Values("traceparent")
		if len(tp) != 1 {
			t.Fatalf("upstream saw traceparent %q, want one", tp)
		}
		parts := strings.Split(tp[0], "-")
		if len(parts) != 4 || parts[1] != traceID {
			t.Fatalf("upstream saw traceparent %q, want trace id %s", tp[0], traceID)
		}
		// The parent is the gateway's span, not the client's.
		if parts[2] == clientSpan {
			t.Fatalf("upstream saw traceparent %q: the gateway passed the client's through", tp[0])
		}
	})
	t.Run("response passed back", func(t *testing.T) {
		resp := g.get(t, "/v1/products/p-1")
		if resp.header.Get("ETag") != `"v1"` || resp.header.Get("Content-Type") != "application/json" {
			t.Fatalf("response headers %v lost the upstream's", resp.header)
		}
	})
}

// TestForwardsTheClientFoundBehindATrustedProxy checks that behind a trusted
// load balancer services see the client, not the balancer: they take the last
// X-Forwarded-For hop as the client (auth.ClientAddr).
func TestForwardsTheClientFoundBehindATrustedProxy(t *testing.T) {
	catalog := newUpstream(t, "catalog", catalogFragment, nil)
	cfg := testConfig(t)
	cfg.Gateway.TrustedProxies = []string{"127.0.0.0/8", "10.0.0.0/8"}
	g := startGateway(t, cfg, catalog)

	g.get(t, "/v1/products", "X-Forwarded-For", "198.51.100.9, 203.0.113.7, 10.0.0.3").wantStatus(t, http.StatusOK)
	s := catalog.last(t)
	if got := auth.ClientAddr(&http.Request{Header: s.Header, RemoteAddr: s.RemoteAddr}); got != "203.0.113.7" {
		t.Fatalf("upstream saw X-Forwarded-For %q and takes the client to be %s, want 203.0.113.7", s.Header.Values("X-Forwarded-For"), got)
	}
}

// TestAnswersUpstreamFailuresWithProblems checks the edge's own errors.
func TestAnswersUpstreamFailuresWithProblems(t *testing.T) {
	t.Run("upstream down", func(t *testing.T) {
		catalog := newUpstream(t, "catalog", catalogFragment, nil)
		catalog.srv.Close()
		g := startGateway(t, testConfig(t), catalog)
		resp := g.get(t, "/v1/products")
		resp.wantProblem(t, http.StatusServiceUnavailable)
		if s, err := strconv.Atoi(resp.header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("Retry-After %q, want whole seconds", resp.header.Get("Retry-After"))
		}
		if ids := resp.header.Values("X-Request-Id"); len(ids) != 1 {
			t.Fatalf("X-Request-Id %q, want one", ids)
		}
	})
	t.Run("upstream too slow", func(t *testing.T) {
		catalog := newUpstream(t, "catalog", catalogFragment, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(20 * time.Second):
			}
		})
		cfg := testConfig(t)
		cfg.Gateway.UpstreamTimeout = 200 * time.Millisecond
		g := startGateway(t, cfg, catalog)
		start := time.Now()
		g.get(t, "/v1/products").wantProblem(t, http.StatusGatewayTimeout)
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("the gateway answered after %s; upstream_timeout is 200ms", d)
		}
	})
	t.Run("body too large", func(t *testing.T) {
		cart := newUpstream(t, "cart", cartFragment, nil)
		cfg := testConfig(t)
		g := startGateway(t, cfg, cart)
		big := bytes.Repeat([]byte("x"), int(cfg.HTTP.MaxBodyBytes)+1)

		// With a Content-Length the edge refuses before any hop.
		g.do(t, request{method: http.MethodPost, path: "/v1/carts", body: string(big)}).wantProblem(t, http.StatusRequestEntityTooLarge)
		cart.wantUntouched(t)

		// A chunked body is found too large only while it streams: the
		// upstream may have started on the request, but it must never see
		// a body that ends cleanly short of what the client sent.
		r, err := http.NewRequest(http.MethodPost, g.url+"/v1/carts", io.MultiReader(bytes.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		r.ContentLength = -1
		send(t, r).wantProblem(t, http.StatusRequestEntityTooLarge)
		for _, s := range cart.seen() {
			if s.BodyErr == nil {
				t.Fatalf("the upstream read a complete %d-byte body cut from an oversized one", len(s.Body))
			}
		}

		// Exactly the limit is fine, either way.
		limit := big[:cfg.HTTP.MaxBodyBytes]
		g.do(t, request{method: http.MethodPost, path: "/v1/carts", body: string(limit)}).wantStatus(t, http.StatusOK)
		if s := cart.last(t); s.BodyErr != nil || len(s.Body) != len(limit) {
			t.Fatalf("upstream read %d bytes (%v), want %d", len(s.Body), s.BodyErr, len(limit))
		}
		r, err = http.NewRequest(http.MethodPost, g.url+"/v1/carts", io.MultiReader(bytes.NewReader(limit)))
		if err != nil {
			t.Fatal(err)
		}
		r.ContentLength = -1
		send(t, r).wantStatus(t, http.StatusOK)
		if s := cart.last(t); s.BodyErr != nil || len(s.Body) != len(limit) {
			t.Fatalf("upstream read %d bytes (%v), want %d", len(s.Body), s.BodyErr, len(limit))
		}
	})
}
