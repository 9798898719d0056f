package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/auth/authtest"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/broker"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/service"
)

func TestRunServesWhatSetupRegisters(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	store := config.Static(cfg)
	live := cfg
	live.Log.Level = "debug"
	if changed := store.Set(live); !reflect.DeepEqual(changed, []string{"log.level"}) {
		t.Fatalf("Set changed %v, want log.level", changed)
	}

	var mu sync.Mutex
	var journal []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		journal = append(journal, s)
	}
	r := start(t, "catalog", store, func(ctx context.Context, env *service.Env) error {
		if env.Name != "catalog" || env.Namespace() != cfg.Namespace || env.Config != store {
			t.Errorf("env = %s in %s, want catalog in %s with the store given", env.Name, env.Namespace(), cfg.Namespace)
		}
		env.Server.Mux().HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello from "+env.Name)
		})
		env.Go("worker", func(ctx context.Context) error {
			note("worker started")
			<-ctx.Done()
			note("worker stopped")
			return nil
		})
		env.Defer("closer", func(context.Context) error { note("closer ran"); return nil })
		return nil
	})

	if status, body := r.get(t, "/hello"); status != 200 || body != "hello from catalog" {
		t.Errorf("GET /hello = %d %q", status, body)
	}
	if status, rd := r.readyz(t); status != 200 || len(rd.Checks) != 0 {
		t.Errorf("/readyz = %d %+v, want ready without checks", status, rd)
	}
	status, metrics := r.get(t, "/metrics")
	if status != 200 {
		t.Fatalf("/metrics = %d", status)
	}
	for _, want := range []string{
		"go_goroutines ",
		"go_gc_duration_seconds",
		"process_cpu_seconds_total",
		`mercato_config_changes_total{key="log.level"} 1`,
		`http_server_requests_total{code="200",method="GET",route="GET /hello"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	platformtest.Eventually(t, "the worker starts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(journal) > 0
	})

	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil after ctx ended", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"worker started", "worker stopped", "closer ran"}; !reflect.DeepEqual(journal, want) {
		t.Errorf("journal = %q, want %q", journal, want)
	}
}

func TestServicesOfOneProcessShareTheConfigCounters(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	store := config.Static(cfg)
	live := cfg
	live.Broker.MaxAttempts = cfg.Broker.MaxAttempts + 1
	store.Set(live)
	noop := func(context.Context, *service.Env) error { return nil }
	for _, r := range []*running{start(t, "catalog", store, noop), start(t, "order", store, noop)} {
		if _, metrics := r.get(t, "/metrics"); !strings.Contains(metrics, `mercato_config_changes_total{key="broker.max_attempts"} 1`) {
			t.Errorf("%s /metrics lacks the shared config counter", r.url)
		}
	}
}

func TestRunReturnsSetupErrorsAfterClosingWhatSetupOpened(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	boom := errors.New("bad settings")

	var (
		rdb      *redis.Client
		pool     *pgxpool.Pool
		closed   []string
		listened bool
	)
	setup := func(ctx context.Context, env *service.Env) error {
		var err error
		if rdb, err = env.Redis(ctx); err != nil {
			return err
		}
		if pool, err = env.Postgres(ctx, nil); err != nil {
			return err
		}
		env.Defer("probe", func(context.Context) error { closed = append(closed, "probe"); return nil })
		env.Go("never", func(context.Context) error { closed = append(closed, "a part ran"); return nil })
		return boom
	}
	opts := service.Options{Listen: "127.0.0.1:0", Ready: func(string) { listened = true }}
	err := service.Run(ctxFor(t), "catalog", config.Static(cfg), platformtest.Logger(t), setup, opts)

	if !errors.Is(err, boom) || err.Error() != "catalog: bad settings" {
		t.Errorf("Run = %v, want the setup error named after the service", err)
	}
	if listened {
		t.Error("the server listened although setup failed")
	}
	if !reflect.DeepEqual(closed, []string{"probe"}) {
		t.Errorf("closers and parts that ran: %q, want only the probe closer", closed)
	}
	if rdb == nil || pool == nil {
		t.Fatal("setup did not open Redis and PostgreSQL")
	}
	if err := rdb.Ping(context.Background()).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("Redis client after the failed setup: ping = %v, want it closed", err)
	}
	if err := pool.Ping(context.Background()); err == nil {
		t.Error("PostgreSQL pool after the failed setup still answers; want it closed")
	}
}

func TestEnvPostgres(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	var pool *pgxpool.Pool
	r := start(t, "inventory", config.Static(cfg), func(ctx context.Context, env *service.Env) error {
		var err error
		if pool, err = env.Postgres(ctx, widgetMigrations); err != nil {
			return err
		}
		again, err := env.Postgres(ctx, widgetMigrations)
		if err != nil || again != pool {
			t.Errorf("second Postgres = %p, %v; want the same pool %p", again, err, pool)
		}
		return nil
	})
	ctx := ctxFor(t)

	var exists bool
	admin, err := pgx.Connect(ctx, cfg.Postgres.URL)
	if err != nil {
		t.Fatalf("connect to the server: %v", err)
	}
	defer admin.Close(context.Background())
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", cfg.Namespace+"_inventory").Scan(&exists); err != nil || !exists {
		t.Errorf("database %s_inventory exists = %v (%v)", cfg.Namespace, exists, err)
	}
	var db string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != cfg.Namespace+"_inventory" {
		t.Errorf("the pool is on database %q (%v), want %s_inventory", db, err, cfg.Namespace)
	}
	for _, table := range []string{"outbox", "processed_events", events.MigrationsTable, "widgets", "goose_db_version"} {
		if !tableExists(t, ctx, pool, table) {
			t.Errorf("table %s is missing", table)
		}
	}

	status, rd := r.readyz(t)
	if status != 200 || !reflect.DeepEqual(rd.Checks, map[string]string{"postgres": "ok"}) {
		t.Errorf("/readyz = %d %+v, want ready with postgres ok", status, rd)
	}
	pool.Close() // readiness must really ask the database
	status, rd = r.readyz(t)
	if status != http.StatusServiceUnavailable || rd.Detail != "not ready: [postgres]" || rd.Checks["postgres"] == "ok" {
		t.Errorf("/readyz with the pool closed = %d %+v, want 503 naming postgres", status, rd)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func tableExists(t *testing.T, ctx context.Context, pool *pgxpool.Pool, table string) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil {
		t.Fatalf("look up table %s: %v", table, err)
	}
	return ok
}

func TestEnvRedis(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	platformtest.Redis(t, cfg) // deletes the namespace's keys when the test ends
	var rdb *redis.Client
	var key string
	r := start(t, "cart", config.Static(cfg), func(ctx context.Context, env *service.Env) error {
		var err error
		if rdb, err = env.Redis(ctx); err != nil {
			return err
		}
		again, err := env.Redis(ctx)
		if err != nil || again != rdb {
			t.Errorf("second Redis = %p, %v; want the same client %p", again, err, rdb)
		}
		key = env.Keys().Key("probe", "1")
		return rdb.Set(ctx, key, "v", 0).Err()
	})

	if want := cfg.Namespace + ":cart:probe:1"; key != want {
		t.Errorf("key = %q, want %q", key, want)
	}
	status, rd := r.readyz(t)
	if status != 200 || !reflect.DeepEqual(rd.Checks, map[string]string{"redis": "ok"}) {
		t.Errorf("/readyz = %d %+v, want ready with redis ok", status, rd)
	}
	_ = rdb.Close() // readiness must really ask Redis
	status, rd = r.readyz(t)
	if status != http.StatusServiceUnavailable || rd.Detail != "not ready: [redis]" || rd.Checks["redis"] == "ok" {
		t.Errorf("/readyz with the client closed = %d %+v, want 503 naming redis", status, rd)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestEnvAuth checks that a service gets one verifier that loads identity's
// keys and revocations, verifies identity's tokens, and makes readiness wait
// for its first load.
func TestEnvAuth(t *testing.T) {
	t.Parallel()
	issuer := authtest.New(t)
	issuer.SetDown(true)
	cfg := platformtest.Config(t)
	issuer.Config(&cfg)
	var v *auth.Verifier
	r := start(t, "orders", config.Static(cfg), func(ctx context.Context, env *service.Env) error {
		var err error
		if v, err = env.Auth(ctx); err != nil {
			return err
		}
		again, err := env.Auth(ctx)
		if err != nil || again != v {
			t.Errorf("second Auth = %p, %v; want the same verifier %p", again, err, v)
		}
		env.Server.Mux().Handle("GET /v1/orders", auth.Authenticate(v)(auth.Require()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := auth.FromContext(r.Context())
			_, _ = w.Write([]byte(id.Subject))
		}))))
		return nil
	})
	if status, rd := r.readyz(t); status != http.StatusServiceUnavailable || rd.Checks["auth"] == "ok" {
		t.Errorf("/readyz while identity is down = %d %+v, want 503 with auth failing", status, rd)
	}

	issuer.SetDown(false)
	platformtest.Eventually(t, "the service becomes ready", func() bool {
		status, _ := r.readyz(t)
		return status == http.StatusOK
	})
	req, err := http.NewRequest(http.MethodGet, r.url+"/v1/orders", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+issuer.Token(t, "cus_7"))
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "cus_7" {
		t.Fatalf("GET /v1/orders with a token = %d %q, want 200 cus_7", resp.StatusCode, body)
	}
	if status, _ := r.get(t, "/v1/orders"); status != http.StatusUnauthorized {
		t.Fatalf("GET /v1/orders without a token = %d, want 401", status)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestEnvOutboxRelaysToTheBroker(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	platformtest.CleanBroker(t, cfg)
	ctx := ctxFor(t)

	// A subscriber of the order.placed topic, on its own connection.
	sub, err := broker.Open(ctx, &cfg, platformtest.Logger(t))
	if err != nil {
		t.Fatalf("open broker: %v (is nats-server -js running on %s?)", err, cfg.BrokerURL())
	}
	t.Cleanup(func() { _ = sub.Close() })
	received := make(chan events.Envelope, 16)
	subCtx, stopSub := context.WithCancel(context.Background())
	subDone := make(chan error, 1)
	go func() {
		subDone <- sub.Subscribe(subCtx, events.Subscription{
			Consumer: "service-test",
			Topics:   []string{events.Topic(cfg.Namespace, "order", "order.placed")},
		}, func(ctx context.Context, d events.Delivery) {
			var e events.Envelope
			if err := json.Unmarshal(d.Message().Body, &e); err == nil {
				received <- e
			}
			_ = d.Ack(ctx)
		})
	}()
	t.Cleanup(func() {
		stopSub()
		if err := <-subDone; err != nil {
			t.Errorf("Subscribe: %v", err)
		}
	})

	var pool *pgxpool.Pool
	r := start(t, "order", config.Static(cfg), func(ctx context.Context, env *service.Env) error {
		var err error
		if pool, err = env.Postgres(ctx, nil); err != nil {
			return err
		}
		b, err := env.Broker(ctx)
		if err != nil {
			return err
		}
		if again, err := env.Broker(ctx); err != nil || again != b {
			t.Errorf("second Broker = %v, %v; want the same broker", again, err)
		}
		return env.Outbox(ctx, pool)
	})

	placed, err := events.New("order", "order.placed", "ord_1", map[string]string{"sku": "SKU-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.InTx(ctx, pool, func(tx pgx.Tx) error { return events.Add(ctx, tx, cfg.Namespace, placed) }); err != nil {
		t.Fatalf("add to the outbox: %v", err)
	}
	select {
	case got := <-received:
		if got.ID != placed.ID || got.Type != "order.placed" || got.Subject != "ord_1" {
			t.Errorf("received %+v, want %+v", got, placed)
		}
	case <-ctx.Done():
		t.Fatalf("the event did not reach the broker: %v", ctx.Err())
	}
	platformtest.Eventually(t, "the relay deletes the published row", func() bool {
		var n int
		return pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n) == nil && n == 0
	})
	platformtest.Eventually(t, "the relay's metrics show on /metrics", func() bool {
		_, metrics := r.get(t, "/metrics")
		return strings.Contains(metrics, "mercato_events_relay_published_total 1")
	})
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestOpenDatabase(t *testing.T) {
	t.Parallel()
	broken := fstest.MapFS{"00001_broken.sql": {Data: []byte("-- +goose Up\nCREATE TABLE (;\n")}}
	tests := []struct {
		name       string
		opens      int    // calls to OpenDatabase
		concurrent bool   // all at once rather than one after another
		migrations fs.FS  // nil for none
		wantErr    string // "" for success
	}{
		{name: "platform tables only", opens: 1},
		{name: "twice in a row", opens: 2, migrations: widgetMigrations},
		{name: "three at once", opens: 3, concurrent: true, migrations: widgetMigrations},
		{name: "broken service migration", opens: 1, migrations: broken, wantErr: "migrate goose_db_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := platformtest.Config(t)
			platformtest.DropDatabasesAfter(t, cfg)
			ctx := ctxFor(t)
			open := func() (*pgxpool.Pool, error) {
				return service.OpenDatabase(ctx, &cfg, "billing", tt.migrations, platformtest.Logger(t))
			}

			pools := make([]*pgxpool.Pool, tt.opens)
			errs := make([]error, tt.opens)
			var wg sync.WaitGroup
			for i := range tt.opens {
				if tt.concurrent {
					wg.Go(func() { pools[i], errs[i] = open() })
				} else {
					pools[i], errs[i] = open()
				}
			}
			wg.Wait()
			for i, p := range pools {
				if p != nil {
					t.Cleanup(p.Close)
				}
				if tt.wantErr == "" && errs[i] != nil {
					t.Errorf("open %d: %v", i+1, errs[i])
				}
				if tt.wantErr != "" && (errs[i] == nil || !strings.Contains(errs[i].Error(), tt.wantErr)) {
					t.Errorf("open %d = %v, want an error containing %q", i+1, errs[i], tt.wantErr)
				}
			}
			if tt.wantErr != "" || t.Failed() {
				return
			}

			pool := pools[len(pools)-1]
			for _, table := range []string{"outbox", "processed_events"} {
				if !tableExists(t, ctx, pool, table) {
					t.Errorf("table %s is missing", table)
				}
			}
			if got := tableExists(t, ctx, pool, "widgets"); got != (tt.migrations != nil) {
				t.Errorf("widgets table exists = %v, want %v", got, tt.migrations != nil)
			}
			var applied int
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+events.MigrationsTable+" WHERE version_id = 1 AND is_applied").Scan(&applied); err != nil || applied != 1 {
				t.Errorf("platform migration 1 recorded %d times (%v), want once", applied, err)
			}
		})
	}
}
