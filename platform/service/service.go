// Package service is how a Mercato service process is assembled: it gives
// the service an Env — configuration, logger, metrics registry, tracer, its
// HTTP server and lazily opened infrastructure clients (its own PostgreSQL
// database with migrations applied, namespaced Redis, the event broker) —
// then runs everything the service started until the context ends, and
// closes the clients after the server has drained.
package service

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/broker"
	"github.com/mercato/mercato/platform/lifecycle"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/redisx"
	"github.com/mercato/mercato/platform/rpc"
	"github.com/mercato/mercato/platform/server"
	"github.com/mercato/mercato/platform/telemetry"
	"github.com/mercato/mercato/proto/gen/mercato/identity/v1/identityv1connect"
)

// Setup wires a service into env: it opens what it needs, registers routes on
// env.Server.Mux() and starts background work with env.Go.
type Setup func(ctx context.Context, env *Env) error

// Env is what a running service is given.
type Env struct {
	Name     string
	Config   *config.Store
	Log      *slog.Logger
	Registry *prometheus.Registry
	Tracing  *telemetry.Tracing
	Server   *server.Server

	group *lifecycle.Group

	mu          sync.Mutex
	pool        *pgxpool.Pool
	rdb         *redis.Client
	rdbCritical bool
	broker      events.Broker
	verifier    *auth.Verifier
}

// Options adjust how Run assembles a service.
type Options struct {
	// Listen overrides the configured listen address (tests use
	// 127.0.0.1:0).
	Listen string
	// Ready, when set, receives the server's address once it listens.
	Ready func(addr string)
}

// Run assembles the named service, calls setup, and runs until ctx ends or a
// part fails. Errors from setup (an unreachable database, say) are returned
// at once, before anything serves.
func Run(ctx context.Context, name string, store *config.Store, log *slog.Logger, setup Setup, opts Options) error {
	cfg := store.Get()
	log = log.With("service", name)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range store.Collectors() {
		// One store serves every service of a single-process platform; each
		// service's registry shows the shared counters.
		_ = reg.Register(c)
	}
	tracing, err := telemetry.NewTracing(ctx, name, cfg.Telemetry.OTLPEndpoint, cfg.Telemetry.SampleRatio)
	if err != nil {
		return err
	}
	listen := opts.Listen
	if listen == "" {
		listen = cfg.Service(name).Listen
	}
	srv := server.New(server.Options{
		Name: name, Addr: listen, HTTP: cfg.HTTP, Registry: reg,
		Tracer: tracing.Tracer("mercato/" + name), Log: log, Pprof: cfg.Telemetry.Pprof,
	})
	env := &Env{Name: name, Config: store, Log: log, Registry: reg, Tracing: tracing, Server: srv, group: lifecycle.New(log)}
	closeCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}
	env.group.Defer("tracing", tracing.Shutdown)
	if err := setup(ctx, env); err != nil {
		cctx, cancel := closeCtx()
		env.group.Close(cctx)
		cancel()
		return fmt.Errorf("%s: %w", name, err)
	}
	env.group.Go("http", srv.Run)
	if opts.Ready != nil {
		env.group.Go("ready", func(ctx context.Context) error {
			addr, err := srv.Addr(ctx)
			if err == nil {
				opts.Ready(addr.String())
			}
			<-ctx.Done()
			return nil
		})
	}
	return env.group.Run(ctx, closeCtx)
}

// Go runs fn alongside the server until the service stops.
func (e *Env) Go(name string, fn func(ctx context.Context) error) { e.group.Go(name, fn) }

// Defer runs fn when the service stops, after the server has drained.
func (e *Env) Defer(name string, fn func(ctx context.Context) error) { e.group.Defer(name, fn) }

// Namespace is the configured namespace.
func (e *Env) Namespace() string { return e.Config.Get().Namespace }

// Keys names this service's Redis keys.
func (e *Env) Keys() redisx.Keys { return redisx.NewKeys(e.Namespace(), e.Name) }

// Postgres opens the service's own database (creating it if needed), applies
// the platform's event tables and then the service's migrations, and makes
// readiness depend on it.
func (e *Env) Postgres(ctx context.Context, migrations fs.FS) (*pgxpool.Pool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pool != nil {
		return e.pool, nil
	}
	pool, err := OpenDatabase(ctx, e.Config.Get(), e.Name, migrations, e.Log)
	if err != nil {
		return nil, err
	}
	e.pool = pool
	e.Server.AddCheck("postgres", func(ctx context.Context) error { return pool.Ping(ctx) })
	e.group.Defer("postgres", func(context.Context) error { pool.Close(); return nil })
	return pool, nil
}

// OpenDatabase opens the named service's database, creating it if needed,
// and brings its schema up to date: the platform's event tables first, then
// the service's own migrations (nil for none).
func OpenDatabase(ctx context.Context, cfg *config.Config, name string, migrations fs.FS, log *slog.Logger) (*pgxpool.Pool, error) {
	pool, err := pg.Open(ctx, cfg.Postgres, pg.DatabaseName(cfg.Namespace, name))
	if err != nil {
		return nil, err
	}
	if err := pg.Migrate(ctx, pool, events.Migrations, events.MigrationsTable, log); err != nil {
		pool.Close()
		return nil, err
	}
	if migrations != nil {
		if err := pg.Migrate(ctx, pool, migrations, "goose_db_version", log); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return pool, nil
}

// Redis connects to Redis and makes readiness depend on it.
func (e *Env) Redis(ctx context.Context) (*redis.Client, error) {
	return e.redis(ctx, true)
}

// RedisDegradable connects to Redis for a service that keeps serving while
// Redis is down (the gateway's rate limiter fails open): readiness does not
// depend on it, so a Redis outage does not take every replica out of its
// load balancer.
func (e *Env) RedisDegradable(ctx context.Context) (*redis.Client, error) {
	return e.redis(ctx, false)
}

func (e *Env) redis(ctx context.Context, critical bool) (*redis.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rdb == nil {
		rdb, err := redisx.Open(ctx, e.Config.Get().Redis)
		if err != nil {
			return nil, err
		}
		e.rdb = rdb
		e.group.Defer("redis", func(context.Context) error { return rdb.Close() })
	}
	if critical && !e.rdbCritical {
		e.rdbCritical = true
		rdb := e.rdb
		e.Server.AddCheck("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	}
	return e.rdb, nil
}

// Broker connects to the configured event broker.
func (e *Env) Broker(ctx context.Context) (events.Broker, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.broker != nil {
		return e.broker, nil
	}
	b, err := broker.Open(ctx, e.Config.Get(), e.Log)
	if err != nil {
		return nil, err
	}
	e.broker = b
	e.group.Defer("broker", func(context.Context) error { return b.Close() })
	return b, nil
}

// Auth returns the service's access-token verifier, made on first use and
// shared by every caller: it reaches identity (services.identity.url) for
// its JWKS and, through an rpc client with the usual deadline, retries and
// breaker, for revoked sessions; it runs until the service stops. Readiness
// waits for its first load from identity, for at most a few seconds (see
// auth.Verifier.Check), and never depends on identity afterwards.
func (e *Env) Auth(ctx context.Context) (*auth.Verifier, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.verifier != nil {
		return e.verifier, nil
	}
	url := e.Config.Get().Service("identity").URL
	client, err := rpc.NewClient("identity", url, e.Config, e.Tracing.Provider, e.Registry, e.Log)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	sessions := identityv1connect.NewSessionServiceClient(client.HTTPClient(), client.BaseURL(), client.Options()...)
	v, err := auth.NewVerifier(e.Config, client.HTTPClient(), sessions, e.Log, e.Registry)
	if err != nil {
		client.Close()
		return nil, err
	}
	e.verifier = v
	e.Server.AddCheck("auth", v.Check)
	e.group.Go("auth-verifier", v.Run)
	e.group.Defer("identity-client", func(context.Context) error { client.Close(); return nil })
	return v, nil
}

// Outbox starts the relay that forwards the service's outbox to the broker.
func (e *Env) Outbox(ctx context.Context, pool *pgxpool.Pool) error {
	b, err := e.Broker(ctx)
	if err != nil {
		return err
	}
	relay := events.NewRelay(pool, b, e.Config.Get().Broker, e.Log, e.Registry)
	e.Go("outbox-relay", relay.Run)
	return nil
}
