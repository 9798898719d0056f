package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/httpapi"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/server"
	"github.com/mercato/mercato/platform/telemetry"
)

func TestLivez(t *testing.T) {
	r := run(t, server.New(options(t)))
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			resp, body := send(t, r.client, method, r.url+"/livez", nil, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if method == http.MethodGet && strings.TrimSpace(body) != `{"status":"alive"}` {
				t.Errorf("body = %q", body)
			}
		})
	}
}

// readiness is the body of /readyz, ready or not.
type readiness struct {
	problem.Problem
	Status any               `json:"status"` // "ready" or the problem's 503
	Checks map[string]string `json:"checks"`
}

func TestReadyz(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(msg string) server.Check {
		return func(context.Context) error { return errors.New(msg) }
	}
	tests := []struct {
		name       string
		checks     map[string]server.Check
		wantStatus int
		wantChecks map[string]string
		wantFailed []string // named in the detail, in order
	}{
		{name: "no checks", wantStatus: 200, wantChecks: map[string]string{}},
		{
			name:       "every check passes",
			checks:     map[string]server.Check{"postgres": ok, "redis": ok},
			wantStatus: 200,
			wantChecks: map[string]string{"postgres": "ok", "redis": "ok"},
		},
		{
			name:       "one check fails",
			checks:     map[string]server.Check{"postgres": down("connection refused"), "redis": ok},
			wantStatus: 503,
			wantChecks: map[string]string{"postgres": "connection refused", "redis": "ok"},
			wantFailed: []string{"postgres"},
		},
		{
			name:       "two checks fail",
			checks:     map[string]server.Check{"redis": down("timeout"), "broker": down("no route"), "postgres": ok},
			wantStatus: 503,
			wantChecks: map[string]string{"redis": "timeout", "broker": "no route", "postgres": "ok"},
			wantFailed: []string{"broker", "redis"},
		},
		{
			name: "checks get a bounded context",
			checks: map[string]server.Check{"deadline": func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					return errors.New("no deadline")
				}
				return nil
			}},
			wantStatus: 200,
			wantChecks: map[string]string{"deadline": "ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := server.New(options(t))
			for name, c := range tt.checks {
				srv.AddCheck(name, c)
			}
			r := run(t, srv)
			resp, body := send(t, r.client, http.MethodGet, r.url+"/readyz", nil, nil)
			var got readiness
			if tt.wantStatus == 200 {
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("got %d %s, want 200 application/json: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
				}
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatalf("decode %s: %v", body, err)
				}
				if got.Status != "ready" {
					t.Errorf("status = %v, want ready", got.Status)
				}
			} else {
				p := wantProblem(t, resp, body, tt.wantStatus)
				if ra := resp.Header.Get("Retry-After"); ra != "1" {
					t.Errorf("Retry-After = %q, want 1", ra)
				}
				if p.Type != problem.TypeURI("unavailable") {
					t.Errorf("type = %q, want the unavailable problem", p.Type)
				}
				if want := fmt.Sprintf("not ready: %v", tt.wantFailed); p.Detail != want {
					t.Errorf("detail = %q, want %q", p.Detail, want)
				}
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatalf("decode %s: %v", body, err)
				}
			}
			if !reflect.DeepEqual(got.Checks, tt.wantChecks) {
				t.Errorf("checks = %v, want %v", got.Checks, tt.wantChecks)
			}
		})
	}
}

func TestAddCheckReplacesACheckOfTheSameName(t *testing.T) {
	srv := server.New(options(t))
	srv.AddCheck("postgres", func(context.Context) error { return errors.New("old pool") })
	srv.AddCheck("postgres", func(context.Context) error { return nil })
	r := run(t, srv)
	resp, body := send(t, r.client, http.MethodGet, r.url+"/readyz", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200: %s", resp.StatusCode, body)
	}
}

func TestReadyzReportsShuttingDownWhileDraining(t *testing.T) {
	srv := server.New(options(t))
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	srv.AddCheck("slow", func(context.Context) error {
		once.Do(func() { close(entered) })
		<-release
		return nil
	})
	r := run(t, srv)
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the server stops

	type result struct {
		resp *http.Response
		body string
		err  error
	}
	results := make(chan result, 1)
	go func() {
		resp, err := r.client.Get(r.url + "/readyz")
		if err != nil {
			results <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		results <- result{resp, string(b), err}
	}()
	waitFor(t, entered, "the probe to be in flight")
	r.cancel()
	platformtest.Eventually(t, "the server refuses new connections", func() bool { return refusesConnections(r.addr) })
	releaseOnce.Do(func() { close(release) })

	res := receive(t, results)
	if res.err != nil {
		t.Fatalf("in-flight /readyz: %v", res.err)
	}
	p := wantProblem(t, res.resp, res.body, http.StatusServiceUnavailable)
	if p.Detail != "not ready: [shutting down]" {
		t.Errorf("detail = %q, want shutting down alone (the check passed)", p.Detail)
	}
	if err := r.result(t); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
}

func TestUnknownRoutesAnswerWithProblems(t *testing.T) {
	srv := server.New(options(t))
	hit := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hit") }
	srv.Mux().HandleFunc("GET /v1/items/{id}", hit)
	srv.Mux().HandleFunc("PUT /v1/items/{id}", hit)
	srv.Mux().HandleFunc("POST /v1/items", hit)
	r := run(t, srv)

	tests := []struct {
		method, path string
		wantStatus   int
		wantAllow    []string
	}{
		{"GET", "/nope", 404, nil},
		{"GET", "/", 404, nil},
		{"DELETE", "/nope", 404, nil},
		{"POST", "/v1/items/1", 405, []string{"GET", "PUT"}},
		{"DELETE", "/v1/items/1", 405, []string{"GET", "PUT"}},
		{"GET", "/v1/items", 405, []string{"POST"}},
		{"DELETE", "/livez", 405, []string{"GET"}},
		{"POST", "/metrics", 405, []string{"GET"}},
		{"GET", "/v1/items/1", 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := send(t, r.client, tt.method, r.url+tt.path, nil, nil)
			if tt.wantStatus == 200 {
				if resp.StatusCode != 200 || body != "hit" {
					t.Errorf("got %d %q, want the route", resp.StatusCode, body)
				}
				return
			}
			p := wantProblem(t, resp, body, tt.wantStatus)
			if allow := resp.Header.Values("Allow"); !reflect.DeepEqual(allow, tt.wantAllow) {
				t.Errorf("Allow = %v, want %v", allow, tt.wantAllow)
			}
			wantType := map[int]string{404: "not-found", 405: "method-not-allowed"}[tt.wantStatus]
			if p.Type != problem.TypeURI(wantType) {
				t.Errorf("type = %q, want %q", p.Type, problem.TypeURI(wantType))
			}
			if !strings.Contains(p.Detail, tt.path) {
				t.Errorf("detail %q does not name the path", p.Detail)
			}
		})
	}
}

// hiddenLength hides a body's length so the client sends it chunked.
type hiddenLength struct{ io.Reader }

func TestBodyLimit(t *testing.T) {
	const limit = 64
	opts := options(t)
	opts.HTTP.MaxBodyBytes = limit
	srv := server.New(opts)
	var calls atomic.Int64
	var sawChunked atomic.Bool
	srv.Mux().Handle("POST /echo", httpapi.Handle(opts.Log, func(w http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		sawChunked.Store(len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked")
		var in struct {
			Text string `json:"text"`
		}
		if err := httpapi.Decode(r, &in); err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, in)
		return nil
	}))
	r := run(t, srv)

	body := func(n int) string { // a JSON object of exactly n bytes
		return `{"text":"` + strings.Repeat("x", n-len(`{"text":""}`)) + `"}`
	}
	tests := []struct {
		name        string
		size        int
		chunked     bool
		wantStatus  int
		wantHandler bool
	}{
		{"small, with length", 20, false, 200, true},
		{"small, chunked", 20, true, 200, true},
		{"exactly the limit, with length", limit, false, 200, true},
		{"exactly the limit, chunked", limit, true, 200, true},
		{"one byte over, with length", limit + 1, false, 413, false},
		{"one byte over, chunked", limit + 1, true, 413, true},
		{"far over, chunked", 100 * limit, true, 413, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			var rd io.Reader = strings.NewReader(body(tt.size))
			if tt.chunked {
				rd = hiddenLength{rd}
			}
			resp, got := send(t, r.client, http.MethodPost, r.url+"/echo", rd, map[string]string{"Content-Type": "application/json"})
			if tt.wantStatus == 200 {
				if resp.StatusCode != 200 {
					t.Errorf("status = %d, want 200: %s", resp.StatusCode, got)
				}
			} else {
				p := wantProblem(t, resp, got, tt.wantStatus)
				if p.Type != problem.TypeURI("body-too-large") || !strings.Contains(p.Detail, "64 bytes") {
					t.Errorf("problem = %+v, want body-too-large naming the limit", p)
				}
			}
			if ran := calls.Load() > 0; ran != tt.wantHandler {
				t.Errorf("handler ran = %v, want %v", ran, tt.wantHandler)
			}
			if tt.wantHandler && sawChunked.Load() != tt.chunked {
				t.Errorf("handler saw chunked = %v, want %v", sawChunked.Load(), tt.chunked)
			}
		})
	}
}

func TestNoBodyLimitWhenUnset(t *testing.T) {
	opts := options(t)
	opts.HTTP.MaxBodyBytes = 0
	srv := server.New(opts)
	srv.Mux().HandleFunc("POST /count", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, n)
	})
	r := run(t, srv)
	resp, body := send(t, r.client, http.MethodPost, r.url+"/count", strings.NewReader(strings.Repeat("x", 2<<20)), nil)
	if resp.StatusCode != 200 || body != fmt.Sprint(2<<20) {
		t.Errorf("got %d %q, want the whole 2 MiB read", resp.StatusCode, body)
	}
}

func TestMetricsServesTheRegistry(t *testing.T) {
	opts := options(t)
	widgets := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_widgets_total", Help: "Widgets."})
	opts.Registry.MustRegister(widgets)
	widgets.Add(3)
	srv := server.New(opts)
	r := run(t, srv)

	send(t, r.client, http.MethodGet, r.url+"/livez", nil, nil)
	send(t, r.client, http.MethodGet, r.url+"/nope", nil, nil)
	resp, body := send(t, r.client, http.MethodGet, r.url+"/metrics", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("got %d %s, want 200 text/plain", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"test_widgets_total 3",
		`http_server_requests_total{code="200",method="GET",route="GET /livez"} 1`,
		`http_server_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`http_server_request_duration_seconds_count{method="GET",route="GET /livez"} 1`,
		"http_server_requests_in_flight 1", // the /metrics request itself
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func TestServesHTTP1AndCleartextHTTP2(t *testing.T) {
	srv := server.New(options(t))
	srv.Mux().HandleFunc("GET /proto", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", r.ProtoMajor)
	})
	r := run(t, srv)
	tests := []struct {
		name   string
		client *http.Client
		want   int
	}{
		{"HTTP/1.1", &http.Client{Transport: &http.Transport{}}, 1},
		{"h2c with prior knowledge", h2cClient(), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.client.CloseIdleConnections()
			resp, body := send(t, tt.client, http.MethodGet, r.url+"/proto", nil, nil)
			if body != fmt.Sprint(tt.want) || resp.ProtoMajor != tt.want {
				t.Errorf("handler saw HTTP/%s, client got HTTP/%d; want %d", body, resp.ProtoMajor, tt.want)
			}
		})
	}
}

func TestGracefulShutdownFinishesInFlightRequests(t *testing.T) {
	tests := []struct {
		name   string
		client *http.Client
	}{
		{"HTTP/1.1", &http.Client{Transport: &http.Transport{}}},
		{"h2c", h2cClient()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.client.CloseIdleConnections()
			srv := server.New(options(t))
			entered := make(chan struct{})
			release := make(chan struct{})
			srv.Mux().HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
				close(entered)
				<-release
				_, _ = io.WriteString(w, "finished")
			})
			r := run(t, srv)
			var releaseOnce sync.Once
			t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the server stops

			type result struct {
				status int
				body   string
				err    error
			}
			results := make(chan result, 1)
			go func() {
				resp, err := tt.client.Get(r.url + "/slow")
				if err != nil {
					results <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				results <- result{resp.StatusCode, string(b), err}
			}()
			waitFor(t, entered, "the request to be in flight")
			r.cancel()
			platformtest.Eventually(t, "the server refuses new connections", func() bool { return refusesConnections(r.addr) })
			select {
			case err := <-r.done:
				r.done <- err
				t.Fatalf("Run returned %v with a request in flight", err)
			default:
			}
			releaseOnce.Do(func() { close(release) })

			res := receive(t, results)
			if res.err != nil || res.status != http.StatusOK || res.body != "finished" {
				t.Errorf("in-flight request got %d %q %v, want 200 finished", res.status, res.body, res.err)
			}
			if err := r.result(t); err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		})
	}
}

func TestShutdownGivesUpAfterTheTimeout(t *testing.T) {
	opts := options(t)
	opts.HTTP.ShutdownTimeout = 100 * time.Millisecond // the handler below never finishes by itself
	srv := server.New(opts)
	entered := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv.Mux().HandleFunc("GET /stuck", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})
	r := run(t, srv)
	go func() {
		resp, err := r.client.Get(r.url + "/stuck")
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, entered, "the request to be in flight")
	err := r.stop(t)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "shutdown test") {
		t.Errorf("Run returned %v, want the shutdown deadline error", err)
	}
}

func TestUseWrapsRoutesInOrder(t *testing.T) {
	srv := server.New(options(t))
	var mu sync.Mutex
	var trail []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		trail = append(trail, s)
	}
	var seenRequestID atomic.Value
	mw := func(name string) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				note(name + " in")
				if name == "first" {
					seenRequestID.Store(telemetry.RequestID(r.Context()))
					if r.Method == http.MethodOptions { // a preflight never reaches routing
						w.WriteHeader(http.StatusNoContent)
						note(name + " answered")
						return
					}
				}
				next.ServeHTTP(w, r)
				note(name + " out")
			})
		}
	}
	srv.Use(mw("first"))
	srv.Use(mw("second"))
	srv.Mux().HandleFunc("GET /trail", func(w http.ResponseWriter, r *http.Request) { note("handler") })
	r := run(t, srv)

	tests := []struct {
		method     string
		wantStatus int
		wantTrail  []string
	}{
		{http.MethodGet, 200, []string{"first in", "second in", "handler", "second out", "first out"}},
		{http.MethodOptions, 204, []string{"first in", "first answered"}},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			mu.Lock()
			trail = nil
			mu.Unlock()
			resp, _ := send(t, r.client, tt.method, r.url+"/trail", nil, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			mu.Lock()
			got := append([]string(nil), trail...)
			mu.Unlock()
			if !reflect.DeepEqual(got, tt.wantTrail) {
				t.Errorf("trail = %q, want %q", got, tt.wantTrail)
			}
			// Middleware runs inside Instrument: it sees the request id.
			if rid := resp.Header.Get(telemetry.RequestIDHeader); rid == "" || seenRequestID.Load() != rid {
				t.Errorf("middleware saw request id %v, response carries %q", seenRequestID.Load(), rid)
			}
		})
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	paths := []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1", "/debug/pprof/symbol"}
	for _, enabled := range []bool{true, false} {
		t.Run(fmt.Sprintf("pprof=%v", enabled), func(t *testing.T) {
			opts := options(t)
			opts.Pprof = enabled
			r := run(t, server.New(opts))
			for _, path := range paths {
				resp, body := send(t, r.client, http.MethodGet, r.url+path, nil, nil)
				if enabled {
					if resp.StatusCode != http.StatusOK {
						t.Errorf("GET %s = %d, want 200", path, resp.StatusCode)
					}
					continue
				}
				wantProblem(t, resp, body, http.StatusNotFound)
			}
		})
	}
}

func TestRunListensOnAddr(t *testing.T) {
	opts := options(t)
	opts.Listener.Close()
	opts.Listener = nil
	opts.Addr = "127.0.0.1:0"
	srv := server.New(opts)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := srv.Addr(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Addr before Run with an ended context = %v, want context.Canceled", err)
	}

	r := run(t, srv)
	if strings.HasSuffix(r.addr, ":0") {
		t.Fatalf("Addr = %s, want the port chosen", r.addr)
	}
	resp, _ := send(t, r.client, http.MethodGet, r.url+"/livez", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/livez = %d on %s", resp.StatusCode, r.addr)
	}
	actx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	again, err := srv.Addr(actx) // Addr can be asked again
	if err != nil || again.String() != r.addr {
		t.Errorf("second Addr = %v, %v; want %s", again, err, r.addr)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
}

func TestRunReportsAnAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	opts := options(t)
	opts.Listener.Close()
	opts.Listener = nil
	opts.Addr = taken.Addr().String()
	err = server.New(opts).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "listen "+opts.Addr) {
		t.Errorf("Run = %v, want a listen error naming %s", err, opts.Addr)
	}
}

func TestHandlerServesTheWholeRequestPath(t *testing.T) {
	opts := options(t)
	opts.Listener.Close()
	srv := server.New(opts)
	srv.Mux().HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	resp, body := send(t, hs.Client(), http.MethodGet, hs.URL+"/hello", nil, nil)
	if resp.StatusCode != 200 || body != "hello" || resp.Header.Get(telemetry.RequestIDHeader) == "" {
		t.Errorf("got %d %q (request id %q), want the instrumented route", resp.StatusCode, body, resp.Header.Get(telemetry.RequestIDHeader))
	}
	resp, body = send(t, hs.Client(), http.MethodGet, hs.URL+"/nope", nil, nil)
	wantProblem(t, resp, body, http.StatusNotFound)
}

// During the shutdown delay the server still serves, but /readyz already
// answers 503 so load balancers stop sending new requests.
func TestShutdownDelayKeepsServingWhileNotReady(t *testing.T) {
	opts := options(t)
	opts.HTTP.ShutdownDelay = 2 * time.Second
	srv := server.New(opts)
	srv.Mux().HandleFunc("GET /work", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "done") })
	r := run(t, srv)
	r.cancel()
	platformtest.Eventually(t, "readyz reports shutting down", func() bool {
		resp, err := r.client.Get(r.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	resp, err := r.client.Get(r.url + "/work")
	if err != nil {
		t.Fatalf("a request during the shutdown delay failed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d during the shutdown delay", resp.StatusCode)
	}
	if err := r.result(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}
