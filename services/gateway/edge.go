package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/cors"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/redisx"
)

// corsHandler answers preflight requests and marks responses for the origins
// that configuration allows; the allowed origins are a live key.
func corsHandler(store *config.Store) func(http.Handler) http.Handler {
	c := cors.New(cors.Options{
		AllowOriginFunc: func(origin string) bool {
			origins := store.Get().Gateway.CORSOrigins
			return slices.Contains(origins, "*") || slices.Contains(origins, origin)
		},
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		AllowedHeaders: []string{"Authorization", "Content-Type", "Idempotency-Key", "If-Match", "If-None-Match", "traceparent", "tracestate", "X-Request-Id"},
		ExposedHeaders: []string{"ETag", "Location", "Retry-After", "X-Request-Id", "Idempotent-Replayed", "RateLimit-Limit", "RateLimit-Remaining"},
		MaxAge:         600,
	})
	return c.Handler
}

// clientIP finds the address of the client: the connection's peer, or — when
// the peer is a trusted proxy — the nearest untrusted hop in X-Forwarded-For.
type clientIP struct {
	trusted []netip.Prefix
}

func newClientIP(cidrs []string) (*clientIP, error) {
	c := &clientIP{}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		c.trusted = append(c.trusted, p)
	}
	return c, nil
}

func (c *clientIP) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c *clientIP) of(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || len(c.trusted) == 0 || !c.isTrusted(peer.Unmap()) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		// A proxy may write an IPv4 hop as ::ffff:a.b.c.d, which no IPv4
		// prefix contains and which would give one client two rate limits.
		a = a.Unmap()
		if !c.isTrusted(a) {
			return a.String()
		}
	}
	return host
}

// rateLimiter limits requests per client address with Redis (GCRA, so every
// gateway replica shares one budget per client). The rate is a live key; 0
// turns the limit off. If Redis fails the request is let through: a broken
// limiter must not take the store down, and the failure is counted. After
// five failures in a row a breaker skips Redis for a second at a time, so an
// outage does not add the check's timeout to every request.
type rateLimiter struct {
	store   *config.Store
	limiter *redis_rate.Limiter
	keys    redisx.Keys
	ip      *clientIP
	log     *slog.Logger
	breaker circuitbreaker.CircuitBreaker[any]

	limited  prometheus.Counter
	failures prometheus.Counter
	skipped  prometheus.Counter
	lastWarn atomic.Int64
}

func newRateLimiter(store *config.Store, rdb *redis.Client, keys redisx.Keys, ip *clientIP, log *slog.Logger, reg prometheus.Registerer) *rateLimiter {
	rl := &rateLimiter{
		store: store, limiter: redis_rate.NewLimiter(rdb), keys: keys, ip: ip, log: log,
		limited:  prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_rate_limited_total", Help: "Requests refused by the per-IP rate limit."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_rate_limit_errors_total", Help: "Rate limit checks that failed and let the request through."}),
		skipped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_rate_limit_skipped_total", Help: "Requests let through unchecked because the limiter's Redis breaker was open."}),
		breaker: circuitbreaker.NewBuilder[any]().
			WithFailureThreshold(5).
			WithSuccessThreshold(1).
			WithDelay(time.Second).
			OnOpen(func(circuitbreaker.StateChangedEvent) {
				log.Warn("rate limiter cannot reach Redis; letting requests through unchecked until it answers again")
			}).
			Build(),
	}
	reg.MustRegister(rl.limited, rl.failures, rl.skipped)
	return rl
}

func (rl *rateLimiter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cfg := rl.store.Get().Gateway
		if cfg.RateLimitPerIP <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		if !rl.breaker.TryAcquirePermit() {
			rl.skipped.Inc()
			next.ServeHTTP(w, r)
			return
		}
		limit := redis_rate.Limit{Rate: cfg.RateLimitPerIP, Burst: max(cfg.RateLimitBurst, 1), Period: time.Second}
		ctx, cancel := context.WithTimeout(r.Context(), 250*time.Millisecond)
		res, err := rl.limiter.Allow(ctx, rl.keys.Key("ratelimit", "ip", rl.ip.of(r)), limit)
		cancel()
		if err != nil {
			rl.breaker.RecordFailure()
			rl.failures.Inc()
			if now := time.Now().Unix(); rl.lastWarn.Swap(now) != now {
				rl.log.Warn("rate limit check failed; letting requests through", "err", err)
			}
			next.ServeHTTP(w, r)
			return
		}
		rl.breaker.RecordSuccess()
		w.Header().Set("RateLimit-Limit", strconv.Itoa(limit.Rate))
		w.Header().Set("RateLimit-Remaining", strconv.Itoa(max(res.Remaining, 0)))
		if res.Allowed == 0 {
			rl.limited.Inc()
			problem.Write(w, problem.TooManyRequests("too many requests from your address; slow down", max(res.RetryAfter, time.Second)))
			return
		}
		next.ServeHTTP(w, r)
	})
}
