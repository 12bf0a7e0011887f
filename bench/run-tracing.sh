#!/usr/bin/env bash
# Does trace export slow requests? wrk against one route at a time, on three servers in turn:
#
#   off      no OTEL_EXPORTER_OTLP_ENDPOINT: tracing is off
#   on       spans exported over OTLP/HTTP (protobuf) to a sink that answers at once
#   stalled  spans exported to a sink that never answers: the export queue fills, and spans
#            beyond it are dropped (and counted) instead of holding requests up
#   sampled  as `on`, with one trace in ten sampled (OTEL_TRACES_SAMPLER=parentbased_traceidratio,
#            OTEL_TRACES_SAMPLER_ARG=0.1), the usual production setting at high request rates
#
# Routes: GET /v1/workspace (authenticated: request and cache spans) and GET /{slug} (the
# redirect). Each server is fresh (SQLite) and warmed for 2 s before the measured run. Prints one
# JSON object per run (stdout), with req/s, p99, and the spans the server exported and dropped.
#
# Usage: bench/run-tracing.sh > results-tracing.jsonl
# Environment: BENCH_WRK_DURATION [15s]  BENCH_WRK_CONNECTIONS [32]  BENCH_ROUNDS [2]
#   BENCH_MODES [off,on,stalled,sampled]  BENCH_ROUTES [workspace,redirect]
#   BENCH_PORT [18090]  BENCH_ADMIN_PORT [18091]  BENCH_SINK_PORT [18092]
#   BENCH_SKIP_BUILD=1 skips `cargo build`; PIER_BIN [target/release/pier]
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${BENCH_WRK_DURATION:-15s}"
CONNECTIONS="${BENCH_WRK_CONNECTIONS:-32}"
ROUNDS="${BENCH_ROUNDS:-2}"
MODES="${BENCH_MODES:-off,on,stalled,sampled}"
ROUTES="${BENCH_ROUTES:-workspace,redirect}"
PORT="${BENCH_PORT:-18090}"
ADMIN_PORT="${BENCH_ADMIN_PORT:-18091}"
SINK_PORT="${BENCH_SINK_PORT:-18092}"
PIER="${PIER_BIN:-target/release/pier}"
BASE="http://127.0.0.1:$PORT"

log() { printf '[run-tracing %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v wrk >/dev/null || { log "wrk is needed (apt-get install wrk)"; exit 1; }
[[ -n "${BENCH_SKIP_BUILD:-}" ]] || cargo build --release --bin pier >&2

WORK=$(mktemp -d)
[[ -n "${BENCH_KEEP:-}" ]] && log "keeping $WORK"
SERVER=""
SINK=""
stop() {
  [[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  [[ -n "$SINK" ]] && kill "$SINK" 2>/dev/null && wait "$SINK" 2>/dev/null || true
  SERVER="" SINK=""
}
trap 'stop; [[ -n "${BENCH_KEEP:-}" ]] || rm -rf "$WORK"' EXIT

KEY=$("$PIER" keys generate)

# start MODE: a fresh server (and sink) for MODE.
start() {
  local mode=$1 data="$WORK/$1-$RANDOM"
  local -a env=(PIER_BOOTSTRAP_API_KEY="$KEY" PIER_LOG=warn PIER_SHUTDOWN_DRAIN_SECS=0
    PIER_RATE_LIMITS_PER_API_KEY="gcra 1000000000/1s" PIER_RATE_LIMITS_PER_CLIENT_IP="gcra 1000000000/1s")
  if [[ $mode != off ]]; then
    python3 bench/tracing/sink.py "$SINK_PORT" "$([[ $mode == stalled ]] && echo stall || echo ok)" &
    SINK=$!
    env+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT")
    [[ $mode == sampled ]] &&
      env+=(OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
  fi
  env "${env[@]}" "$PIER" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --data-dir "$data" >/dev/null 2>"$WORK/server.log" &
  SERVER=$!
  for _ in $(seq 1 100); do
    curl -sf "$BASE/readyz" >/dev/null && return 0
    sleep 0.1
  done
  log "the server did not start:"; cat "$WORK/server.log" >&2; exit 1
}

counter() { # the value of a metric (summed over its series) on the running server
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {print s + 0}'
}

measure() { # mode route
  local mode=$1 route=$2 path
  start "$mode"
  if [[ $route == redirect ]]; then
    path=/$(curl -s "$BASE/v1/links" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
      -d '{"url": "https://example.com/landing"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["slug"])')
  else
    path=/v1/workspace
  fi
  local -a args=(-t2 -c"$CONNECTIONS" -H "Authorization: Bearer $KEY" --latency "$BASE$path")
  wrk -d2s "${args[@]}" >/dev/null
  local out
  out=$(wrk -d"$DURATION" "${args[@]}")
  echo "$out" >&2
  sleep 2 # let the last batch go (or fail to)
  local rps p99 exported dropped
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  exported=$(counter pier_trace_spans_exported_total)
  dropped=$(counter pier_trace_spans_dropped_total)
  printf '{"bench":"tracing","binary":"%s","mode":"%s","route":"%s","connections":%s,"duration":"%s","rps":%s,"p99":"%s","spans_exported":%s,"spans_dropped":%s}\n' \
    "$PIER" "$mode" "$route" "$CONNECTIONS" "$DURATION" "$rps" "$p99" "$exported" "$dropped"
  stop
}

for round in $(seq 1 "$ROUNDS"); do
  for route in ${ROUTES//,/ }; do
    for mode in ${MODES//,/ }; do
      log "round $round: $route, tracing $mode"
      measure "$mode" "$route"
    done
  done
done
