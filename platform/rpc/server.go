package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/telemetry"
)

// errPanicked is all a client learns of a handler that panicked; the panic
// value and stack go to the log only.
var errPanicked = errors.New("internal error")

// compressMinBytes is the smallest response a server compresses.
const compressMinBytes = 4 << 10

// HandlerOptions returns the options every Connect handler of a Mercato
// service is built with, outermost first: a server span that continues the
// caller's W3C trace, RED metrics per procedure and code on reg, a log line
// for each failed call, and recovery that turns a panic into CodeInternal.
//
//	path, h := catalogv1connect.NewCatalogServiceHandler(svc, opts...)
//
// Calling it again with the same registry is fine: the metrics are shared.
func HandlerOptions(tp trace.TracerProvider, reg prometheus.Registerer, log *slog.Logger) ([]connect.HandlerOption, error) {
	tracing, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(tp),
		otelconnect.WithPropagator(telemetry.Propagator),
		// Callers are Mercato services behind mTLS, so their trace context is
		// continued rather than only linked to a new root.
		otelconnect.WithTrustRemote(),
		// RED metrics go to Prometheus below; OpenTelemetry metrics would
		// fall back to the global meter provider.
		otelconnect.WithoutMetrics(),
	)
	if err != nil {
		return nil, fmt.Errorf("rpc tracing: %w", err)
	}
	m, err := newServerMetrics(reg)
	if err != nil {
		return nil, err
	}
	return []connect.HandlerOption{
		// connect-go compresses every response a client accepts gzip for,
		// however small; internal answers are mostly a few hundred bytes,
		// where gzip costs more CPU than the bytes it saves on a LAN.
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithInterceptors(tracing, m, errorLogger{log: log}),
		// Last, so that the interceptors above see the panic as CodeInternal.
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, v any) error {
			log.ErrorContext(ctx, "rpc handler panicked", "procedure", spec.Procedure, "panic", v, "stack", string(debug.Stack()))
			return connect.NewError(connect.CodeInternal, errPanicked)
		}),
	}, nil
}

// serverMetrics records the RED metrics of the RPCs a process serves.
type serverMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	requests, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rpc_server_requests_total",
		Help: "RPCs served, by procedure and Connect code.",
	}, []string{"procedure", "code"}))
	if err != nil {
		return nil, err
	}
	duration, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "rpc_server_duration_seconds",
		Help:    "Time to serve an RPC, by procedure.",
		Buckets: telemetry.LatencyBuckets,
	}, []string{"procedure"}))
	if err != nil {
		return nil, err
	}
	return &serverMetrics{requests: requests, duration: duration}, nil
}

func (m *serverMetrics) observe(procedure string, start time.Time, err error) {
	m.requests.WithLabelValues(procedure, codeLabel(err)).Inc()
	m.duration.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
}

// WrapUnary measures unary handlers.
func (m *serverMetrics) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		m.observe(req.Spec().Procedure, start, err)
		return resp, err
	}
}

// WrapStreamingClient leaves clients alone; Client has its own metrics.
func (m *serverMetrics) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler measures a streaming handler from start to return.
func (m *serverMetrics) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		m.observe(conn.Spec().Procedure, start, err)
		return err
	}
}

// errorLogger logs each failed RPC once, at a level that says whose fault it
// was: the server's (error), an overload or timeout (warn), or the caller's
// (debug, since the caller already got the error).
type errorLogger struct{ log *slog.Logger }

// WrapUnary logs failed unary handlers.
func (l errorLogger) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			l.record(ctx, req.Spec().Procedure, err)
		}
		return resp, err
	}
}

// WrapStreamingClient leaves clients alone.
func (l errorLogger) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler logs failed streaming handlers.
func (l errorLogger) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		if err != nil {
			l.record(ctx, conn.Spec().Procedure, err)
		}
		return err
	}
}

func (l errorLogger) record(ctx context.Context, procedure string, err error) {
	if errors.Is(err, errPanicked) {
		return // already logged with its stack by the recover handler
	}
	code := connect.CodeOf(err)
	level := slog.LevelDebug
	switch code {
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		level = slog.LevelError
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted, connect.CodeUnimplemented, connect.CodeAborted:
		level = slog.LevelWarn
	}
	l.log.Log(ctx, level, "rpc failed", "procedure", procedure, "code", code.String(), "err", err)
}
