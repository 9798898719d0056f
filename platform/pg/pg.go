// Package pg gives each service its own PostgreSQL database on the shared
// server: it creates the database on first start, opens a pool sized from
// config, runs the service's embedded goose migrations under an advisory lock
// (so replicas starting together migrate once), and runs work in transactions.
package pg

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"net/url"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/mercato/mercato/platform/config"
)

// DatabaseName is the database a service owns in a namespace.
func DatabaseName(namespace, service string) string { return namespace + "_" + service }

// URLFor returns serverURL pointed at database db.
func URLFor(serverURL, db string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", fmt.Errorf("postgres url %s: %w", Redacted(serverURL), withoutURL(err))
	}
	u.Path = "/" + db
	return u.String(), nil
}

// Redacted returns the URL without its password, for messages. Besides the
// user info it masks the password and sslpassword query parameters, which
// pgx also reads.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
		for _, k := range []string{"password", "sslpassword"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// withoutURL drops the URL that a *url.Error quotes in full, password
// included, keeping only the reason.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// EnsureDatabase creates database db on the server if it does not exist.
func EnsureDatabase(ctx context.Context, cfg config.PostgresConfig, db string) error {
	conf, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		return fmt.Errorf("postgres url: %w", err)
	}
	conf.ConnectTimeout = cfg.ConnectTimeout
	conn, err := pgx.ConnectConfig(ctx, conf)
	if err != nil {
		return fmt.Errorf("connect to postgres at %s: %w", Redacted(cfg.URL), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", db, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil // created concurrently by a sibling process
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return nil
}

// DropDatabase removes database db, disconnecting its sessions; tests use it
// to clean up their namespaces.
func DropDatabase(ctx context.Context, cfg config.PostgresConfig, db string) error {
	conn, err := pgx.Connect(ctx, cfg.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
	return err
}

// Open connects a pool to database db, creating the database first if needed.
func Open(ctx context.Context, cfg config.PostgresConfig, db string) (*pgxpool.Pool, error) {
	if err := EnsureDatabase(ctx, cfg, db); err != nil {
		return nil, err
	}
	dsn, err := URLFor(cfg.URL, db)
	if err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	pc.MaxConns = cfg.MaxConns
	pc.MinConns = min(cfg.MinConns, cfg.MaxConns)
	pc.MaxConnLifetime = cfg.MaxConnLifetime
	pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", db, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s at %s: %w", db, Redacted(cfg.URL), err)
	}
	return pool, nil
}

// Migrate applies the goose migrations in fsys (SQL files at its root) to the
// pool's database, recording versions in table so that independent sets of
// migrations (the platform's and a service's) can share one database.
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, table string, log *slog.Logger) error {
	h := fnv.New64a()
	_, _ = h.Write([]byte("mercato-migrate:" + table))
	// Poll the lock every second for up to five minutes: replicas starting
	// together then wait about as long as the first one's migration takes,
	// not goose's default five-second poll.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum64()>>1)), lock.WithLockTimeout(1, 300))
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(table), goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrations %s: %w", table, err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", table, err)
	}
	for _, r := range results {
		log.Info("migration applied", "table", table, "version", r.Source.Version, "file", r.Source.Path, "took", r.Duration)
	}
	return nil
}

// InTx runs fn in a transaction that commits when fn returns nil and rolls
// back otherwise.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, fn)
}

// IsUniqueViolation reports whether err is a unique constraint violation,
// and on which constraint.
func IsUniqueViolation(err error) (string, bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return pgErr.ConstraintName, true
	}
	return "", false
}
