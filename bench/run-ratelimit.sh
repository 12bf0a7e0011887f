#!/usr/bin/env bash
# The rate-limit benchmark (bench/ratelimit, a cargo workspace of its own), in one go:
#
#   local decisions   criterion (benches/local.rs): Pier's Limiter::check and LocalStore::decide
#                     against governor's keyed limiter, 1 key and 100,000 keys, 1 and 2 threads;
#                     then Limiter::check with a Prometheus recorder installed, as in pier serve
#   Redis baseline    redis-benchmark, 50 clients, EVALSHA of `return 1` (no pipelining, then
#                     -P 16); for context also Pier's own decision script (decide.lua) the same
#                     two ways, on 50 keys
#   Redis decisions   redis-bench (src/bin/redis.rs): 50 tokio tasks deciding on Redis, each on
#                     its own connection, then all on one shared connection; on one runtime
#                     worker (as redis-benchmark is one thread), then for context on two
#
# stdout: one JSON object per figure, then the ratios; criterion's and redis-benchmark's own
# reports and progress go to stderr. Other work on this 2-core machine moves every figure here,
# so before each measurement the script waits (up to BENCH_IDLE_WAIT seconds) for the machine to
# be at least 85% idle over 3 s, and each record carries `idle_before` (the idle share it saw)
# and `others_cpu`: the share of both cores that other processes (not the measured command, not
# redis-server) used while it ran. Trust a run whose `others_cpu` is near 0.
#
# Usage: bench/run-ratelimit.sh > results-ratelimit.jsonl
#
# Environment (defaults in brackets):
#   REDIS_HOST [127.0.0.1]  REDIS_PORT [6379]
#   BENCH_REDIS_CLIENTS [50]  BENCH_REDIS_REQUESTS [1000000] (per redis-benchmark run)
#   BENCH_REDIS_SECONDS [10]  BENCH_REDIS_WARMUP [2]  (per redis-bench mode)
#   BENCH_PARTS [local,redis]  BENCH_IDLE_WAIT [300]  BENCH_SKIP_BUILD=1 skips `cargo build`
set -euo pipefail
cd "$(dirname "$0")/ratelimit"

REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
CLIENTS="${BENCH_REDIS_CLIENTS:-50}"
REQUESTS="${BENCH_REDIS_REQUESTS:-1000000}"
SECONDS_PER_MODE="${BENCH_REDIS_SECONDS:-10}"
WARMUP="${BENCH_REDIS_WARMUP:-2}"
PARTS="${BENCH_PARTS:-local,redis}"
IDLE_WAIT="${BENCH_IDLE_WAIT:-300}"
TARGET="${CARGO_TARGET_DIR:-target}"
TIMES=$(mktemp)
OUT=$(mktemp)
trap 'rm -f "$TIMES" "$OUT"' EXIT

log() { echo "[run-ratelimit] $*" >&2; }
has_part() { [[ ",$PARTS," == *",$1,"* ]]; }

# The share of CPU time the machine spent idle over the next 3 seconds (0..1).
idle_share() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
  sleep 3
  b=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "%.2f", (y[2] - x[2]) / ((y[1] - x[1]) > 0 ? (y[1] - x[1]) : 1) }'
}

# Waits until the machine is mostly idle (or IDLE_WAIT seconds have passed); sets IDLE.
wait_idle() {
  local waited=0
  IDLE=$(idle_share)
  while awk -v i="$IDLE" 'BEGIN { exit !(i < 0.85) }' && ((waited < IDLE_WAIT)); do
    log "machine only ${IDLE} idle; waiting (${waited}s of ${IDLE_WAIT}s)"
    sleep 7
    waited=$((waited + 10))
    IDLE=$(idle_share)
  done
  log "idle share before this part: ${IDLE}"
}

# Busy CPU time of the whole machine and of redis-server so far, in clock ticks.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
redis_ticks() {
  local pid
  pid=$(pgrep -x redis-server | head -1 || true)
  if [[ -n "$pid" ]]; then awk '{print $14+$15}' "/proc/$pid/stat"; else echo 0; fi
}

# Runs a command, measuring how much CPU everything else on the machine used meanwhile (all busy
# time less the command's own and redis-server's), as a share of both cores: sets OTHERS.
# The command's stdout goes to stdout.
with_others() {
  local b0 r0 b1 r1 t0 t1 own tick ncpu
  tick=$(getconf CLK_TCK)
  ncpu=$(nproc)
  b0=$(busy_ticks)
  r0=$(redis_ticks)
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$TIMES" "$@"
  t1=$(date +%s.%N)
  b1=$(busy_ticks)
  r1=$(redis_ticks)
  own=$(awk '{print $1 + $2}' "$TIMES")
  OTHERS=$(awk -v b="$((b1 - b0))" -v r="$((r1 - r0))" -v own="$own" -v tick="$tick" \
    -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" -v n="$ncpu" \
    'BEGIN { o = ((b - r) / tick - own) / (wall * n); if (o < 0) o = 0; printf "%.3f", o }')
  log "CPU used by other processes meanwhile: ${OTHERS} of the machine"
}

if [[ "${BENCH_SKIP_BUILD:-}" != 1 ]]; then
  log "building (release: thin LTO, 4 codegen units)"
  cargo build --release --benches --bins --quiet >&2
fi

# --- local decisions -----------------------------------------------------------------------------
if has_part local; then
  rm -rf "$TARGET/criterion"
  wait_idle
  log "criterion: benches/local.rs"
  with_others cargo bench --quiet --bench local >&2
  LOCAL_OTHERS=$OTHERS
  for case in 1key_1thread 1key_2threads 100k_keys_1thread 100k_keys_2threads; do
    for subject in pier_check pier_decide governor; do
      jq -c --arg case "$case" --arg subject "$subject" --argjson idle "$IDLE" \
        --argjson others "$LOCAL_OTHERS" '{
          measure: "local_decision", case: $case, subject: $subject,
          ns_per_decision: (.mean.point_estimate * 1000 | round / 1000),
          ci95: [.mean.confidence_interval.lower_bound, .mean.confidence_interval.upper_bound]
                | map(. * 1000 | round / 1000),
          median_ns: (.median.point_estimate * 1000 | round / 1000),
          idle_before: $idle, others_cpu: $others }' \
        "$TARGET/criterion/$case/$subject/new/estimates.json"
    done
    jq -n -c --arg case "$case" \
      --slurpfile check "$TARGET/criterion/$case/pier_check/new/estimates.json" \
      --slurpfile decide "$TARGET/criterion/$case/pier_decide/new/estimates.json" \
      --slurpfile gov "$TARGET/criterion/$case/governor/new/estimates.json" '{
        measure: "local_ratio", case: $case,
        pier_check_over_governor: ($check[0].mean.point_estimate / $gov[0].mean.point_estimate
                                   * 1000 | round / 1000),
        pier_decide_over_governor: ($decide[0].mean.point_estimate / $gov[0].mean.point_estimate
                                    * 1000 | round / 1000),
        goal: "<= 1 (time per decision; lower is faster)" }'
  done
  # Limiter::check with pier serve's Prometheus recorder installed, against governor's figure
  # for the same keys (measured above, without a recorder: governor has no metrics).
  for pair in "pier_check_1key 1key_1thread" "pier_check_100k_keys 100k_keys_1thread"; do
    read -r subject case <<<"$pair"
    jq -c --arg subject "$subject" --argjson idle "$IDLE" --argjson others "$LOCAL_OTHERS" \
      --slurpfile gov "$TARGET/criterion/$case/governor/new/estimates.json" '{
        measure: "local_decision", case: "prometheus_recorder", subject: $subject,
        ns_per_decision: (.mean.point_estimate * 1000 | round / 1000),
        ci95: [.mean.confidence_interval.lower_bound, .mean.confidence_interval.upper_bound]
              | map(. * 1000 | round / 1000),
        median_ns: (.median.point_estimate * 1000 | round / 1000),
        over_governor: (.mean.point_estimate / $gov[0].mean.point_estimate * 1000 | round / 1000),
        idle_before: $idle, others_cpu: $others }' \
      "$TARGET/criterion/prometheus_recorder/$subject/new/estimates.json"
  done
fi

# --- Redis ---------------------------------------------------------------------------------------
# Loads a script and prints its SHA1 (just before use: other work on this Redis may flush scripts).
load() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" SCRIPT LOAD "$1"; }

# `redis-benchmark -q` with the given arguments: sets RPS (requests per second; its progress
# lines end in \r, not \n) and OTHERS.
rb() {
  local out
  with_others redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" -c "$CLIENTS" -n "$REQUESTS" -q \
    "$@" >"$OUT"
  out=$(tr '\r' '\n' <"$OUT" | grep 'requests per second' | tail -1 || true)
  if [[ -z "$out" ]] || grep -q 'Error' "$OUT"; then
    log "redis-benchmark failed: $(tr '\r' '\n' <"$OUT" | grep -v '^ *$' | tail -3)"
    return 1
  fi
  log "$out"
  RPS=$(echo "$out" | sed -E 's/.*: ([0-9.]+) requests per second.*/\1/')
}

# One redis-benchmark record: a name, the pipeline depth, the script's source, then
# redis-benchmark's arguments with @SHA@ for the script's SHA1. The script is loaded right before
# use, and a run is tried up to 3 times, since other work on this Redis may flush its scripts.
rb_record() {
  local script=$1 pipeline=$2 source=$3 sha attempt args=() a
  shift 3
  for attempt in 1 2 3; do
    wait_idle
    sha=$(load "$source")
    args=()
    for a in "$@"; do args+=("${a//@SHA@/$sha}"); done
    if ((pipeline > 1)); then args=(-P "$pipeline" "${args[@]}"); fi
    if rb "${args[@]}"; then break; fi
    ((attempt < 3)) || return 1
  done
  jq -n -c --arg script "$script" --argjson pipeline "$pipeline" --argjson rps "$RPS" \
    --argjson clients "$CLIENTS" --argjson requests "$REQUESTS" --argjson idle "$IDLE" \
    --argjson others "$OTHERS" \
    '{measure: "redis_benchmark_evalsha", script: $script, clients: $clients,
      pipeline: $pipeline, requests: $requests, requests_per_sec: $rps, idle_before: $idle,
      others_cpu: $others}'
}

# One mode of redis-bench on N runtime workers: prints its record, sets PIER (decisions per
# second).
pier_record() {
  wait_idle
  with_others "$TARGET/release/redis-bench" --url "redis://$REDIS_HOST:$REDIS_PORT" \
    --tasks "$CLIENTS" --seconds "$SECONDS_PER_MODE" --warmup "$WARMUP" --mode "$1" \
    --workers "$2" >"$OUT"
  jq -c --argjson idle "$IDLE" --argjson others "$OTHERS" \
    '. + {idle_before: $idle, others_cpu: $others}' "$OUT"
  PIER=$(jq '.decisions_per_sec' "$OUT")
}

if has_part redis; then
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping >/dev/null
  decide_lua=$(cat ../../crates/pier-ratelimit/src/decide.lua)
  # decide.lua's arguments for one decision on one GCRA policy of 10^9/s, as RedisStore sends a
  # call of one: now ("" = Redis's clock), the number of policies, the policy's algorithm, limit,
  # period (ms) and capacity, then one run: 1 decision, 1 policy, cost 1, consume, policy 1.
  decide_args=(1 "pier:rl:{bench:__rand_int__}:bench:g1000" "" 1 g 1000000000 1000 1000000000
    1 1 1 1 1)

  log "redis-benchmark: EVALSHA of 'return 1', $CLIENTS clients, $REQUESTS requests"
  rb_record return_1 1 'return 1' EVALSHA @SHA@ 0
  plain=$RPS
  rb_record return_1 16 'return 1' EVALSHA @SHA@ 0
  piped=$RPS
  log "redis-benchmark: EVALSHA of decide.lua on 50 keys (context: Pier's script, server side)"
  rb_record decide_lua 1 "$decide_lua" -r 50 EVALSHA @SHA@ "${decide_args[@]}"
  rb_record decide_lua 16 "$decide_lua" -r 50 EVALSHA @SHA@ "${decide_args[@]}"

  log "redis-bench: $CLIENTS tasks, ${WARMUP}s warm-up + ${SECONDS_PER_MODE}s per mode"
  pier_record own 1
  own=$PIER
  pier_record shared 1
  shared=$PIER
  pier_record own 2
  pier_record shared 2

  jq -n -c --argjson own "$own" --argjson shared "$shared" --argjson plain "$plain" \
    --argjson piped "$piped" '{
      measure: "redis_ratio", workers: 1,
      own_over_evalsha: ($own / $plain * 1000 | round / 1000),
      own_goal: ">= 0.8",
      shared_over_evalsha: ($shared / $plain * 1000 | round / 1000),
      shared_goal: ">= 2",
      shared_over_evalsha_pipelined: ($shared / $piped * 1000 | round / 1000) }'
fi
log "done"
