package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/redis/go-redis/v9"
)

// An entry in Redis is a hash: field v holds the version as a decimal string,
// field d the encoded value. A tombstone is the same hash without d. Both kinds
// expire after RemoteTTL.
const (
	fieldVersion = "v"
	fieldData    = "d"
)

// olderLua compares two versions written by this package: non-negative
// decimal strings without leading zeros. It compares digits instead of
// numbers because Lua numbers are doubles, exact only up to 2^53, and versions
// such as UnixNano timestamps are larger.
const olderLua = `
local function older(a, b)
  if #a ~= #b then return #a < #b end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end
`

// fillLua stores a value unless the key holds a newer version. A value of the
// same version as a tombstone is accepted: the tombstone marks the change that
// produced it. A value of the same version as a stored value replaces it, which
// repairs an entry that no longer decodes.
//
// KEYS[1] entry; ARGV[1] version, ARGV[2] encoded value, ARGV[3] TTL in ms.
// Returns 1 if stored, 0 if refused as stale.
const fillLua = olderLua + `
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and older(ARGV[1], cur) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`

// tombstoneLua replaces whatever is stored with a tombstone at the given
// version unless the stored version is as new or newer, so an invalidation
// that arrives late never removes a value it did not make stale.
//
// KEYS[1] entry; ARGV[1] version, ARGV[2] TTL in ms.
// Returns 1 if written, 0 if the stored entry was already as new.
const tombstoneLua = olderLua + `
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and not older(cur, ARGV[1]) then return 0 end
redis.call('HDEL', KEYS[1], 'd')
redis.call('HSET', KEYS[1], 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

// The breaker in front of Redis reads and fills: after breakerFailures
// failures in a row, reads and fills skip Redis for about breakerDelay, then
// one trial call decides whether to resume. While Redis is down, a miss then
// costs a load instead of a load plus a Redis timeout.
const (
	breakerFailures = 5
	breakerDelay    = time.Second
	breakerJitter   = 0.1 // so that instances that opened together probe apart
)

// invalidateTimeout is the least time an invalidation's Redis call gets.
const invalidateTimeout = time.Second

// errBreakerOpen reports a Redis call skipped because the breaker is open.
var errBreakerOpen = errors.New("redis breaker open")

// remote is the Redis tier of one cache.
type remote struct {
	rdb       *redis.Client
	ttl       string // RemoteTTL in milliseconds, formatted once
	timeout   time.Duration
	fill      *redis.Script
	tombstone *redis.Script
	breaker   circuitbreaker.CircuitBreaker[any]
}

func newRemote(rdb *redis.Client, ttl, timeout time.Duration, onBreaker func(circuitbreaker.StateChangedEvent)) *remote {
	return &remote{
		rdb:       rdb,
		ttl:       strconv.FormatInt(ttl.Milliseconds(), 10),
		timeout:   timeout,
		fill:      redis.NewScript(fillLua),
		tombstone: redis.NewScript(tombstoneLua),
		breaker: circuitbreaker.NewBuilder[any]().
			WithFailureThreshold(breakerFailures).
			WithSuccessThreshold(1).
			WithDelay(breakerDelay).
			WithJitterFactor(breakerJitter).
			OnStateChanged(onBreaker).
			Build(),
	}
}

// guarded runs a read or fill through the breaker.
func (r *remote) guarded(ctx context.Context, call func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err // the fetch ran out of time; that says nothing about Redis
	}
	if !r.breaker.TryAcquirePermit() {
		return errBreakerOpen
	}
	ctx, cancel := bound(ctx, r.timeout)
	defer cancel()
	err := call(ctx)
	if err != nil {
		r.breaker.RecordFailure()
	} else {
		r.breaker.RecordSuccess()
	}
	return err
}

// remoteEntry is what a read found: nothing, a tombstone, or a value.
type remoteEntry struct {
	version  int64 // of the value or tombstone; 0 if nothing was found
	hasValue bool  // false for a tombstone or nothing
	data     []byte
}

// get reads one entry.
func (r *remote) get(ctx context.Context, key string) (remoteEntry, error) {
	var vals []any
	err := r.guarded(ctx, func(ctx context.Context) (err error) {
		vals, err = r.rdb.HMGet(ctx, key, fieldVersion, fieldData).Result()
		return err
	})
	if err != nil {
		return remoteEntry{}, err
	}
	vs, ok := vals[0].(string)
	if !ok {
		return remoteEntry{}, nil
	}
	ver, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return remoteEntry{}, fmt.Errorf("entry %s: version %q: %w", key, vs, err)
	}
	e := remoteEntry{version: ver}
	if d, ok := vals[1].(string); ok {
		e.hasValue, e.data = true, []byte(d)
	}
	return e, nil
}

// set stores data at version if nothing newer is stored and reports whether it did.
func (r *remote) set(ctx context.Context, key string, version int64, data []byte) (bool, error) {
	var n int
	err := r.guarded(ctx, func(ctx context.Context) (err error) {
		n, err = r.fill.Run(ctx, r.rdb, []string{key}, strconv.FormatInt(version, 10), data, r.ttl).Int()
		return err
	})
	return n == 1, err
}

// invalidate writes a tombstone at version unless something as new is stored.
// It bypasses the breaker: an invalidation is rare and must be attempted, and
// its error makes the caller retry.
func (r *remote) invalidate(ctx context.Context, key string, version int64) error {
	// Off the read path, an invalidation may wait longer than a read: one
	// that times out leaves the old value in Redis until the caller retries.
	ctx, cancel := bound(ctx, max(r.timeout, invalidateTimeout))
	defer cancel()
	return r.tombstone.Run(ctx, r.rdb, []string{key}, strconv.FormatInt(version, 10), r.ttl).Err()
}

// bound gives a Redis call timeout unless the caller's deadline is already
// sooner: a slow Redis must cost a read a little latency, not the whole
// request budget.
func bound(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}
