package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds one cache's counters, resolved to their label values once so
// that counting on the hit path is a single atomic add.
type metrics struct {
	hitsLocal, hitsRemote        prometheus.Counter
	misses, loads, loadErrors    prometheus.Counter
	staleLocal, staleRemote      prometheus.Counter
	invalidBoth, invalidLocal    prometheus.Counter
	purges                       prometheus.Counter
	redisGet, redisSet, redisDel prometheus.Counter
	redisDecode, redisEncode     prometheus.Counter
	redisRejected                prometheus.Counter
	breakerState                 prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, name string) (*metrics, error) {
	hits, err := counterVec(reg, "cache_hits_total", "Cache reads answered without a load, by cache and tier (local or redis).", "cache", "tier")
	if err != nil {
		return nil, err
	}
	stale, err := counterVec(reg, "cache_stale_fills_refused_total", "Fills refused because the tier knew of a newer version (or, in memory, of an invalidation it could not rule out), by cache and tier.", "cache", "tier")
	if err != nil {
		return nil, err
	}
	inval, err := counterVec(reg, "cache_invalidations_total", "Invalidations applied, by cache and scope (both tiers, local only, or a purge of process memory).", "cache", "scope")
	if err != nil {
		return nil, err
	}
	redisErrs, err := counterVec(reg, "cache_redis_errors_total", "Failed Redis operations, which the cache survives by falling through to the loader, by cache and operation.", "cache", "op")
	if err != nil {
		return nil, err
	}
	misses, err := counterVec(reg, "cache_misses_total", "Cache reads that found the key in neither tier and waited for a load, by cache.", "cache")
	if err != nil {
		return nil, err
	}
	loads, err := counterVec(reg, "cache_loads_total", "Calls of the loader, by cache; concurrent misses of one key share a call.", "cache")
	if err != nil {
		return nil, err
	}
	loadErrs, err := counterVec(reg, "cache_load_errors_total", "Loader calls that returned an error, by cache.", "cache")
	if err != nil {
		return nil, err
	}
	rejected, err := counterVec(reg, "cache_redis_rejected_total", "Redis reads and fills skipped because the cache's Redis breaker was open, by cache.", "cache")
	if err != nil {
		return nil, err
	}
	state, err := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cache_redis_breaker_state",
		Help: "State of the breaker in front of Redis reads and fills, by cache: 0 closed, 1 half-open, 2 open.",
	}, []string{"cache"}))
	if err != nil {
		return nil, err
	}
	return &metrics{
		hitsLocal:     hits.WithLabelValues(name, "local"),
		hitsRemote:    hits.WithLabelValues(name, "redis"),
		misses:        misses.WithLabelValues(name),
		loads:         loads.WithLabelValues(name),
		loadErrors:    loadErrs.WithLabelValues(name),
		staleLocal:    stale.WithLabelValues(name, "local"),
		staleRemote:   stale.WithLabelValues(name, "redis"),
		invalidBoth:   inval.WithLabelValues(name, "both"),
		invalidLocal:  inval.WithLabelValues(name, "local"),
		purges:        inval.WithLabelValues(name, "purge"),
		redisGet:      redisErrs.WithLabelValues(name, "get"),
		redisSet:      redisErrs.WithLabelValues(name, "set"),
		redisDel:      redisErrs.WithLabelValues(name, "invalidate"),
		redisDecode:   redisErrs.WithLabelValues(name, "decode"),
		redisEncode:   redisErrs.WithLabelValues(name, "encode"),
		redisRejected: rejected.WithLabelValues(name),
		breakerState:  state.WithLabelValues(name),
	}, nil
}

func counterVec(reg prometheus.Registerer, name, help string, labels ...string) (*prometheus.CounterVec, error) {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

// register registers c, or returns the collector already registered under
// the same name, so that several caches share one registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		var zero C
		return zero, err
	}
	return c, nil
}

// breakerValue is the cache_redis_breaker_state value of a breaker state,
// the same scale as rpc_client_breaker_state.
func breakerValue(s circuitbreaker.State) float64 {
	switch s {
	case circuitbreaker.OpenState:
		return 2
	case circuitbreaker.HalfOpenState:
		return 1
	default:
		return 0
	}
}

// throttledLog logs at most one message per interval and reports how many it
// dropped in between, so a Redis outage at 10,000 reads/s does not flood the log.
type throttledLog struct {
	log      *slog.Logger
	interval time.Duration
	next     atomic.Int64 // UnixNano before which messages are only counted
	dropped  atomic.Int64
}

func (l *throttledLog) warn(ctx context.Context, msg string, args ...any) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(l.interval)) {
		l.dropped.Add(1)
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.WarnContext(ctx, msg, args...)
}

// otterLogger sends the in-process cache's own warnings to the cache's logger.
type otterLogger struct{ log *slog.Logger }

func (l otterLogger) Warn(ctx context.Context, msg string, err error) {
	l.log.WarnContext(ctx, msg, "err", err)
}

func (l otterLogger) Error(ctx context.Context, msg string, err error) {
	l.log.ErrorContext(ctx, msg, "err", err)
}
