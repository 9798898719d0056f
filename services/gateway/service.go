package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/openapi"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/service"
	"github.com/mercato/mercato/platform/telemetry"
)

// Name is the gateway's service name.
const Name = "gateway"

// Upstream is a service behind the gateway and the public operations it owns,
// described by its OpenAPI fragment.
type Upstream struct {
	Name    string
	OpenAPI []byte
}

// Setup returns the gateway's service setup for the given upstreams.
func Setup(upstreams []Upstream) service.Setup {
	return func(ctx context.Context, env *service.Env) error {
		return run(ctx, env, upstreams)
	}
}

func run(ctx context.Context, env *service.Env, upstreams []Upstream) error {
	cfg := env.Config.Get()
	rdb, err := env.RedisDegradable(ctx)
	if err != nil {
		return err
	}
	ip, err := newClientIP(cfg.Gateway.TrustedProxies)
	if err != nil {
		return fmt.Errorf("gateway.trusted_proxies: %w", err)
	}
	limiter := newRateLimiter(env.Config, rdb, env.Keys(), ip, env.Log, env.Registry)
	transport := upstreamTransport()
	buffers := &bufferPool{}
	verifier, err := env.Auth(ctx)
	if err != nil {
		return err
	}

	// Assemble the document before registering any route: it names the
	// services when two describe one path, where ServeMux would only panic.
	fragments := map[string]*openapi.Fragment{}
	for _, u := range upstreams {
		f, err := openapi.ParseFragment(u.OpenAPI)
		if err != nil {
			return fmt.Errorf("%s: %w", u.Name, err)
		}
		fragments[u.Name] = f
	}
	base, err := openapi.ParseFragment(openapi.Common)
	if err != nil {
		return err
	}
	schemes := base.SecuritySchemes()
	for _, f := range fragments {
		schemes = append(schemes, f.SecuritySchemes()...)
	}
	doc, err := openapi.Assemble(auth.Issuer(cfg), base, fragments)
	if err != nil {
		return err
	}
	mux := env.Server.Mux()
	if err := handle(mux, "GET /openapi.json", serveDocument(doc)); err != nil {
		return err
	}
	for _, u := range upstreams {
		target, err := url.Parse(cfg.Service(u.Name).URL)
		if err != nil {
			return fmt.Errorf("services.%s.url: %w", u.Name, err)
		}
		proxy := newProxy(u.Name, target, transport, buffers, ip, env.Config, env.Log)
		for _, op := range fragments[u.Name].Operations() {
			p, err := policyFor(op, schemes)
			if err != nil {
				return fmt.Errorf("%s: %w", u.Name, err)
			}
			if p.forcedAdmin {
				env.Log.Warn("admin operation does not require the admin scope in its OpenAPI security; requiring it anyway",
					"upstream", u.Name, "operation", op.Pattern())
			}
			// The rate limit comes first: a flood of made-up tokens must
			// not cost a signature check each.
			if err := handle(mux, op.Pattern(), limiter.wrap(p.wrap(verifier, proxy))); err != nil {
				return fmt.Errorf("%s: %w", u.Name, err)
			}
		}
		env.Server.AddCheck("upstream:"+u.Name, upstreamReady(target, transport))
	}
	env.Server.Use(corsHandler(env.Config))
	return nil
}

// handle registers a route, returning as an error what ServeMux would panic
// with: a pattern that is not one, or one that clashes with a route already
// registered (two services' {id} and {product_id} on the same path, say, or
// a route of the gateway's own).
func handle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("route %s: %v", pattern, v)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// upstreamTransport keeps many idle connections to each service: the gateway
// multiplexes every client onto them.
func upstreamTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   2048,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// bufferPool lends the proxy its copy buffers; without one, ReverseProxy
// allocates 32 KiB per response, which at 10,000 requests/s is most of the
// gateway's garbage.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte {
	if buf, ok := b.pool.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }

// newProxy forwards requests to target unchanged but for the forwarding
// headers, the request id, the trace context and the identity-like headers
// it drops.
func newProxy(name string, target *url.URL, transport http.RoundTripper, buffers httputil.BufferPool, ip *clientIP, store *config.Store, log *slog.Logger) http.Handler {
	rp := &httputil.ReverseProxy{
		Transport:  transport,
		BufferPool: buffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			// Services take the last X-Forwarded-For hop as the client
			// (auth.ClientAddr): behind a trusted load balancer that must be
			// the client the gateway found, not the balancer. The client's
			// own hops were dropped before Rewrite and are not believed.
			pr.Out.Header.Set("X-Forwarded-For", ip.of(pr.In))
			// Identity reaches services only as the Authorization header,
			// which the gateway verified and each service verifies again.
			stripIdentityHeaders(pr.Out.Header)
			ctx := pr.Out.Context()
			pr.Out.Header.Set(telemetry.RequestIDHeader, telemetry.RequestID(ctx))
			telemetry.Propagator.Inject(ctx, propagation.HeaderCarrier(pr.Out.Header))
		},
		ModifyResponse: func(resp *http.Response) error {
			// The gateway already set the request id on the response.
			resp.Header.Del(telemetry.RequestIDHeader)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var p *problem.Problem
			var tooLarge *http.MaxBytesError
			switch {
			case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
				return // the client went away
			case errors.As(err, &tooLarge):
				// A body without a Content-Length is found too large only
				// while it streams to the service; that is the client's
				// fault, not the service's.
				problem.Write(w, problem.TooLarge(tooLarge.Limit))
				return
			case errors.Is(err, context.DeadlineExceeded):
				p = problem.New(http.StatusGatewayTimeout, "upstream-timeout", name+" did not answer in time")
			default:
				p = problem.Unavailable(name+" is unavailable", 2*time.Second)
			}
			log.WarnContext(r.Context(), "upstream failed", "upstream", name, "err", err)
			problem.Write(w, p)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		timeout := store.Get().Gateway.UpstreamTimeout
		if timeout > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		rp.ServeHTTP(w, r)
	})
}

// serveDocument serves the assembled OpenAPI document.
func serveDocument(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(doc)
	})
}

// upstreamReady makes the gateway's readiness follow each upstream's.
func upstreamReady(target *url.URL, transport http.RoundTripper) func(context.Context) error {
	client := &http.Client{Transport: transport, Timeout: time.Second}
	readyURL := target.JoinPath("/readyz").String()
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("unreachable")
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("not ready (%d)", resp.StatusCode)
		}
		return nil
	}
}
