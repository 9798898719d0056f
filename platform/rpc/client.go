package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/telemetry"
)

// Client is what one service holds per dependency it calls: the HTTP client,
// base URL and options that a generated Connect client is built from, with
// the dependency's own circuit breaker and bulkhead behind the options.
//
//	c, err := rpc.NewClient("catalog", cfg.Service("catalog").URL, store, tracing.Provider, reg, log)
//	catalog := catalogv1connect.NewCatalogServiceClient(c.HTTPClient(), c.BaseURL(), c.Options()...)
//
// Every unary call made through those options gets a deadline, retries when
// that is safe, fails fast while the breaker is open or the bulkhead is full,
// and is traced and measured. rpc.timeout bounds each attempt (and the
// caller's deadline, when earlier, the whole call), so a call whose caller
// set no deadline ends within (rpc.retries+1)×rpc.timeout plus backoff.
// Settings are read from the store's rpc section on every call, so live
// changes apply without a new Client. Streaming calls are traced only:
// Mercato's internal contracts are unary.
type Client struct {
	dep     string
	baseURL string
	store   *config.Store
	log     *slog.Logger
	http    *http.Client
	opts    []connect.ClientOption
	metrics *clientMetrics

	// Per-dependency series, resolved once.
	inflight     prometheus.Gauge
	breakerState prometheus.Gauge
	rejectedOpen prometheus.Counter
	rejectedFull prometheus.Counter

	pol atomic.Pointer[policies]
	// mu serialises rebuilding the policies; breakers counts the breakers
	// built, numbering each.
	mu       sync.Mutex
	breakers uint64
	// gaugeMu orders writes to the breaker state gauge; liveBreaker is the
	// number of the breaker whose transitions it shows.
	gaugeMu     sync.Mutex
	liveBreaker uint64
}

// NewClient returns the client for the dependency dep (a service name such
// as "catalog", used in metric labels and logs) reached at baseURL. Create
// one per dependency per process and share it: the breaker and bulkhead are
// per Client. Metrics go to reg, which several clients may share; spans go
// to tp.
func NewClient(dep, baseURL string, store *config.Store, tp trace.TracerProvider, reg prometheus.Registerer, log *slog.Logger) (*Client, error) {
	if dep == "" {
		return nil, errors.New("rpc client: dependency name is empty")
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("rpc client %s: base URL %q is not an http:// or https:// URL", dep, baseURL)
	}
	tracing, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(tp),
		otelconnect.WithPropagator(telemetry.Propagator),
		otelconnect.WithoutMetrics(),
	)
	if err != nil {
		return nil, fmt.Errorf("rpc client %s tracing: %w", dep, err)
	}
	m, err := newClientMetrics(reg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		dep:          dep,
		baseURL:      baseURL,
		store:        store,
		log:          log.With("dependency", dep),
		http:         NewHTTPClient(),
		metrics:      m,
		inflight:     m.inflight.WithLabelValues(dep),
		breakerState: m.breakerState.WithLabelValues(dep),
		rejectedOpen: m.rejected.WithLabelValues(dep, "breaker_open"),
		rejectedFull: m.rejected.WithLabelValues(dep, "bulkhead_full"),
	}
	c.current(store.Get().RPC)
	// Outermost first: one client span per logical call (retries happen
	// inside it and share its trace context), then metrics of the logical
	// call, then the resilience policies around each attempt.
	c.opts = []connect.ClientOption{connect.WithInterceptors(tracing, observer{c}, guard{c})}
	return c, nil
}

// HTTPClient is the cleartext HTTP/2 client calls to this dependency use.
func (c *Client) HTTPClient() connect.HTTPClient { return c.http }

// BaseURL is where the dependency is reached, such as http://catalog:8080.
func (c *Client) BaseURL() string { return c.baseURL }

// Dependency is the name the client was created for.
func (c *Client) Dependency() string { return c.dep }

// Options are the client options that give calls their deadline, retries,
// breaker, bulkhead, tracing and metrics. Callers may append their own, such
// as connect.WithGRPC(); the returned slice is theirs.
func (c *Client) Options() []connect.ClientOption { return slices.Clone(c.opts) }

// Close releases the idle connections to the dependency. Calls already made
// finish; the Client must not be used afterwards.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// clientMetrics are the metrics of all clients on one registry.
type clientMetrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inflight     *prometheus.GaugeVec
	retries      *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	breakerState *prometheus.GaugeVec
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	var m clientMetrics
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	m.requests, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rpc_client_requests_total",
		Help: "RPCs made to other services, by dependency, procedure and final Connect code (after retries).",
	}, []string{"dependency", "procedure", "code"}))
	add(err)
	m.duration, err = register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "rpc_client_duration_seconds",
		Help:    "Time an RPC to another service took, retries and backoff included, by dependency and procedure.",
		Buckets: telemetry.LatencyBuckets,
	}, []string{"dependency", "procedure"}))
	add(err)
	m.inflight, err = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rpc_client_in_flight",
		Help: "RPCs to a dependency in progress, to compare with its bulkhead (rpc.max_concurrent).",
	}, []string{"dependency"}))
	add(err)
	m.retries, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rpc_client_retries_total",
		Help: "Retried attempts of idempotent RPCs, by dependency and procedure.",
	}, []string{"dependency", "procedure"}))
	add(err)
	m.rejected, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rpc_client_rejected_total",
		Help: "RPC attempts refused without being sent, by dependency and reason (breaker_open, bulkhead_full).",
	}, []string{"dependency", "reason"}))
	add(err)
	m.breakerState, err = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rpc_client_breaker_state",
		Help: "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
	}, []string{"dependency"}))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &m, nil
}

// observer records the metrics of each logical call, after retries.
type observer struct{ c *Client }

// WrapUnary measures a unary call from the caller's point of view.
func (o observer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		o.c.inflight.Inc()
		resp, err := next(ctx, req)
		o.c.inflight.Dec()
		proc := req.Spec().Procedure
		o.c.metrics.requests.WithLabelValues(o.c.dep, proc, codeLabel(err)).Inc()
		o.c.metrics.duration.WithLabelValues(o.c.dep, proc).Observe(time.Since(start).Seconds())
		return resp, err
	}
}

// WrapStreamingClient leaves streams alone; see Client.
func (o observer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler leaves handlers alone: this is a client interceptor.
func (o observer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
