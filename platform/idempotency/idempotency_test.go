package idempotency_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/idempotency"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/redisx"
)

// callerHeader names the caller in these tests; the scope function reads it.
const callerHeader = "X-Test-Caller"

func scopeFromHeader(r *http.Request) string {
	if c := r.Header.Get(callerHeader); c != "" {
		return "customer:" + c
	}
	return "anonymous:" + r.RemoteAddr
}

// fixture is one isolated Redis namespace with a store on it.
type fixture struct {
	cfg   config.Config
	rdb   *redis.Client
	keys  redisx.Keys
	reg   *prometheus.Registry
	store *idempotency.Store
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	cfg := platformtest.Config(t)
	rdb := platformtest.Redis(t, cfg)
	keys := redisx.NewKeys(cfg.Namespace, "test")
	reg := prometheus.NewRegistry()
	return fixture{cfg: cfg, rdb: rdb, keys: keys, reg: reg,
		store: idempotency.New(rdb, keys, reg, platformtest.Logger(t))}
}

// wrap applies the store's middleware with opts (Scope defaults to
// scopeFromHeader) to h.
func wrap(t *testing.T, s *idempotency.Store, opts idempotency.Options, h http.Handler) http.Handler {
	t.Helper()
	if opts.Scope == nil {
		opts.Scope = scopeFromHeader
	}
	mw, err := s.Middleware(opts)
	if err != nil {
		t.Fatalf("middleware: %v", err)
	}
	return mw(h)
}

// storedKeys lists the idempotency records in the fixture's namespace.
func (f fixture) storedKeys(t *testing.T) []string {
	t.Helper()
	ks, err := f.rdb.Keys(context.Background(), f.keys.Key("idem", "*")).Result()
	if err != nil {
		t.Fatalf("keys: %v", err)
	}
	return ks
}

// counting is a handler that counts its calls and answers with a fixed
// response, optionally waiting for release first.
type counting struct {
	calls   atomic.Int32
	status  int
	body    string
	entered chan struct{} // receives once per call, if set
	release chan struct{} // the handler waits for it to close, if set
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.calls.Add(1)
	if c.entered != nil {
		c.entered <- struct{}{}
	}
	if c.release != nil {
		<-c.release
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Location", "/v1/things/thg_1")
	h.Set("ETag", `"v1"`)
	h.Set("X-Not-Kept", "per-response")
	h.Set("Set-Cookie", "session=secret")
	status := c.status
	if status == 0 {
		status = http.StatusCreated
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, c.body)
}

type req struct {
	method, target, key, body, caller string
}

func do(t *testing.T, h http.Handler, rq req) *httptest.ResponseRecorder {
	t.Helper()
	method := rq.method
	if method == "" {
		method = http.MethodPost
	}
	target := rq.target
	if target == "" {
		target = "/v1/things"
	}
	r := httptest.NewRequest(method, target, strings.NewReader(rq.body))
	if rq.key != "" {
		r.Header.Set(idempotency.Header, rq.key)
	}
	if rq.caller != "" {
		r.Header.Set(callerHeader, rq.caller)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// wantProblem checks that w is a problem of status and type slug that names
// the Idempotency-Key header in its errors (when field is true).
func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int, slug string, field bool) problem.Problem {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("Content-Type = %q, want %q", ct, problem.ContentType)
	}
	var p problem.Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", w.Body, err)
	}
	if p.Type != problem.TypeURI(slug) {
		t.Fatalf("type = %q, want %q", p.Type, problem.TypeURI(slug))
	}
	if field && (len(p.Errors) != 1 || p.Errors[0].Field != idempotency.Header) {
		t.Fatalf("errors = %+v, want one naming %s", p.Errors, idempotency.Header)
	}
	return p
}

func wantCalls(t *testing.T, h *counting, n int32) {
	t.Helper()
	if got := h.calls.Load(); got != n {
		t.Fatalf("handler called %d times, want %d", got, n)
	}
}

func TestReplayReturnsTheStoredResponse(t *testing.T) {
	t.Parallel()
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			h := &counting{body: `{"id":"thg_1","note":"` + method + `"}` + "\n"}
			srv := wrap(t, f.store, idempotency.Options{}, h)
			rq := req{method: method, target: "/v1/things/thg_1?expand=all", key: "key-1", body: `{"name":"a"}`, caller: "cus_1"}

			first := do(t, srv, rq)
			wantCalls(t, h, 1)
			if first.Code != http.StatusCreated || first.Body.String() != h.body {
				t.Fatalf("first = %d %q", first.Code, first.Body)
			}
			if v := first.Header().Get(idempotency.ReplayedHeader); v != "" {
				t.Fatalf("first response has %s: %q", idempotency.ReplayedHeader, v)
			}

			for i := range 2 {
				replay := do(t, srv, rq)
				wantCalls(t, h, 1)
				if replay.Code != first.Code {
					t.Fatalf("replay %d status = %d, want %d", i, replay.Code, first.Code)
				}
				if !bytes.Equal(replay.Body.Bytes(), first.Body.Bytes()) {
					t.Fatalf("replay %d body = %q, want %q", i, replay.Body, first.Body)
				}
				for _, name := range []string{"Content-Type", "Location", "ETag"} {
					if got, want := replay.Header().Values(name), first.Header().Values(name); !equal(got, want) {
						t.Fatalf("replay %d %s = %q, want %q", i, name, got, want)
					}
				}
				for _, name := range []string{"X-Not-Kept", "Set-Cookie"} {
					if v := replay.Header().Get(name); v != "" {
						t.Fatalf("replay %d carries %s: %q", i, name, v)
					}
				}
				if v := replay.Header().Get(idempotency.ReplayedHeader); v != "true" {
					t.Fatalf("replay %d %s = %q, want true", i, idempotency.ReplayedHeader, v)
				}
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSameKeyDifferentRequestIsRefused(t *testing.T) {
	t.Parallel()
	original := req{method: http.MethodPost, target: "/v1/things?x=1", key: "k", body: `{"a":1}`, caller: "cus_1"}
	for _, tc := range []struct {
		name    string
		changed req
	}{
		{"body", req{method: http.MethodPost, target: "/v1/things?x=1", key: "k", body: `{"a":2}`, caller: "cus_1"}},
		{"empty body", req{method: http.MethodPost, target: "/v1/things?x=1", key: "k", caller: "cus_1"}},
		{"path", req{method: http.MethodPost, target: "/v1/other?x=1", key: "k", body: `{"a":1}`, caller: "cus_1"}},
		{"query", req{method: http.MethodPost, target: "/v1/things?x=2", key: "k", body: `{"a":1}`, caller: "cus_1"}},
		{"method", req{method: http.MethodPut, target: "/v1/things?x=1", key: "k", body: `{"a":1}`, caller: "cus_1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			h := &counting{body: "done"}
			srv := wrap(t, f.store, idempotency.Options{}, h)
			if w := do(t, srv, original); w.Code != http.StatusCreated {
				t.Fatalf("first = %d", w.Code)
			}
			wantProblem(t, do(t, srv, tc.changed), http.StatusUnprocessableEntity, "idempotency-key-reused", true)
			wantCalls(t, h, 1)
			// The refusal changed nothing: the original still replays.
			if w := do(t, srv, original); w.Code != http.StatusCreated || w.Header().Get(idempotency.ReplayedHeader) != "true" {
				t.Fatalf("replay after mismatch = %d %v", w.Code, w.Header())
			}
			wantCalls(t, h, 1)
		})
	}
}

func TestConcurrentDuplicatesRunOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := &counting{body: "once", entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := wrap(t, f.store, idempotency.Options{}, h)
	rq := req{key: "dup", body: `{"n":1}`, caller: "cus_1"}

	const n = 20
	results := make(chan *httptest.ResponseRecorder, n)
	for range n {
		go func() { results <- do(t, srv, rq) }()
	}
	// All but the one running request must be refused while it runs.
	timeout := time.After(10 * time.Second)
	for i := range n - 1 {
		select {
		case w := <-results:
			wantProblem(t, w, http.StatusConflict, "idempotency-key-in-use", true)
			if ra := w.Header().Get("Retry-After"); ra != "1" {
				t.Fatalf("Retry-After = %q, want 1", ra)
			}
		case <-timeout:
			close(h.release)
			t.Fatalf("only %d of %d duplicates answered while the first was in flight", i, n-1)
		}
	}
	select {
	case <-h.entered:
	case <-timeout:
		t.Fatal("the handler never ran")
	}
	// A different request under the same key is refused as a mismatch,
	// even while the first is in flight.
	wantProblem(t, do(t, srv, req{key: "dup", body: `{"n":2}`, caller: "cus_1"}), http.StatusUnprocessableEntity, "idempotency-key-reused", true)
	wantCalls(t, h, 1)

	close(h.release)
	if w := <-results; w.Code != http.StatusCreated || w.Body.String() != "once" {
		t.Fatalf("first = %d %q", w.Code, w.Body)
	}
	w := do(t, srv, rq)
	if w.Code != http.StatusCreated || w.Body.String() != "once" || w.Header().Get(idempotency.ReplayedHeader) != "true" {
		t.Fatalf("retry after completion = %d %q %v", w.Code, w.Body, w.Header())
	}
	wantCalls(t, h, 1)
}

func TestWhichResponsesAreStored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		stored bool
	}{
		{http.StatusOK, true},
		{http.StatusCreated, true},
		{http.StatusNoContent, true},
		{http.StatusBadRequest, true},
		{http.StatusPaymentRequired, true},
		{http.StatusNotFound, true},
		{http.StatusConflict, true},
		{http.StatusUnprocessableEntity, true},
		{http.StatusRequestTimeout, false},
		{http.StatusTooManyRequests, false},
		{http.StatusInternalServerError, false},
		{http.StatusBadGateway, false},
		{http.StatusServiceUnavailable, false},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			h := &counting{status: tc.status}
			if tc.status != http.StatusNoContent {
				h.body = "answer"
			}
			srv := wrap(t, f.store, idempotency.Options{}, h)
			rq := req{key: "k", body: "{}", caller: "cus_1"}
			if w := do(t, srv, rq); w.Code != tc.status {
				t.Fatalf("first = %d", w.Code)
			}
			w := do(t, srv, rq)
			if w.Code != tc.status || w.Body.String() != h.body {
				t.Fatalf("second = %d %q, want %d %q", w.Code, w.Body, tc.status, h.body)
			}
			if tc.stored {
				wantCalls(t, h, 1)
				if w.Header().Get(idempotency.ReplayedHeader) != "true" {
					t.Fatalf("second was not a replay")
				}
			} else {
				wantCalls(t, h, 2)
				if len(f.storedKeys(t)) != 0 {
					t.Fatalf("key still held after %d: %v", tc.status, f.storedKeys(t))
				}
			}
		})
	}
}

func TestPanicReleasesTheKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var calls atomic.Int32
	srv := wrap(t, f.store, idempotency.Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	rq := req{key: "k", body: "{}", caller: "cus_1"}
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("recovered %v, want the handler's panic to propagate", v)
			}
		}()
		do(t, srv, rq)
	}()
	if w := do(t, srv, rq); w.Code != http.StatusCreated {
		t.Fatalf("retry after panic = %d", w.Code)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler called %d times, want 2", n)
	}
}

// A process that dies mid-request stops renewing its lock; after LockTTL a
// new attempt runs, while a live slow handler keeps its key.
func TestLockExpiresAfterACrash(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const lockTTL = 600 * time.Millisecond
	opts := idempotency.Options{LockTTL: lockTTL}

	// The "crashing" process has its own Redis connection, closed to kill it.
	ctx := context.Background()
	dying, err := redisx.Open(ctx, f.cfg.Redis)
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(func() { _ = dying.Close() })
	hung := &counting{body: "from the dead", entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(hung.release)
	dead := wrap(t, idempotency.New(dying, f.keys, nil, platformtest.Logger(t)), opts, hung)
	rq := req{key: "k", body: "{}", caller: "cus_1"}
	go do(t, dead, rq)
	<-hung.entered

	live := &counting{body: "from the living"}
	srv := wrap(t, f.store, opts, live)
	// While the slow handler lives it renews its lock past LockTTL.
	time.Sleep(3 * lockTTL)
	wantProblem(t, do(t, srv, rq), http.StatusConflict, "idempotency-key-in-use", true)

	_ = dying.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := do(t, srv, rq)
		if w.Code == http.StatusCreated {
			if w.Body.String() != "from the living" {
				t.Fatalf("body = %q", w.Body)
			}
			break
		}
		wantProblem(t, w, http.StatusConflict, "idempotency-key-in-use", true)
		if time.Now().After(deadline) {
			t.Fatal("the dead request's lock never expired")
		}
		time.Sleep(lockTTL / 4)
	}
	wantCalls(t, live, 1)
	if w := do(t, srv, rq); w.Header().Get(idempotency.ReplayedHeader) != "true" || w.Body.String() != "from the living" {
		t.Fatalf("replay = %d %q", w.Code, w.Body)
	}
}

// A request whose lock was lost (expired and taken over by a retry) must
// not overwrite the record of the request that took it over.
func TestLateCompletionDoesNotOverwrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	slow := &counting{body: "late", entered: make(chan struct{}, 1), release: make(chan struct{})}
	rq := req{key: "k", body: "{}", caller: "cus_1"}
	slowSrv := wrap(t, f.store, idempotency.Options{}, slow)
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- do(t, slowSrv, rq) }()
	<-slow.entered

	// Stand-in for the lock expiring while the slow request still runs.
	ks := f.storedKeys(t)
	if len(ks) != 1 {
		close(slow.release)
		t.Fatalf("records = %v, want one lock", ks)
	}
	if err := f.rdb.Del(context.Background(), ks[0]).Err(); err != nil {
		close(slow.release)
		t.Fatalf("del: %v", err)
	}
	fast := &counting{body: "newer"}
	srv := wrap(t, f.store, idempotency.Options{}, fast)
	if w := do(t, srv, rq); w.Code != http.StatusCreated || w.Body.String() != "newer" {
		close(slow.release)
		t.Fatalf("takeover = %d %q", w.Code, w.Body)
	}

	close(slow.release)
	if w := <-done; w.Body.String() != "late" {
		t.Fatalf("slow response = %q", w.Body)
	}
	w := do(t, srv, rq)
	if w.Body.String() != "newer" || w.Header().Get(idempotency.ReplayedHeader) != "true" {
		t.Fatalf("replay = %d %q, want the newer record", w.Code, w.Body)
	}
	wantCalls(t, fast, 1)
	if n := counter(t, f.reg, "idempotency_store_failures_total", "operation")["lock_lost"]; n != 1 {
		t.Fatalf("lock_lost = %v, want 1", n)
	}
}

func TestScopesIsolateCallers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv := wrap(t, f.store, idempotency.Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "for "+r.Header.Get(callerHeader))
	}))
	// "a:b" + "c" and "a" + "b:c" must not meet even though both join to a:b:c.
	for _, caller := range []string{"alice", "bob", "a:b"} {
		key := "shared"
		if caller == "a:b" {
			key = "c"
		}
		w := do(t, srv, req{key: key, body: "{}", caller: caller})
		if w.Code != http.StatusCreated || w.Body.String() != "for "+caller || w.Header().Get(idempotency.ReplayedHeader) != "" {
			t.Fatalf("%s first = %d %q %v", caller, w.Code, w.Body, w.Header())
		}
	}
	if w := do(t, srv, req{key: "b:c", body: "{}", caller: "a"}); w.Header().Get(idempotency.ReplayedHeader) != "" {
		t.Fatalf("caller a saw caller a:b's response: %q", w.Body)
	}
	for _, caller := range []string{"alice", "bob"} {
		w := do(t, srv, req{key: "shared", body: "{}", caller: caller})
		if w.Body.String() != "for "+caller || w.Header().Get(idempotency.ReplayedHeader) != "true" {
			t.Fatalf("%s replay = %q", caller, w.Body)
		}
	}
}

func TestKeyValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		name     string
		required bool
		values   []string // nil: no header
		want     int
	}{
		{"missing and required", true, nil, http.StatusBadRequest},
		{"missing and optional", false, nil, http.StatusCreated},
		{"empty", false, []string{""}, http.StatusBadRequest},
		{"one character", true, []string{"a"}, http.StatusCreated},
		{"255 characters", true, []string{strings.Repeat("k", 255)}, http.StatusCreated},
		{"256 characters", true, []string{strings.Repeat("k", 256)}, http.StatusBadRequest},
		{"uuid", true, []string{"7c0a8f9e-5b0e-4c39-9b1a-2f3d6a1e8c44"}, http.StatusCreated},
		{"printable punctuation and space", true, []string{`a b:c/d*e?{}~!`}, http.StatusCreated},
		{"control character", true, []string{"a\x01b"}, http.StatusBadRequest},
		{"delete character", true, []string{"a\x7fb"}, http.StatusBadRequest},
		{"non-ASCII", true, []string{"ключ"}, http.StatusBadRequest},
		{"sent twice", true, []string{"a", "b"}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := &counting{}
			srv := wrap(t, f.store, idempotency.Options{Required: tc.required}, h)
			r := httptest.NewRequest(http.MethodPost, "/v1/things", strings.NewReader("{}"))
			r.Header.Set(callerHeader, tc.name)
			for _, v := range tc.values {
				r.Header.Add(idempotency.Header, v)
			}
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, r)
			if tc.want == http.StatusBadRequest {
				p := wantProblem(t, w, http.StatusBadRequest, "bad-request", true)
				if !strings.Contains(p.Detail, idempotency.Header) {
					t.Fatalf("detail %q does not name %s", p.Detail, idempotency.Header)
				}
				wantCalls(t, h, 0)
				return
			}
			if w.Code != tc.want {
				t.Fatalf("status = %d, want %d; %s", w.Code, tc.want, w.Body)
			}
			wantCalls(t, h, 1)
		})
	}
}

func TestOptionalKeyMissingIsNotDeduplicated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := &counting{}
	srv := wrap(t, f.store, idempotency.Options{}, h)
	for range 2 {
		if w := do(t, srv, req{body: "{}", caller: "cus_1"}); w.Code != http.StatusCreated {
			t.Fatalf("status = %d", w.Code)
		}
	}
	wantCalls(t, h, 2)
	if ks := f.storedKeys(t); len(ks) != 0 {
		t.Fatalf("records without a key: %v", ks)
	}
}

func TestRedisDownFailsClosed(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: platformtest.ClosedAddr(t), DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	store := idempotency.New(rdb, redisx.NewKeys(platformtest.Namespace(t), "test"), prometheus.NewRegistry(), platformtest.Logger(t))
	for _, required := range []bool{true, false} {
		name := "optional"
		if required {
			name = "required"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := &counting{}
			srv := wrap(t, store, idempotency.Options{Required: required}, h)
			w := do(t, srv, req{key: "k", body: "{}", caller: "cus_1"})
			wantProblem(t, w, http.StatusServiceUnavailable, "unavailable", false)
			if w.Header().Get("Retry-After") == "" {
				t.Fatal("no Retry-After")
			}
			wantCalls(t, h, 0)
		})
	}
}

// limitBody stands in for the server's body limit.
func limitBody(h http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h.ServeHTTP(w, r)
	})
}

func TestBodyReachesTheHandlerIntact(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	body := make([]byte, 256<<10)
	_, _ = rand.Read(body)
	var got []byte
	srv := limitBody(wrap(t, f.store, idempotency.Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("handler read: %v", err)
		}
		got = b
		w.WriteHeader(http.StatusCreated)
	})), int64(len(body)))
	w := do(t, srv, req{key: "k", body: string(body), caller: "cus_1"})
	if w.Code != http.StatusCreated {
		t.Fatalf("status = %d %s", w.Code, w.Body)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("handler got %d bytes, not the %d sent", len(got), len(body))
	}
}

func TestBodyOverTheLimitIs413(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := &counting{}
	srv := limitBody(wrap(t, f.store, idempotency.Options{}, h), 16)
	w := do(t, srv, req{key: "k", body: strings.Repeat("x", 17), caller: "cus_1"})
	wantProblem(t, w, http.StatusRequestEntityTooLarge, "body-too-large", false)
	wantCalls(t, h, 0)
	if ks := f.storedKeys(t); len(ks) != 0 {
		t.Fatalf("a refused body left records: %v", ks)
	}
	// The key was not taken: a request that fits runs under it.
	if w := do(t, srv, req{key: "k", body: "{}", caller: "cus_1"}); w.Code != http.StatusCreated {
		t.Fatalf("status = %d", w.Code)
	}
}

func TestSafeMethodsPassThrough(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
		t.Run(method, func(t *testing.T) {
			h := &counting{body: "x"}
			srv := wrap(t, f.store, idempotency.Options{Required: true}, h)
			for _, key := range []string{"k", "", strings.Repeat("k", 300)} {
				w := do(t, srv, req{method: method, key: key, caller: "cus_1"})
				if w.Code != http.StatusCreated || w.Header().Get(idempotency.ReplayedHeader) != "" {
					t.Fatalf("key %q: %d %v", key, w.Code, w.Header())
				}
			}
			wantCalls(t, h, 3)
		})
	}
	if ks := f.storedKeys(t); len(ks) != 0 {
		t.Fatalf("safe methods left records: %v", ks)
	}
}

func TestEmptyScopeIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := &counting{}
	srv := wrap(t, f.store, idempotency.Options{Scope: func(*http.Request) string { return "" }}, h)
	wantProblem(t, do(t, srv, req{key: "k", body: "{}"}), http.StatusInternalServerError, "internal", false)
	wantCalls(t, h, 0)
}

func TestRecordsExpire(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	const ttl, lockTTL = time.Hour, 30 * time.Second
	h := &counting{entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := wrap(t, f.store, idempotency.Options{TTL: ttl, LockTTL: lockTTL}, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		do(t, srv, req{key: "k", body: "{}", caller: "cus_1"})
	}()
	<-h.entered
	ks := f.storedKeys(t)
	var lockLeft time.Duration
	if len(ks) == 1 {
		lockLeft = f.rdb.PTTL(ctx, ks[0]).Val()
	}
	close(h.release)
	<-done
	if len(ks) != 1 {
		t.Fatalf("records in flight = %v", ks)
	}
	if lockLeft <= 0 || lockLeft > lockTTL {
		t.Fatalf("lock expires in %s, want within %s", lockLeft, lockTTL)
	}
	if left := f.rdb.PTTL(ctx, ks[0]).Val(); left <= lockTTL || left > ttl {
		t.Fatalf("record expires in %s, want within %s and beyond the lock's %s", left, ttl, lockTTL)
	}
}

func TestMetricsCountOutcomes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := &counting{entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := wrap(t, f.store, idempotency.Options{Required: true}, h)
	rq := req{key: "k", body: "{}", caller: "cus_1"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		do(t, srv, rq)
	}()
	<-h.entered
	do(t, srv, rq)                                          // conflict_in_flight
	do(t, srv, req{key: "k", body: "{ }", caller: "cus_1"}) // mismatch
	close(h.release)
	<-done
	do(t, srv, rq)                           // replayed
	do(t, srv, rq)                           // replayed
	do(t, srv, req{body: "{}", caller: "x"}) // invalid: required and missing

	want := map[string]float64{"first": 1, "replayed": 2, "conflict_in_flight": 1, "mismatch": 1, "invalid": 1, "error": 0}
	got := outcomes(t, f.reg)
	for outcome, n := range want {
		if got[outcome] != n {
			t.Errorf("outcome %s = %v, want %v (all: %v)", outcome, got[outcome], n, got)
		}
	}
}

func outcomes(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	return counter(t, g, "idempotency_requests_total", "outcome")
}

// counter returns the values of a counter vector by its one label.
func counter(t *testing.T, g prometheus.Gatherer, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func TestStoresShareARegistry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// A second store on the same registry (two services in one process)
	// reuses the registered counters instead of failing.
	other := idempotency.New(f.rdb, redisx.NewKeys(f.cfg.Namespace, "other"), f.reg, platformtest.Logger(t))
	do(t, wrap(t, f.store, idempotency.Options{}, &counting{}), req{key: "k", body: "{}", caller: "c"})
	do(t, wrap(t, other, idempotency.Options{}, &counting{}), req{key: "k", body: "{}", caller: "c"})
	if n := outcomes(t, f.reg)["first"]; n != 2 {
		t.Fatalf("first = %v, want 2", n)
	}
}

func TestMiddlewareRejectsUnsafeOptions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		opts idempotency.Options
	}{
		{"no scope", idempotency.Options{}},
		{"negative TTL", idempotency.Options{Scope: scopeFromHeader, TTL: -time.Second}},
		{"negative lock TTL", idempotency.Options{Scope: scopeFromHeader, LockTTL: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.store.Middleware(tc.opts); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := f.store.Middleware(idempotency.Options{Scope: scopeFromHeader}); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

// errWriter fails every write, as when the client has gone away.
type errWriter struct{ http.ResponseWriter }

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("client gone") }

func TestResponseIsRecordedWhenTheClientIsGone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := wrap(t, f.store, idempotency.Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		cancel() // the client disconnects while the handler runs
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "kept")
	}))
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/things", strings.NewReader("{}"))
	r.Header.Set(idempotency.Header, "k")
	r.Header.Set(callerHeader, "cus_1")
	srv.ServeHTTP(errWriter{httptest.NewRecorder()}, r)

	w := do(t, srv, req{key: "k", body: "{}", caller: "cus_1"})
	if w.Code != http.StatusCreated || w.Body.String() != "kept" || w.Header().Get(idempotency.ReplayedHeader) != "true" {
		t.Fatalf("replay = %d %q", w.Code, w.Body)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
}
