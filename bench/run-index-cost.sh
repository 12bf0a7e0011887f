#!/usr/bin/env bash
# What the listing indexes of the jobs table cost the writes: bulk enqueue and burn-down (claim
# and complete) of pier-bench, with every index, without the four listing indexes and without
# each one alone, alternating the variants within each round so that all of them see the same
# machine. Each measurement runs on a fresh database. Prints one JSON object per measurement on
# stdout, tagged with the variant.
#
# Usage: bench/run-index-cost.sh [JOBS]        (default 100000)
# Environment (defaults in brackets):
#   BENCH_ROUNDS [2]  BENCH_BACKENDS [sqlite,postgres]
#   BENCH_VARIANTS [all,none,no-queue-kind]  (names: all, none, no-state, no-queue, no-kind,
#                                             no-queue-kind)
#   PIER_BENCH_DATABASE_URL [postgres://postgres@127.0.0.1:5432/test]: an admin URL used to
#     recreate the database pier_bench
#   BENCH_SKIP_BUILD=1 skips `cargo build`; PIER_BENCH_BIN [target/release/pier-bench]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-index-cost
# shellcheck source=bench/lib.sh
. bench/lib.sh

JOBS="${1:-100000}"
ROUNDS="${BENCH_ROUNDS:-2}"
BACKENDS="${BENCH_BACKENDS:-sqlite,postgres}"
VARIANTS="${BENCH_VARIANTS:-all,none,no-queue-kind}"
ADMIN_URL="${PIER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_URL="${ADMIN_URL%/*}/pier_bench"
BENCH="${PIER_BENCH_BIN:-target/release/pier-bench}"
# As bench/run-jobs.sh: two claim loops of 2,000 slots each.
POOLS=(--pools 2 --concurrency 2000)

# The --drop-index arguments of a variant.
drops() {
  case "$1" in
    all) ;;
    none) printf -- '--drop-index\n%s\n' jobs_listed_by_state jobs_listed_by_queue \
      jobs_listed_by_kind jobs_listed_by_queue_kind ;;
    no-state) printf -- '--drop-index\njobs_listed_by_state\n' ;;
    no-queue) printf -- '--drop-index\njobs_listed_by_queue\n' ;;
    no-kind) printf -- '--drop-index\njobs_listed_by_kind\n' ;;
    no-queue-kind) printf -- '--drop-index\njobs_listed_by_queue_kind\n' ;;
    *) die "unknown variant $1 (all, none, no-state, no-queue, no-kind, no-queue-kind)" ;;
  esac
}

[ "${BENCH_SKIP_BUILD:-}" = 1 ] || cargo build --release --quiet -p pier-bench
[ -x "$BENCH" ] || die "$BENCH is not an executable"
for variant in ${VARIANTS//,/ }; do drops "$variant" >/dev/null; done

for round in $(seq 1 "$ROUNDS"); do
  for backend in ${BACKENDS//,/ }; do
    for variant in ${VARIANTS//,/ }; do
      mapfile -t args < <(drops "$variant")
      for measure in enqueue burndown; do
        log "round $round, $backend, $variant: $measure"
        database=()
        if [ "$backend" = postgres ]; then
          psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS pier_bench WITH (FORCE)" \
            -qc "CREATE DATABASE pier_bench"
          database=(--database-url "$PG_URL")
        fi
        "$BENCH" --measure "$measure" "${database[@]}" --jobs "$JOBS" "${POOLS[@]}" "${args[@]}" |
          jq -c --arg variant "$variant" --argjson round "$round" \
            '. + {indexes: $variant, round: $round}'
      done
    done
  done
done
if has postgres "$BACKENDS"; then
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS pier_bench WITH (FORCE)"
fi
