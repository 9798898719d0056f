package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/mercato/mercato/platform/redisx"
)

// ErrNegativeVersion reports a version below zero; versions are compared as
// non-negative decimal numbers in Redis.
var ErrNegativeVersion = errors.New("cache: negative version")

// Options size a cache and bound how long it keeps entries. Zero fields take
// the defaults documented on each.
type Options struct {
	// LocalSize is the most entries, tombstones included, kept in process
	// memory (default 10,000).
	LocalSize int
	// LocalTTL bounds how long an entry lives in process memory, and so how
	// stale an instance can be when it misses an invalidation event
	// (default 1 minute).
	LocalTTL time.Duration
	// RemoteTTL is how long values and tombstones live in Redis (default 10
	// minutes). A tombstone protects against stale fills for this long, so it
	// must be far longer than any load.
	RemoteTTL time.Duration
	// RedisTimeout bounds each Redis read and fill whose caller has a later
	// deadline (default 100ms), so a slow Redis costs a read little before it
	// falls through to the loader. Invalidations get at least a second.
	RedisTimeout time.Duration
	// LoadTimeout bounds one shared fetch: the Redis read, the load and the
	// fills (default 10s). The fetch does not end when the caller that
	// started it gives up, because other callers may be waiting for it.
	LoadTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.LocalSize == 0 {
		o.LocalSize = 10_000
	}
	if o.LocalTTL == 0 {
		o.LocalTTL = time.Minute
	}
	if o.RemoteTTL == 0 {
		o.RemoteTTL = 10 * time.Minute
	}
	if o.RedisTimeout == 0 {
		o.RedisTimeout = 100 * time.Millisecond
	}
	if o.LoadTimeout == 0 {
		o.LoadTimeout = 10 * time.Second
	}
}

// Validate reports the first option that cannot work.
func (o Options) Validate() error {
	switch {
	case o.LocalSize < 0:
		return fmt.Errorf("cache: LocalSize %d must not be negative", o.LocalSize)
	case o.LocalTTL < 0:
		return fmt.Errorf("cache: LocalTTL %s must not be negative", o.LocalTTL)
	case o.RemoteTTL < 0:
		return fmt.Errorf("cache: RemoteTTL %s must not be negative", o.RemoteTTL)
	case o.RemoteTTL > 0 && o.RemoteTTL < time.Millisecond:
		return fmt.Errorf("cache: RemoteTTL %s is below Redis's millisecond resolution", o.RemoteTTL)
	case o.RedisTimeout < 0:
		return fmt.Errorf("cache: RedisTimeout %s must not be negative", o.RedisTimeout)
	case o.LoadTimeout < 0:
		return fmt.Errorf("cache: LoadTimeout %s must not be negative", o.LoadTimeout)
	}
	return nil
}

// stripes is how many invalidation generations a cache keeps; keys share
// them by hash, so memory stays fixed however many keys are invalidated.
const stripes = 1024

// Cache is a two-tier read cache of values of type V, safe for concurrent use.
type Cache[V any] struct {
	name    string
	local   *otter.Cache[string, entry[V]]
	remote  *remote
	keys    redisx.Keys
	codec   Codec[V]
	flights singleflight.Group
	opts    Options
	m       *metrics
	log     *slog.Logger
	errLog  throttledLog

	// gens counts invalidations per stripe of keys. A fetch notes its
	// stripe's generation before it reads; if the generation moved by the
	// time it fills memory and memory holds nothing for the key, a tombstone
	// may have been evicted or purged meanwhile, so the fill is dropped. The
	// same number tells a waiter whether a shared fetch began before an
	// invalidation the waiter has already seen.
	seed maphash.Seed
	gens [stripes]atomic.Uint64
}

// entry is what memory holds for a key: a value, or a tombstone that only
// remembers the version of the last change.
type entry[V any] struct {
	value   V
	version int64
	present bool // false for a tombstone
}

// source says which tier answered a fetch.
type source uint8

const (
	fromLocal source = iota
	fromRemote
	fromLoad
)

// fetched is the result a fetch shares with every caller waiting for it.
type fetched[V any] struct {
	value V
	gen   uint64 // the stripe's generation when the fetch began
	from  source
}

// New returns a cache named name (unique per service; it appears in Redis
// keys as keys.Key("cache", name, key) and in metrics as the cache label).
func New[V any](name string, opts Options, rdb *redis.Client, keys redisx.Keys, codec Codec[V], reg prometheus.Registerer, log *slog.Logger) (*Cache[V], error) {
	if name == "" || strings.ContainsAny(name, ": ") {
		return nil, fmt.Errorf("cache: name %q must be non-empty without ':' or spaces", name)
	}
	if rdb == nil || codec == nil || reg == nil || log == nil {
		return nil, fmt.Errorf("cache %s: redis client, codec, registerer and logger are required", name)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	m, err := newMetrics(reg, name)
	if err != nil {
		return nil, fmt.Errorf("cache %s: metrics: %w", name, err)
	}
	log = log.With("cache", name)
	local, err := otter.New(&otter.Options[string, entry[V]]{
		MaximumSize:      opts.LocalSize,
		ExpiryCalculator: otter.ExpiryWriting[string, entry[V]](opts.LocalTTL),
		Logger:           otterLogger{log},
		// Reading the precise time was a fifth of a memory hit; a clock that
		// ticks at a hundredth of LocalTTL costs a variable read instead and
		// makes entries expire at most that much late.
		Clock: otter.NewCoarseClock(max(time.Millisecond, min(opts.LocalTTL/100, 100*time.Millisecond))),
	})
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", name, err)
	}
	onBreaker := func(e circuitbreaker.StateChangedEvent) {
		m.breakerState.Set(breakerValue(e.NewState))
		if e.NewState == circuitbreaker.OpenState {
			log.Warn("cache redis breaker opened; reads skip redis and load from the source", "from", e.OldState.String())
			return
		}
		log.Info("cache redis breaker changed", "from", e.OldState.String(), "to", e.NewState.String())
	}
	return &Cache[V]{
		name:   name,
		local:  local,
		remote: newRemote(rdb, opts.RemoteTTL, opts.RedisTimeout, onBreaker),
		keys:   keys,
		codec:  codec,
		opts:   opts,
		m:      m,
		log:    log,
		errLog: throttledLog{log: log, interval: 10 * time.Second},
		seed:   maphash.MakeSeed(),
	}, nil
}

// Get returns the value for key from process memory, else from Redis, else
// from load, whose result is written to both tiers. Concurrent misses of one
// key share one Redis read and at most one call of load; load receives a
// context that keeps the caller's values but not its cancellation, bounded by
// LoadTimeout. load returns the value and its version, a number that grows
// with every change of the record. Errors from load are returned as they are
// and are not cached. Callers must not modify the value: it is shared.
func (c *Cache[V]) Get(ctx context.Context, key string, load func(ctx context.Context) (V, int64, error)) (V, error) {
	if e, ok := c.local.GetIfPresent(key); ok && e.present {
		c.m.hitsLocal.Inc()
		return e.value, nil
	}
	return c.getShared(ctx, key, load)
}

// getShared waits for the one fetch of key in flight, starting it if needed.
func (c *Cache[V]) getShared(ctx context.Context, key string, load func(ctx context.Context) (V, int64, error)) (V, error) {
	gen := c.gen(key)
	for {
		seen := gen.Load()
		ch := c.flights.DoChan(key, func() (any, error) {
			return c.fetch(ctx, key, gen, load)
		})
		var r singleflight.Result
		select {
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		case r = <-ch:
		}
		if r.Err != nil {
			var zero V
			return zero, r.Err
		}
		f, _ := r.Val.(fetched[V])
		if f.gen < seen {
			// The fetch began before an invalidation this call has seen
			// complete, so its value may be the one invalidated. Wait for a
			// fetch that begins after now: singleflight forgot this one
			// before handing out its result, so the next fetch begins after
			// seen was read and the loop runs at most twice.
			continue
		}
		switch f.from {
		case fromLocal:
			c.m.hitsLocal.Inc()
		case fromRemote:
			c.m.hitsRemote.Inc()
		case fromLoad:
			c.m.misses.Inc()
		}
		return f.value, nil
	}
}

// fetch reads key from Redis or loads it, and fills the tiers that accept it.
func (c *Cache[V]) fetch(callerCtx context.Context, key string, gen *atomic.Uint64, load func(ctx context.Context) (V, int64, error)) (fetched[V], error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(callerCtx), c.opts.LoadTimeout)
	defer cancel()
	f := fetched[V]{gen: gen.Load()}
	// A fetch that just finished may have filled memory after this caller
	// missed; looking again spares Redis the late arrivals of a stampede.
	if e, ok := c.local.GetIfPresent(key); ok && e.present {
		f.value, f.from = e.value, fromLocal
		return f, nil
	}
	rkey := c.keys.Key("cache", c.name, key)
	redisUp := true
	re, err := c.remote.get(ctx, rkey)
	switch {
	case errors.Is(err, errBreakerOpen):
		redisUp = false
		c.m.redisRejected.Inc()
	case err != nil:
		// Without the read we do not know Redis's version, and the fill
		// would most likely fail the same way; memory still guards itself.
		redisUp = false
		c.m.redisGet.Inc()
		c.errLog.warn(ctx, "cache redis read failed; loading from the source", "key", key, "err", err)
	case re.hasValue:
		v, err := c.codec.Unmarshal(re.data)
		if err != nil {
			// The fill below, at a version at least as new, overwrites it.
			c.m.redisDecode.Inc()
			c.errLog.warn(ctx, "cache entry in redis does not decode; loading from the source", "key", key, "err", err)
			break
		}
		if c.fillLocal(key, entry[V]{value: v, version: re.version, present: true}, gen, f.gen) {
			f.value, f.from = v, fromRemote
			return f, nil
		}
		// Memory knows of a change Redis has not recorded (its invalidation
		// failed and is being retried, or is under way): ask the source.
	}

	c.m.loads.Inc()
	v, version, err := c.callLoad(ctx, key, load)
	if err == nil && version < 0 {
		err = fmt.Errorf("%w: cache %s: loader returned version %d for key %q", ErrNegativeVersion, c.name, version, key)
	}
	if err != nil {
		c.m.loadErrors.Inc()
		return f, err
	}
	f.value, f.from = v, fromLoad
	if redisUp && !c.fillRemote(ctx, rkey, key, v, version) {
		// Redis knows a newer version: memory must not take this one
		// either, even if this instance has not yet heard of the change.
		return f, nil
	}
	c.fillLocal(key, entry[V]{value: v, version: version, present: true}, gen, f.gen)
	return f, nil
}

// callLoad runs load, turning a panic into an error: load runs on a goroutine
// of its own, where a panic would escape the request's recovery middleware and
// end the process.
func (c *Cache[V]) callLoad(ctx context.Context, key string, load func(ctx context.Context) (V, int64, error)) (v V, version int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.ErrorContext(ctx, "cache loader panicked", "key", key, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("cache %s: loader for key %q panicked: %v", c.name, key, p)
		}
	}()
	return load(ctx)
}

// fillRemote stores a loaded value in Redis unless Redis holds a newer
// version. It reports false only when Redis refused the value as stale; a
// Redis failure is logged and counted, and the caller may still fill memory.
func (c *Cache[V]) fillRemote(ctx context.Context, rkey, key string, v V, version int64) bool {
	data, err := c.codec.Marshal(v)
	if err != nil {
		c.m.redisEncode.Inc()
		c.errLog.warn(ctx, "cache value does not encode; not stored in redis", "key", key, "err", err)
		return true
	}
	stored, err := c.remote.set(ctx, rkey, version, data)
	if errors.Is(err, errBreakerOpen) {
		c.m.redisRejected.Inc()
		return true
	}
	if err != nil {
		c.m.redisSet.Inc()
		c.errLog.warn(ctx, "cache redis fill failed", "key", key, "err", err)
		return true
	}
	if !stored {
		c.m.staleRemote.Inc()
	}
	return stored
}

// fillLocal stores e in memory unless memory holds a newer version of key,
// or holds nothing while the key's stripe saw an invalidation since seen
// (then a tombstone that would have refused e may have been evicted). It
// reports whether it stored e.
func (c *Cache[V]) fillLocal(key string, e entry[V], gen *atomic.Uint64, seen uint64) bool {
	stored := false
	c.local.Compute(key, func(old entry[V], found bool) (entry[V], otter.ComputeOp) {
		if found && old.version > e.version || !found && gen.Load() != seen {
			return old, otter.CancelOp
		}
		stored = true
		return e, otter.WriteOp
	})
	if !stored {
		c.m.staleLocal.Inc()
	}
	return stored
}

// Invalidate records that key changed at version, the version of the change
// (for a delete, a version above the record's last one): both tiers drop
// anything older and refuse older fills from then on, so a reader that read
// the source before the change cannot put the old value back. Redis is
// changed first, so that any fetch that begins after memory is invalidated
// finds the tombstone there. If Redis fails, memory is still invalidated and
// the error is returned so that the caller retries.
func (c *Cache[V]) Invalidate(ctx context.Context, key string, version int64) error {
	if version < 0 {
		return fmt.Errorf("%w: cache %s: invalidate %q at version %d", ErrNegativeVersion, c.name, key, version)
	}
	err := c.remote.invalidate(ctx, c.keys.Key("cache", c.name, key), version)
	if err != nil {
		c.m.redisDel.Inc()
		err = fmt.Errorf("cache %s: invalidate %q in redis: %w", c.name, key, err)
	}
	c.invalidateLocal(key, version)
	c.m.invalidBoth.Inc()
	return err
}

// InvalidateLocal does what Invalidate does for process memory only; an
// instance calls it when it hears that another instance changed the record
// and already invalidated Redis.
func (c *Cache[V]) InvalidateLocal(key string, version int64) {
	c.invalidateLocal(key, version)
	c.m.invalidLocal.Inc()
}

func (c *Cache[V]) invalidateLocal(key string, version int64) {
	// The generation moves before the tombstone is written, so a fill that
	// misses the tombstone (not yet written, or already evicted) sees the
	// moved generation instead; a fill that comes before both is overwritten.
	c.gen(key).Add(1)
	c.local.Compute(key, func(old entry[V], found bool) (entry[V], otter.ComputeOp) {
		if found && old.version >= version {
			return old, otter.CancelOp
		}
		return entry[V]{version: version}, otter.WriteOp
	})
}

// PurgeLocal empties process memory, for example after a bulk load; fetches
// already under way do not fill it with what they read before.
func (c *Cache[V]) PurgeLocal() {
	for i := range c.gens {
		c.gens[i].Add(1)
	}
	c.local.InvalidateAll()
	c.m.purges.Inc()
}

// gen returns the invalidation generation of key's stripe.
func (c *Cache[V]) gen(key string) *atomic.Uint64 {
	return &c.gens[maphash.String(c.seed, key)&(stripes-1)]
}
