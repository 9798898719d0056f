package catalog

import (
	"context"
	_ "embed"
	"fmt"
	"io/fs"
	"net/http"
	"time"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/cache"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/idempotency"
	"github.com/mercato/mercato/platform/service"
	"github.com/mercato/mercato/services/catalog/migrations"
)

const serviceName = "catalog"

// Name is the service's name in configuration, topics and databases.
const Name = serviceName

// Migrations is the catalog's schema, for `mercato migrate`.
func Migrations() fs.FS { return migrations.FS }

// Run wires the catalog into env: its database, caches, event relay and
// listener, public and admin routes, and internal RPC API.
func Run(ctx context.Context, env *service.Env) error {
	cfg := env.Config.Get()
	pool, err := env.Postgres(ctx, migrations.FS)
	if err != nil {
		return err
	}
	rdb, err := env.Redis(ctx)
	if err != nil {
		return err
	}
	broker, err := env.Broker(ctx)
	if err != nil {
		return err
	}
	if err := env.Outbox(ctx, pool); err != nil {
		return err
	}
	store := NewStore(pool, env.Namespace())
	products, err := cache.New[view]("product", cache.Options{
		LocalSize: cfg.Catalog.LocalCacheSize, LocalTTL: cfg.Catalog.LocalCacheTTL, RemoteTTL: cfg.Catalog.CacheTTL,
	}, rdb, env.Keys(), viewCodec{}, env.Registry, env.Log)
	if err != nil {
		return err
	}
	pages, err := newPageCache(20_000, 30*time.Second, env.Registry)
	if err != nil {
		return err
	}
	read := &reader{store: store, products: products, pages: pages}

	// Every instance hears every change, so each drops its own in-process
	// copies; Redis is updated by whichever instance made the change and
	// again by each listener, which is idempotent.
	listener := events.NewListener(broker, env.Namespace(), env.Log, env.Registry)
	listener.On(serviceName, EventProductChanged, func(ctx context.Context, e events.Envelope) error {
		var d ProductChanged
		if err := e.Decode(&d); err != nil {
			return err
		}
		return read.changed(ctx, d.ProductID, d.Version)
	})
	listener.On(serviceName, EventCategoryChanged, func(context.Context, events.Envelope) error { pages.purge(); return nil })
	listener.On(serviceName, EventCatalogReloaded, func(context.Context, events.Envelope) error { pages.purge(); return nil })
	env.Go("event-listener", listener.Run)

	// Inventory owns stock; the catalog keeps each variant's in_stock from
	// its events, once per event whichever instance handles it.
	stock := events.NewConsumer(stockConsumerGroup, broker, pool, env.Namespace(), env.Config, env.Log, env.Registry)
	followStock(stock, store)
	env.Go("stock-consumer", stock.Run)

	a := &api{store: store, read: read, log: env.Log, now: func() time.Time { return time.Now().UTC() },
		maxAge: func() time.Duration { return env.Config.Get().Catalog.MaxAge }}
	mux := env.Server.Mux()
	a.public(mux)
	// Admin routes verify the token again rather than trust the gateway:
	// the catalog is reachable without it inside the cluster.
	verifier, err := env.Auth(ctx)
	if err != nil {
		return err
	}
	requireAdmin := auth.RequireAdmin(verifier)
	// Idempotency records are kept per verified subject, so Authenticate
	// runs before them.
	idempotent, err := idempotency.New(rdb, env.Keys(), env.Registry, env.Log).Middleware(idempotency.Options{Scope: auth.CallerScope})
	if err != nil {
		return err
	}
	a.admin(mux, func(h http.Handler) http.Handler { return requireAdmin(idempotent(h)) })
	if err := registerRPC(env, store); err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	return nil
}

// OpenAPI is the catalog's part of the public API document.
//
//go:embed openapi.yaml
var OpenAPI []byte
