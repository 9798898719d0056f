#!/usr/bin/env bash
# bench-redis-lua.sh — how many reservations per second Redis itself can run
# with the inventory's own reserve script (prelude.lua + reserve.lua, exactly
# what services/inventory/adapters/redisstock loads), driven by
# redis-benchmark. It is the ceiling to hold the service's RPC throughput
# against: no network hop from the service, no Go, no Postgres.
#
# Two runs, each on fresh keys: one with on_hand = REQUESTS*10 so every
# reservation succeeds, one with on_hand = REQUESTS/2 so half the answers
# are OUT (the script's cheaper refusal path). After each run it checks that
# the variant's reserved count equals the ledger stream's length (every
# successful reserve appends exactly one op=reservation entry) and that
# nothing was oversold.
#
# Environment: REDIS_HOST (127.0.0.1), REDIS_PORT (6379), REDIS_DB (0),
# REQUESTS (200000), CLIENTS (50), PIPELINE (1).
#
# Everything lives under a throwaway prefix, mercato-bench-lua:{<run id>}:,
# deleted with SCAN + UNLINK at the end (also on failure or Ctrl-C). The
# database is never flushed.
set -euo pipefail

REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_DB=${REDIS_DB:-0}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-1}

for v in REDIS_PORT REDIS_DB REQUESTS CLIENTS PIPELINE; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]]; then
		echo "bench-redis-lua: $v must be a non-negative integer, got '${!v}'" >&2
		exit 2
	fi
done
for tool in redis-cli redis-benchmark; do
	if ! command -v "$tool" >/dev/null; then
		echo "bench-redis-lua: $tool not found (apt-get install redis-tools)" >&2
		exit 2
	fi
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lua=$root/services/inventory/adapters/redisstock/lua

# The braces are a cluster hash tag (all keys on one slot, as the script
# needs); they are not glob characters, so "${prefix}*" matches only ours.
run_id="$(date +%s)-$$"
prefix="mercato-bench-lua:{$run_id}:"
epoch=1
epoch_key=${prefix}epoch
location=default
variant=bench

# As in the service, KEYS is the epoch key alone and the state of epoch N,
# ledger stream and expiry ZSET included, lives under <prefix>gN: (see
# prelude.lua).
layout="generation keys under ${prefix}g$epoch:, KEYS = [epoch]"
state=${prefix}g$epoch:
script_keys=(1 "$epoch_key")
stream_key=${state}ledger
variant_key=${state}v:$variant

rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_DB" "$@"; }

# redis-cli exits 0 even on an error reply, so every answer is checked.
expect() {
	local want=$1 got
	shift
	got=$(rcli "$@")
	if ! [[ $got =~ $want ]]; then
		echo "bench-redis-lua: redis-cli $1 answered '$got'" >&2
		exit 1
	fi
}

delete_keys() {
	rcli --scan --pattern "${prefix}*" |
		xargs -r -d '\n' -n 500 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_DB" UNLINK >/dev/null
}

tmp=$(mktemp -d)
bench_pid=
cleanup() {
	local rc=$?
	if [[ -n $bench_pid ]]; then
		kill "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
	delete_keys || echo "bench-redis-lua: could not delete keys ${prefix}*" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

expect '^PONG$' PING

# SCRIPT LOAD reads the body from stdin (-x); the sha must be the SHA-1 of
# the concatenation, which is what go-redis's EVALSHA uses too.
load_script() { cat "$lua/prelude.lua" "$lua/reserve.lua" | rcli -x SCRIPT LOAD; }
sha=$(load_script)
want_sha=$(cat "$lua/prelude.lua" "$lua/reserve.lua" | sha1sum | cut -d' ' -f1)
if [[ $sha != "$want_sha" ]]; then
	echo "bench-redis-lua: SCRIPT LOAD answered '$sha', expected $want_sha" >&2
	exit 1
fi

# cmdstat reads one field of INFO commandstats' evalsha line (0 when none).
cmdstat() {
	rcli INFO commandstats | tr -d '\r' |
		awk -F'[:,=]' -v k="$1" '$1 == "cmdstat_evalsha" { for (i = 2; i < NF; i += 2) if ($i == k) v = $(i + 1) }
			END { print v + 0 }'
}

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) redis $(rcli INFO server | tr -d '\r' | sed -n 's/^redis_version://p') at $REDIS_HOST:$REDIS_PORT db $REDIS_DB;" \
	"client $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# script sha $sha, prefix $prefix, $layout"

summaries=()
for on_hand in $((REQUESTS * 10)) $((REQUESTS / 2)); do
	delete_keys
	# SCRIPT LOAD again in case something flushed the script cache meanwhile.
	if [[ $(load_script) != "$sha" ]]; then
		echo "bench-redis-lua: $lua/{prelude,reserve}.lua changed during the benchmark" >&2
		exit 1
	fi
	# The script parses only the leading digits of "<epoch>:<runid>".
	expect '^OK$' SET "$epoch_key" "$epoch:bench"
	expect '^[0-9]+$' HSET "$variant_key" "$location:oh" "$on_hand" "$location:rs" 0 "$location:cm" 0 ver 0

	now_ms=$(date +%s%3N)
	expires_ms=$((now_ms + 15 * 60 * 1000))

	# KEYS as above; ARGV = prefix, locations, now, then
	# reserve's id, expires_ms, customer, limit, idempotency key, fingerprint,
	# retention ms, (variant, quantity). Customer '' (redis-benchmark passes an
	# empty argument as a zero-length bulk string, tested on 7.0) and limit 0
	# skip the purchase-limit tally, as for a guest checkout.
	#
	# -r makes redis-benchmark replace each __rand_int__ with its own random
	# 12-digit number per request, so ids and idempotency keys are unique up
	# to birthday collisions (about REQUESTS^2/2e9 of each, ~20 at 200k). A
	# colliding key takes the idempotent-retry path (EXISTS, no write); a
	# colliding id with a fresh key reserves again and overwrites the old
	# record. Both are real script runs, so the rate is still valid, and
	# neither breaks reserved == stream length.
	#
	# Options must come before the command: redis-benchmark passes everything
	# after it to the server as arguments.
	calls0=$(cmdstat calls)
	usec0=$(cmdstat usec)
	#
	# redis-benchmark exits 1 at the first error reply (NOSCRIPT, a Lua
	# error), so a run that completes had none. It runs in the background so
	# that a TERM reaches the trap at once, which stops it.
	redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" --dbnum "$REDIS_DB" \
		-n "$REQUESTS" -c "$CLIENTS" -P "$PIPELINE" -r 1000000000 --csv \
		EVALSHA "$sha" "${script_keys[@]}" \
		"$prefix" "$location" "$now_ms" \
		res___rand_int__ "$expires_ms" '' 0 key:__rand_int__ fp 3600000 \
		"$variant" 1 >"$tmp/out" 2>"$tmp/err" &
	bench_pid=$!
	if ! wait "$bench_pid"; then
		bench_pid=
		echo "bench-redis-lua: redis-benchmark failed:" >&2
		tr '\r' '\n' <"$tmp/err" | grep -v 'rps=' | grep . | tail -n 3 >&2
		exit 1
	fi
	bench_pid=
	csv=$(cat "$tmp/out")
	calls=$(($(cmdstat calls) - calls0))
	usec=$(($(cmdstat usec) - usec0))

	# "test","rps","avg","min","p50","p95","p99","max": count from the end.
	row=$(tail -n 1 <<<"$csv" | tr -d '"')
	IFS=, read -r -a f <<<"$row"
	n=${#f[@]}
	rps=${f[n - 7]} avg=${f[n - 6]} p50=${f[n - 4]} p99=${f[n - 2]}
	if ! [[ $rps =~ ^[0-9.]+$ ]]; then
		echo "bench-redis-lua: cannot read redis-benchmark's output: $csv" >&2
		exit 1
	fi

	mapfile -t h < <(rcli HMGET "$variant_key" "$location:oh" "$location:rs" "$location:cm" ver)
	oh=${h[0]:-0} rs=${h[1]:-0} cm=${h[2]:-0} ver=${h[3]:-0}
	stream_len=$(rcli XLEN "$stream_key")
	last_op=$(rcli XREVRANGE "$stream_key" + - COUNT 1 | sed -n 3p)
	ok=1
	echo "on_hand $oh, reserved $rs, committed $cm, version $ver, stream length $stream_len"
	if [[ $rs != "$stream_len" || $ver != "$rs" ]]; then
		echo "MISMATCH: reserved $rs, version $ver, stream length $stream_len should all be equal" >&2
		ok=0
	fi
	if ((stream_len > 0)) && [[ $last_op != reservation ]]; then
		echo "MISMATCH: last stream entry has op '$last_op', expected reservation" >&2
		ok=0
	fi
	if ((rs > oh)); then
		echo "oversold: $((rs - oh))" >&2
		ok=0
	else
		echo "oversold: 0"
	fi
	# Plausibility: the stocked run must succeed on all but colliding keys;
	# the short run must sell out, since it asks for twice the stock.
	if ((on_hand >= REQUESTS)); then
		allowed=$((REQUESTS * REQUESTS / 1000000000 + 100))
		if ((stream_len + allowed < REQUESTS)); then
			echo "MISMATCH: only $stream_len of $REQUESTS reservations succeeded with stock for all" >&2
			ok=0
		fi
	elif ((rs != oh)); then
		echo "MISMATCH: $rs of $oh units reserved although requests were twice the stock" >&2
		ok=0
	fi
	((ok)) || exit 1

	echo "answers: $rs OK, $((REQUESTS - rs)) other (OUT of stock, or EXISTS for a colliding idempotency key)"
	if ((calls > 0)); then
		# Server-side time inside EVALSHA, Lua and its redis.call()s included,
		# from the INFO commandstats difference around the run, so any
		# other client's evalsha calls meanwhile count too.
		echo "server: $calls evalsha calls, $(awk -v u="$usec" -v c="$calls" 'BEGIN{printf "%.2f", u/c}') usec_per_call;" \
			"client latency avg $avg ms, p50 $p50 ms, p99 $p99 ms"
	fi
	line="redis-benchmark EVALSHA reserve: $rps req/s (clients $CLIENTS, pipeline $PIPELINE, on_hand $on_hand)"
	echo "$line"
	summaries+=("$line")
	echo
done

delete_keys
left=$(rcli --scan --pattern "${prefix}*" | wc -l)
echo "# keys left under $prefix: $left"
printf '%s\n' "${summaries[@]}"
