# What the benchmark scripts share; sourced by each after `cd` to the repository root, with
# BENCH_NAME set to the script's name (the prefix of its log lines).

log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# Whether the comma-separated list $2 names $1.
has() { [[ ",$2," == *",$1,"* ]]; }

# `env` arguments that clear every PIER_* variable of this shell, so a server started with
# `env "${UNSET_PIER[@]}" …` gets only the settings the script gives it.
UNSET_PIER=()
while IFS= read -r name; do
  UNSET_PIER+=(-u "$name")
done < <(compgen -e | grep '^PIER_' || true)

# Waits (30 s at most) until `url` answers, dying if process `pid` ("what") exits meanwhile.
wait_ready() {
  local url="$1" pid="$2" what="$3"
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "$url" && return 0
    kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
    sleep 0.1
  done
  die "$what was not ready within 30 s"
}
