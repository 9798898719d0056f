package redisstock

import (
	"embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// The Lua sources: each script is prelude.lua followed by its own file, so
// scripts/bench-redis-lua.sh can load exactly what the service runs with
// `cat prelude.lua reserve.lua`.
//
//go:embed lua/*.lua
var luaFS embed.FS

// scripts are the inventory's Lua scripts. Each runs with EVALSHA (falling
// back to EVAL after a Redis restart forgot it) with
//
//	KEYS = [epoch]
//	ARGV = [base prefix, locations joined by ",", now in Unix ms, ...]
//
// and answers {"NOT_READY"} without changing anything when the epoch key is
// missing. Every other key, the ledger stream and the expiry ZSET included,
// lives under the generation's prefix <base>g<epoch>: (see prelude.lua).
// Their own arguments and answers:
//
//	reserve       id, expires_ms, customer, limit, idempotency key,
//	              fingerprint, retention_ms, (variant, quantity)...
//	              → OK|EXISTS reservation · KEY_REUSED · LIMIT variant limit held
//	                · OUT (variant requested available)...
//	prepare       id, grace_ms, retention_ms → PREPARED reservation epoch
//	              · RES reservation (not held: committed, released, expired,
//	                or expired just now) · NOT_FOUND
//	commit        id, retention_ms → RES reservation · NOT_FOUND
//	abort         id, retention_ms → RES reservation · NOT_FOUND
//	release       id, retention_ms → RES reservation · NOT_FOUND
//	sweep         limit, grace_ms, retention_ms → OK epoch looked expired in-doubt-id...
//	stock         variant... → OK (per location oh rs cm pending, version)...
//	record        id → RES reservation epoch · NOT_FOUND
//	adjust_begin  (variant, location, seq, on_hand, ledger_seq, ledger_on_hand)...
//	              → OK epoch · CONFLICT (index reserved committed)...
//	adjust_apply  (variant, location, seq, on_hand)... → OK
//	adjust_abort  (variant, location, seq)... → OK
//	adjust_settle (variant, location, ledger_seq, ledger_on_hand)... → OK
//	load_done     token, epoch value → OK · LOST
//
// where a reservation is id, status, expires_ms, created_ms, placements
// ("variant,location,quantity;..."), customer, idempotency key, ended_ms.
// Every change appends one stream entry per step: op, ep (epoch), t (ms),
// then res, cus, key, exp, c for reservation steps or seq for adjustments,
// and it: "variant,location,quantity,on_hand,reserved,committed,version;..."
// with the variant's totals after the change.
type scripts struct {
	reserve, prepare, commit, abort, release, sweep, stock, record *redis.Script
	adjustBegin, adjustApply, adjustAbort, adjustSettle, loadDone  *redis.Script
}

func loadScripts() (scripts, error) {
	prelude, err := luaFS.ReadFile("lua/prelude.lua")
	if err != nil {
		return scripts{}, err
	}
	var firstErr error
	load := func(name string) *redis.Script {
		body, err := luaFS.ReadFile("lua/" + name + ".lua")
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("lua script %s: %w", name, err)
		}
		return redis.NewScript(string(prelude) + string(body))
	}
	s := scripts{
		reserve: load("reserve"), prepare: load("prepare"), commit: load("commit"), abort: load("abort"),
		release: load("release"), sweep: load("sweep"), stock: load("stock"), record: load("record"),
		adjustBegin: load("adjust_begin"), adjustApply: load("adjust_apply"), adjustAbort: load("adjust_abort"),
		adjustSettle: load("adjust_settle"), loadDone: load("load_done"),
	}
	return s, firstErr
}
