// Package idempotency makes mutating HTTP endpoints safe to retry with an
// Idempotency-Key header, with Stripe's semantics: the first request runs and
// its response is kept, a replay of the same request gets that response back
// without running again, and a different request under the same key is refused.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/redisx"
)

// Header names the request header that carries the client's key.
const Header = "Idempotency-Key"

// ReplayedHeader marks a response that was replayed from the store.
const ReplayedHeader = "Idempotent-Replayed"

// Defaults for Options fields left zero.
const (
	// DefaultTTL is how long a completed response is kept, as at Stripe.
	DefaultTTL = 24 * time.Hour
	// DefaultLockTTL bounds how long a key stays in flight after the process
	// holding it died; a live process keeps renewing it.
	DefaultLockTTL = 60 * time.Second
)

// MaxKeyLength is the longest key accepted, in bytes.
const MaxKeyLength = 255

const (
	// inFlightRetry is the Retry-After sent while the first request runs.
	inFlightRetry = time.Second
	// unavailableRetry is the Retry-After sent when Redis cannot be reached.
	unavailableRetry = 2 * time.Second
	// opTimeout bounds each Redis round trip, whatever the client's own
	// timeouts, so a stuck Redis cannot hold a request forever.
	opTimeout = 3 * time.Second
)

// Outcomes counted by idempotency_requests_total.
const (
	outcomeFirst    = "first"
	outcomeReplayed = "replayed"
	outcomeInFlight = "conflict_in_flight"
	outcomeMismatch = "mismatch"
	outcomeInvalid  = "invalid"
	outcomeError    = "error"
)

// Operations counted by idempotency_store_failures_total.
const (
	opComplete = "complete"
	opRelease  = "release"
	opRenew    = "renew"
	opLockLost = "lock_lost"
)

// Options configure the middleware of one route or group of routes.
type Options struct {
	// TTL is how long a completed response is kept for replays; DefaultTTL
	// when zero.
	TTL time.Duration
	// LockTTL is how long an in-flight key outlives a process that died while
	// holding it; DefaultLockTTL when zero. While the handler runs the lock
	// is renewed every LockTTL/3, so a slow handler does not lose it.
	LockTTL time.Duration
	// Required makes requests without the header fail with 400 (checkout);
	// otherwise they pass through unprotected.
	Required bool
	// Scope names the caller (a customer id, a hash of the credential, or
	// "anonymous" plus the client address) so that one caller's key never
	// finds another caller's response. It must not return "".
	Scope func(*http.Request) string
}

func (o *Options) setDefaults() {
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.LockTTL == 0 {
		o.LockTTL = DefaultLockTTL
	}
}

// validate reports options that would make the middleware unsafe.
func (o Options) validate() error {
	var errs []error
	if o.Scope == nil {
		// Without a scope every caller would share one key space and could
		// read another's responses.
		errs = append(errs, errors.New("idempotency: a Scope function is required"))
	}
	if o.TTL < time.Millisecond {
		errs = append(errs, fmt.Errorf("TTL %s must be at least 1ms", o.TTL))
	}
	if o.LockTTL < 3*time.Millisecond {
		errs = append(errs, fmt.Errorf("LockTTL %s must be at least 3ms", o.LockTTL))
	}
	return errors.Join(errs...)
}

// Store keeps idempotency records in Redis and counts what it does.
type Store struct {
	rdb      redis.Scripter
	keys     redisx.Keys
	log      *slog.Logger
	requests *prometheus.CounterVec
	failures *prometheus.CounterVec
	scripts  scripts
}

// New returns a store that keeps its records in rdb (a *redis.Client, or a
// cluster or ring client) under keys and registers its metrics on reg (none
// when reg is nil).
func New(rdb redis.Scripter, keys redisx.Keys, reg prometheus.Registerer, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		rdb:  rdb,
		keys: keys,
		log:  log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempotency_requests_total",
			Help: "Mutating requests that carried an Idempotency-Key, by outcome.",
		}, []string{"outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempotency_store_failures_total",
			Help: "Idempotency records that could not be written, released or renewed after the handler started, by operation.",
		}, []string{"operation"}),
		scripts: newScripts(),
	}
	for _, o := range []string{outcomeFirst, outcomeReplayed, outcomeInFlight, outcomeMismatch, outcomeInvalid, outcomeError} {
		s.requests.WithLabelValues(o)
	}
	for _, o := range []string{opComplete, opRelease, opRenew, opLockLost} {
		s.failures.WithLabelValues(o)
	}
	if reg != nil {
		s.requests = register(reg, s.requests, log)
		s.failures = register(reg, s.failures, log)
	}
	return s
}

// register adds c to reg, reusing the collector already there when several
// stores share one registry (several services in one process).
func register(reg prometheus.Registerer, c *prometheus.CounterVec, log *slog.Logger) *prometheus.CounterVec {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing
		}
	}
	log.Error("idempotency metrics not registered", "err", err)
	return c
}

// Middleware returns middleware that applies opts to every POST, PUT, PATCH
// and DELETE request; other methods pass through untouched. It fails when
// opts lack a Scope or hold negative durations, so a route is never served
// unprotected by mistake. It relies on the server's body limit
// (http.MaxBytesReader), since the whole body is read into memory to
// fingerprint it.
func (s *Store) Middleware(opts Options) (func(http.Handler) http.Handler, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("idempotency options: %w", err)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !mutating(r.Method) {
				next.ServeHTTP(w, r)
				return
			}
			s.serve(w, r, next, opts)
		})
	}, nil
}

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

func (s *Store) serve(w http.ResponseWriter, r *http.Request, next http.Handler, opts Options) {
	ctx := r.Context()
	values := r.Header.Values(Header)
	if len(values) == 0 {
		if opts.Required {
			s.requests.WithLabelValues(outcomeInvalid).Inc()
			problem.Write(w, headerProblem(problem.BadRequest("the "+Header+" header is required on this endpoint; send a unique key such as a UUID"), "is required"))
			return
		}
		next.ServeHTTP(w, r)
		return
	}
	key := values[0]
	if len(values) > 1 || !validKey(key) {
		s.requests.WithLabelValues(outcomeInvalid).Inc()
		problem.Write(w, headerProblem(problem.BadRequest(fmt.Sprintf("the %s header must be sent once, as 1 to %d printable ASCII characters", Header, MaxKeyLength)), "is not a valid key"))
		return
	}
	scope := opts.Scope(r)
	if scope == "" {
		// A service bug, not the client's: refuse rather than run unprotected
		// in a key space shared with every other unidentified caller.
		s.log.ErrorContext(ctx, "idempotency scope is empty; refusing the request", "method", r.Method, "path", r.URL.Path)
		s.requests.WithLabelValues(outcomeError).Inc()
		problem.Write(w, problem.Internal())
		return
	}

	body, err := readBody(r)
	if err != nil {
		s.requests.WithLabelValues(outcomeInvalid).Inc()
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem.Write(w, problem.TooLarge(tooBig.Limit))
			return
		}
		problem.Write(w, problem.BadRequest("the request body could not be read"))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	lk := newLock(fingerprint(r.Method, r.URL.RequestURI(), body))
	rkey := s.recordKey(scope, key)
	actx, cancel := context.WithTimeout(ctx, opTimeout)
	existing, acquired, err := s.acquire(actx, rkey, lk, opts.LockTTL)
	cancel()
	if err != nil {
		s.log.ErrorContext(ctx, "idempotency store unavailable", "err", err)
		s.requests.WithLabelValues(outcomeError).Inc()
		problem.Write(w, problem.Unavailable("the idempotency store is unavailable; retry later with the same "+Header, unavailableRetry))
		return
	}
	if !acquired {
		s.answerExisting(w, r, existing, lk.Fingerprint)
		return
	}
	s.requests.WithLabelValues(outcomeFirst).Inc()
	s.runFirst(w, r, next, rkey, lk, opts)
}

// answerExisting answers a request whose key is already taken.
func (s *Store) answerExisting(w http.ResponseWriter, r *http.Request, v []byte, fp string) {
	rec, err := decodeRecord(v)
	switch {
	case err != nil:
		s.log.ErrorContext(r.Context(), "unreadable idempotency record", "err", err)
		s.requests.WithLabelValues(outcomeError).Inc()
		problem.Write(w, problem.Internal())
	case rec.Fingerprint != fp:
		// Refused even while the first request is still in flight: retrying
		// cannot make a different request match, so 409 would mislead.
		s.requests.WithLabelValues(outcomeMismatch).Inc()
		p := problem.New(http.StatusUnprocessableEntity, "idempotency-key-reused",
			"this "+Header+" was already used with a different request (method, path or body); use a new key for a new request")
		problem.Write(w, headerProblem(p, "was used with a different request"))
	case rec.InFlight:
		s.requests.WithLabelValues(outcomeInFlight).Inc()
		p := problem.Conflict("idempotency-key-in-use", "a request with this "+Header+" is still being processed; retry after it completes")
		p.RetryAfter = inFlightRetry
		problem.Write(w, headerProblem(p, "is in use by a request in flight"))
	default:
		s.requests.WithLabelValues(outcomeReplayed).Inc()
		h := w.Header()
		for name, vals := range rec.Header {
			h[name] = vals
		}
		h.Set(ReplayedHeader, "true")
		w.WriteHeader(rec.Status)
		_, _ = w.Write(rec.Body)
	}
}

// runFirst runs the handler under the lock and records its response.
func (s *Store) runFirst(w http.ResponseWriter, r *http.Request, next http.Handler, rkey string, lk lock, opts Options) {
	// Recording must happen even when the client has gone away, since the
	// handler's work is done; only the deadline of each call bounds it.
	bg := context.WithoutCancel(r.Context())
	stopRenew := s.keepLocked(bg, rkey, lk, opts.LockTTL)
	finished := false
	defer func() {
		if finished {
			return
		}
		// The handler panicked (telemetry answers 500) or called Goexit:
		// like any 5xx, release the key so the client can retry with it.
		stopRenew()
		s.release(bg, rkey, lk)
	}()

	rw := &recorder{ResponseWriter: w}
	next.ServeHTTP(rw, r)
	finished = true
	stopRenew()

	status := rw.statusOrOK()
	if !storable(status) {
		s.release(bg, rkey, lk)
		return
	}
	done := record{Fingerprint: lk.Fingerprint, Status: status, Header: rw.header, Body: rw.body.Bytes()}
	ctx, cancel := context.WithTimeout(bg, opTimeout)
	defer cancel()
	ok, err := s.complete(ctx, rkey, lk, done, opts.TTL)
	switch {
	case err != nil:
		// The lock expires after LockTTL and a retry runs the handler again;
		// nothing better is possible without the store.
		s.failures.WithLabelValues(opComplete).Inc()
		s.log.ErrorContext(r.Context(), "idempotency record not written", "err", err, "status", status)
	case !ok:
		s.failures.WithLabelValues(opLockLost).Inc()
		s.log.WarnContext(r.Context(), "idempotency lock was lost before the response was recorded; the newer request's record is kept", "status", status)
	}
}

// keepLocked renews the lock every LockTTL/3 until the returned stop is
// called, so a handler slower than LockTTL keeps its key while a crashed
// process loses it after LockTTL.
func (s *Store) keepLocked(ctx context.Context, rkey string, lk lock, ttl time.Duration) (stop func()) {
	quit := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(ctx, min(opTimeout, ttl/3))
			ok, err := s.renew(rctx, rkey, lk, ttl)
			cancel()
			switch {
			case err != nil:
				s.failures.WithLabelValues(opRenew).Inc()
				s.log.WarnContext(ctx, "idempotency lock not renewed", "err", err)
			case !ok:
				s.failures.WithLabelValues(opLockLost).Inc()
				s.log.WarnContext(ctx, "idempotency lock lost while the handler runs")
				return
			}
		}
	}()
	stopped := false
	return func() {
		if !stopped {
			stopped = true
			close(quit)
			<-exited
		}
	}
}

func (s *Store) release(ctx context.Context, rkey string, lk lock) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := s.unlock(ctx, rkey, lk); err != nil {
		// The key stays in flight until LockTTL, then frees itself.
		s.failures.WithLabelValues(opRelease).Inc()
		s.log.WarnContext(ctx, "idempotency lock not released", "err", err)
	}
}

// storable reports whether a response is final for its key. 5xx responses
// and the 4xx ones that mean "not processed, try again later" are not, so
// the client's retry with the same key runs the handler.
func storable(status int) bool {
	switch {
	case status >= 500:
		return false
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return false
	}
	return true
}

// validKey accepts 1 to MaxKeyLength printable ASCII characters.
func validKey(k string) bool {
	if k == "" || len(k) > MaxKeyLength {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// headerProblem names the header in p's errors, so clients can point at it
// the way they point at a body field.
func headerProblem(p *problem.Problem, msg string) *problem.Problem {
	p.Errors = []problem.FieldError{{Field: Header, Message: msg}}
	return p
}

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	return io.ReadAll(r.Body)
}

// fingerprint identifies a request by method, path with query, and body. The
// method and URI cannot hold a newline, so the framing is unambiguous.
func fingerprint(method, uri string, body []byte) string {
	h := sha256.New()
	_, _ = io.WriteString(h, method+"\n"+uri+"\n")
	_, _ = h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}
