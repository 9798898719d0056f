package telemetry

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/mercato/mercato/platform/problem"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader carries a request's id end to end.
const RequestIDHeader = "X-Request-Id"

type requestIDKey struct{}

// RequestID returns the id of the request being served, if any.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey{}).(string)
	return s
}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// LatencyBuckets suit calls from a hundred microseconds to ten seconds.
var LatencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// HTTPMetrics are the RED metrics of one HTTP server.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

// NewHTTPMetrics registers the HTTP server metrics on reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_server_requests_total",
			Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern and method.",
			Buckets: LatencyBuckets,
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "http_server_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

// Instrument wraps an HTTP handler (normally a ServeMux) with what every
// request needs: a request id, a server span continuing any incoming W3C
// trace, RED metrics labelled with the matched route pattern, and recovery
// from panics as a 500 problem without leaking the stack.
func Instrument(h http.Handler, tracer trace.Tracer, m *HTTPMetrics, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
		rid := r.Header.Get(RequestIDHeader)
		if !validRequestID(rid) {
			rid = newRequestID(span.SpanContext())
		}
		w.Header().Set(RequestIDHeader, rid)
		ctx = WithRequestID(ctx, rid)
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(ctx)
		m.inflight.Inc()
		defer func() {
			m.inflight.Dec()
			abort := false
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					span.End()
					panic(v)
				}
				log.ErrorContext(ctx, "handler panicked", "panic", v, "method", r.Method, "path", r.URL.Path, "stack", string(debug.Stack()))
				if rec.wrote {
					// The status line is out: finishing the response normally
					// would pass a truncated body off as complete, so abort
					// the connection (or stream) as net/http does.
					abort = true
				} else {
					problem.Write(rec, problem.Internal())
				}
				rec.status = http.StatusInternalServerError
			}
			route := r.Pattern
			if route == "" || route == "/" {
				// No route matched: the mux's own 404/405, or the server's
				// catch-all that answers them as problems.
				route = "unmatched"
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
			if span.IsRecording() {
				// The span follows OpenTelemetry's "{method} {route}", whose
				// route is the path template: "GET /items/{id}" rather than
				// "GET GET /items/{id}" for a pattern that names its method.
				path := routePath(route)
				span.SetName(r.Method + " " + path)
				span.SetAttributes(
					attribute.String("http.request.method", r.Method),
					attribute.String("http.route", path),
					attribute.Int("http.response.status_code", status),
					attribute.String("mercato.request_id", rid))
				if status >= 500 {
					span.SetStatus(codes.Error, http.StatusText(status))
				}
			}
			span.End()
			if abort {
				panic(http.ErrAbortHandler)
			}
		}()
		h.ServeHTTP(rec, r)
	})
}

// routePath is a ServeMux pattern without its method: "GET /items/{id}"
// becomes "/items/{id}".
func routePath(pattern string) string {
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		return strings.TrimLeft(pattern[i:], " \t")
	}
	return pattern
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func newRequestID(sc trace.SpanContext) string {
	if sc.HasTraceID() {
		return sc.TraceID().String()
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status code written.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status = code
		s.wrote = code >= 200 // 1xx informational responses are not final
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.wrote {
		s.status, s.wrote = http.StatusOK, true
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush supports streaming responses through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		if !s.wrote {
			s.status, s.wrote = http.StatusOK, true
		}
		f.Flush()
	}
}

// Hijack supports protocol upgrades through the recorder.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := s.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("hijack not supported")
}
