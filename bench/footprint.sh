#!/usr/bin/env bash
# Pier's footprint: the release binary's size and the resident memory of `pier serve` on a fresh
# SQLite data directory, idle.
#
# Builds target/release/pier, starts it BENCH_FOOTPRINT_STARTS times (each on a new data
# directory), waits until /readyz answers and then BENCH_FOOTPRINT_IDLE seconds more, reads
# VmRSS, VmHWM (the peak) and the thread count from /proc/<pid>/status, and stops it.
#
# stdout: one JSON object per start; progress to stderr.
#
# Usage: bench/footprint.sh
# Environment (defaults in brackets):
#   BENCH_FOOTPRINT_STARTS [3]  BENCH_FOOTPRINT_IDLE [5] (seconds)
#   BENCH_PORT [18080]  BENCH_ADMIN_PORT [18081]
#   BENCH_SKIP_BUILD=1 skips `cargo build`; PIER_BIN chooses another binary
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=footprint
# shellcheck source=bench/lib.sh
. bench/lib.sh

STARTS="${BENCH_FOOTPRINT_STARTS:-3}"
IDLE="${BENCH_FOOTPRINT_IDLE:-5}"
PORT="${BENCH_PORT:-18080}"
ADMIN_PORT="${BENCH_ADMIN_PORT:-18081}"

command -v curl >/dev/null || die "curl is needed and not installed"

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  log "building pier (release)"
  cargo build --release --quiet -p pier
fi
PIER_BIN="$(realpath "${PIER_BIN:-target/release/pier}")"
[ -x "$PIER_BIN" ] || die "no pier binary at $PIER_BIN"

WORK_DIR="$(mktemp -d -t pier-footprint.XXXXXX)"
PIER_PID=""
cleanup() {
  if [ -n "$PIER_PID" ]; then
    kill -TERM "$PIER_PID" 2>/dev/null || true
    wait "$PIER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT

# A field of /proc/<pid>/status, in KiB for the memory ones.
status_field() {
  awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"
}

binary_bytes="$(stat -c %s "$PIER_BIN")"
for start in $(seq 1 "$STARTS"); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" &&
    die "something already listens on port $PORT; set BENCH_PORT"
  data="$WORK_DIR/data$start"
  mkdir -p "$data"
  secret="$("$PIER_BIN" generate-secret-key)"
  env "${UNSET_PIER[@]}" PIER_LISTEN="127.0.0.1:$PORT" PIER_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" \
    PIER_DATA_DIR="$data" PIER_SECRET_KEY="$secret" PIER_LOG=warn \
    "$PIER_BIN" serve </dev/null >"$WORK_DIR/pier.log" 2>&1 &
  PIER_PID=$!
  ready=""
  for _ in $(seq 1 300); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/readyz"; then
      ready=1
      break
    fi
    kill -0 "$PIER_PID" 2>/dev/null || die "pier exited during start-up: $(cat "$WORK_DIR/pier.log")"
    sleep 0.1
  done
  [ -n "$ready" ] || die "pier was not ready within 30 s"
  sleep "$IDLE"
  rss="$(status_field "$PIER_PID" VmRSS)"
  peak="$(status_field "$PIER_PID" VmHWM)"
  threads="$(status_field "$PIER_PID" Threads)"
  log "start $start: idle RSS $rss KiB (peak $peak KiB), $threads threads; binary $binary_bytes bytes"
  printf '{"start": %d, "idle_secs": %d, "rss_kib": %d, "peak_rss_kib": %d, "threads": %d, "binary_bytes": %d}\n' \
    "$start" "$IDLE" "$rss" "$peak" "$threads" "$binary_bytes"
  kill -TERM "$PIER_PID"
  wait "$PIER_PID" 2>/dev/null || true
  PIER_PID=""
done
