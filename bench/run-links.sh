#!/usr/bin/env bash
# The short-links benchmark, in one go:
#
#   redirect  wrk --latency on GET /{slug} of one cached link (clicks recorded, as always),
#             against redirect-baseline (bench/redirect-baseline: the smallest axum server that
#             answers the same redirect), alternating pier / baseline twice, on the same machine
#             and connections; once with 1,000 links stored and once with 1,000,000; in each
#             layout of BENCH_LAYOUTS:
#               pinned  the server on the first half of the cores and wrk (one thread per core)
#                       on the other half (taskset), so the load generator never takes the
#                       server's CPU: what the server's own latency is
#               shared  server and wrk free to use every core, as they compete for them
#   listing   wrk on GET /v1/links?limit=20: page 1 against page 1,000 (its cursor found by
#             walking the pages) of a workspace of 100,000 links, alternating twice.
#   auth      bench/run-http.sh's `auth` part: authenticated GET /v1/workspace next to /healthz.
#
# Links are seeded straight into the database (sqlite3 or psql) after Pier has created its
# schema; the benchmark link itself is created through the API.
#
# stdout: one JSON object per measurement; progress and wrk's own reports go to stderr.
#
# Usage: bench/run-links.sh > results-links.jsonl
# Smoke test: BENCH_WRK_DURATION=3s BENCH_LINKS_MANY=20000 BENCH_LINKS_LISTED=5000 \
#             BENCH_LISTING_PAGE=50 bench/run-links.sh
#
# Environment (defaults in brackets):
#   BENCH_WRK_DURATION [20s]  BENCH_WRK_THREADS [2]  BENCH_WARMUP [2s] (unrecorded, before redirects)
#   BENCH_REDIRECT_CONNECTIONS [64]  BENCH_LISTING_CONNECTIONS [8]
#   BENCH_LINKS_FEW [1000]  BENCH_LINKS_MANY [1000000]
#   BENCH_LINKS_LISTED [100000]  BENCH_LISTING_PAGE [1000]
#   BENCH_BACKENDS [sqlite]  (sqlite,postgres)
#   BENCH_PARTS [redirect,listing,auth]  BENCH_LAYOUTS [pinned,shared]
#   BENCH_PORT [18080]  BENCH_ADMIN_PORT [18081]  BENCH_BASELINE_PORT [18082]  BENCH_PIER_LOG [warn]
#   PIER_BENCH_DATABASE_URL [postgres://postgres@127.0.0.1:5432/test]: an admin connection, used to
#     drop and create the database pier_bench_links
#   BENCH_SKIP_BUILD=1 skips `cargo build`; PIER_BIN and BASELINE_BIN choose other binaries
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-links
# shellcheck source=bench/lib.sh
. bench/lib.sh

WRK_DURATION="${BENCH_WRK_DURATION:-20s}"
WRK_THREADS="${BENCH_WRK_THREADS:-2}"
WARMUP="${BENCH_WARMUP:-2s}"
REDIRECT_CONNECTIONS="${BENCH_REDIRECT_CONNECTIONS:-64}"
LISTING_CONNECTIONS="${BENCH_LISTING_CONNECTIONS:-8}"
LINKS_FEW="${BENCH_LINKS_FEW:-1000}"
LINKS_MANY="${BENCH_LINKS_MANY:-1000000}"
LINKS_LISTED="${BENCH_LINKS_LISTED:-100000}"
LISTING_PAGE="${BENCH_LISTING_PAGE:-1000}"
BACKENDS="${BENCH_BACKENDS:-sqlite}"
PARTS="${BENCH_PARTS:-redirect,listing,auth}"
LAYOUTS="${BENCH_LAYOUTS:-pinned,shared}"
PORT="${BENCH_PORT:-18080}"
ADMIN_PORT="${BENCH_ADMIN_PORT:-18081}"
BASELINE_PORT="${BENCH_BASELINE_PORT:-18082}"
PIER_LOG_LEVEL="${BENCH_PIER_LOG:-warn}"
ADMIN_URL="${PIER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_DB=pier_bench_links
PG_URL="${ADMIN_URL%/*}/$PG_DB"
BASE="http://127.0.0.1:$PORT"
TARGET="https://example.com/landing"

for part in ${PARTS//,/ }; do
  has "$part" "redirect,listing,auth" || die "unknown part in BENCH_PARTS: $part"
done
for backend in ${BACKENDS//,/ }; do
  has "$backend" "sqlite,postgres" || die "unknown backend in BENCH_BACKENDS: $backend"
done
for layout in ${LAYOUTS//,/ }; do
  has "$layout" "pinned,shared" || die "unknown layout in BENCH_LAYOUTS: $layout"
done
need=(curl jq wrk)
has pinned "$LAYOUTS" && need+=(taskset)
has sqlite "$BACKENDS" && need+=(sqlite3)
has postgres "$BACKENDS" && need+=(psql)
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is needed and not installed"
done

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  log "building pier, redirect-baseline and pier-bench (run-http.sh needs it) (release)"
  cargo build --release --quiet -p pier -p redirect-baseline -p pier-bench
fi
PIER_BIN="$(realpath "${PIER_BIN:-target/release/pier}")"
BASELINE_BIN="$(realpath "${BASELINE_BIN:-target/release/redirect-baseline}")"
[ -x "$PIER_BIN" ] || die "no pier binary at $PIER_BIN"
[ -x "$BASELINE_BIN" ] || die "no redirect-baseline binary at $BASELINE_BIN"

WORK_DIR="$(mktemp -d -t pier-bench-links.XXXXXX)"
PIER_PID=""
BASELINE_PID=""
PG_TOUCHED=""
KEY=""
DATA_DIR=""
# What the servers and wrk are started under; set by use_layout.
ON_SERVER_CPUS=()
ON_WRK_CPUS=()
THREADS="$WRK_THREADS"

use_layout() {
  local cores
  cores="$(nproc)"
  if [ "$1" = pinned ]; then
    [ "$cores" -ge 2 ] || die "the pinned layout needs at least 2 cores"
    ON_SERVER_CPUS=(taskset -c "0-$((cores / 2 - 1))")
    ON_WRK_CPUS=(taskset -c "$((cores / 2))-$((cores - 1))")
    THREADS="$((cores - cores / 2))"
  else
    ON_SERVER_CPUS=()
    ON_WRK_CPUS=()
    THREADS="$WRK_THREADS"
  fi
}

stop_pid() {
  local pid="$1"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_pier() {
  stop_pid "$PIER_PID"
  PIER_PID=""
  if grep -qv '^Created workspace' "$WORK_DIR/pier.log" 2>/dev/null; then
    log "pier logged (log level $PIER_LOG_LEVEL):"
    grep -v '^Created workspace' "$WORK_DIR/pier.log" | head -n 5 >&2
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pier || true
  stop_pid "$BASELINE_PID" || true
  if [ -n "$PG_TOUCHED" ]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
      log "could not drop the database $PG_DB"
  fi
  rm -rf "$WORK_DIR"
  [ "$rc" -eq 0 ] || log "failed (exit status $rc); servers and databases it started are cleaned up"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts pier on a fresh database of `backend`; sets PIER_PID, KEY and DATA_DIR.
start_pier() {
  local backend="$1"
  curl -s -o /dev/null "$BASE/healthz" && die "something already listens on $BASE; set BENCH_PORT"
  DATA_DIR="$(mktemp -d -p "$WORK_DIR" data.XXXXXX)"
  KEY="$("$PIER_BIN" keys generate)"
  local db=("PIER_SECRET_KEY=$("$PIER_BIN" generate-secret-key)")
  if [ "$backend" = postgres ]; then
    PG_TOUCHED=1
    PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -q \
      -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >&2
    db+=("PIER_DATABASE_URL=$PG_URL")
  fi
  # The API's own limits are lifted: one client address and one key make every request here.
  (cd "$DATA_DIR" && exec "${ON_SERVER_CPUS[@]}" env "${UNSET_PIER[@]}" PIER_LISTEN="127.0.0.1:$PORT" \
    PIER_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" PIER_DATA_DIR="$DATA_DIR" \
    PIER_BOOTSTRAP_API_KEY="$KEY" PIER_LOG="$PIER_LOG_LEVEL" "${db[@]}" \
    PIER_RATE_LIMITS_ENABLED=false "$PIER_BIN" serve) </dev/null >"$WORK_DIR/pier.log" 2>&1 &
  PIER_PID=$!
  wait_ready "$BASE/readyz" "$PIER_PID" "pier on $backend"
}

# Runs SQL on the running pier's database.
run_sql() {
  local backend="$1" sql="$2"
  if [ "$backend" = postgres ]; then
    psql "$PG_URL" -v ON_ERROR_STOP=1 -q -c "$sql" >&2
  else
    sqlite3 "$DATA_DIR/pier.db" "PRAGMA busy_timeout = 10000; $sql" >/dev/null
  fi
}

# Stores `count` links in the key's workspace, one a millisecond apart, newest last.
seed_links() {
  local backend="$1" count="$2"
  local ws now
  ws="$(curl -fsS -H "Authorization: Bearer $KEY" "$BASE/v1/workspace" | jq -r .id)"
  now="$(($(date +%s) * 1000000))"
  log "seeding $count links on $backend"
  local series pad
  if [ "$backend" = postgres ]; then
    series="SELECT n FROM generate_series(1, $count) AS n"
    pad="lpad(n::text, 26, '0')"
  else
    series="WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $count)
            SELECT n FROM s"
    pad="printf('%026d', n)"
  fi
  run_sql "$backend" "INSERT INTO links (id, workspace_id, slug, url, title, tags,
      redirect_status, created_by, version, clicks, created_at, updated_at)
    SELECT 'link_' || $pad, '$ws', 'seed' || n, 'https://example.com/page/' || n,
      'Seeded page ' || n, '[]', 302, 'bench', 1, 0, $now - ($count - n) * 1000,
      $now - ($count - n) * 1000
    FROM ($series) AS seeds"
  local stored
  if [ "$backend" = postgres ]; then
    stored="$(psql "$PG_URL" -tAc "SELECT COUNT(*) FROM links")"
  else
    stored="$(sqlite3 "$DATA_DIR/pier.db" "SELECT COUNT(*) FROM links")"
  fi
  [ "$stored" -ge "$count" ] || die "seeded $count links but the database holds $stored"
  log "the database holds $stored links"
}

# wrk against `url`; prints {requests_per_sec, p50_ms, p99_ms, non_2xx_3xx, errors}.
measure_wrk() {
  local url="$1" connections="$2"
  shift 2
  local out
  out="$("${ON_WRK_CPUS[@]}" wrk -t"$THREADS" -c"$connections" -d"$WRK_DURATION" --latency "$@" "$url")"
  printf '%s\n' "$out" >&2
  printf '%s\n' "$out" | awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v + 0
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    $1 == "Requests/sec:" { rps = $2 }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/ { errors = $4 + $6 + $8 + $10 }
    END {
      printf "{\"requests_per_sec\": %s, \"p50_ms\": %s, \"p99_ms\": %s, ", rps, p50, p99
      printf "\"non_2xx_3xx\": %d, \"socket_errors\": %d}\n", bad, errors
    }'
}

emit() {
  jq -c "$@"
}

measure_redirect() {
  local backend="$1" stored="$2" layout="$3"
  use_layout "$layout"
  start_pier "$backend"
  seed_links "$backend" "$((stored - 1))"
  curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d "{\"url\": \"$TARGET\", \"slug\": \"bench\"}" "$BASE/v1/links"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/bench")" = 302 ] ||
    die "the benchmark link does not redirect"
  "${ON_SERVER_CPUS[@]}" "$BASELINE_BIN" "127.0.0.1:$BASELINE_PORT" "$TARGET" &
  BASELINE_PID=$!
  wait_ready "http://127.0.0.1:$BASELINE_PORT/bench" "$BASELINE_PID" "redirect-baseline"
  log "warming both up for $WARMUP"
  for url in "$BASE/bench" "http://127.0.0.1:$BASELINE_PORT/bench"; do
    "${ON_WRK_CPUS[@]}" wrk -t"$THREADS" -c"$REDIRECT_CONNECTIONS" -d"$WARMUP" "$url" >/dev/null
  done
  for round in 1 2; do
    for system in pier baseline; do
      local url="$BASE/bench"
      [ "$system" = baseline ] && url="http://127.0.0.1:$BASELINE_PORT/bench"
      log "$system ($backend, $stored links stored, $layout): wrk GET /bench, $REDIRECT_CONNECTIONS connections, round $round"
      measure_wrk "$url" "$REDIRECT_CONNECTIONS" |
        emit --arg system "$system" --arg backend "$backend" --argjson stored "$stored" \
          --arg layout "$layout" --argjson round "$round" \
          --argjson connections "$REDIRECT_CONNECTIONS" \
          '{system: $system, backend: $backend, measure: "redirect", links_stored: $stored,
            layout: $layout, round: $round, connections: $connections} + .'
    done
  done
  stop_pid "$BASELINE_PID"
  BASELINE_PID=""
  local clicks
  clicks="$(curl -fsS -H "Authorization: Bearer $KEY" "$BASE/v1/links/by-slug/bench" | jq .clicks)"
  log "pier recorded $clicks clicks of /bench"
  stop_pier
}

measure_listing() {
  local backend="$1"
  use_layout shared
  start_pier "$backend"
  seed_links "$backend" "$LINKS_LISTED"
  local auth=(-H "Authorization: Bearer $KEY")
  local first="$BASE/v1/links?limit=20" url="$BASE/v1/links?limit=20" next
  log "walking to page $LISTING_PAGE"
  for _ in $(seq 2 "$LISTING_PAGE"); do
    next="$(curl -fsS "${auth[@]}" "$url" | jq -r .next_cursor)"
    [ "$next" != null ] || die "the list ended before page $LISTING_PAGE"
    url="$BASE/v1/links?limit=20&cursor=$next"
  done
  for round in 1 2; do
    for page in 1 "$LISTING_PAGE"; do
      local target="$first"
      [ "$page" = 1 ] || target="$url"
      log "pier ($backend): wrk GET /v1/links page $page of $LINKS_LISTED links, round $round"
      measure_wrk "$target" "$LISTING_CONNECTIONS" "${auth[@]}" |
        emit --arg backend "$backend" --argjson page "$page" --argjson round "$round" \
          --argjson stored "$LINKS_LISTED" --argjson connections "$LISTING_CONNECTIONS" \
          '{system: "pier", backend: $backend, measure: "listing", page: $page,
            links_stored: $stored, round: $round, connections: $connections} + .'
    done
  done
  stop_pier
}

for backend in ${BACKENDS//,/ }; do
  if has redirect "$PARTS"; then
    for layout in ${LAYOUTS//,/ }; do
      measure_redirect "$backend" "$LINKS_FEW" "$layout"
      measure_redirect "$backend" "$LINKS_MANY" "$layout"
    done
  fi
  has listing "$PARTS" && measure_listing "$backend"
done
if has auth "$PARTS"; then
  BENCH_SKIP_BUILD=1 BENCH_PARTS=auth BENCH_BACKENDS="$BACKENDS" BENCH_PORT="$PORT" \
    BENCH_ADMIN_PORT="$ADMIN_PORT" bench/run-http.sh
fi
log "done"
