// Package inventory keeps stock per variant and location and sells exactly
// what there is: reservations, commits and releases run as Lua scripts on
// Redis counters, and every change reaches an append-only PostgreSQL ledger,
// which is the source of truth Redis is rebuilt from (docs/adr/0013).
package inventory

import (
	"context"
	_ "embed"
	"fmt"
	"io/fs"
	"net/http"
	"time"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/idempotency"
	"github.com/mercato/mercato/platform/service"
	"github.com/mercato/mercato/services/inventory/adapters/pgledger"
	"github.com/mercato/mercato/services/inventory/adapters/redisstock"
	"github.com/mercato/mercato/services/inventory/migrations"
)

// Name is the service's name in configuration, topics and databases.
const Name = "inventory"

// Migrations is the inventory's schema, for `mercato migrate`.
func Migrations() fs.FS { return migrations.FS }

// OpenAPI is the inventory's part of the public API document.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Run wires the inventory into env: the ledger and its outbox, the Redis
// state and the loops that keep it whole, recorded and swept, the admin
// routes and the internal RPC API.
func Run(ctx context.Context, env *service.Env) error {
	inv, err := open(ctx, env)
	if err != nil {
		return err
	}
	env.Go("stock-pipeline", inv.redis.Pipeline)
	env.Go("stock-guard", inv.guard)
	env.Go("ledger-writer", inv.writer)
	env.Go("reservation-sweeper", inv.sweeper)

	verifier, err := env.Auth(ctx)
	if err != nil {
		return err
	}
	rdb, err := env.Redis(ctx)
	if err != nil {
		return err
	}
	idempotent, err := idempotency.New(rdb, env.Keys(), env.Registry, env.Log).Middleware(idempotency.Options{Scope: auth.CallerScope})
	if err != nil {
		return err
	}
	requireAdmin := auth.RequireAdmin(verifier)
	a := &api{inv: inv, log: env.Log}
	a.admin(env.Server.Mux(), func(h http.Handler) http.Handler { return requireAdmin(idempotent(h)) })
	if err := registerRPC(env, inv); err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	return nil
}

// open connects the inventory's stores.
func open(ctx context.Context, env *service.Env) (*Inventory, error) {
	cfg := env.Config.Get()
	pool, err := env.Postgres(ctx, migrations.FS)
	if err != nil {
		return nil, err
	}
	rdb, err := env.Redis(ctx)
	if err != nil {
		return nil, err
	}
	if err := env.Outbox(ctx, pool); err != nil {
		return nil, err
	}
	locations := cfg.Inventory.Locations
	hot, err := redisstock.New(rdb, env.Keys(), locations)
	if err != nil {
		return nil, err
	}
	own := hot.Dedicated(rdb)
	env.Defer("stock-redis", func(context.Context) error { return own.Close() })
	m, err := newMetrics(env.Registry)
	if err != nil {
		return nil, err
	}
	return &Inventory{
		redis:     hot,
		ledger:    pgledger.New(pool, env.Namespace()),
		cfg:       env.Config,
		log:       env.Log,
		now:       func() time.Time { return time.Now().UTC() },
		admission: newAdmission(),
		metrics:   m,
		kick:      make(chan struct{}, 1),
	}, nil
}
