package loadtest

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progressEvery is how often a running case logs its current throughput.
const progressEvery = 5 * time.Second

// Request describes one HTTP request for the driver to send. It is a plain
// value rather than an *http.Request so that a scenario can build it without
// allocating and sending it costs the generator as little as possible.
type Request struct {
	// Method defaults to GET.
	Method string
	// Path is the path and query, starting with "/", appended to the path
	// of Options.BaseURL.
	Path string
	// Header holds extra request headers.
	Header []Header
	// Body is sent with a Content-Length (and Content-Type application/json
	// unless Header sets one).
	Body []byte
	// Expect lists the statuses that count as success; nil means 200, and
	// also 304 when the request carries If-None-Match or If-Modified-Since.
	Expect []int
	// Unmeasured marks a request the scenario needs but does not measure,
	// such as logging in again after a lost session: a success is left out
	// of the case's statistics, but a failure still counts in its errors,
	// so that a case cannot look clean while its requests fail.
	Unmeasured bool
}

// Header is one request header field.
type Header struct {
	Name, Value string
}

// Response is what a worker's previous request returned.
type Response struct {
	// Status is 0 when the request failed without a response.
	Status int
	// Body is valid only until the worker's next request, and holds at
	// most the first 4 MiB.
	Body []byte
}

// NextFunc returns worker's next request; prev is the response to its
// previous request (zero for the first). Each worker, numbered from 0 to
// Options.Concurrency-1, calls it from its own goroutine, so state indexed
// by worker needs no lock.
type NextFunc func(worker int, rng *rand.Rand, prev Response) Request

// check refuses requests that would not be well-formed HTTP.
func (r *Request) check() error {
	if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " \r\n") || strings.ContainsAny(r.Method, " \r\n") {
		return &requestError{kind: KindInvalid, err: fmt.Errorf("bad request line %q %q", r.Method, r.Path)}
	}
	for _, h := range r.Header {
		if h.Name == "" || strings.ContainsAny(h.Name, ": \r\n") || strings.ContainsAny(h.Value, "\r\n") {
			return &requestError{kind: KindInvalid, err: fmt.Errorf("bad header %q", h.Name)}
		}
	}
	return nil
}

// expects reports whether status counts as success.
func (r *Request) expects(status int) bool {
	if r.Expect != nil {
		return slices.Contains(r.Expect, status)
	}
	return status == 200 || status == 304 && r.conditional()
}

// idempotent reports whether sending r twice is safe, by the rule net/http
// uses to retry: a safe method, or an Idempotency-Key.
func (r *Request) idempotent() bool {
	switch r.Method {
	case "", "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	for _, h := range r.Header {
		if strings.EqualFold(h.Name, "Idempotency-Key") {
			return true
		}
	}
	return false
}

func (r *Request) conditional() bool {
	for _, h := range r.Header {
		if strings.EqualFold(h.Name, "If-None-Match") || strings.EqualFold(h.Name, "If-Modified-Since") {
			return true
		}
	}
	return false
}

// Drive runs one case: opts.Concurrency closed-loop workers send the
// requests next describes for opts.Warmup and then opts.Duration, and the
// measured window is summarised under name. If ctx ends first, Drive
// returns what was measured until then with ctx's error.
func Drive(ctx context.Context, opts Options, name string, next NextFunc) (Result, error) {
	return drive(ctx, opts, name, next, 0)
}

// drive is Drive that also stops after limit requests when limit > 0, so
// that a benchmark can send exactly b.N.
func drive(ctx context.Context, opts Options, name string, next NextFunc, limit int64) (Result, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return Result{}, err
	}
	t, err := parseTarget(opts.BaseURL)
	if err != nil {
		return Result{}, err
	}
	opts.Log.Info("load case started", "case", name, "concurrency", opts.Concurrency,
		"warmup", opts.warmup(), "duration", opts.Duration, "url", opts.BaseURL)

	run := &caseRun{
		next:     next,
		timeout:  opts.Timeout,
		start:    time.Now(),
		counters: make([]counter, opts.Concurrency),
	}
	run.from = run.start.Add(opts.warmup())
	run.until = run.from.Add(opts.Duration)
	if limit > 0 {
		run.budget = new(atomic.Int64)
		run.budget.Store(limit)
	}

	tr := newTransport(ctx, t, opts.Concurrency, opts.Timeout)
	defer tr.close()
	tallies := make([]*tally, opts.Concurrency)
	var wg sync.WaitGroup
	for i := range tallies {
		tallies[i] = newTally()
		wg.Go(func() { run.work(ctx, i, newClient(tr), tallies[i]) })
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		run.report(opts.Log, name, stopProgress)
	}()
	wg.Wait()
	end := time.Now()
	close(stopProgress)
	<-progressDone

	// The window ends at its deadline, or earlier when the run was
	// cancelled or ran out of budget.
	if end.After(run.until) {
		end = run.until
	}
	window := max(end.Sub(run.from), 0)
	res := summarize(name, opts.Concurrency, window, tallies)
	opts.Log.Info("load case finished", "case", name, "rps", res.RPS, "p50_ms", res.P50ms,
		"p99_ms", res.P99ms, "requests", res.Requests, "errors", res.Errors)
	return res, ctx.Err()
}

// caseRun is the shared, read-only plan of one case plus its progress
// counters.
type caseRun struct {
	next     NextFunc
	timeout  time.Duration
	start    time.Time     // the case starts, with the warmup
	from     time.Time     // the measured window starts
	until    time.Time     // the window ends: no request starts after it
	budget   *atomic.Int64 // requests left, when limited
	counters []counter     // completed requests per worker, for progress
}

// counter is padded to its own cache lines so that workers on different
// cores do not contend for one line when counting.
type counter struct {
	n atomic.Int64
	_ [120]byte
}

// work is one closed-loop worker: it sends a request, waits for the whole
// response, records it, and sends the next until the window closes.
func (r *caseRun) work(ctx context.Context, id int, c *client, t *tally) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
	done := ctx.Done()
	var prev Response
	for now := time.Now(); now.Before(r.until); {
		select {
		case <-done:
			return
		default:
		}
		if r.budget != nil && r.budget.Add(-1) < 0 {
			return
		}
		req := r.next(id, rng, prev)
		start := time.Now()
		resp, err := c.do(&req, start.Add(r.timeout))
		now = time.Now()
		r.counters[id].n.Add(1)
		if err != nil && ctx.Err() != nil {
			return // cut short by cancellation, not failed by the server
		}
		prev = resp
		if start.Before(r.from) {
			continue
		}
		switch {
		case err != nil:
			t.failure(errorKind(err))
		case !req.expects(resp.Status):
			t.badStatus(resp.Status)
		case req.Unmeasured:
			// A success the case does not measure.
		default:
			t.success(now.Sub(start))
		}
	}
}

// report logs the throughput of the last interval until stop closes.
func (r *caseRun) report(log *slog.Logger, name string, stop <-chan struct{}) {
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var last int64
	lastAt := r.start
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			var total int64
			for i := range r.counters {
				total += r.counters[i].n.Load()
			}
			rps := float64(total-last) / now.Sub(lastAt).Seconds()
			log.Info("load progress", "case", name, "elapsed", now.Sub(r.start).Round(time.Second),
				"warmup", now.Before(r.from), "rps", math.Round(rps))
			last, lastAt = total, now
		}
	}
}
