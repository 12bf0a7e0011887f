#!/usr/bin/env bash
# Baseline benchmark of graphile-worker against the local PostgreSQL.
#
# Usage: ./run.sh [JOBS] [DEFAULT_JOBS]
#   JOBS          jobs for bulk enqueue and the perf-settings burn-down (default 100000)
#   DEFAULT_JOBS  jobs for the default-settings burn-down (default 20000)
# Environment:
#   PIER_BENCH_DATABASE_URL  admin connection used to drop/create the database
#                            pier_bench_graphile (default postgres://postgres@127.0.0.1:5432/test)
#   BENCH_MODE               all (default) | full | enqueue | perf | default | perf-multi,
#                            or a comma-separated list
#   BENCH_BATCH_SIZE, BENCH_PERF_PROCESSES, BENCH_TIMEOUT_SECONDS: see bench.mjs
#
# stdout: one JSON object per measurement; progress and npm output go to stderr.
set -euo pipefail
cd "$(dirname "$0")"

export PIER_BENCH_DATABASE_URL="${PIER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
else
  npm install --no-audit --no-fund --loglevel=error >&2
fi

exec node bench.mjs --jobs "${1:-${BENCH_JOBS:-100000}}" --default-jobs "${2:-${BENCH_DEFAULT_JOBS:-20000}}"
