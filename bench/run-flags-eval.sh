#!/usr/bin/env bash
# The flag evaluator alone against flagd's own, in one run: pier-flags (bench/flags-eval, release
# build) and flagd's JS evaluator @openfeature/flagd-core (bench/flags-eval/js, the version its
# package-lock.json pins) evaluate the same flagd document for the same contexts, generated
# afresh by bench/flags-eval/js/generate.mjs (deterministic: 100 flags of every kind, 1,000
# contexts). Each program times every flag for every context, BENCH_PASSES times a round, and
# reports the median of BENCH_ROUNDS rounds after a warm-up round; the two run one after the
# other, BENCH_ALTERNATIONS times, so both see the same machine.
#
# Then the agreement check: the warm-up round's (value, variant, reason) of every (context, flag)
# from both evaluators, compared by bench/flags-eval/js/compare.mjs.
#
# stdout: one JSON object per measurement ("measure": "flags_eval"), then the summary
# ("flags_eval_ratio": the medians of both and Pier's evaluations/s over flagd-core's), then
# the agreement ("flags_eval_agreement": counts, and the first disagreements with their
# contexts). Progress and npm's output go to stderr.
#
# Usage: bench/run-flags-eval.sh > results-flags-eval.jsonl
# Environment (defaults in brackets):
#   BENCH_FLAGS [100]  BENCH_CONTEXTS [1000]  BENCH_PASSES [5]  BENCH_ROUNDS [7]
#   BENCH_ALTERNATIONS [3]  BENCH_EXAMPLES [10] (disagreements shown)
#   BENCH_SKIP_BUILD=1 skips `cargo build`; PIER_BENCH_FLAGS_BIN
#     [$CARGO_TARGET_DIR/release/pier-bench-flags, CARGO_TARGET_DIR defaulting to target]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-flags-eval
# shellcheck source=bench/lib.sh
. bench/lib.sh

FLAGS="${BENCH_FLAGS:-100}"
CONTEXTS="${BENCH_CONTEXTS:-1000}"
PASSES="${BENCH_PASSES:-5}"
ROUNDS="${BENCH_ROUNDS:-7}"
ALTERNATIONS="${BENCH_ALTERNATIONS:-3}"
EXAMPLES="${BENCH_EXAMPLES:-10}"
BENCH="${PIER_BENCH_FLAGS_BIN:-${CARGO_TARGET_DIR:-target}/release/pier-bench-flags}"
JS=bench/flags-eval/js

for tool in jq node npm; do
  command -v "$tool" >/dev/null || die "$tool is needed and not installed"
done
if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  log "building pier-bench-flags (release)"
  cargo build --release --quiet -p pier-bench-flags
fi
[ -x "$BENCH" ] || die "$BENCH is missing (build it, or set PIER_BENCH_FLAGS_BIN)"
(cd "$JS" && npm ci --no-audit --no-fund --loglevel=error >&2)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
node "$JS/generate.mjs" "$WORK" "$FLAGS" "$CONTEXTS"
log "$FLAGS flags, $CONTEXTS contexts, $PASSES passes a round, median of $ROUNDS rounds"

# measure ALTERNATION EVALUATOR: one timed run, tagged; the first alternation keeps its
# resolutions in $WORK/EVALUATOR.jsonl.
measure() {
  local alternation=$1 evaluator=$2
  local -a args=(--flags "$WORK/flags.json" --contexts "$WORK/contexts.json"
    --passes "$PASSES" --rounds "$ROUNDS")
  [ "$alternation" = 1 ] && args+=(--results "$WORK/$evaluator.jsonl")
  log "alternation $alternation: $evaluator"
  case "$evaluator" in
    pier) "$BENCH" "${args[@]}" ;;
    flagd) node "$JS/bench.mjs" "${args[@]}" ;;
  esac | jq -c --argjson alternation "$alternation" \
    '{measure: "flags_eval", alternation: $alternation} + .' | tee -a "$WORK/measures.jsonl"
}

for alternation in $(seq 1 "$ALTERNATIONS"); do
  measure "$alternation" pier
  measure "$alternation" flagd
done

jq -sc '
  def median: sort | .[length / 2 | floor];
  def of($e): map(select(.evaluator == $e));
  (of("pier-flags") | map(.evaluations_per_second) | median) as $pier
  | (of("flagd-core-js") | map(.evaluations_per_second) | median) as $flagd
  | {measure: "flags_eval_ratio", alternations: (of("pier-flags") | length),
     pier_evaluations_per_second: $pier, pier_ns_per_evaluation: (1e10 / $pier | round / 10),
     flagd_core_js_evaluations_per_second: $flagd,
     flagd_core_js_ns_per_evaluation: (1e10 / $flagd | round / 10),
     flagd_core_js: (of("flagd-core-js")[0].flagd_core),
     ratio_pier_over_flagd_core_js: ($pier / $flagd * 100 | round / 100)}' "$WORK/measures.jsonl"

node "$JS/compare.mjs" "$WORK/pier.jsonl" "$WORK/flagd.jsonl" "$WORK/contexts.json" \
  --examples "$EXAMPLES" | jq -c '{measure: "flags_eval_agreement"} + .'
