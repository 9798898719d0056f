// Package server is the one HTTP server setup every Mercato process uses:
// HTTP/1.1 and cleartext HTTP/2 (for Connect and gRPC clients) on one port,
// timeouts, a request body limit, /livez, /readyz and /metrics, problem+json
// for unknown routes, and graceful shutdown that stops accepting, reports not
// ready, drains in-flight requests and then returns.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/telemetry"
)

// Options configure a server.
type Options struct {
	// Name identifies the server in logs.
	Name string
	// Addr is the listen address, such as 127.0.0.1:8080 or :8080.
	Addr string
	// Listener, when set, is used instead of listening on Addr.
	Listener net.Listener
	HTTP     config.HTTPConfig
	Registry *prometheus.Registry
	Tracer   trace.Tracer
	Log      *slog.Logger
	// Pprof serves the Go profiler under /debug/pprof/.
	Pprof bool
}

// Check reports whether a dependency is usable.
type Check func(ctx context.Context) error

// Server is an HTTP server with health endpoints and graceful shutdown.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	srv      *http.Server
	draining atomic.Bool

	metrics    *telemetry.HTTPMetrics
	middleware []func(http.Handler) http.Handler

	mu     sync.Mutex
	checks map[string]Check
	addr   chan net.Addr
}

// New returns a server; register routes on Mux before calling Run.
func New(opts Options) *Server {
	s := &Server{opts: opts, mux: http.NewServeMux(), checks: map[string]Check{}, addr: make(chan net.Addr, 1)}
	s.mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"alive"}` + "\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{Registry: opts.Registry}))
	s.mux.HandleFunc("/", s.notFound)
	if opts.Pprof {
		s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.metrics = telemetry.NewHTTPMetrics(opts.Registry)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{
		ReadHeaderTimeout: opts.HTTP.ReadHeaderTimeout,
		ReadTimeout:       opts.HTTP.ReadTimeout,
		WriteTimeout:      opts.HTTP.WriteTimeout,
		IdleTimeout:       opts.HTTP.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		Protocols:         protocols,
		ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelWarn),
	}
	return s
}

// Mux is where the service registers its routes, with Go 1.22 patterns such
// as "GET /v1/products/{id}". The pattern becomes the route label of metrics.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// Use wraps the route mux in mw (inside tracing and metrics) before the
// server starts; the gateway puts CORS here so that preflight requests never
// reach routing. The first middleware added is the outermost.
func (s *Server) Use(mw func(http.Handler) http.Handler) {
	s.middleware = append(s.middleware, mw)
}

// Handler is the server's whole request path, for tests that serve it with
// httptest.
func (s *Server) Handler() http.Handler {
	var h http.Handler = s.mux
	for i := len(s.middleware) - 1; i >= 0; i-- {
		h = s.middleware[i](h)
	}
	return telemetry.Instrument(limitBody(h, s.opts.HTTP.MaxBodyBytes), s.opts.Tracer, s.metrics, s.opts.Log)
}

// AddCheck makes /readyz depend on check.
func (s *Server) AddCheck(name string, check Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

// Addr returns the address the server listens on once it does.
func (s *Server) Addr(ctx context.Context) (net.Addr, error) {
	select {
	case a := <-s.addr:
		s.addr <- a
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Run serves until ctx ends, then shuts down gracefully within the configured
// shutdown timeout.
func (s *Server) Run(ctx context.Context) error {
	ln := s.opts.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", s.opts.Addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.opts.Addr, err)
		}
	}
	s.srv.Handler = s.Handler()
	s.addr <- ln.Addr()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	s.opts.Log.Info("listening", "server", s.opts.Name, "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	if d := s.opts.HTTP.ShutdownDelay; d > 0 {
		// Keep serving, but answer /readyz with 503, long enough for load
		// balancers to take this instance out of rotation before its
		// listener closes.
		s.opts.Log.Info("draining before shutdown", "server", s.opts.Name, "delay", d)
		time.Sleep(d)
	}
	timeout := s.opts.HTTP.ShutdownTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("shutdown %s: %w", s.opts.Name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// readyz answers 200 when every check passes and the server is not draining,
// and 503 naming the failed checks otherwise.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	results := make(map[string]string, len(checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, check := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := "ok"
			if err := check(ctx); err != nil {
				res = err.Error()
			}
			mu.Lock()
			results[name] = res
			mu.Unlock()
		}()
	}
	wg.Wait()
	var failed []string
	for name, res := range results {
		if res != "ok" {
			failed = append(failed, name)
		}
	}
	sort.Strings(failed)
	if s.draining.Load() {
		failed = append(failed, "shutting down")
	}
	if len(failed) > 0 {
		p := problem.Unavailable(fmt.Sprintf("not ready: %v", failed), time.Second)
		w.Header().Set("Content-Type", problem.ContentType)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(struct {
			*problem.Problem
			Checks map[string]string `json:"checks"`
		}{p, results})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "ready", "checks": results})
}

// notFound answers requests no route matched: 405 when the path exists under
// another method, 404 otherwise, both as problem+json.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		for _, m := range allowed {
			w.Header().Add("Allow", m)
		}
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, "method-not-allowed", r.Method+" is not allowed on "+r.URL.Path))
		return
	}
	problem.Write(w, problem.NotFound("no route for "+r.Method+" "+r.URL.Path))
}

// limitBody refuses bodies over limit: at once when Content-Length says so,
// otherwise when the handler reads past the limit.
func limitBody(h http.Handler, limit int64) http.Handler {
	if limit <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			problem.Write(w, problem.TooLarge(limit))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		h.ServeHTTP(w, r)
	})
}
