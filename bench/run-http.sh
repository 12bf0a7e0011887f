#!/usr/bin/env bash
# The HTTP benchmark, in one go, each measurement on a fresh database:
#
#   for each backend (SQLite, then PostgreSQL):
#     http_single_enqueue  wrk: one job per POST /v1/jobs, 32 connections (bench/http/post.lua)
#     [PostgreSQL only, right after it: graphile-worker's addJob, one transaction per job,
#      10 calls in flight (bench/graphile-worker, mode addjob), on the same server]
#     http_burndown        pier-bench: N jobs enqueued over HTTP, then 4 HTTP workers claim 100
#                          and complete them in one call, until GET /v1/queues counts N completed
#     burndown             pier-bench: the same N jobs drained by in-process pools, for comparison
#     noisy_neighbour      pier-bench: one workspace's claim latency next to another workspace's
#                          paused backlog of 1,000,000 jobs (on the same connection pool and on a
#                          fresh one), against the same loop on an empty table
#     http_limiter         wrk: GET /v1/workspace with the API's rate limiter off, then on (local
#                          store, a policy that never refuses), twice each, alternating
#     http_auth            wrk: GET /healthz (no authentication) and GET /v1/workspace with an
#                          API key and with an OAuth access token (a JWT), alternating twice on
#                          one server: what authenticating a request costs
#     http_decide          wrk: the decision API against an authenticated read, alternating twice
#                          on one server: GET /v1/workspace, a single check of a policy (GCRA,
#                          never refusing, 1,000 caller keys) and a batch check of 10 such
#                          policies; then the ratios (goals: single >= 0.8, batch >= 0.5 x read)
#     http_publish         wrk: single enqueues against POST /v1/events with no endpoint, one
#                          enabled endpoint and ten, each on a fresh server, deliveries going
#                          to a local receiver that answers 200 at once (bench/http/receiver.js,
#                          node) while wrk publishes; then one and ten again on a node of role
#                          api (no deliveries: the publish path alone); then the ratios to the
#                          enqueues (goals: none >= 0.8, one >= 0.5, ten >= 0.25)
#     http_flags           wrk: OFREP evaluation against GET /healthz, alternating twice on one
#                          server whose workspace holds 100 flags that roll out by `fractional`
#                          on the caller's targeting key (1,000 of them): a single evaluation
#                          (goal: >= 0.7 x /healthz) and the bulk evaluation of all 100 (goal:
#                          p99 < 2 ms)
#     flag_propagation     pier-bench, PostgreSQL only: a flag changed on one node, timed until
#                          another node's evaluation sees it (goal: within 100 ms)
#
# Every server runs with its per-key rate limit raised out of the way (`gcra 1000000000/1s`):
# the limiter decides every request, but a single-key benchmark is not throttled at 1,000/s.
#
# stdout: one JSON object per measurement; progress, wrk's own report and server warnings go to
# stderr. Servers, databases and temporary files it creates are removed on exit, also on failure.
#
# Usage: bench/run-http.sh > results-http.jsonl
# Smoke test: BENCH_WRK_DURATION=5s BENCH_ADDJOB_JOBS=5000 BENCH_BURNDOWN_JOBS=5000 \
#             BENCH_BACKLOG=50000 BENCH_CLAIMS=500 bench/run-http.sh
#
# Environment (defaults in brackets):
#   BENCH_WRK_DURATION [20s]  BENCH_WRK_CONNECTIONS [32]  BENCH_WRK_THREADS [2]
#   BENCH_ADDJOB_JOBS [20000]  BENCH_ADDJOB_CONCURRENCY [10]
#   BENCH_BURNDOWN_JOBS [100000]  BENCH_HTTP_WORKERS [4]  BENCH_CLAIM_MAX [100]
#   BENCH_POOLS [2]  BENCH_POOL_CONCURRENCY [2000]   (the in-process burn-down, as run-jobs.sh)
#   BENCH_BACKLOG [1000000]  BENCH_CLAIMS [2000]      (noisy neighbour)
#   BENCH_FLAG_FLIPS [500]                            (flag propagation)
#   BENCH_BACKENDS [sqlite,postgres]
#   BENCH_PARTS [enqueue,addjob,http-burndown,burndown,noisy,limiter,auth,decide,publish,flags]
#               (addjob runs only with postgres, limiter only with sqlite)
#   BENCH_PORT [18080]  BENCH_ADMIN_PORT [18081]  BENCH_RECEIVER_PORT [18090]
#   BENCH_PIER_LOG [warn]
#   PIER_BENCH_DATABASE_URL [postgres://postgres@127.0.0.1:5432/test]: an admin connection, used to
#     drop and create the databases pier_bench_http (and, through the baseline, pier_bench_graphile)
#   BENCH_SKIP_BUILD=1 skips `cargo build`; PIER_BIN and PIER_BENCH_BIN choose other binaries
#     [target/release/pier, target/release/pier-bench]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-http
# shellcheck source=bench/lib.sh
. bench/lib.sh

WRK_DURATION="${BENCH_WRK_DURATION:-20s}"
WRK_CONNECTIONS="${BENCH_WRK_CONNECTIONS:-32}"
WRK_THREADS="${BENCH_WRK_THREADS:-2}"
ADDJOB_JOBS="${BENCH_ADDJOB_JOBS:-20000}"
ADDJOB_CONCURRENCY="${BENCH_ADDJOB_CONCURRENCY:-10}"
BURNDOWN_JOBS="${BENCH_BURNDOWN_JOBS:-100000}"
FLAG_FLIPS="${BENCH_FLAG_FLIPS:-500}"
HTTP_WORKERS="${BENCH_HTTP_WORKERS:-4}"
CLAIM_MAX="${BENCH_CLAIM_MAX:-100}"
POOLS="${BENCH_POOLS:-2}"
POOL_CONCURRENCY="${BENCH_POOL_CONCURRENCY:-2000}"
BACKLOG="${BENCH_BACKLOG:-1000000}"
CLAIMS="${BENCH_CLAIMS:-2000}"
BACKENDS="${BENCH_BACKENDS:-sqlite,postgres}"
PARTS="${BENCH_PARTS:-enqueue,addjob,http-burndown,burndown,noisy,limiter,auth,decide,publish,flags}"
PORT="${BENCH_PORT:-18080}"
ADMIN_PORT="${BENCH_ADMIN_PORT:-18081}"
RECEIVER_PORT="${BENCH_RECEIVER_PORT:-18090}"
PIER_LOG_LEVEL="${BENCH_PIER_LOG:-warn}"
ADMIN_URL="${PIER_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_DB=pier_bench_http
PG_URL="${ADMIN_URL%/*}/$PG_DB"
BASE="http://127.0.0.1:$PORT"
QUEUE=bench

for part in ${PARTS//,/ }; do
  has "$part" "enqueue,addjob,http-burndown,burndown,noisy,limiter,auth,decide,publish,flags" ||
    die "unknown part in BENCH_PARTS: $part"
done
for backend in ${BACKENDS//,/ }; do
  has "$backend" "sqlite,postgres" || die "unknown backend in BENCH_BACKENDS: $backend"
done
need=(curl jq)
for part in enqueue limiter auth decide publish flags; do
  has "$part" "$PARTS" && need+=(wrk) && break
done
has publish "$PARTS" && need+=(node)
has postgres "$BACKENDS" && need+=(psql)
has postgres "$BACKENDS" && has addjob "$PARTS" && need+=(node npm)
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is needed and not installed"
done

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  log "building pier and pier-bench (release)"
  cargo build --release --quiet -p pier -p pier-bench
fi
PIER_BIN="$(realpath "${PIER_BIN:-target/release/pier}")"
BENCH_BIN="$(realpath "${PIER_BENCH_BIN:-target/release/pier-bench}")"
[ -x "$PIER_BIN" ] || die "no pier binary at $PIER_BIN"
[ -x "$BENCH_BIN" ] || die "no pier-bench binary at $BENCH_BIN"

# Settings every server gets; measure_limiter changes them.
LIMITS=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s")

WORK_DIR="$(mktemp -d -t pier-bench-http.XXXXXX)"
PIER_PID=""
RECEIVER_PID=""
KEY=""
PG_TOUCHED=""
GRAPHILE_TOUCHED=""
SERVERS=0
SERVER_LOG_LINES=0

stop_pier() {
  [ -n "$PIER_PID" ] || return 0
  local pid="$PIER_PID"
  PIER_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pier (pid $pid) did not stop within 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  # Everything but the start-up notice about the bootstrap key is a log line worth a look.
  local lines
  lines=$(grep -cv '^Created workspace .* with the owner key from PIER_BOOTSTRAP_API_KEY' \
    "$SERVER_LOG" || true)
  if [ "$lines" -gt 0 ]; then
    SERVER_LOG_LINES=$((SERVER_LOG_LINES + lines))
    log "pier logged $lines line(s) (log level $PIER_LOG_LEVEL); the first ones:"
    grep -v '^Created workspace .* with the owner key from PIER_BOOTSTRAP_API_KEY' \
      "$SERVER_LOG" | head -n 5 >&2
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pier || true
  if [ -n "$RECEIVER_PID" ]; then
    kill "$RECEIVER_PID" 2>/dev/null || true
  fi
  if [ -n "$PG_TOUCHED" ]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
      log "could not drop the database $PG_DB"
  fi
  if [ -n "$GRAPHILE_TOUCHED" ]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS pier_bench_graphile WITH (FORCE)" \
      >/dev/null 2>&1 || log "could not drop the database pier_bench_graphile"
  fi
  rm -rf "$WORK_DIR"
  if [ "$rc" -ne 0 ]; then
    log "failed (exit status $rc); servers and databases it started are cleaned up"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fresh_postgres() {
  PG_TOUCHED=1
  PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -q \
    -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >&2
}

# Starts pier on a fresh database of `backend`; sets PIER_PID, KEY and SERVER_LOG.
start_pier() {
  local backend="$1"
  if curl -s -o /dev/null "$BASE/healthz"; then
    die "something already listens on 127.0.0.1:$PORT; set BENCH_PORT"
  fi
  SERVERS=$((SERVERS + 1))
  local data_dir="$WORK_DIR/data-$SERVERS"
  mkdir -p "$data_dir"
  SERVER_LOG="$WORK_DIR/pier-$SERVERS.log"
  KEY="$("$PIER_BIN" keys generate)"
  local db=()
  if [ "$backend" = postgres ]; then
    fresh_postgres
    db=("PIER_DATABASE_URL=$PG_URL")
  fi
  # PostgreSQL needs a secret key for secrets at rest; older binaries have no such command.
  local secret
  if secret="$("$PIER_BIN" generate-secret-key 2>/dev/null)"; then
    db+=("PIER_SECRET_KEY=$secret")
  fi
  # From its own directory, so that no ./pier.toml is picked up.
  (cd "$data_dir" && exec env "${UNSET_PIER[@]}" PIER_LISTEN="127.0.0.1:$PORT" \
    PIER_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" PIER_DATA_DIR="$data_dir" \
    PIER_BOOTSTRAP_API_KEY="$KEY" PIER_LOG="$PIER_LOG_LEVEL" "${db[@]}" "${LIMITS[@]}" \
    "$PIER_BIN" serve) </dev/null >"$SERVER_LOG" 2>&1 &
  PIER_PID=$!
  for _ in $(seq 1 300); do
    if curl -fs -o /dev/null "$BASE/readyz"; then
      return 0
    fi
    if ! kill -0 "$PIER_PID" 2>/dev/null; then
      PIER_PID=""
      tail -n 20 "$SERVER_LOG" >&2
      die "pier on $backend exited during start-up"
    fi
    sleep 0.1
  done
  die "pier on $backend was not ready within 30 s"
}

# Jobs of the queue in any state, from the server's counters.
queued_jobs() {
  curl -fsS -H "Authorization: Bearer $KEY" "$BASE/v1/queues" |
    jq --arg q "$QUEUE" '[.data[] | select(.name == $q) | .counts | add] | add // 0'
}

# wrk with bench/http/post.lua on the running server: POSTs to `path` bodies made from `template`
# (see post.lua), expecting `status`; sets SUMMARY (post.lua's JSON line) and warns of failures.
wrk_post() {
  local path="$1" template="$2" status="$3" out bad
  out="$(PIER_BENCH_KEY="$KEY" PIER_BENCH_QUEUE="$QUEUE" PIER_BENCH_PATH="$path" \
    PIER_BENCH_BODY="$template" PIER_BENCH_STATUS="$status" wrk -t"$WRK_THREADS" \
    -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency -s bench/http/post.lua "$BASE")"
  printf '%s\n' "$out" | grep -v '^wrk-json: ' >&2
  SUMMARY="$(printf '%s\n' "$out" | sed -n 's/^wrk-json: //p')"
  [ -n "$SUMMARY" ] || die "wrk printed no summary (did post.lua run?)"
  bad="$(jq -r '.not_ok + .socket_errors.connect + .socket_errors.read
    + .socket_errors.write + .socket_errors.timeout' <<<"$SUMMARY")"
  if [ "$bad" -ne 0 ]; then
    log "WARNING: POST $path: $bad requests failed (see not_ok, socket_errors)"
  fi
}

measure_enqueue() {
  local backend="$1"
  start_pier "$backend"
  log "pier on $backend: wrk single enqueue, $WRK_CONNECTIONS connections, $WRK_DURATION"
  wrk_post /v1/jobs "" 201
  local queued
  queued="$(queued_jobs)"
  stop_pier
  local line
  line="$(jq -c --arg backend "$backend" --argjson threads "$WRK_THREADS" \
    --argjson connections "$WRK_CONNECTIONS" --arg duration "$WRK_DURATION" \
    --argjson queued "$queued" \
    '{system: "pier", backend: $backend, measure: "http_single_enqueue", tool: "wrk",
      threads: $threads, connections: $connections, duration: $duration}
     + . + {jobs_per_sec: .ok_per_sec, jobs_in_queue: $queued}' <<<"$SUMMARY")"
  printf '%s\n' "$line"
  # Requests still in flight when wrk stops may be committed without being counted.
  if [ "$(jq '.jobs_in_queue < .ok' <<<"$line")" = true ]; then
    log "WARNING: pier on $backend: fewer jobs in the queue than 201 responses"
  fi
}

measure_addjob() {
  GRAPHILE_TOUCHED=1
  log "graphile-worker on postgres: addJob x $ADDJOB_JOBS, $ADDJOB_CONCURRENCY in flight"
  BENCH_MODE=addjob BENCH_ADDJOB_JOBS="$ADDJOB_JOBS" \
    BENCH_ADDJOB_CONCURRENCY="$ADDJOB_CONCURRENCY" PIER_BENCH_DATABASE_URL="$ADMIN_URL" \
    bench/graphile-worker/run.sh
}

measure_http_burndown() {
  local backend="$1"
  start_pier "$backend"
  log "pier on $backend: HTTP burn-down of $BURNDOWN_JOBS jobs, $HTTP_WORKERS workers"
  PIER_BENCH_KEY="$KEY" "$BENCH_BIN" --measure http-burndown --url "$BASE" \
    --server-backend "$backend" --queue "$QUEUE" --jobs "$BURNDOWN_JOBS" \
    --workers "$HTTP_WORKERS" --claim-max "$CLAIM_MAX"
  stop_pier
}

# wrk on an authenticated read with the limiter off and on, alternating, on a fresh server each.
measure_limiter() {
  local backend="$1" mode out rps
  for mode in off on off on; do
    if [ "$mode" = off ]; then
      LIMITS=(PIER_RATE_LIMITS_ENABLED=false)
    else
      LIMITS=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s")
    fi
    start_pier "$backend"
    log "pier on $backend: wrk GET /v1/workspace, limiter $mode, $WRK_CONNECTIONS connections"
    out="$(wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency \
      -H "Authorization: Bearer $KEY" "$BASE/v1/workspace")"
    printf '%s\n' "$out" >&2
    stop_pier
    grep -q 'Non-2xx' <<<"$out" && die "limiter $mode: wrk saw non-2xx responses"
    rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    jq -nc --arg backend "$backend" --arg limiter "$mode" --argjson rps "$rps" \
      --argjson connections "$WRK_CONNECTIONS" --arg duration "$WRK_DURATION" \
      '{system: "pier", backend: $backend, measure: "http_limiter", tool: "wrk",
        route: "GET /v1/workspace", limiter: $limiter, connections: $connections,
        duration: $duration, requests_per_sec: $rps}'
  done
  LIMITS=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s")
}

# wrk on GET /healthz and on the authenticated GET /v1/workspace, alternating on one server (the
# per-address limit raised out of the way too, since /healthz spends it).
measure_auth() {
  local backend="$1" what route out rps p99 auth jwt client
  LIMITS=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s"
    PIER_RATE_LIMITS_PER_CLIENT_IP="gcra 1000000000/1s")
  start_pier "$backend"
  # An OAuth client's access token (client credentials), for the bearer-JWT rounds.
  client="$(curl -fsS -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"name": "bench", "client_type": "confidential", "grant_types": ["client_credentials"],
         "scopes": ["workspace:read"]}' "$BASE/v1/oauth/clients")"
  jwt="$(curl -fsS -u "$(jq -r '.client_id + ":" + .client_secret' <<<"$client")" \
    -d grant_type=client_credentials "$BASE/v1/oauth/token" | jq -r .access_token)"
  for what in none api_key jwt none api_key jwt; do
    route=/v1/workspace
    case "$what" in
      none) route=/healthz auth=() ;;
      api_key) auth=(-H "Authorization: Bearer $KEY") ;;
      jwt) auth=(-H "Authorization: Bearer $jwt") ;;
    esac
    log "pier on $backend: wrk GET $route ($what), $WRK_CONNECTIONS connections"
    out="$(wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency "${auth[@]}" \
      "$BASE$route")"
    printf '%s\n' "$out" >&2
    grep -q 'Non-2xx' <<<"$out" && die "GET $route ($what): wrk saw non-2xx responses"
    rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    jq -nc --arg backend "$backend" --arg route "GET $route" --arg credential "$what" \
      --argjson rps "$rps" --arg p99 "$p99" --argjson connections "$WRK_CONNECTIONS" \
      --arg duration "$WRK_DURATION" \
      '{system: "pier", backend: $backend, measure: "http_auth", tool: "wrk", route: $route,
        credential: $credential, connections: $connections, duration: $duration,
        requests_per_sec: $rps, p99: $p99}'
  done
  stop_pier
  LIMITS=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s")
}

# wrk GET of `route` with the bench key on the running server: sets RPS and P99.
wrk_get() {
  local route="$1" out
  out="$(wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency \
    -H "Authorization: Bearer $KEY" "$BASE$route")"
  printf '%s\n' "$out" >&2
  grep -q 'Non-2xx' <<<"$out" && die "GET $route: wrk saw non-2xx responses"
  RPS="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  P99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
}

# The decision API against an authenticated read, alternating twice on one server.
measure_decide() {
  local backend="$1" round what rps p99 names body i
  local -A total=([read]=0 [single]=0 [batch]=0)
  start_pier "$backend"
  names=()
  for i in $(seq 0 9); do
    names+=("\"bench-$i\"")
    curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $KEY" \
      -H 'Content-Type: application/json' \
      -d '{"algorithm": "gcra", "limit": 1000000000, "period_seconds": 1}' \
      "$BASE/v1/rate-limit-policies/bench-$i"
  done
  for round in 1 2; do
    for what in read single batch; do
      log "pier on $backend: wrk decide ($what, round $round), $WRK_CONNECTIONS connections"
      case "$what" in
        read)
          wrk_get /v1/workspace
          rps="$RPS" p99="$P99"
          ;;
        single)
          wrk_post /v1/rate-limit-policies/bench-0/check '{"key":"caller-{k}"}' 200
          rps="$(jq .ok_per_sec <<<"$SUMMARY")" p99="$(jq .latency_ms.p99 <<<"$SUMMARY")ms"
          ;;
        batch)
          body="{\"policies\":[$(IFS=,; echo "${names[*]}")],\"key\":\"caller-{k}\"}"
          wrk_post /v1/rate-limit-checks "$body" 200
          rps="$(jq .ok_per_sec <<<"$SUMMARY")" p99="$(jq .latency_ms.p99 <<<"$SUMMARY")ms"
          ;;
      esac
      total[$what]="$(awk -v a="${total[$what]}" -v b="$rps" 'BEGIN {print a + b}')"
      jq -nc --arg backend "$backend" --arg subject "$what" --argjson round "$round" \
        --argjson rps "$rps" --arg p99 "$p99" --argjson connections "$WRK_CONNECTIONS" \
        --arg duration "$WRK_DURATION" \
        '{system: "pier", backend: $backend, measure: "http_decide", tool: "wrk",
          subject: $subject, round: $round, connections: $connections, duration: $duration,
          requests_per_sec: $rps, p99: $p99}'
    done
  done
  stop_pier
  jq -nc --arg backend "$backend" --argjson read "${total[read]}" \
    --argjson single "${total[single]}" --argjson batch "${total[batch]}" \
    '{system: "pier", backend: $backend, measure: "http_decide_ratio",
      single_over_read: ($single / $read * 1000 | round / 1000), single_goal: ">= 0.8",
      batch_over_read: ($batch / $read * 1000 | round / 1000), batch_goal: ">= 0.5"}'
}

# Single enqueues against publishes to no endpoint, one and ten, each on a fresh server.
measure_publish() {
  local backend="$1" what endpoints rps i
  local -A rate=()
  if [ -z "$RECEIVER_PID" ]; then
    node bench/http/receiver.js "$RECEIVER_PORT" &
    RECEIVER_PID=$!
  fi
  local publishing=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s"
    PIER_ALLOW_PRIVATE_WEBHOOK_TARGETS=true)
  for what in enqueue none one ten one-api ten-api; do
    # `…-api`: a node of role api publishes and leaves the deliveries to worker nodes (none
    # here), which shows the publish path's own cost apart from the deliveries'.
    LIMITS=("${publishing[@]}")
    [[ "$what" != *-api ]] || LIMITS+=(PIER_ROLE=api)
    start_pier "$backend"
    case "$what" in
      one*) endpoints=1 ;;
      ten*) endpoints=10 ;;
      *) endpoints=0 ;;
    esac
    for i in $(seq 1 "$endpoints"); do
      curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' \
        -d "{\"url\": \"http://127.0.0.1:$RECEIVER_PORT/hook/$i\"}" \
        "$BASE/v1/webhook-endpoints"
    done
    log "pier on $backend: wrk publish ($what), $WRK_CONNECTIONS connections, $WRK_DURATION"
    if [ "$what" = enqueue ]; then
      wrk_post /v1/jobs "" 201
    else
      wrk_post /v1/events '{"type":"order.created","payload":{"thread":{t},"n":{n}}}' 202
    fi
    stop_pier
    rps="$(jq .ok_per_sec <<<"$SUMMARY")"
    rate[$what]="$rps"
    jq -c --arg backend "$backend" --arg subject "$what" --argjson endpoints "$endpoints" \
      --argjson connections "$WRK_CONNECTIONS" --arg duration "$WRK_DURATION" \
      '{system: "pier", backend: $backend, measure: "http_publish", tool: "wrk",
        subject: $subject, enabled_endpoints: $endpoints, connections: $connections,
        duration: $duration} + .' <<<"$SUMMARY"
  done
  LIMITS=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s")
  jq -nc --arg backend "$backend" --argjson enqueue "${rate[enqueue]}" \
    --argjson none "${rate[none]}" --argjson one "${rate[one]}" --argjson ten "${rate[ten]}" \
    --argjson one_api "${rate[one-api]}" --argjson ten_api "${rate[ten-api]}" \
    '{system: "pier", backend: $backend, measure: "http_publish_ratio",
      none_over_enqueue: ($none / $enqueue * 1000 | round / 1000), none_goal: ">= 0.8",
      one_over_enqueue: ($one / $enqueue * 1000 | round / 1000), one_goal: ">= 0.5",
      ten_over_enqueue: ($ten / $enqueue * 1000 | round / 1000), ten_goal: ">= 0.25",
      one_api_over_enqueue: ($one_api / $enqueue * 1000 | round / 1000),
      ten_api_over_enqueue: ($ten_api / $enqueue * 1000 | round / 1000)}'
}

# OFREP evaluations against /healthz, alternating twice on one server holding 100 flags.
measure_flags() {
  local backend="$1" round what document rate
  local -A total=([healthz]=0 [single]=0)
  local bulk_p99=0
  LIMITS=(PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s"
    PIER_RATE_LIMITS_PER_CLIENT_IP="gcra 1000000000/1s")
  start_pier "$backend"
  document="$(jq -nc '[range(0; 100) | {key: "flag-\(.)", value: {state: "ENABLED",
      variants: {on: true, off: false}, defaultVariant: "off",
      targeting: {fractional: [["on", 10], ["off", 90]]}}}] | from_entries | {flags: .}')"
  curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' -d "$document" "$BASE/v1/flags/document"
  local context='{"context":{"targetingKey":"user-{k}"}}'
  for round in 1 2; do
    for what in healthz single bulk; do
      log "pier on $backend: wrk flags ($what, round $round), $WRK_CONNECTIONS connections"
      case "$what" in
        healthz)
          wrk_get /healthz
          SUMMARY="$(jq -nc --argjson rps "$RPS" --arg p99 "$P99" \
            '{ok_per_sec: $rps, p99: $p99}')"
          ;;
        single) wrk_post /ofrep/v1/evaluate/flags/flag-7 "$context" 200 ;;
        bulk) wrk_post /ofrep/v1/evaluate/flags "$context" 200 ;;
      esac
      rate="$(jq .ok_per_sec <<<"$SUMMARY")"
      case "$what" in
        bulk) bulk_p99="$(jq -n --argjson a "$bulk_p99" --argjson b "$(jq .latency_ms.p99 <<<"$SUMMARY")" \
          '[$a, $b] | max')" ;;
        *) total[$what]="$(jq -n "${total[$what]} + $rate")" ;;
      esac
      jq -c --arg backend "$backend" --arg subject "$what" --argjson round "$round" \
        --argjson connections "$WRK_CONNECTIONS" --arg duration "$WRK_DURATION" \
        '{system: "pier", backend: $backend, measure: "http_flags", tool: "wrk",
          subject: $subject, round: $round, connections: $connections, duration: $duration}
         + .' <<<"$SUMMARY"
    done
  done
  stop_pier
  jq -nc --arg backend "$backend" --argjson healthz "${total[healthz]}" \
    --argjson single "${total[single]}" --argjson bulk_p99 "$bulk_p99" \
    '{system: "pier", backend: $backend, measure: "http_flags_ratio",
      single_over_healthz: ($single / $healthz * 1000 | round / 1000), single_goal: ">= 0.7",
      bulk_p99_ms: $bulk_p99, bulk_goal: "p99 < 2 ms"}'
}

# pier-bench in-process, on a fresh database of `backend`.
in_process() {
  local backend="$1"
  shift
  if [ "$backend" = postgres ]; then
    fresh_postgres
    "$BENCH_BIN" --database-url "$PG_URL" "$@"
  else
    TMPDIR="$WORK_DIR" "$BENCH_BIN" "$@"
  fi
}

for backend in ${BACKENDS//,/ }; do
  if has enqueue "$PARTS"; then
    measure_enqueue "$backend"
  fi
  if [ "$backend" = postgres ] && has addjob "$PARTS"; then
    measure_addjob
  fi
  if has http-burndown "$PARTS"; then
    measure_http_burndown "$backend"
  fi
  if has burndown "$PARTS"; then
    log "pier on $backend: in-process burn-down of $BURNDOWN_JOBS jobs"
    in_process "$backend" --measure burndown --jobs "$BURNDOWN_JOBS" --pools "$POOLS" \
      --concurrency "$POOL_CONCURRENCY"
  fi
  if has noisy "$PARTS"; then
    log "pier on $backend: noisy neighbour, backlog $BACKLOG, $CLAIMS claims"
    in_process "$backend" --measure noisy-neighbour --backlog "$BACKLOG" --claims "$CLAIMS"
  fi
  if [ "$backend" = sqlite ] && has limiter "$PARTS"; then
    measure_limiter "$backend"
  fi
  if has auth "$PARTS"; then
    measure_auth "$backend"
  fi
  if has decide "$PARTS"; then
    measure_decide "$backend"
  fi
  if has publish "$PARTS"; then
    measure_publish "$backend"
  fi
  if has flags "$PARTS"; then
    measure_flags "$backend"
    if [ "$backend" = postgres ]; then
      log "pier on postgres: a flag change reaching another node, $FLAG_FLIPS changes"
      in_process "$backend" --measure flag-propagation --flips "$FLAG_FLIPS"
    fi
  fi
done
log "done; pier logged $SERVER_LOG_LINES line(s) in all (log level $PIER_LOG_LEVEL)"
