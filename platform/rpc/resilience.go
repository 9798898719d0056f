package rpc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/mercato/mercato/platform/config"
)

// Retry backoff: the first retry waits about retryBaseDelay, each later one
// twice as long up to retryMaxDelay, each varied by ±retryJitter so that
// callers that failed together do not retry together.
const (
	retryBaseDelay = 50 * time.Millisecond
	retryMaxDelay  = time.Second
	retryJitter    = 0.5
	// breakerJitter varies the open delay so that the breakers of many
	// processes that opened together do not probe the dependency together.
	breakerJitter = 0.1
)

// policies are a dependency's stateful resilience policies, rebuilt when the
// live settings they were built from change.
type policies struct {
	breakerFrom  breakerSettings
	bulkheadFrom int
	breaker      circuitbreaker.CircuitBreaker[connect.AnyResponse]
	bulkhead     bulkhead.Bulkhead[connect.AnyResponse] // nil: no limit
}

// breakerSettings are the rpc keys a breaker is built from, as configured.
type breakerSettings struct {
	ratio  float64
	window int
	delay  time.Duration
}

func breakerSettingsOf(r config.RPCConfig) breakerSettings {
	return breakerSettings{ratio: r.BreakerFailureRatio, window: r.BreakerWindow, delay: r.BreakerDelay}
}

// current returns the policies for the settings in r, rebuilding the breaker
// or the bulkhead when the keys they were built from changed. Checking on
// each call costs a comparison; it needs no subscription to the store and
// so nothing to undo when a Client is dropped.
func (c *Client) current(r config.RPCConfig) *policies {
	bs := breakerSettingsOf(r)
	if p := c.pol.Load(); p != nil && p.breakerFrom == bs && p.bulkheadFrom == r.MaxConcurrent {
		return p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.pol.Load()
	if old != nil && old.breakerFrom == bs && old.bulkheadFrom == r.MaxConcurrent {
		return old
	}
	p := &policies{breakerFrom: bs, bulkheadFrom: r.MaxConcurrent}
	if old != nil && old.breakerFrom == bs {
		p.breaker = old.breaker
	} else {
		c.breakers++
		gen := c.breakers
		p.breaker = c.newBreaker(bs, gen)
		if old != nil {
			// Carry the state over, so that changing a threshold does not
			// close an open breaker in front of a dependency that is down.
			// Counts in the closed state start again.
			switch old.breaker.State() {
			case circuitbreaker.OpenState:
				p.breaker.Open()
			case circuitbreaker.HalfOpenState:
				p.breaker.HalfOpen()
			}
			c.log.Info("rpc circuit breaker rebuilt for new settings", "failure_ratio", bs.ratio, "window", bs.window, "delay", bs.delay, "state", p.breaker.State().String())
		}
		// From here on only this breaker's transitions reach the gauge.
		c.gaugeMu.Lock()
		c.liveBreaker = gen
		c.breakerState.Set(stateValue(p.breaker.State()))
		c.gaugeMu.Unlock()
	}
	if old != nil && old.bulkheadFrom == r.MaxConcurrent {
		p.bulkhead = old.bulkhead
	} else if r.MaxConcurrent > 0 {
		// Calls in flight on the old bulkhead finish there, so for a moment
		// the limits add up; that is the price of not blocking on a change.
		p.bulkhead = bulkhead.NewBuilder[connect.AnyResponse](uint(r.MaxConcurrent)).Build()
	}
	c.pol.Store(p)
	return p
}

// newBreaker builds a count-based breaker that opens when ceil(ratio×window)
// of the last window calls failed, waits delay, then lets one trial call
// through and closes when it succeeds.
func (c *Client) newBreaker(s breakerSettings, gen uint64) circuitbreaker.CircuitBreaker[connect.AnyResponse] {
	def := config.Defaults().RPC
	window := max(1, s.window)
	ratio := s.ratio
	if ratio <= 0 || ratio > 1 {
		ratio = def.BreakerFailureRatio
	}
	delay := s.delay
	if delay <= 0 {
		delay = def.BreakerDelay
	}
	// The epsilon keeps 0.3×10 at 3 failures despite binary floating point.
	failures := uint(min(float64(window), max(1, math.Ceil(ratio*float64(window)-1e-9))))
	return circuitbreaker.NewBuilder[connect.AnyResponse]().
		HandleIf(func(_ connect.AnyResponse, err error) bool { return isServerFault(err) }).
		WithFailureThresholdRatio(failures, uint(window)).
		WithSuccessThreshold(1).
		WithDelay(delay).
		WithJitterFactor(breakerJitter).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) { c.breakerChanged(gen, e) }).
		Build()
}

// breakerChanged publishes a transition of the breaker of generation gen,
// unless that breaker has since been replaced.
func (c *Client) breakerChanged(gen uint64, e circuitbreaker.StateChangedEvent) {
	c.gaugeMu.Lock()
	defer c.gaugeMu.Unlock()
	if c.liveBreaker != gen {
		return
	}
	c.breakerState.Set(stateValue(e.NewState))
	if e.NewState == circuitbreaker.OpenState {
		c.log.Warn("rpc circuit breaker opened; calls fail fast", "from", e.OldState.String())
		return
	}
	c.log.Info("rpc circuit breaker changed", "from", e.OldState.String(), "to", e.NewState.String())
}

// stateValue is the rpc_client_breaker_state value of a breaker state.
func stateValue(s circuitbreaker.State) float64 {
	switch s {
	case circuitbreaker.OpenState:
		return 2
	case circuitbreaker.HalfOpenState:
		return 1
	default:
		return 0
	}
}

// isServerFault reports whether err says the dependency (or the way to it)
// is unwell, which is what a breaker counts. A caller's mistake such as
// InvalidArgument or NotFound is an answer from a healthy server.
func isServerFault(err error) bool {
	if err == nil {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeInternal, connect.CodeUnknown, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// idempotent reports whether the contract says a procedure may be repeated.
func idempotent(spec connect.Spec) bool {
	return spec.IdempotencyLevel == connect.IdempotencyNoSideEffects || spec.IdempotencyLevel == connect.IdempotencyIdempotent
}

// guard runs each unary call through the dependency's policies, outermost
// first: retry (idempotent procedures only), bulkhead, circuit breaker, and
// the attempt with its deadline. The bulkhead sits outside the breaker so
// that a call refused for lack of room is not counted by the breaker as a
// success or a failure of the dependency.
type guard struct{ c *Client }

// WrapUnary applies the deadline, retry, bulkhead and breaker to a call.
func (g guard) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		return g.c.call(ctx, req, next)
	}
}

// WrapStreamingClient leaves streams alone; see Client.
func (g guard) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler leaves handlers alone: this is a client interceptor.
func (g guard) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (c *Client) call(ctx context.Context, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	r := c.store.Get().RPC
	p := c.current(r)
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = config.Defaults().RPC.Timeout
	}
	// ownDeadline tells the retry policy whether the last attempt ran out of
	// the time this client gave it, rather than of the caller's time.
	var ownDeadline atomic.Bool
	chain := make([]failsafe.Policy[connect.AnyResponse], 0, 3)
	if r.Retries > 0 && idempotent(req.Spec()) {
		chain = append(chain, c.retryPolicy(ctx, req.Spec().Procedure, r.Retries, &ownDeadline))
	}
	if p.bulkhead != nil {
		chain = append(chain, p.bulkhead)
	}
	chain = append(chain, p.breaker)
	resp, err := failsafe.With(chain...).WithContext(ctx).Get(func() (connect.AnyResponse, error) {
		actx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		mine, _ := actx.Deadline()
		callers, ok := ctx.Deadline()
		ownDeadline.Store(!ok || mine.Before(callers))
		return next(actx, req)
	})
	return resp, c.translate(err)
}

// retryPolicy retries a call of procedure after Unavailable, Aborted, or a
// DeadlineExceeded that hit this client's per-attempt timeout while the
// caller still has time. ResourceExhausted is not retried: the dependency
// asked for less load, and retrying would add more.
func (c *Client) retryPolicy(ctx context.Context, procedure string, retries int, ownDeadline *atomic.Bool) retrypolicy.RetryPolicy[connect.AnyResponse] {
	return retrypolicy.NewBuilder[connect.AnyResponse]().
		HandleIf(func(_ connect.AnyResponse, err error) bool {
			if err == nil || ctx.Err() != nil {
				return false
			}
			switch connect.CodeOf(err) {
			case connect.CodeUnavailable, connect.CodeAborted:
				return true
			case connect.CodeDeadlineExceeded:
				return ownDeadline.Load()
			}
			return false
		}).
		WithMaxRetries(retries).
		WithBackoff(retryBaseDelay, retryMaxDelay).
		WithJitterFactor(retryJitter).
		ReturnLastFailure().
		OnRetry(func(failsafe.ExecutionEvent[connect.AnyResponse]) {
			c.metrics.retries.WithLabelValues(c.dep, procedure).Inc()
		}).
		Build()
}

// translate turns what the policies return into Connect errors that name the
// dependency, so callers see one kind of error whatever refused the call.
func (c *Client) translate(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, circuitbreaker.ErrOpen):
		c.rejectedOpen.Inc()
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s: %w", c.dep, ErrBreakerOpen))
	case errors.Is(err, bulkhead.ErrFull):
		c.rejectedFull.Inc()
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%s: %w", c.dep, ErrBulkheadFull))
	}
	if _, ok := errors.AsType[*connect.Error](err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	}
	return err
}
