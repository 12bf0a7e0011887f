#!/usr/bin/env bash
# The list benchmark: every list endpoint and filter, page 1 and page 1,000 (limit=20), with
# BENCH_ROWS rows in the caller's workspace and as many in a noisy neighbour's, on SQLite and
# PostgreSQL. Rows are seeded straight into the database (sqlite3 or psql) after Pier has
# created its schema, in bulk (a recursive count on SQLite, generate_series on PostgreSQL).
#
# Each measurement is BENCH_REQUESTS sequential requests on one kept-alive connection (curl's
# own transfer timer, after BENCH_WARMUP unrecorded ones): the p50 is one request's latency,
# not a throughput. Page 1,000's cursor is found by walking the list (199 pages of 100, then 4
# of 20: cursors are bound to the list and its filters, not to the page size). A filter that
# selects fewer than 20,000 rows has no page 1,000 and reports its page 1 only.
#
# stdout: one JSON object per measurement; progress goes to stderr.
#
# Usage: bench/run-lists.sh > results-lists.jsonl
# Smoke test: BENCH_ROWS=30000 BENCH_REQUESTS=10 bench/run-lists.sh
#
# Environment (defaults in brackets):
#   BENCH_ROWS [1000000]  BENCH_REQUESTS [50]  BENCH_WARMUP [5]  BENCH_BACKENDS [sqlite,postgres]
#   BENCH_PORT [18080]  BENCH_ADMIN_PORT [18081]  BENCH_PIER_LOG [warn]
#   PIER_BENCH_DATABASE_URL [postgres://postgres@127.0.0.1:5432/test]: an admin connection, used to
#     drop and create the database pier_bench_lists
#   BENCH_SKIP_BUILD=1 skips `cargo build`; PIER_BIN chooses another binary
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-lists
# shellcheck source=bench/lib.sh
. bench/lib.sh

ROWS="${BENCH_ROWS:-1000000}"
REQUESTS="${BENCH_REQUESTS:-50}"
WARMUP="${BENCH_WARMUP:-5}"
BACKENDS="${BENCH_BACKENDS:-sqlite,postgres}"
PORT="${BENCH_PORT:-18080}"
ADMIN_PORT="${BENCH_ADMIN_PORT:-18081}"
PIER_LOG_LEVEL="${BENCH_PIER_LOG:-warn}"
ADMIN_URL="${PIER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_DB=pier_bench_lists
PG_URL="${ADMIN_URL%/*}/$PG_DB"
BASE="http://127.0.0.1:$PORT"
NEIGHBOUR="ws_00000000000000000000000000"
DEEP_PAGE=1000

for backend in ${BACKENDS//,/ }; do
  has "$backend" "sqlite,postgres" || die "unknown backend in BENCH_BACKENDS: $backend"
done
need=(curl jq sqlite3)
has postgres "$BACKENDS" && need+=(psql)
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is needed and not installed"
done

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  log "building pier (release)"
  cargo build --release --quiet -p pier
fi
PIER_BIN="$(realpath "${PIER_BIN:-target/release/pier}")"
[ -x "$PIER_BIN" ] || die "no pier binary at $PIER_BIN"

WORK_DIR="$(mktemp -d -t pier-bench-lists.XXXXXX)"
PIER_PID=""
PG_TOUCHED=""
KEY=""
DATA_DIR=""
BACKEND=""

stop_pier() {
  [ -n "$PIER_PID" ] || return 0
  kill -TERM "$PIER_PID" 2>/dev/null || true
  wait "$PIER_PID" 2>/dev/null || true
  PIER_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pier || true
  if [ -n "$PG_TOUCHED" ]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
      log "could not drop the database $PG_DB"
  fi
  rm -rf "$WORK_DIR"
  [ "$rc" -eq 0 ] || log "failed (exit status $rc); the server and database it started are cleaned up"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts pier on a fresh database of $BACKEND; sets PIER_PID, KEY and DATA_DIR.
start_pier() {
  curl -s -o /dev/null "$BASE/healthz" && die "something already listens on $BASE; set BENCH_PORT"
  DATA_DIR="$(mktemp -d -p "$WORK_DIR" data.XXXXXX)"
  KEY="$("$PIER_BIN" keys generate)"
  local db=("PIER_SECRET_KEY=$("$PIER_BIN" generate-secret-key)")
  if [ "$BACKEND" = postgres ]; then
    PG_TOUCHED=1
    PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -q \
      -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >&2
    db+=("PIER_DATABASE_URL=$PG_URL")
  fi
  # The API's own limits are lifted: one client address and one key make every request here.
  (cd "$DATA_DIR" && exec env "${UNSET_PIER[@]}" PIER_LISTEN="127.0.0.1:$PORT" \
    PIER_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" PIER_DATA_DIR="$DATA_DIR" \
    PIER_BOOTSTRAP_API_KEY="$KEY" PIER_LOG="$PIER_LOG_LEVEL" "${db[@]}" \
    PIER_RATE_LIMITS_ENABLED=false "$PIER_BIN" serve) </dev/null >"$WORK_DIR/pier.log" 2>&1 &
  PIER_PID=$!
  wait_ready "$BASE/readyz" "$PIER_PID" "pier on $BACKEND"
}

# Runs SQL on the running pier's database; prints what it returns.
run_sql() {
  if [ "$BACKEND" = postgres ]; then
    psql "$PG_URL" -v ON_ERROR_STOP=1 -qtA -c "$1"
  else
    sqlite3 "$DATA_DIR/pier.db" "PRAGMA busy_timeout = 10000; $1" | { grep -v '^10000$' || true; }
  fi
}

api() { curl -fsS -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$@"; }

# `count` seeded rows, numbered n = 1…count (oldest first), for the workspace in `ws`: a row
# source to select from, and a 26-digit id body of n.
series() {
  if [ "$BACKEND" = postgres ]; then
    echo "(SELECT n FROM generate_series(1, $1) AS n) AS seeds"
  else
    echo "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $1)
           SELECT n FROM s) AS seeds"
  fi
}
pad() {
  if [ "$BACKEND" = postgres ]; then echo "lpad(($1)::text, 26, '0')"; else echo "printf('%026d', $1)"; fi
}

# Seeds ROWS rows of every large list in workspace `ws` (id bodies from `base` up, so two
# workspaces' ids differ).
seed_workspace() {
  local ws="$1" base="$2" endpoint_a="$3" endpoint_b="$4"
  local s id now
  s="$(series "$ROWS")"
  id="$(pad "$base + n")"
  now="$(($(date +%s) * 1000000))"
  local at="$now - ($ROWS - n) * 1000"
  # Jobs: nine in ten in queue `big`, one in a thousand of kind `rare`; 60 % completed, 30 %
  # available, the rest scheduled, retryable, discarded or cancelled in turn.
  run_sql "INSERT INTO jobs (workspace_id, id, queue, kind, payload, state, priority, run_at,
      max_attempts, lease_ms, created_at)
    SELECT '$ws', 'job_' || $id, CASE WHEN n % 10 = 0 THEN 'small' ELSE 'big' END,
      CASE WHEN n % 1000 = 0 THEN 'rare' ELSE 'common' END, '{}',
      CASE WHEN n % 10 < 6 THEN 'completed' WHEN n % 10 < 9 THEN 'available'
        WHEN n % 40 = 9 THEN 'scheduled' WHEN n % 40 = 19 THEN 'retryable'
        WHEN n % 40 = 29 THEN 'discarded' ELSE 'cancelled' END,
      0, $at + 3600000000, 20, 30000, $at FROM $s"
  run_sql "INSERT INTO webhook_events (workspace_id, id, type, payload, created_at)
    SELECT '$ws', 'msg_' || $id, CASE WHEN n % 10 = 0 THEN 'order.refunded' ELSE 'order.paid' END,
      '{}', $at FROM $s"
  # Ten deliveries an event (one per endpoint of ten).
  run_sql "INSERT INTO webhook_deliveries (workspace_id, id, event_id, endpoint_id, state,
      attempts, created_at, updated_at)
    SELECT '$ws', 'dlv_' || $id, 'msg_' || $(pad "$base + n / 10"), 'ep_' || $(pad "n % 10"),
      'succeeded', 1, $at, $at FROM $s"
  # Attempts: nine in ten to endpoint A, the rest to B.
  run_sql "INSERT INTO webhook_attempts (workspace_id, id, delivery_id, event_id, endpoint_id,
      attempted_at, duration_ms, status_code, succeeded)
    SELECT '$ws', 'atmpt_' || $id, 'dlv_' || $id, 'msg_' || $id,
      CASE WHEN n % 10 = 0 THEN '$endpoint_b' ELSE '$endpoint_a' END, $at, 12, 200,
      n % 2 = 0 FROM $s"
  # Links: one in ten tagged `sale`.
  run_sql "INSERT INTO links (id, workspace_id, slug, url, title, tags, redirect_status,
      created_by, version, clicks, created_at, updated_at)
    SELECT 'lnk_' || $id, '$ws', 's' || ($base + n), 'https://example.com/page/' || n,
      'Seeded page ' || n, CASE WHEN n % 10 = 0 THEN '[\"sale\"]' ELSE '[]' END, 302, 'bench', 1,
      0, $at, $at FROM $s"
  run_sql "INSERT INTO link_tags (workspace_id, tag, created_at, link_id)
    SELECT '$ws', 'sale', $at, 'lnk_' || $id FROM $s WHERE n % 10 = 0"
  run_sql "INSERT INTO api_keys (id, workspace_id, name, prefix, secret_hash, role, created_at)
    SELECT 'key_' || $id, '$ws', 'seeded', 'pier_sk_', 'seeded' || ($base + n),
      CASE WHEN n % 100 = 0 THEN 'admin' WHEN n % 10 = 0 THEN 'viewer' ELSE 'member' END, $at
    FROM $s"
  # Grants: a thousand subjects, three resource types, one resource each.
  run_sql "INSERT INTO resource_grants (id, workspace_id, subject, resource_type, resource_id,
      relation, created_by, created_at)
    SELECT 'rgr_' || $id, '$ws', 'key_' || $(pad "$base + n % 1000"),
      CASE n % 3 WHEN 0 THEN 'link' WHEN 1 THEN 'queue' ELSE 'webhook_endpoint' END,
      'lnk_' || $id, 'viewer', 'bench', $at FROM $s"
  # Policies and event types: copies of the one made through the API.
  run_sql "INSERT INTO rate_limit_policies (workspace_id, name, algorithm, quota, period_seconds,
      burst, failure_mode, created_at, updated_at)
    SELECT '$ws', 'seeded-' || $id, algorithm, quota, period_seconds, burst, failure_mode,
      created_at, updated_at FROM rate_limit_policies, $s
    WHERE workspace_id = '$ws' AND name = 'template'"
  run_sql "INSERT INTO webhook_event_types (workspace_id, name, description, schema, created_at)
    SELECT '$ws', 'seeded.' || $id, description, schema, created_at
    FROM webhook_event_types, $s WHERE workspace_id = '$ws' AND name = 'order.paid'"
}

seed() {
  local ws="$1"
  log "seeding $ROWS rows a list in $ws and in the neighbour $NEIGHBOUR on $BACKEND"
  api -o /dev/null -X PUT -d '{"algorithm": "gcra", "limit": 100, "period_seconds": 1}' \
    "$BASE/v1/rate-limit-policies/template"
  api -o /dev/null -X POST -d '{"name": "order.paid"}' "$BASE/v1/event-types"
  EP_A="$(api -X POST -d '{"url": "https://example.com/a", "event_types": ["order.paid"]}' \
    "$BASE/v1/webhook-endpoints" | jq -r .id)"
  EP_B="$(api -X POST -d '{"url": "https://example.com/b", "event_types": ["order.paid"]}' \
    "$BASE/v1/webhook-endpoints" | jq -r .id)"
  run_sql "INSERT INTO workspaces (id, name, created_at) VALUES ('$NEIGHBOUR', 'neighbour', 0)"
  run_sql "INSERT INTO rate_limit_policies SELECT '$NEIGHBOUR', name, algorithm, quota,
      period_seconds, burst, failure_mode, created_at, updated_at FROM rate_limit_policies
      WHERE name = 'template'"
  run_sql "INSERT INTO webhook_event_types SELECT '$NEIGHBOUR', name, description, schema,
      created_at FROM webhook_event_types WHERE name = 'order.paid'"
  local started=$SECONDS
  seed_workspace "$NEIGHBOUR" 0 ep_a ep_b
  seed_workspace "$ws" "$((ROWS * 10))" "$EP_A" "$EP_B"
  run_sql "ANALYZE" >/dev/null
  log "seeded in $((SECONDS - started)) s"
}

# p50 of BENCH_REQUESTS sequential GETs of `url` on one connection, in milliseconds.
p50_ms() {
  local url="$1" urls=()
  for _ in $(seq 1 "$((WARMUP + REQUESTS))"); do urls+=(-o /dev/null "$url"); done
  curl -sS -H "Authorization: Bearer $KEY" -w '%{http_code} %{time_total}\n' "${urls[@]}" |
    tail -n "$REQUESTS" | awk '
      $1 != 200 { bad++ }
      { t[NR] = $2 * 1000 }
      END {
        if (bad) { print "status " bad > "/dev/stderr"; exit 1 }
        n = asort(t); printf "%.2f\n", (n % 2) ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
      }'
}

# The cursor of page DEEP_PAGE of `path` (with its query) at limit=20, or "" if it is shorter.
deep_cursor() {
  local path="$1" sep="?" cursor="" i
  [[ "$path" == *"?"* ]] && sep="&"
  for i in $(seq 1 203); do
    local limit=100
    [ "$i" -gt 199 ] && limit=20
    local url="$BASE$path${sep}limit=$limit"
    [ -n "$cursor" ] && url="$url&cursor=$cursor"
    cursor="$(api "$url" | jq -r '.next_cursor // empty')"
    [ -n "$cursor" ] || return 0
  done
  echo "$cursor"
}

measure() {
  local list="$1" path="$2" sep="?"
  [[ "$path" == *"?"* ]] && sep="&"
  local first deep="null" cursor
  first="$(p50_ms "$BASE$path${sep}limit=20")"
  cursor="$(deep_cursor "$path")"
  [ -z "$cursor" ] || deep="$(p50_ms "$BASE$path${sep}limit=20&cursor=$cursor")"
  log "$BACKEND $list: page 1 $first ms, page $DEEP_PAGE $deep ms"
  jq -nc --arg backend "$BACKEND" --arg list "$list" --arg path "$path" --argjson rows "$ROWS" \
    --argjson first "$first" --argjson deep "$deep" --argjson requests "$REQUESTS" \
    '{backend: $backend, list: $list, request: $path, rows_per_workspace: $rows,
      requests: $requests, page_1_p50_ms: $first, page_1000_p50_ms: $deep}'
}

run_backend() {
  BACKEND="$1"
  start_pier
  local ws
  ws="$(api "$BASE/v1/workspace" | jq -r .id)"
  seed "$ws"
  local attempts_a="/v1/webhook-endpoints/$EP_A/attempts"
  local attempts_b="/v1/webhook-endpoints/$EP_B/attempts"
  local event
  event="msg_$(printf '%026d' $((ROWS * 10 + ROWS / 20)))"
  measure "jobs" "/v1/jobs"
  measure "jobs by queue (90 %)" "/v1/jobs?queue=big"
  measure "jobs by queue (10 %)" "/v1/jobs?queue=small"
  measure "jobs by state (available, 30 %)" "/v1/jobs?state=available"
  measure "jobs by state (discarded, 1 %)" "/v1/jobs?state=discarded"
  measure "jobs by kind (rare, 0.1 %)" "/v1/jobs?kind=rare"
  measure "jobs by kind (common)" "/v1/jobs?kind=common"
  measure "jobs by queue and kind (rare)" "/v1/jobs?queue=big&kind=rare"
  measure "jobs by queue and kind (common)" "/v1/jobs?queue=small&kind=common"
  measure "jobs by queue and state" "/v1/jobs?queue=big&state=available"
  measure "jobs by state and kind" "/v1/jobs?state=completed&kind=common"
  measure "jobs by queue, state and kind" "/v1/jobs?queue=small&state=completed&kind=common"
  measure "events" "/v1/events"
  measure "events by type (10 %)" "/v1/events?type=order.refunded"
  measure "deliveries of an event" "/v1/events/$event/deliveries"
  measure "attempts of an endpoint (90 %)" "$attempts_a"
  measure "attempts of an endpoint (10 %)" "$attempts_b"
  measure "links" "/v1/links"
  measure "links by tag (10 %)" "/v1/links?tag=sale"
  measure "links by search (q, 112 matches, all but one 900,000 or more rows deep)" "/v1/links?q=page%2F1000"
  measure "links by search (q, no match)" "/v1/links?q=nowhere"
  measure "api keys" "/v1/api-keys"
  measure "api keys by role (1 %)" "/v1/api-keys?role=admin"
  measure "grants" "/v1/permissions/grants"
  measure "grants by subject" "/v1/permissions/grants?subject=key_$(printf '%026d' $((ROWS * 10 + 7)))"
  measure "grants by resource type" "/v1/permissions/grants?resource_type=queue"
  measure "grants by resource" "/v1/permissions/grants?resource_id=lnk_$(printf '%026d' $((ROWS * 10 + 5)))"
  measure "rate-limit policies" "/v1/rate-limit-policies"
  measure "event types" "/v1/event-types"
  measure "oauth clients" "/v1/oauth/clients"
  measure "webhook endpoints" "/v1/webhook-endpoints"
  measure "queues" "/v1/queues"
  stop_pier
}

for backend in ${BACKENDS//,/ }; do
  run_backend "$backend"
done
