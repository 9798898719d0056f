// Package platformtest gives integration tests their own corner of the real
// infrastructure on the machine: a fresh namespace, a PostgreSQL database, a
// Redis key prefix and broker names under it, all removed when the test ends,
// so tests run in parallel against one server without colliding. It also
// holds the small helpers that test suites would otherwise each copy: a
// goroutine-safe output Buffer, a ClosedAddr, and Eventually for conditions
// that hold after a while.
package platformtest

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/redisx"
)

// Environment variables that point tests at non-default servers.
const (
	EnvPostgres = "MERCATO_TEST_POSTGRES_URL"
	EnvRedis    = "MERCATO_TEST_REDIS_URL"
	EnvNATS     = "MERCATO_TEST_NATS_URL"
	EnvAMQP     = "MERCATO_TEST_AMQP_URL"
)

// Namespace returns a fresh namespace such as t_k3j9x0q2ab.
func Namespace(t testing.TB) string {
	t.Helper()
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "t_" + string(b)
}

// Config returns the default configuration in a fresh namespace, pointed at
// the test servers.
func Config(t testing.TB) config.Config {
	t.Helper()
	cfg := config.Defaults()
	cfg.Namespace = Namespace(t)
	cfg.Postgres.URL = env(EnvPostgres, cfg.Postgres.URL)
	cfg.Redis.URL = env(EnvRedis, cfg.Redis.URL)
	cfg.Broker.NATSURL = NATSURL()
	cfg.Postgres.MaxConns = 8
	cfg.Postgres.MinConns = 0
	cfg.Redis.PoolSize = 16
	cfg.Redis.MinIdleConns = 0
	return cfg
}

// NATSURL is the NATS server (with JetStream) that tests use.
func NATSURL() string { return env(EnvNATS, "nats://127.0.0.1:4222") }

// AMQPURL is the RabbitMQ server that tests use.
func AMQPURL() string { return env(EnvAMQP, "amqp://guest:guest@127.0.0.1:5672/") }

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Postgres opens the database of service in cfg's namespace, created for the
// test and dropped after it.
func Postgres(t testing.TB, cfg config.Config, service string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := pg.DatabaseName(cfg.Namespace, service)
	pool, err := pg.Open(ctx, cfg.Postgres, db)
	if err != nil {
		t.Fatalf("postgres: %v (is PostgreSQL running on %s?)", err, pg.Redacted(cfg.Postgres.URL))
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.DropDatabase(ctx, cfg.Postgres, db); err != nil {
			t.Logf("drop database %s: %v", db, err)
		}
	})
	return pool
}

// DropDatabasesAfter removes every database of the namespace when the test
// ends, for tests that run whole services which create their own.
func DropDatabasesAfter(t testing.TB, cfg config.Config) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pool, err := pgxpool.New(ctx, cfg.Postgres.URL)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer pool.Close()
		rows, err := pool.Query(ctx, "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", cfg.Namespace+"_")
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		var names []string
		for rows.Next() {
			var n string
			if rows.Scan(&n) == nil {
				names = append(names, n)
			}
		}
		rows.Close()
		for _, n := range names {
			if err := pg.DropDatabase(ctx, cfg.Postgres, n); err != nil {
				t.Logf("drop database %s: %v", n, err)
			}
		}
	})
}

// Redis connects to the test Redis and deletes the namespace's keys when the
// test ends.
func Redis(t testing.TB, cfg config.Config) *redis.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := redisx.Open(ctx, cfg.Redis)
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		DeleteKeys(ctx, t, c, cfg.Namespace+":*")
		_ = c.Close()
	})
	return c
}

// DeleteKeys removes every key matching pattern.
func DeleteKeys(ctx context.Context, t testing.TB, c *redis.Client, pattern string) {
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			c.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		c.Unlink(ctx, batch...)
	}
	if err := iter.Err(); err != nil {
		t.Logf("redis cleanup: %v", err)
	}
}

// Logger returns a logger that writes to the test log at debug level.
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testWriter forwards to t.Log until the test has finished, so goroutines
// that outlive a test cannot make it panic.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
