#!/usr/bin/env bash
# bench.sh — the benchmarks behind `make bench`: start a platform in its own
# namespace with the per-IP limits off, make sure the catalog holds 100,000
# products, run `mercato load browse`, `auth` and `flash-sale`, and stop the
# platform.
#
# Environment: BENCH_ADDR (default 127.0.0.1:8090), BENCH_CONCURRENCY (64),
# BENCH_DURATION (20s), BENCH_PRODUCTS (100000), BENCH_FLAGS (extra `up` flags),
# BENCH_SCENARIOS (default "browse auth flash-sale"), BENCH_BUYERS (150000)
# and BENCH_UNITS (100000) for the flash sale, which runs until every buyer
# has an answer (at most 120 s).
set -euo pipefail
cd "$(dirname "$0")/.."

addr=${BENCH_ADDR:-127.0.0.1:8090}
export MERCATO_NAMESPACE=${MERCATO_NAMESPACE:-bench}
export MERCATO_RATE_LIMIT_PER_IP=0
export MERCATO_CATALOG__SEED_DEMO=false
export MERCATO_LOG_LEVEL=${MERCATO_LOG_LEVEL:-warn}

bin/mercato seed --products "${BENCH_PRODUCTS:-100000}" --if-fewer --seed 1

log=$(mktemp)
# shellcheck disable=SC2086 # BENCH_FLAGS holds several flags
bin/mercato up --http "$addr" --data .mercato-bench ${BENCH_FLAGS:-} >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 120); do
	if curl -fsS -m 2 "http://$addr/readyz" >/dev/null 2>&1; then break; fi
	if ! kill -0 $pid 2>/dev/null; then cat "$log"; exit 1; fi
	sleep 0.5
done

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
# The flash sale reserves over the inventory's internal RPC, whose address
# `up` lists under Services.
inventory=$(grep -oE '^ +inventory +http://[^ ]+' "$log" | awk '{print $2}' | head -1)
for scenario in ${BENCH_SCENARIOS:-browse auth flash-sale}; do
	case $scenario in
	flash-sale)
		bin/mercato load flash-sale --url "http://$addr" --inventory "$inventory" --data-dir .mercato-bench \
			--buyers "${BENCH_BUYERS:-150000}" --units "${BENCH_UNITS:-100000}" \
			--concurrency "${BENCH_CONCURRENCY:-64}" --duration 120s
		;;
	*)
		bin/mercato load "$scenario" --url "http://$addr" --concurrency "${BENCH_CONCURRENCY:-64}" --duration "${BENCH_DURATION:-20s}"
		;;
	esac
done
