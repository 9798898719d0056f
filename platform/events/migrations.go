package events

import (
	"embed"
	"io/fs"
)

// MigrationsTable is the goose version table of the platform's event tables,
// kept apart from a service's own migrations in the same database.
const MigrationsTable = "goose_platform_events"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations creates the outbox and processed_events tables; every service
// that publishes or consumes events applies it with pg.Migrate(ctx, pool,
// events.Migrations, events.MigrationsTable, log).
//
// fs.Sub fails only for an invalid directory name, and this one is constant.
var Migrations, _ = fs.Sub(migrationFiles, "migrations")

// notifyChannel is the PostgreSQL channel the outbox trigger notifies. It
// does not carry the namespace: NOTIFY is scoped to one database and every
// service has its own.
const notifyChannel = "mercato_outbox"
