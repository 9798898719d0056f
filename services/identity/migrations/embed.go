// Package migrations holds the identity service's schema as goose SQL files.
package migrations

import "embed"

// FS holds the SQL migrations at its root.
//
//go:embed *.sql
var FS embed.FS
