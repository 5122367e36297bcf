# Shared by the benchmark scripts: logging, free ports, stopping (by PID) only what the script
# started, and starting the servers both benchmarks run (ours, automx2). Source it after
# ROOT, HERE, WORKDIR, LOGS, AUTOMX2_VENV, WORKERS and PYTHON are set and
# `declare -A PID=() PORT=()` is declared.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() {  # TERM, wait up to 15 s, then KILL; only processes this script started
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local name
  for name in "${!PID[@]}"; do
    stop_pid "${PID[$name]}"
    log "$name (pid ${PID[$name]}) stopped"
  done
  PID=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {  # $1 = name, $2 = url: until it answers at all (any status), max ~30 s
  local i
  for i in $(seq 1 120); do
    kill -0 "${PID[$1]}" 2>/dev/null || return 1
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$2" || true)" != 000 ] && return 0
    sleep 0.25
  done
  return 1
}

ensure_project_venv() {
  if [ ! -x "$ROOT/.venv/bin/mailwarden" ]; then
    log "creating the project venv (make venv)"
    make -C "$ROOT" venv >"$LOGS/make-venv.log" 2>&1 || die "make venv failed, see $LOGS/make-venv.log"
  fi
}

# -- automx2 (the peer) ------------------------------------------------------------------------

automx2_version() {
  "$AUTOMX2_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}

install_automx2() {
  local want
  want="$(sed -n 's/^automx2==//p' "$HERE/automx2-constraints.txt")"
  if [ -x "$AUTOMX2_VENV/bin/gunicorn" ] && [ "$(automx2_version automx2)" = "$want" ]; then
    log "reusing $AUTOMX2_VENV (automx2 $want)"
    return
  fi
  log "installing automx2 $want + gunicorn from PyPI into $AUTOMX2_VENV"
  rm -rf "$AUTOMX2_VENV"
  "$PYTHON" -m venv "$AUTOMX2_VENV"
  "$AUTOMX2_VENV/bin/pip" install -q -c "$HERE/automx2-constraints.txt" automx2 gunicorn \
    >"$LOGS/pip-automx2.log" 2>&1 || die "pip install automx2 failed, see $LOGS/pip-automx2.log"
}

start_automx2() {  # gunicorn sync workers, SQLite seeded from $WORKDIR/automx2/seed.json
  local port dir="$WORKDIR/automx2"; port="$(free_port)"
  rm -f "$dir/automx2.sqlite"
  cat >"$dir/automx2.conf" <<CONF
[automx2]
loglevel = WARNING
db_echo = no
db_uri = sqlite:///$dir/automx2.sqlite
proxy_count = 0
CONF
  (cd "$dir" && exec env AUTOMX2_CONF="$dir/automx2.conf" "$AUTOMX2_VENV/bin/gunicorn" \
    --workers "$WORKERS" --worker-class sync --bind "127.0.0.1:$port" --log-level warning \
    automx2.server:app) >"$LOGS/automx2.log" 2>&1 &
  PID[automx2]=$!
  PORT[automx2]=$port
  wait_http automx2 "http://127.0.0.1:$port/" || { tail -20 "$LOGS/automx2.log" >&2; die "automx2 did not come up"; }
  local answer
  answer="$(curl -s -X POST -H 'Content-Type: application/json' \
    --data-binary @"$dir/seed.json" "http://127.0.0.1:$port/initdb/")"
  case "$answer" in *"Database is now prepared"*) ;; *) die "seeding automx2 failed: $answer" ;; esac
  log "automx2: gunicorn --workers $WORKERS (sync) on 127.0.0.1:$port (pid ${PID[automx2]}), seeded"
}

# -- ours --------------------------------------------------------------------------------------

start_mailwarden() {  # $1 = name, $2 = site file: mailwarden serve --workers $WORKERS
  local port; port="$(free_port)"
  "$ROOT/.venv/bin/mailwarden" serve --config "$2" \
    --listen "127.0.0.1:$port" --workers "$WORKERS" --log-level warning >"$LOGS/$1.log" 2>&1 &
  PID[$1]=$!
  PORT[$1]=$port
  wait_http "$1" "http://127.0.0.1:$port/healthz" || { tail -20 "$LOGS/$1.log" >&2; die "$1 (mailwarden) did not come up"; }
  log "$1: mailwarden serve --workers $WORKERS on 127.0.0.1:$port (pid ${PID[$1]})"
}
