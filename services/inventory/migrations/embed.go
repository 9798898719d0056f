// Package migrations holds the inventory's database schema as goose SQL
// files.
package migrations

import "embed"

// FS holds the SQL migrations at its root.
//
//go:embed *.sql
var FS embed.FS
