package loadtest

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/platformtest"
)

// testOptions are options for a short run against url with quiet logs.
func testOptions(t *testing.T, url string) Options {
	t.Helper()
	return Options{
		BaseURL:     url,
		Concurrency: 4,
		Duration:    300 * time.Millisecond,
		Warmup:      -1,
		Timeout:     2 * time.Second,
		Log:         slog.New(slog.DiscardHandler),
	}
}

// TestDriveCountsAndPercentiles drives a server where each worker's
// requests follow a fixed pattern: every tenth fails with 500 and every
// tenth (another one) takes slowDelay. The errors must be counted exactly
// and the percentiles must see the slow tenth.
func TestDriveCountsAndPercentiles(t *testing.T) {
	const slowDelay = 50 * time.Millisecond
	body := strings.Repeat("x", 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/slow":
			time.Sleep(slowDelay)
			w.Write([]byte(body))
		default:
			w.Write([]byte(body))
		}
	}))
	t.Cleanup(srv.Close)

	opts := testOptions(t, srv.URL)
	sent := make([]int, opts.Concurrency)   // requests built, per worker
	failed := make([]int, opts.Concurrency) // of them to /fail
	res, err := Drive(t.Context(), opts, "test/pattern", func(w int, _ *rand.Rand, _ Response) Request {
		i := sent[w]
		sent[w]++
		switch i % 10 {
		case 9:
			failed[w]++
			return Request{Path: "/fail"}
		case 4:
			return Request{Path: "/slow"}
		}
		return Request{Path: "/ok"}
	})
	if err != nil {
		t.Fatal(err)
	}
	var wantRequests, wantErrors int64
	for w := range sent {
		wantRequests += int64(sent[w])
		wantErrors += int64(failed[w])
	}
	if wantErrors == 0 {
		t.Fatalf("no worker got to its tenth request: %v", sent)
	}
	if res.Requests != wantRequests || res.Errors != wantErrors {
		t.Errorf("requests %d, errors %d; want %d, %d", res.Requests, res.Errors, wantRequests, wantErrors)
	}
	if want := map[string]int64{"status_500": wantErrors}; !maps.Equal(res.ErrorKinds, want) {
		t.Errorf("error kinds %v, want %v", res.ErrorKinds, want)
	}
	slowMs := float64(slowDelay.Milliseconds())
	// One success in nine is slow: above the 95th percentile's share of 5%
	// and well below the median's 50%.
	if res.P50ms >= slowMs || res.P95ms < slowMs || res.P99ms < slowMs || res.P99ms > slowMs+float64(opts.Timeout.Milliseconds()) {
		t.Errorf("percentiles p50 %v p95 %v p99 %v ms, want p50 < %v <= p95 <= p99", res.P50ms, res.P95ms, res.P99ms, slowMs)
	}
	if res.DurationS != opts.Duration.Seconds() || res.Concurrency != opts.Concurrency || res.Scenario != "test/pattern" {
		t.Errorf("result %+v does not describe the run", res)
	}
	if want := float64(res.Requests-res.Errors) / res.DurationS; res.RPS < want*0.99 || res.RPS > want*1.01 {
		t.Errorf("rps %v, want successes per second %v", res.RPS, want)
	}
}

func TestDriveErrorKinds(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("code") {
		case "404":
			http.NotFound(w, r)
		case "304":
			w.WriteHeader(http.StatusNotModified)
		case "201":
			w.WriteHeader(http.StatusCreated)
		case "503":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/hangup", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	closedPort := "http://" + platformtest.ClosedAddr(t)

	tests := []struct {
		name string
		url  string
		req  Request
		kind string // every request fails with this kind; "" means none fails
	}{
		{"404", srv.URL, Request{Path: "/status/404"}, "status_404"},
		{"503", srv.URL, Request{Path: "/status/503"}, "status_503"},
		{"304 answers a conditional request", srv.URL, Request{Path: "/status/304", Header: []Header{{"If-None-Match", `"v1"`}}}, ""},
		{"304 without a condition is an error", srv.URL, Request{Path: "/status/304"}, "status_304"},
		{"201 when expected", srv.URL, Request{Method: "POST", Path: "/status/201", Expect: []int{201}}, ""},
		{"201 when 200 is expected", srv.URL, Request{Method: "POST", Path: "/status/201"}, "status_201"},
		{"timeout", srv.URL, Request{Path: "/hang"}, KindTimeout},
		{"connection closed", srv.URL, Request{Path: "/hangup"}, KindClosed},
		{"nothing listening", closedPort, Request{Path: "/"}, KindConnect},
		{"invalid request", srv.URL, Request{Path: "no-slash"}, KindInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t, tt.url)
			opts.Concurrency = 2
			opts.Duration = 150 * time.Millisecond
			if tt.kind == KindTimeout {
				opts.Timeout = 50 * time.Millisecond // elsewhere the default 2s keeps a slow start from timing out
			}
			res, err := Drive(t.Context(), opts, "test/"+tt.name, func(int, *rand.Rand, Response) Request { return tt.req })
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests == 0 {
				t.Fatal("no request was measured")
			}
			want := map[string]int64{}
			wantErrors := int64(0)
			if tt.kind != "" {
				want[tt.kind] = res.Requests
				wantErrors = res.Requests
			}
			if res.Errors != wantErrors || !maps.Equal(res.ErrorKinds, want) {
				t.Errorf("errors %d %v, want %d %v", res.Errors, res.ErrorKinds, wantErrors, want)
			}
		})
	}
}

func TestDriveExcludesWarmup(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond)
	}))
	t.Cleanup(srv.Close)
	opts := testOptions(t, srv.URL)
	opts.Warmup = 150 * time.Millisecond
	opts.Duration = 150 * time.Millisecond
	var sent atomic.Int64
	res, err := Drive(t.Context(), opts, "test/warmup", func(int, *rand.Rand, Response) Request {
		sent.Add(1)
		return Request{Path: "/"}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Requests >= sent.Load() {
		t.Errorf("measured %d of %d requests, want some but not the warmup's", res.Requests, sent.Load())
	}
	if res.DurationS != 0.15 {
		t.Errorf("duration_s %v, want the window without warmup, 0.15", res.DurationS)
	}
}

func TestDrivePassesPreviousResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.URL.Path))
	}))
	t.Cleanup(srv.Close)
	opts := testOptions(t, srv.URL)
	opts.Duration = 100 * time.Millisecond
	sent := make([]int, opts.Concurrency)
	var mismatches atomic.Int64
	if _, err := Drive(t.Context(), opts, "test/prev", func(w int, _ *rand.Rand, prev Response) Request {
		want := ""
		if sent[w] > 0 {
			want = "/" + strings.Repeat("a", sent[w]-1)
		}
		if string(prev.Body) != want || (sent[w] > 0) != (prev.Status == 200) {
			mismatches.Add(1)
		}
		sent[w]++
		return Request{Path: "/" + strings.Repeat("a", sent[w]-1)}
	}); err != nil {
		t.Fatal(err)
	}
	if n := mismatches.Load(); n > 0 {
		t.Errorf("%d requests saw another response than their worker's previous one", n)
	}
}

// TestDriveUnmeasured checks that a successful unmeasured request is left
// out of the statistics and a failed one is counted as an error.
func TestDriveUnmeasured(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "boom", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	opts := testOptions(t, srv.URL)
	opts.Duration = 150 * time.Millisecond
	sent := make([][3]int64, opts.Concurrency) // per worker: measured, unmeasured ok, unmeasured failed
	res, err := Drive(t.Context(), opts, "test/unmeasured", func(w int, _ *rand.Rand, _ Response) Request {
		kind := (sent[w][0] + sent[w][1] + sent[w][2]) % 3
		sent[w][kind]++
		switch kind {
		case 1:
			return Request{Path: "/ok", Unmeasured: true}
		case 2:
			return Request{Path: "/fail", Unmeasured: true}
		}
		return Request{Path: "/ok"}
	})
	if err != nil {
		t.Fatal(err)
	}
	var measured, unmeasuredOK, unmeasuredFailed int64
	for _, n := range sent {
		measured, unmeasuredOK, unmeasuredFailed = measured+n[0], unmeasuredOK+n[1], unmeasuredFailed+n[2]
	}
	if unmeasuredFailed == 0 {
		t.Fatalf("no worker got to its third request: %v", sent)
	}
	if res.Requests != measured+unmeasuredFailed || res.Errors != unmeasuredFailed || res.ErrorKinds["status_500"] != unmeasuredFailed {
		t.Errorf("requests %d, errors %d %v; want %d, %d: the %d unmeasured successes left out",
			res.Requests, res.Errors, res.ErrorKinds, measured+unmeasuredFailed, unmeasuredFailed, unmeasuredOK)
	}
	if want := float64(measured) / res.DurationS; res.RPS < want*0.99 || res.RPS > want*1.01 {
		t.Errorf("rps %v, want measured successes per second %v", res.RPS, want)
	}
}

func TestDriveStopsWhenCancelled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	opts := testOptions(t, srv.URL)
	opts.Duration = time.Minute
	opts.Timeout = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Drive(ctx, opts, "test/cancel", func(int, *rand.Rand, Response) Request { return Request{Path: "/"} })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Drive returned %v after cancellation", took)
	}
	if res.Errors != 0 {
		t.Errorf("cancelled requests counted as %d errors: %v", res.Errors, res.ErrorKinds)
	}
}

func TestDriveRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
	}{
		{"bad URL", func(o *Options) { o.BaseURL = "localhost:8080" }},
		{"negative concurrency", func(o *Options) { o.Concurrency = -1 }},
		{"negative duration", func(o *Options) { o.Duration = -time.Second }},
		{"negative accounts", func(o *Options) { o.Auth.Accounts = -1 }},
		{"run id unfit for an email", func(o *Options) { o.Auth.RunID = "a@b" }},
		{"run id too long", func(o *Options) { o.Auth.RunID = strings.Repeat("a", 41) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t, "http://127.0.0.1:1")
			tt.edit(&opts)
			if _, err := Drive(t.Context(), opts, "x", func(int, *rand.Rand, Response) Request { return Request{Path: "/"} }); err == nil {
				t.Error("Drive accepted the options")
			}
		})
	}
}
