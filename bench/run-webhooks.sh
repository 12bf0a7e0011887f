#!/usr/bin/env bash
# The webhook benchmark (bench/webhooks), in one go, each measurement on its own `pier serve`
# and fresh database, for each backend (SQLite, then PostgreSQL):
#
#   throughput         N events from 32 concurrent publishers as fast as they go, to 1, 10 and
#                      100 endpoints: events accepted/s, deliveries completed/s, publish →
#                      delivered p50/p99 (N = 2,000, at most 50,000 deliveries: 500 at 100)
#   latency_200eps     200 events/s open-loop to 10 endpoints for 30 s: publish → delivered
#                      p50/p95/p99/max (goal on PostgreSQL: p99 < 100 ms)
#   sustained_1000dps  100 events/s open-loop to 10 endpoints for 60 s, the backlog of
#                      deliveries sampled every second (goal: no growth)
#   fairness           (only when named in BENCH_SCENARIOS) workspace B's first delivery latency
#                      alone, then beside workspace A's 500-event backlog to an endpoint
#                      throttled at 5/s, on one Pier: p50/max each and the ratio of the p50s
#                      (the issue's run: BENCH_SCENARIOS=fairness BENCH_WEBHOOKS_CONCURRENCY=20)
#
# Deliveries go to a receiver inside the benchmark process that answers 200 at once; latency runs
# from just before an event's POST /v1/events to its delivery's arrival.
#
# stdout: one JSON object per measurement; progress and Pier's own log lines go to stderr.
# Servers and databases it creates are removed on exit, also on failure.
#
# Usage: bench/run-webhooks.sh [FLAGS] > results-webhooks.jsonl
#   FLAGS go to the benchmark binary; `target/release/webhooks --help` lists them.
# Shorter run: bench/run-webhooks.sh --latency-seconds 20 --sustained-seconds 30
#
# Environment (the binary reads these too; flags win):
#   BENCH_BACKENDS [sqlite,postgres]  BENCH_SCENARIOS [throughput,latency,sustained]
#   BENCH_ENDPOINTS [1,10,100]  BENCH_EVENTS [2000]  BENCH_MAX_DELIVERIES [50000]
#   BENCH_LATENCY_SECONDS [30]  BENCH_SUSTAINED_SECONDS [60]  BENCH_DRAIN_SECONDS [600]
#   BENCH_FAIRNESS_BACKLOG [500]  BENCH_FAIRNESS_SAMPLES [10]
#   BENCH_WEBHOOKS_CONCURRENCY [Pier's default, 400]
#   PIER_BENCH_DATABASE_URL [postgres://postgres@127.0.0.1:5432/test]: an admin connection, used
#     to create and drop one database per measurement (bench_wh_<pid>_<n>)
#   BENCH_SKIP_BUILD=1 skips `cargo build`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[run-webhooks %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

ADMIN_URL="${PIER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export PIER_BENCH_DATABASE_URL="$ADMIN_URL"

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  log "building pier and the benchmark (release)"
  cargo build --release --quiet -p pier -p pier-bench-webhooks
fi
PIER_BIN="$(realpath target/release/pier)"
export PIER_BIN
[ -x "$PIER_BIN" ] || die "no pier binary at $PIER_BIN"

# Backends are chosen with BENCH_BACKENDS here (not --backends), so that this check knows.
if [[ ",${BENCH_BACKENDS:-sqlite,postgres}," == *",postgres,"* ]]; then
  command -v psql >/dev/null || die "psql is needed for the PostgreSQL measurements"
  psql "$ADMIN_URL" -qAtc 'SELECT 1' >/dev/null ||
    die "PostgreSQL is not reachable at $ADMIN_URL (set PIER_BENCH_DATABASE_URL)"
fi

status=0
target/release/webhooks "$@" || status=$?

# Every Pier the benchmark started must be gone.
if stray="$(pgrep -af "$PIER_BIN serve")"; then
  log "WARNING: pier processes still running:"
  printf '%s\n' "$stray" >&2
  status=1
fi
log "done"
exit "$status"
