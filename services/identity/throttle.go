package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/redisx"
)

// ErrUnavailable is a dependency (Redis, PostgreSQL) that did not answer;
// the edge answers 503.
var ErrUnavailable = errors.New("a dependency is unavailable")

// throttle limits logins with Redis (GCRA, shared by every replica): per
// account, failures only, at most identity.login_failures_per_hour with a
// burst of identity.login_failure_burst; per client address, every attempt,
// at most identity.login_attempts_per_minute — unless
// gateway.rate_limit_per_ip is 0, which turns per-address limits off for
// load tests from one address while the per-account limit stays on. All
// limits are live keys.
//
// Unlike the gateway's limiter it fails closed: a login that cannot be
// counted is refused with 503, since the sessions it would create live in
// the same Redis anyway.
type throttle struct {
	limiter *redis_rate.Limiter
	keys    redisx.Keys
	config  *config.Store
}

func newThrottle(rdb *redis.Client, keys redisx.Keys, store *config.Store) *throttle {
	return &throttle{limiter: redis_rate.NewLimiter(rdb), keys: keys, config: store}
}

// accountKey names an account's failure budget by a hash of its email, so
// that Redis holds no addresses and unknown emails are counted alike.
func (t *throttle) accountKey(email string) string {
	sum := sha256.Sum256([]byte(email))
	return t.keys.Key("login", "account", hex.EncodeToString(sum[:16]))
}

func (t *throttle) accountLimit() (redis_rate.Limit, bool) {
	cfg := t.config.Get().Identity
	if cfg.LoginFailuresPerHour <= 0 {
		return redis_rate.Limit{}, false
	}
	return redis_rate.Limit{Rate: cfg.LoginFailuresPerHour, Burst: max(cfg.LoginFailureBurst, 1), Period: time.Hour}, true
}

// before counts an attempt from addr and checks that the account still has
// room for a failure; it returns a *RateLimitedError when either limit is
// exhausted.
func (t *throttle) before(ctx context.Context, email, addr string) error {
	cfg := t.config.Get()
	if n := cfg.Identity.LoginAttemptsPerMinute; n > 0 && cfg.Gateway.RateLimitPerIP > 0 {
		res, err := t.limiter.Allow(ctx, t.keys.Key("login", "ip", addr), redis_rate.Limit{Rate: n, Burst: n, Period: time.Minute})
		if err != nil {
			return fmt.Errorf("%w: login throttle: %v", ErrUnavailable, err)
		}
		if res.Allowed == 0 {
			return &RateLimitedError{RetryAfter: max(res.RetryAfter, time.Second)}
		}
	}
	limit, ok := t.accountLimit()
	if !ok {
		return nil
	}
	// A zero-cost check: it reads the budget without spending it.
	res, err := t.limiter.AllowN(ctx, t.accountKey(email), limit, 0)
	if err != nil {
		return fmt.Errorf("%w: login throttle: %v", ErrUnavailable, err)
	}
	if res.Remaining < 1 {
		// One more failure fits once the budget has drained to burst-1.
		interval := limit.Period / time.Duration(limit.Rate)
		retry := res.ResetAfter - time.Duration(limit.Burst-1)*interval
		return &RateLimitedError{RetryAfter: max(retry, time.Second)}
	}
	return nil
}

// failed spends one unit of the account's failure budget.
func (t *throttle) failed(ctx context.Context, email string, log *slog.Logger) {
	limit, ok := t.accountLimit()
	if !ok {
		return
	}
	if _, err := t.limiter.AllowN(ctx, t.accountKey(email), limit, 1); err != nil {
		log.WarnContext(ctx, "counting a failed login failed", "err", err)
	}
}
