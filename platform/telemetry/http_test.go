package telemetry_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/telemetry"
)

// instrumented is a mux behind telemetry.Instrument on a loopback server,
// with everything Instrument reports going somewhere the test can read.
type instrumented struct {
	url   string
	reg   *prometheus.Registry
	spans *tracetest.SpanRecorder
	logs  *platformtest.Buffer
}

func serveInstrumented(t *testing.T, mux *http.ServeMux) *instrumented {
	t.Helper()
	tp, spans := tracerProvider(t)
	f := &instrumented{reg: prometheus.NewRegistry(), spans: spans, logs: &platformtest.Buffer{}}
	h := telemetry.Instrument(mux, tp.Tracer("http"), telemetry.NewHTTPMetrics(f.reg), telemetry.NewLogger(f.logs, "json", nil, "test"))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// seen is what a handler found in its request context.
type seen struct {
	TraceID   string `json:"trace_id"`
	SpanID    string `json:"span_id"`
	Recording bool   `json:"recording"`
	RequestID string `json:"request_id"`
}

// echoContext answers with what the handler sees.
func echoContext(w http.ResponseWriter, r *http.Request) {
	span := trace.SpanFromContext(r.Context())
	_ = json.NewEncoder(w).Encode(seen{
		TraceID:   span.SpanContext().TraceID().String(),
		SpanID:    span.SpanContext().SpanID().String(),
		Recording: span.IsRecording(),
		RequestID: telemetry.RequestID(r.Context()),
	})
}

// get sends a GET with headers and returns the response with its body read.
func get(t *testing.T, url string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	return do(t, http.MethodGet, url, headers)
}

func do(t *testing.T, method, url string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, url, err)
	}
	return resp, body
}

func decodeSeen(t *testing.T, body []byte) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode handler view %q: %v", body, err)
	}
	return s
}

func TestInstrumentRequestID(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /echo", echoContext)
	f := serveInstrumented(t, mux)

	valid128 := strings.Repeat("a", 128)
	tests := []struct {
		name     string
		incoming string
		keep     bool // the incoming id is kept; otherwise it is the trace id
	}{
		{name: "none", incoming: ""},
		{name: "valid", incoming: "order-42_retry.1", keep: true},
		{name: "128 characters", incoming: valid128, keep: true},
		{name: "too long", incoming: valid128 + "a"},
		{name: "space", incoming: "bad id"},
		{name: "semicolon", incoming: "id;drop"},
		{name: "slash", incoming: "a/b"},
		{name: "non-ASCII", incoming: "ünicode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{}
			if tt.incoming != "" {
				headers[telemetry.RequestIDHeader] = tt.incoming
			}
			resp, body := get(t, f.url+"/echo", headers)
			s := decodeSeen(t, body)
			got := resp.Header.Get(telemetry.RequestIDHeader)
			want := s.TraceID
			if tt.keep {
				want = tt.incoming
			}
			if got != want {
				t.Errorf("X-Request-Id = %q, want %q", got, want)
			}
			if s.RequestID != got {
				t.Errorf("handler saw request id %q, response carries %q", s.RequestID, got)
			}
			if !tt.keep && !isHex(got, 32) {
				t.Errorf("generated request id %q is not a 32-digit hex trace id", got)
			}
		})
	}
}

func isHex(s string, n int) bool {
	if len(s) != n || strings.Trim(s, "0") == "" {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func TestInstrumentContinuesIncomingTrace(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /echo", echoContext)
	f := serveInstrumented(t, mux)

	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7"
	)
	tests := []struct {
		name        string
		traceparent string
		continues   bool
	}{
		{name: "sampled parent", traceparent: "00-" + traceID + "-" + spanID + "-01", continues: true},
		{name: "unsampled parent", traceparent: "00-" + traceID + "-" + spanID + "-00", continues: true},
		{name: "malformed", traceparent: "00-" + traceID + "-nothex-01"},
		{name: "all-zero trace id", traceparent: "00-00000000000000000000000000000000-" + spanID + "-01"},
		{name: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{}
			if tt.traceparent != "" {
				headers["traceparent"] = tt.traceparent
			}
			resp, body := get(t, f.url+"/echo", headers)
			s := decodeSeen(t, body)
			if got := s.TraceID == traceID; got != tt.continues {
				t.Errorf("handler's trace id %s; continues %s = %v, want %v", s.TraceID, traceID, got, tt.continues)
			}
			if !isHex(s.TraceID, 32) || !isHex(s.SpanID, 16) || s.SpanID == spanID {
				t.Errorf("handler's span %s/%s is not a new valid server span", s.TraceID, s.SpanID)
			}
			if rid := resp.Header.Get(telemetry.RequestIDHeader); rid != s.TraceID {
				t.Errorf("X-Request-Id = %q, want the trace id %q", rid, s.TraceID)
			}
			span := endedSpan(t, f.spans, s.SpanID)
			if span.SpanKind() != trace.SpanKindServer {
				t.Errorf("span kind = %v, want server", span.SpanKind())
			}
			wantParent := ""
			if tt.continues {
				wantParent = spanID
			}
			if got := parentOf(span); got != wantParent {
				t.Errorf("span parent = %q, want %q", got, wantParent)
			}
		})
	}
}

// endedSpan returns the ended span with id spanID; the server ends it after
// the response is written, so it is polled for.
func endedSpan(t *testing.T, rec *tracetest.SpanRecorder, spanID string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	platformtest.Eventually(t, "span "+spanID+" ends", func() bool {
		for _, s := range rec.Ended() {
			if s.SpanContext().SpanID().String() == spanID {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

func parentOf(s sdktrace.ReadOnlySpan) string {
	if !s.Parent().IsValid() {
		return ""
	}
	return s.Parent().SpanID().String()
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestInstrumentNamesSpansAfterTheRoute(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", echoContext)
	mux.HandleFunc("/legacy/", echoContext)
	mux.HandleFunc("GET /unavailable", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		echoContext(w, r)
	})
	mux.HandleFunc("GET /failing", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		echoContext(w, r)
	})
	mux.HandleFunc("GET /teapot", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		echoContext(w, r)
	})
	f := serveInstrumented(t, mux)

	tests := []struct {
		method, path string
		wantName     string
		wantRoute    string
		wantStatus   int
	}{
		{"GET", "/items/42", "GET /items/{id}", "/items/{id}", 200},
		{"POST", "/legacy/x", "POST /legacy/", "/legacy/", 200},
		{"GET", "/unavailable", "GET /unavailable", "/unavailable", 503},
		{"GET", "/failing", "GET /failing", "/failing", 500},
		{"GET", "/teapot", "GET /teapot", "/teapot", 418},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := do(t, tt.method, f.url+tt.path, nil)
			span := endedSpan(t, f.spans, decodeSeen(t, body).SpanID)
			if span.Name() != tt.wantName {
				t.Errorf("span name = %q, want %q", span.Name(), tt.wantName)
			}
			a := attrs(span)
			if got := a["http.route"].AsString(); got != tt.wantRoute {
				t.Errorf("http.route = %q, want %q", got, tt.wantRoute)
			}
			if got := a["http.request.method"].AsString(); got != tt.method {
				t.Errorf("http.request.method = %q, want %q", got, tt.method)
			}
			if got := a["http.response.status_code"].AsInt64(); got != int64(tt.wantStatus) {
				t.Errorf("http.response.status_code = %d, want %d", got, tt.wantStatus)
			}
			if got := a["mercato.request_id"].AsString(); got != resp.Header.Get(telemetry.RequestIDHeader) {
				t.Errorf("mercato.request_id = %q, want the response's X-Request-Id", got)
			}
			if isError := span.Status().Code == codes.Error; isError != (tt.wantStatus >= 500) {
				t.Errorf("status %d gave span status %v", tt.wantStatus, span.Status())
			}
		})
	}
}

func TestInstrumentRecordsREDMetrics(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "item") })
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	f := serveInstrumented(t, mux)

	requests := []struct{ method, path string }{
		{"GET", "/items/1"},
		{"GET", "/items/2"},
		{"POST", "/items"},
		{"GET", "/nowhere"},  // no pattern matches: the mux's 404
		{"DELETE", "/items"}, // the path matches another method: the mux's 405
	}
	for _, r := range requests {
		do(t, r.method, f.url+r.path, nil)
	}

	want := `
# HELP http_server_requests_total HTTP requests served, by route pattern, method and status code.
# TYPE http_server_requests_total counter
http_server_requests_total{code="200",method="GET",route="GET /items/{id}"} 2
http_server_requests_total{code="201",method="POST",route="POST /items"} 1
http_server_requests_total{code="404",method="GET",route="unmatched"} 1
http_server_requests_total{code="405",method="DELETE",route="unmatched"} 1
# HELP http_server_requests_in_flight HTTP requests being served.
# TYPE http_server_requests_in_flight gauge
http_server_requests_in_flight 0
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "http_server_requests_total", "http_server_requests_in_flight"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(f.reg, "http_server_request_duration_seconds"); err != nil || n != 4 {
		t.Errorf("duration series = %d (%v), want 4 (route, method pairs)", n, err)
	}
	durations := []struct {
		route, method string
		want          uint64
	}{
		{"GET /items/{id}", "GET", 2},
		{"POST /items", "POST", 1},
		{"unmatched", "GET", 1},
		{"unmatched", "DELETE", 1},
	}
	for _, d := range durations {
		if got := histogramCount(t, f.reg, "http_server_request_duration_seconds", d.route, d.method); got != d.want {
			t.Errorf("duration samples of %s %s = %d, want %d", d.method, d.route, got, d.want)
		}
	}
}

// histogramCount returns the sample count of the series of name with the
// route and method labels.
func histogramCount(t *testing.T, reg *prometheus.Registry, name, route, method string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["method"] == method {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func TestInstrumentRecordsTheFinalStatus(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    int
	}{
		{"writes nothing", func(w http.ResponseWriter, r *http.Request) {}, 200},
		{"writes a body", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hi") }, 200},
		{"writes 204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }, 204},
		{"early hints then 201", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusCreated)
		}, 201},
		{"a second status is ignored", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusConflict)
			w.WriteHeader(http.StatusOK)
		}, 409},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("GET /x", tt.handler)
			f := serveInstrumented(t, mux)
			resp, _ := get(t, f.url+"/x", nil)
			if resp.StatusCode != tt.want {
				t.Errorf("client got %d, want %d", resp.StatusCode, tt.want)
			}
			want := fmt.Sprintf(`
# HELP http_server_requests_total HTTP requests served, by route pattern, method and status code.
# TYPE http_server_requests_total counter
http_server_requests_total{code="%d",method="GET",route="GET /x"} 1
`, tt.want)
			if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "http_server_requests_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestInstrumentRecoversPanics(t *testing.T) {
	const secret = "db password hunter2"
	tests := []struct {
		name  string
		value any
	}{
		{"string", secret},
		{"error", errors.New(secret)},
		{"struct", struct{ Password string }{secret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) { panic(tt.value) })
			f := serveInstrumented(t, mux)

			resp, body := get(t, f.url+"/boom", nil)
			if resp.StatusCode != http.StatusInternalServerError {
				t.Errorf("status = %d, want 500", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != problem.ContentType {
				t.Errorf("Content-Type = %q, want %q", ct, problem.ContentType)
			}
			var p problem.Problem
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("body is not a problem: %v\n%s", err, body)
			}
			if p.Status != 500 || p.Type != problem.TypeURI("internal") {
				t.Errorf("problem = %+v, want the internal problem", p)
			}
			for _, leak := range []string{"hunter2", "goroutine", "panic", ".go:"} {
				if strings.Contains(string(body), leak) {
					t.Errorf("response leaks %q: %s", leak, body)
				}
			}

			rid := resp.Header.Get(telemetry.RequestIDHeader)
			var rec map[string]any
			platformtest.Eventually(t, "the panic is logged", func() bool { return strings.Contains(f.logs.String(), "handler panicked") })
			rec = recordWithMsg(t, f.logs.String(), "handler panicked")
			if level := rec["level"]; level != "ERROR" {
				t.Errorf("level = %v, want ERROR", level)
			}
			if !strings.Contains(fmt.Sprint(rec["panic"]), "hunter2") {
				t.Errorf("logged panic = %v, want the panic value", rec["panic"])
			}
			if !strings.Contains(fmt.Sprint(rec["stack"]), "goroutine") {
				t.Errorf("logged stack = %.80v..., want a stack trace", rec["stack"])
			}
			if rec["trace_id"] != rid || rec["request_id"] != rid || rec["path"] != "/boom" {
				t.Errorf("log record %v does not identify request %s", rec, rid)
			}

			want := `
# HELP http_server_requests_total HTTP requests served, by route pattern, method and status code.
# TYPE http_server_requests_total counter
http_server_requests_total{code="500",method="GET",route="GET /boom"} 1
`
			if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "http_server_requests_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestInstrumentAbortsAResponseThatPanicsMidway(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /half", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"items":[`)
		http.NewResponseController(w).Flush()
		panic("lost the database halfway")
	})
	f := serveInstrumented(t, mux)

	resp, err := http.Get(f.url + "/half")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("a response cut short by a panic read as complete: %q", body)
	}
	platformtest.Eventually(t, "the panic is logged", func() bool { return strings.Contains(f.logs.String(), "handler panicked") })
	want := `
# HELP http_server_requests_total HTTP requests served, by route pattern, method and status code.
# TYPE http_server_requests_total counter
http_server_requests_total{code="500",method="GET",route="GET /half"} 1
`
	platformtest.Eventually(t, "the request is counted", func() bool {
		return testutil.GatherAndCompare(f.reg, strings.NewReader(want), "http_server_requests_total") == nil
	})
}

func TestInstrumentRepanicsErrAbortHandler(t *testing.T) {
	abort := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	tp, spans := tracerProvider(t)
	logs := &platformtest.Buffer{}
	h := telemetry.Instrument(abort, tp.Tracer("http"), telemetry.NewHTTPMetrics(prometheus.NewRegistry()), telemetry.NewLogger(logs, "json", nil, "test"))

	t.Run("called directly", func(t *testing.T) {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler", v)
			}
			if n := len(spans.Ended()); n != 1 {
				t.Errorf("%d spans ended, want the server span ended before the re-panic", n)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		t.Error("ServeHTTP returned normally")
	})

	t.Run("behind a server", func(t *testing.T) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		resp, err := http.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %s, want the connection aborted", resp.Status)
		}
	})

	if strings.Contains(logs.String(), "handler panicked") {
		t.Errorf("an abort was logged as a panic:\n%s", logs.String())
	}
}

func TestInstrumentRecorderSupportsResponseController(t *testing.T) {
	proceed := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// SetWriteDeadline is not on the recorder: it works only if Unwrap
		// reaches the server's writer.
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			http.Error(w, "SetWriteDeadline: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "first\n")
		if err := rc.Flush(); err != nil {
			_, _ = io.WriteString(w, "flush failed: "+err.Error()+"\n")
			return
		}
		select {
		case <-proceed:
			_, _ = io.WriteString(w, "second\n")
		case <-time.After(wait):
			_, _ = io.WriteString(w, "first line never reached the client\n")
		}
	})
	mux.HandleFunc("GET /hijack", func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, "Hijack: "+err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = buf.Flush()
	})
	f := serveInstrumented(t, mux)

	t.Run("flush", func(t *testing.T) {
		resp, err := http.Get(f.url + "/stream")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		r := bufio.NewReader(resp.Body)
		line, err := r.ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first line = %q, %v", line, err)
		}
		close(proceed) // the first line arrived while the handler was still running
		rest, _ := io.ReadAll(r)
		if string(rest) != "second\n" {
			t.Errorf("rest = %q, want second", rest)
		}
	})

	t.Run("hijack", func(t *testing.T) {
		resp, body := get(t, f.url+"/hijack", nil)
		if resp.StatusCode != http.StatusOK || string(body) != "hijacked" {
			t.Errorf("got %d %q, want the hijacked connection's response", resp.StatusCode, body)
		}
	})
}
