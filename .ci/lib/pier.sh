# Shared by the CI checks that run a real `pier serve` (source it): a fresh database per backend,
# a server started on free ports with a known owner key, and cleanup of both on exit.
#
#   source .ci/lib/pier.sh; pier_work_dir; trap pier_cleanup EXIT
#   pier_database sqlite NAME                 # or postgres (needs PIER_TEST_DATABASE_URL); sets
#                                             # PIER_DB_URL (call it in the main shell)
#   pier_start NAME "$PIER_DB_URL" [VAR=value ...]  # sets PIER_PORT, PIER_KEY; logs to $PIER_WORK/NAME.log

pier_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pier_bin="$pier_root/target/debug/pier"
pier_databases=()

pier_work_dir() {
  [ -x "$pier_bin" ] || { echo "build the server first: cargo build --bin pier" >&2; exit 2; }
  PIER_WORK="$(mktemp -d)"
}

pier_cleanup() {
  for pidfile in "$PIER_WORK"/*.pid; do
    [ -e "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for db in "${pier_databases[@]}"; do
    psql "$PIER_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" || true
  done
  rm -rf "$PIER_WORK"
}

pier_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Sets PIER_DB_URL to a new, empty database on `backend` for the server called `name`.
pier_database() {
  local backend=$1 name=$2
  case "$backend" in
    sqlite) PIER_DB_URL="sqlite://$PIER_WORK/$name/pier.db" ;;
    postgres)
      [ -n "${PIER_TEST_DATABASE_URL:-}" ] || {
        echo "the postgres pass needs PIER_TEST_DATABASE_URL (a PostgreSQL URL)" >&2; exit 2; }
      local database="pier_ci_${name}_$$"
      pier_databases+=("$database")
      psql "$PIER_TEST_DATABASE_URL" -qc "CREATE DATABASE \"$database\""
      PIER_DB_URL="${PIER_TEST_DATABASE_URL%/*}/$database" ;;
    *) echo "unknown backend $backend (sqlite or postgres)" >&2; exit 2 ;;
  esac
}

# Starts a server called `name` on database `url` with any extra VAR=value settings, and waits
# until it is ready. Sets PIER_PORT and PIER_KEY (its owner key); stop it with pier_stop NAME.
pier_start() {
  local name=$1 url=$2; shift 2
  PIER_PORT=$(pier_free_port); PIER_KEY=$("$pier_bin" keys generate)
  local admin; admin=$(pier_free_port)
  mkdir -p "$PIER_WORK/$name"
  env PIER_DATA_DIR="$PIER_WORK/$name" PIER_DATABASE_URL="$url" \
    PIER_SECRET_KEY="$("$pier_bin" generate-secret-key)" PIER_BOOTSTRAP_API_KEY="$PIER_KEY" \
    PIER_LISTEN="127.0.0.1:$PIER_PORT" PIER_ADMIN_LISTEN="127.0.0.1:$admin" \
    PIER_LOG="${PIER_LOG:-warn}" PIER_LOG_FORMAT=json "$@" \
    "$pier_bin" serve >/dev/null 2>"$PIER_WORK/$name.log" &
  echo $! >"$PIER_WORK/$name.pid"
  for _ in $(seq 1 60); do
    curl -fs "http://127.0.0.1:$PIER_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "the $name server did not become ready; the end of its log:" >&2
  tail -n 30 "$PIER_WORK/$name.log" >&2
  return 1
}

pier_stop() {
  local pidfile="$PIER_WORK/$1.pid"
  kill "$(cat "$pidfile")" 2>/dev/null || true
  wait "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
}
