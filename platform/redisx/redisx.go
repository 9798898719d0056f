// Package redisx opens Mercato's Redis client with a pool sized from config
// and names keys inside the process's namespace, so several platforms (a
// developer's and the tests') share one Redis without colliding.
package redisx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/config"
)

// Open connects to Redis and checks that it answers.
func Open(ctx context.Context, cfg config.RedisConfig) (*redis.Client, error) {
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		// A *url.Error quotes the whole URL, password included; keep only
		// its reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redis url %s: %w", Redacted(cfg.URL), err)
	}
	opts.PoolSize = cfg.PoolSize
	opts.MinIdleConns = cfg.MinIdleConns
	opts.DialTimeout = cfg.DialTimeout
	opts.ReadTimeout = cfg.ReadTimeout
	opts.WriteTimeout = cfg.WriteTimeout
	c := redis.NewClient(opts)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("connect to redis at %s: %w", Redacted(cfg.URL), err)
	}
	return c, nil
}

// Redacted returns the URL without its password, for messages.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Keys builds the keys of one service in one namespace:
// <namespace>:<service>:<parts joined by ':'>.
type Keys struct{ prefix string }

// NewKeys returns the key builder for service in namespace.
func NewKeys(namespace, service string) Keys { return Keys{prefix: namespace + ":" + service + ":"} }

// Key joins parts under the prefix.
func (k Keys) Key(parts ...string) string { return k.prefix + strings.Join(parts, ":") }

// Prefix is the common prefix of every key, for scans and cleanup.
func (k Keys) Prefix() string { return k.prefix }

// RouteClientLogs sends go-redis's own log lines (it logs every failed dial
// of its pool, many per second while Redis is down) to log at debug level, so
// a process reports a Redis outage once, through its own errors and metrics.
// go-redis keeps one logger per process, so main calls this once.
func RouteClientLogs(log *slog.Logger) {
	redis.SetLogger(clientLog{log.With("component", "go-redis")})
}

type clientLog struct{ log *slog.Logger }

func (l clientLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
