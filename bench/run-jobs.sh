#!/usr/bin/env bash
# The job-queue benchmark: Pier on SQLite and on PostgreSQL, then graphile-worker on the same
# PostgreSQL, in one run. Prints one JSON object per measurement on stdout.
#
# Usage: bench/run-jobs.sh [JOBS]        (default 100000)
# Environment: PIER_BENCH_DATABASE_URL, an admin URL used to recreate the database pier_bench
#              (default postgres://postgres@127.0.0.1:5432/test)
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS="${1:-100000}"
ADMIN_URL="${PIER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_URL="${ADMIN_URL%/*}/pier_bench"
# Two claim loops of 2,000 slots each: every claim and every completion statement covers up to
# 2,000 jobs. The in-process default (50 slots) suits real handlers, not no-ops.
POOLS=(--pools 2 --concurrency 2000)

cargo build --release --quiet -p pier-bench
BENCH=target/release/pier-bench

fresh_postgres() {
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS pier_bench WITH (FORCE)" -qc "CREATE DATABASE pier_bench"
}

# Each measurement starts from an empty database, as the baseline's do.
for measure in enqueue burndown latency; do
  echo "pier on sqlite: $measure" >&2
  "$BENCH" --measure "$measure" --jobs "$JOBS" "${POOLS[@]}"
done
for measure in enqueue burndown latency; do
  echo "pier on postgres: $measure" >&2
  fresh_postgres
  "$BENCH" --measure "$measure" --database-url "$PG_URL" --jobs "$JOBS" "${POOLS[@]}"
done
psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS pier_bench WITH (FORCE)"

echo "graphile-worker on postgres" >&2
BENCH_MODE=enqueue,perf,perf-multi bench/graphile-worker/run.sh "$JOBS"
