package telemetry_test

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/mercato/mercato/platform/telemetry"
)

// collector is an OTLP/HTTP trace receiver on loopback that keeps what it
// is sent.
type collector struct {
	url string

	mu       sync.Mutex
	requests int
	spans    []*tracepb.Span
	services []string // service.name of each resource received
	errs     []string // requests a real collector would refuse
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		c.errs = append(c.errs, r.Method+" "+r.URL.Path)
		http.NotFound(w, r)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		c.errs = append(c.errs, "content type "+ct)
		http.Error(w, "unsupported media type", http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			c.errs = append(c.errs, "gzip: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil || len(raw) == 0 {
		c.errs = append(c.errs, "empty or unreadable body")
		http.Error(w, "empty body", http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		c.errs = append(c.errs, "decode: "+err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				c.services = append(c.services, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// received returns the names of the spans received, by trace id (hex).
func (c *collector) received() (requests int, spans map[string][]string, services, errs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	spans = map[string][]string{}
	for _, s := range c.spans {
		id := trace.TraceID(s.GetTraceId()).String()
		spans[id] = append(spans[id], s.GetName())
	}
	return c.requests, spans, append([]string(nil), c.services...), append([]string(nil), c.errs...)
}

func TestNewTracingExportsSpansOverOTLP(t *testing.T) {
	tests := []struct {
		name     string
		endpoint func(base string) string
	}{
		{"base URL", func(base string) string { return base }},
		{"base URL with a trailing slash", func(base string) string { return base + "/" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := newCollector(t)
			ctx := context.Background()
			tr, err := telemetry.NewTracing(ctx, "order", tt.endpoint(col.url), 1)
			if err != nil {
				t.Fatalf("NewTracing: %v", err)
			}
			ctx, parent := tr.Tracer("test").Start(ctx, "checkout")
			_, child := tr.Tracer("test").Start(ctx, "reserve")
			if !parent.IsRecording() || !parent.SpanContext().IsSampled() {
				t.Errorf("with an endpoint and ratio 1 a new trace is not sampled")
			}
			child.End()
			parent.End()
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}

			requests, spans, services, errs := col.received()
			if len(errs) > 0 {
				t.Fatalf("collector refused requests: %v", errs)
			}
			if requests == 0 {
				t.Fatal("nothing was exported")
			}
			got := spans[parent.SpanContext().TraceID().String()]
			if len(got) != 2 || !contains(got, "checkout") || !contains(got, "reserve") {
				t.Errorf("spans of the trace = %v, want checkout and reserve", got)
			}
			for _, s := range services {
				if s != "mercato-order" {
					t.Errorf("service.name = %q, want mercato-order", s)
				}
			}
			if len(services) == 0 {
				t.Error("no resource named its service")
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestNewTracingFollowsASampledParentAtRatioZero(t *testing.T) {
	col := newCollector(t)
	tr, err := telemetry.NewTracing(context.Background(), "order", col.url, 0)
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	_, root := tr.Tracer("test").Start(context.Background(), "new trace")
	root.End()
	if root.SpanContext().IsSampled() || !root.SpanContext().IsValid() {
		t.Errorf("at ratio 0 a new trace got %v, want a valid unsampled span context", root.SpanContext())
	}

	sampled := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		SpanID:     trace.SpanID{0xbb, 1, 2, 3, 4, 5, 6, 7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	_, child := tr.Tracer("test").Start(trace.ContextWithRemoteSpanContext(context.Background(), sampled), "continued")
	child.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	_, spans, _, errs := col.received()
	if len(errs) > 0 {
		t.Fatalf("collector refused requests: %v", errs)
	}
	if got := spans[sampled.TraceID().String()]; len(got) != 1 || got[0] != "continued" {
		t.Errorf("spans of the sampled parent's trace = %v, want [continued]", got)
	}
	if got := spans[root.SpanContext().TraceID().String()]; len(got) != 0 {
		t.Errorf("an unsampled new trace was exported: %v", got)
	}
}

func TestNewTracingWithoutEndpointExportsNothing(t *testing.T) {
	col := newCollector(t)
	// Even a collector named by the standard variables gets nothing: export
	// happens only when Mercato's own setting names an endpoint.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.url)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", col.url+"/v1/traces")

	tr, err := telemetry.NewTracing(context.Background(), "order", "", 1)
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	ctx, parent := tr.Tracer("test").Start(context.Background(), "checkout")
	_, child := tr.Tracer("test").Start(ctx, "reserve")
	for _, s := range []trace.Span{parent, child} {
		sc := s.SpanContext()
		if !sc.IsValid() {
			t.Errorf("span context %v is not valid; logs could not carry trace_id", sc)
		}
		if s.IsRecording() || sc.IsSampled() {
			t.Errorf("span %v is recorded without an endpoint", sc)
		}
	}
	if child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("child trace id %s, want the parent's %s", child.SpanContext().TraceID(), parent.SpanContext().TraceID())
	}
	child.End()
	parent.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if requests, _, _, _ := col.received(); requests != 0 {
		t.Errorf("%d export requests without an endpoint, want 0", requests)
	}
}

func TestNewTracingRefusesUnusableEndpoints(t *testing.T) {
	tests := []struct {
		endpoint string
		ok       bool
	}{
		{"http://otel-collector:4318", true},
		{"https://otel.example.com", true},
		{"http://127.0.0.1:4318/", true},
		{"otel-collector:4318", false}, // no scheme
		{"127.0.0.1:4318", false},
		{"http://", false},
		{"grpc://otel-collector:4317", false},
		{"http://bad host:4318", false},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			tr, err := telemetry.NewTracing(context.Background(), "order", tt.endpoint, 1)
			if (err == nil) != tt.ok {
				t.Errorf("NewTracing(%q) error = %v, want ok %v", tt.endpoint, err, tt.ok)
			}
			if err == nil {
				_ = tr.Shutdown(context.Background())
			} else if !strings.Contains(err.Error(), tt.endpoint) {
				t.Errorf("error %q does not name the endpoint", err)
			}
		})
	}
}
