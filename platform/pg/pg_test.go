package pg_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/platformtest"
)

func TestDatabaseName(t *testing.T) {
	tests := []struct{ namespace, service, want string }{
		{"mercato", "catalog", "mercato_catalog"},
		{"t_k3j9x0q2ab", "order", "t_k3j9x0q2ab_order"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := pg.DatabaseName(tt.namespace, tt.service); got != tt.want {
				t.Errorf("DatabaseName(%q, %q) = %q, want %q", tt.namespace, tt.service, got, tt.want)
			}
		})
	}
}

func TestURLFor(t *testing.T) {
	tests := []struct {
		name, server, db, want string
	}{
		{"replaces the maintenance database",
			"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "mercato_catalog",
			"postgres://postgres@127.0.0.1:5432/mercato_catalog?sslmode=disable"},
		{"adds a path when there is none",
			"postgres://app:pw@db.internal:6432", "shop_order",
			"postgres://app:pw@db.internal:6432/shop_order"},
		{"keeps every query parameter",
			"postgresql://u@h/x?sslmode=require&application_name=mercato&connect_timeout=3", "ns_svc",
			"postgresql://u@h/ns_svc?sslmode=require&application_name=mercato&connect_timeout=3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pg.URLFor(tt.server, tt.db)
			if err != nil {
				t.Fatalf("URLFor: %v", err)
			}
			if got != tt.want {
				t.Errorf("URLFor(%q, %q) = %q, want %q", tt.server, tt.db, got, tt.want)
			}
		})
	}

	t.Run("an unparseable URL is an error that hides the password", func(t *testing.T) {
		_, err := pg.URLFor("postgres://postgres:s3cret@127.0.0.1:notaport/postgres", "db")
		if err == nil {
			t.Fatal("URLFor accepted a URL with a bad port")
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error reveals the password: %v", err)
		}
	})
}

func TestRedacted(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"user info password",
			"postgres://postgres:s3cret@127.0.0.1:5432/postgres?sslmode=disable",
			"postgres://postgres:xxxxx@127.0.0.1:5432/postgres?sslmode=disable"},
		{"no password left as it is",
			"postgres://postgres@127.0.0.1:5432/postgres",
			"postgres://postgres@127.0.0.1:5432/postgres"},
		{"password query parameter",
			"postgres://postgres@127.0.0.1:5432/postgres?password=s3cret&sslmode=disable",
			"postgres://postgres@127.0.0.1:5432/postgres?password=xxxxx&sslmode=disable"},
		{"sslpassword query parameter",
			"postgres://postgres@127.0.0.1:5432/postgres?sslpassword=s3cret",
			"postgres://postgres@127.0.0.1:5432/postgres?sslpassword=xxxxx"},
		{"unparseable",
			"postgres://postgres:s3cret@127.0.0.1:notaport/postgres",
			"(unparseable URL)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pg.Redacted(tt.raw)
			if got != tt.want {
				t.Errorf("Redacted(%q) = %q, want %q", tt.raw, got, tt.want)
			}
			if strings.Contains(got, "s3cret") {
				t.Errorf("Redacted(%q) reveals the password", tt.raw)
			}
		})
	}
}

func TestEnsureDatabase(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	ctx := testContext(t)

	t.Run("creates the database and is idempotent", func(t *testing.T) {
		db := pg.DatabaseName(cfg.Namespace, "ensure")
		if databaseExists(t, cfg, db) {
			t.Fatalf("database %s exists before the test", db)
		}
		for i := range 2 {
			if err := pg.EnsureDatabase(ctx, cfg.Postgres, db); err != nil {
				t.Fatalf("EnsureDatabase call %d: %v", i+1, err)
			}
			if !databaseExists(t, cfg, db) {
				t.Fatalf("database %s missing after call %d", db, i+1)
			}
		}
	})

	t.Run("concurrent callers all succeed", func(t *testing.T) {
		// Several fresh names make it near-certain that some callers find the
		// database missing and race on CREATE DATABASE.
		for round := range 3 {
			db := pg.DatabaseName(cfg.Namespace, "race"+strconv.Itoa(round))
			errs := concurrently(8, func(int) error { return pg.EnsureDatabase(ctx, cfg.Postgres, db) })
			for i, err := range errs {
				if err != nil {
					t.Errorf("round %d caller %d: %v", round, i, err)
				}
			}
			if !databaseExists(t, cfg, db) {
				t.Errorf("database %s missing", db)
			}
		}
	})

	t.Run("names that need quoting", func(t *testing.T) {
		db := cfg.Namespace + "_Odd-Name"
		if err := pg.EnsureDatabase(ctx, cfg.Postgres, db); err != nil {
			t.Fatalf("EnsureDatabase(%q): %v", db, err)
		}
		if !databaseExists(t, cfg, db) {
			t.Fatalf("database %q missing", db)
		}
	})
}

func TestOpen(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	ctx := testContext(t)

	cfg.Postgres.MaxConns = 3
	cfg.Postgres.MinConns = 5 // above MaxConns: Open must clamp it
	cfg.Postgres.MaxConnLifetime = 7 * time.Minute
	cfg.Postgres.ConnectTimeout = 4 * time.Second
	db := pg.DatabaseName(cfg.Namespace, "open")

	pool, err := pg.Open(ctx, cfg.Postgres, db)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(pool.Close)

	pc := pool.Config()
	if pc.MaxConns != 3 {
		t.Errorf("MaxConns = %d, want 3", pc.MaxConns)
	}
	if pc.MinConns != 3 {
		t.Errorf("MinConns = %d, want 3 (clamped to MaxConns)", pc.MinConns)
	}
	if pc.MaxConnLifetime != 7*time.Minute {
		t.Errorf("MaxConnLifetime = %v, want 7m", pc.MaxConnLifetime)
	}
	if pc.ConnConfig.ConnectTimeout != 4*time.Second {
		t.Errorf("ConnectTimeout = %v, want 4s", pc.ConnConfig.ConnectTimeout)
	}
	var current string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&current); err != nil {
		t.Fatalf("query: %v", err)
	}
	if current != db {
		t.Errorf("connected to %q, want %q", current, db)
	}
}

func TestOpenFailsWithRedactedAddress(t *testing.T) {
	t.Parallel()
	addr := platformtest.ClosedAddr(t)
	tests := []struct {
		name string
		url  string
		want string // a part of the error that names the address
	}{
		{"unreachable server",
			"postgres://postgres:s3cret@" + addr + "/postgres?sslmode=disable",
			"postgres://postgres:xxxxx@" + addr + "/postgres"},
		{"unreachable server, password in the query",
			"postgres://postgres@" + addr + "/postgres?password=s3cret&sslmode=disable",
			addr},
		{"unparseable URL",
			"postgres://postgres:s3cret@127.0.0.1:notaport/postgres",
			"postgres url"},
		{"invalid setting",
			"postgres://postgres:s3cret@" + addr + "/postgres?sslmode=bogus",
			"postgres://postgres:xxxxx@" + addr + "/postgres"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := platformtest.Config(t)
			cfg.Postgres.URL = tt.url
			cfg.Postgres.ConnectTimeout = 2 * time.Second
			ctx := testContext(t)
			for name, call := range map[string]func() error{
				"Open": func() error {
					pool, err := pg.Open(ctx, cfg.Postgres, "whatever")
					if pool != nil {
						pool.Close()
						t.Error("Open returned a pool with its error")
					}
					return err
				},
				"EnsureDatabase": func() error { return pg.EnsureDatabase(ctx, cfg.Postgres, "whatever") },
			} {
				err := call()
				if err == nil {
					t.Fatalf("%s succeeded against %s", name, tt.url)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s error %q does not contain %q", name, err, tt.want)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("%s error reveals the password: %v", name, err)
				}
			}
		})
	}
}

// migrations is a small goose migration set: the second file inserts a row,
// so running it twice would be visible.
func migrations(table string) fstest.MapFS {
	return fstest.MapFS{
		"00001_create.sql": {Data: []byte("-- +goose Up\nCREATE TABLE " + table + " (n int NOT NULL);\n-- +goose Down\nDROP TABLE " + table + ";\n")},
		"00002_seed.sql":   {Data: []byte("-- +goose Up\nINSERT INTO " + table + " VALUES (1);\n-- +goose Down\nDELETE FROM " + table + ";\n")},
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()

	t.Run("applies the set once and records versions in the named table", func(t *testing.T) {
		t.Parallel()
		pool := platformtest.Postgres(t, platformtest.Config(t), "migrate")
		ctx := testContext(t)
		log, logs := captureLog(t)

		if err := pg.Migrate(ctx, pool, migrations("widgets"), "widgets_migrations", log); err != nil {
			t.Fatalf("first Migrate: %v", err)
		}
		if n := strings.Count(logs.String(), "migration applied"); n != 2 {
			t.Errorf("first Migrate logged %d applied migrations, want 2:\n%s", n, logs)
		}
		logs.Reset()
		if err := pg.Migrate(ctx, pool, migrations("widgets"), "widgets_migrations", log); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		if n := strings.Count(logs.String(), "migration applied"); n != 0 {
			t.Errorf("second Migrate logged %d applied migrations, want 0:\n%s", n, logs)
		}
		if n := countRows(t, pool, "widgets"); n != 1 {
			t.Errorf("widgets has %d rows, want 1 (each migration runs once)", n)
		}
		if got := appliedVersions(t, pool, "widgets_migrations"); fmt.Sprint(got) != "[1 2]" {
			t.Errorf("widgets_migrations records versions %v, want [1 2]", got)
		}
		if tableExists(t, pool, "goose_db_version") {
			t.Error("Migrate used goose's default version table")
		}
	})

	t.Run("two sets with their own tables share a database", func(t *testing.T) {
		t.Parallel()
		pool := platformtest.Postgres(t, platformtest.Config(t), "migrate")
		ctx := testContext(t)
		log, _ := captureLog(t)

		// Both sets number their files 1 and 2.
		if err := pg.Migrate(ctx, pool, migrations("platform_things"), "platform_migrations", log); err != nil {
			t.Fatalf("platform set: %v", err)
		}
		if err := pg.Migrate(ctx, pool, migrations("service_things"), "service_migrations", log); err != nil {
			t.Fatalf("service set: %v", err)
		}
		for _, table := range []string{"platform_things", "service_things"} {
			if n := countRows(t, pool, table); n != 1 {
				t.Errorf("%s has %d rows, want 1", table, n)
			}
		}
		for _, table := range []string{"platform_migrations", "service_migrations"} {
			if got := appliedVersions(t, pool, table); fmt.Sprint(got) != "[1 2]" {
				t.Errorf("%s records versions %v, want [1 2]", table, got)
			}
		}
	})

	t.Run("concurrent migrators apply the set once", func(t *testing.T) {
		t.Parallel()
		pool := platformtest.Postgres(t, platformtest.Config(t), "migrate")
		ctx := testContext(t)
		log, logs := captureLog(t)

		// goose checks for pending migrations before it takes the lock, and
		// creating the version table serialises first starts; with the table
		// in place and version 2 pending, both migrators reach the lock.
		first := fstest.MapFS{
			"00001_create.sql": {Data: []byte("-- +goose Up\nCREATE TABLE runs (n int);\n")},
		}
		if err := pg.Migrate(ctx, pool, first, "runs_migrations", log); err != nil {
			t.Fatalf("first migration: %v", err)
		}
		logs.Reset()
		// The sleep holds the lock while the other migrator asks for it;
		// without the lock both would apply version 2.
		both := fstest.MapFS{
			"00001_create.sql": first["00001_create.sql"],
			"00002_slow.sql":   {Data: []byte("-- +goose Up\nINSERT INTO runs VALUES (2);\nSELECT pg_sleep(0.5);\n")},
		}
		errs := concurrently(2, func(int) error { return pg.Migrate(ctx, pool, both, "runs_migrations", log) })
		for i, err := range errs {
			if err != nil {
				t.Errorf("migrator %d: %v", i, err)
			}
		}
		if n := countRows(t, pool, "runs"); n != 1 {
			t.Errorf("runs has %d rows, want 1", n)
		}
		if n := strings.Count(logs.String(), "migration applied"); n != 1 {
			t.Errorf("logged %d applied migrations, want 1:\n%s", n, logs)
		}
		if got := appliedVersions(t, pool, "runs_migrations"); fmt.Sprint(got) != "[1 2]" {
			t.Errorf("runs_migrations records versions %v, want [1 2]", got)
		}
	})

	t.Run("a failing migration is an error naming the table", func(t *testing.T) {
		t.Parallel()
		pool := platformtest.Postgres(t, platformtest.Config(t), "migrate")
		ctx := testContext(t)
		log, _ := captureLog(t)
		fsys := fstest.MapFS{"00001_bad.sql": {Data: []byte("-- +goose Up\nCREATE TABLE oops (;\n")}}

		err := pg.Migrate(ctx, pool, fsys, "bad_migrations", log)
		if err == nil {
			t.Fatal("Migrate succeeded with invalid SQL")
		}
		if !strings.Contains(err.Error(), "bad_migrations") {
			t.Errorf("error %q does not name the table", err)
		}
	})
}

func TestInTx(t *testing.T) {
	t.Parallel()
	pool := poolWithoutHang(t, "tx")
	ctx := testContext(t)
	exec(t, pool, "CREATE TABLE items (name text PRIMARY KEY)")
	errBoom := errors.New("boom")

	// Each case inserts row inside the transaction, then ends as after says.
	tests := []struct {
		name      string
		row       string
		after     func() error
		wantErr   error
		wantPanic any
		wantRow   bool
	}{
		{name: "commits when fn returns nil", row: "committed",
			after: func() error { return nil }, wantRow: true},
		{name: "rolls back when fn returns an error", row: "failed",
			after: func() error { return fmt.Errorf("wrapped: %w", errBoom) }, wantErr: errBoom},
		{name: "rolls back when fn panics", row: "panicked",
			after: func() error { panic("kaboom") }, wantPanic: "kaboom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			panicked := func() (p any) {
				defer func() { p = recover() }()
				err = pg.InTx(ctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO items (name) VALUES ($1)", tt.row); err != nil {
						return err
					}
					return tt.after()
				})
				return nil
			}()
			if panicked != tt.wantPanic {
				t.Errorf("panic = %v, want %v", panicked, tt.wantPanic)
			}
			if tt.wantErr == nil && err != nil || !errors.Is(err, tt.wantErr) {
				t.Errorf("InTx error = %v, want %v", err, tt.wantErr)
			}
			var found bool
			if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM items WHERE name = $1)", tt.row).Scan(&found); err != nil {
				t.Fatal(err)
			}
			if found != tt.wantRow {
				t.Errorf("row %q present = %v, want %v", tt.row, found, tt.wantRow)
			}
			if n := pool.Stat().AcquiredConns(); n != 0 {
				t.Errorf("%d connections still acquired after InTx", n)
			}
		})
	}
}

func TestIsUniqueViolation(t *testing.T) {
	t.Parallel()
	pool := platformtest.Postgres(t, platformtest.Config(t), "unique")
	ctx := testContext(t)
	exec(t, pool, "CREATE TABLE skus (sku text NOT NULL, CONSTRAINT skus_sku_key UNIQUE (sku))")
	exec(t, pool, "INSERT INTO skus VALUES ('A-1')")

	_, dupErr := pool.Exec(ctx, "INSERT INTO skus VALUES ('A-1')")
	_, nullErr := pool.Exec(ctx, "INSERT INTO skus VALUES (NULL)")

	tests := []struct {
		name           string
		err            error
		wantConstraint string
		wantOK         bool
	}{
		{"duplicate key", dupErr, "skus_sku_key", true},
		{"wrapped duplicate key", fmt.Errorf("create sku: %w", dupErr), "skus_sku_key", true},
		{"not-null violation", nullErr, "", false},
		{"plain error", errors.New("unique"), "", false},
		{"nil", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			constraint, ok := pg.IsUniqueViolation(tt.err)
			if constraint != tt.wantConstraint || ok != tt.wantOK {
				t.Errorf("IsUniqueViolation(%v) = %q, %v; want %q, %v", tt.err, constraint, ok, tt.wantConstraint, tt.wantOK)
			}
		})
	}
}

func TestDropDatabase(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	ctx := testContext(t)
	db := pg.DatabaseName(cfg.Namespace, "drop")

	pool, err := pg.Open(ctx, cfg.Postgres, db)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx) // an open session that would block a plain DROP
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	defer conn.Release()
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}

	if err := pg.DropDatabase(ctx, cfg.Postgres, db); err != nil {
		t.Fatalf("DropDatabase with an open connection: %v", err)
	}
	if databaseExists(t, cfg, db) {
		t.Fatalf("database %s still exists", db)
	}
	if err := pg.DropDatabase(ctx, cfg.Postgres, db); err != nil {
		t.Errorf("dropping a missing database: %v", err)
	}
}

// poolWithoutHang opens a pool on a fresh database, like platformtest.Postgres,
// but leaves the pool open if the test leaked a connection: closing it would
// wait for that connection forever and hang the test instead of failing it.
func poolWithoutHang(t *testing.T, service string) *pgxpool.Pool {
	t.Helper()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	pool, err := pg.Open(testContext(t), cfg.Postgres, pg.DatabaseName(cfg.Namespace, service))
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() {
		if pool.Stat().AcquiredConns() == 0 {
			pool.Close()
		}
	})
	return pool
}

// testContext bounds a test's calls so a hung server fails the test instead
// of stalling it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// databaseExists asks the server whether db exists.
func databaseExists(t *testing.T, cfg config.Config, db string) bool {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, cfg.Postgres.URL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		t.Fatalf("look up %s: %v", db, err)
	}
	return exists
}

// tableExists reports whether table is in the pool's database.
func tableExists(t *testing.T, pool *pgxpool.Pool, table string) bool {
	t.Helper()
	var exists bool
	if err := pool.QueryRow(testContext(t), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		t.Fatalf("look up table %s: %v", table, err)
	}
	return exists
}

// countRows counts the rows of table.
func countRows(t *testing.T, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(testContext(t), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// appliedVersions lists the migration versions a goose table records,
// leaving out the version 0 row goose writes when it creates the table.
func appliedVersions(t *testing.T, pool *pgxpool.Pool, table string) []int64 {
	t.Helper()
	rows, err := pool.Query(testContext(t), "SELECT version_id FROM "+pgx.Identifier{table}.Sanitize()+" WHERE is_applied AND version_id > 0 ORDER BY version_id")
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	return versions
}

// exec runs a statement that must succeed.
func exec(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := pool.Exec(testContext(t), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// concurrently runs fn n times at once, released together, and returns each
// call's error.
func concurrently(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// captureLog returns a logger whose text output the test can inspect.
func captureLog(t *testing.T) (*slog.Logger, *platformtest.Buffer) {
	t.Helper()
	buf := &platformtest.Buffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}
