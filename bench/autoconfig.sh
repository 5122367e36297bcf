#!/usr/bin/env bash
# Autoconfiguration throughput: mailwarden against automx2 (the peer) and nginx (the ceiling).
#
#   bash bench/autoconfig.sh                       # or: make bench
#   RUNS=1 DURATION=3s WARMUP=1s bash bench/autoconfig.sh   # a quick look
#
# What it does, all on 127.0.0.1 with free high ports:
#   1. installs wrk, nginx and curl (packaging/debian-bench.txt), automx2 + gunicorn from PyPI
#      into their own venv under $WORKDIR (versions: bench/automx2-constraints.txt);
#   2. writes the same site for both servers (bench/autoconfig_data.py): examples/site.toml
#      with $USERS known users in our embedded directory, and the equivalent automx2 seed
#      (same domains, hosts, ports, TLS modes, server order);
#   3. starts  ours     mailwarden serve --workers $WORKERS (uvicorn)
#              automx2  gunicorn --workers $WORKERS (sync), SQLite, seeded via POST /initdb/
#              nginx    worker_processes $WORKERS, serving our response bytes as static files
#              uvicorn-static  the same bytes from a do-nothing ASGI app (bench/static_asgi.py)
#                       under uvicorn as mailwarden runs it: what the Python server alone costs
#      and checks every endpoint once (right login names, identical bytes for nginx);
#   4. measures GET autoconfig and POST autodiscover, rotating through the known users
#      (bench/wrk/rotate.lua), wrk -t$THREADS -c$CONNECTIONS, $RUNS x $DURATION per server and
#      endpoint; the runs of the three servers are interleaved so that load from elsewhere on
#      the machine falls on all of them alike;
#   5. prints the medians, p50/p99 and our ratios (bench/summarize.py) and stops everything
#      it started, by PID.
#
# Knobs (environment): WORKDIR (${TMPDIR:-/tmp}/mailwarden-bench-autoconfig), USERS (1000),
# RUNS (3), DURATION (10s), WARMUP (3s), CONNECTIONS (64), THREADS (2), WORKERS (2),
# SERVERS ("ours automx2 nginx uvicorn-static"), ENDPOINTS ("autoconfig autodiscover"), PYTHON (python3,
# for the automx2 venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
WORKDIR="${WORKDIR:-${TMPDIR:-/tmp}/mailwarden-bench-autoconfig}"
USERS="${USERS:-1000}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WORKERS="${WORKERS:-2}"
SERVERS="${SERVERS:-ours automx2 nginx uvicorn-static}"
ENDPOINTS="${ENDPOINTS:-autoconfig autodiscover}"
PYTHON="${PYTHON:-python3}"

PROJECT_PY="$ROOT/.venv/bin/python"
AUTOMX2_VENV="$WORKDIR/automx2-venv"
RAW="$WORKDIR/raw"
RESP="$WORKDIR/responses"
LOGS="$WORKDIR/logs"
ROTATE="$HERE/wrk/rotate.lua"
declare -A PID=() PORT=()

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

# -- installation ------------------------------------------------------------------------------

install_tools() {
  bash "$ROOT/scripts/install-debian-packages.sh" "$ROOT/packaging/debian-bench.txt" \
    || die "cannot install the Debian packages in packaging/debian-bench.txt"
  command -v wrk >/dev/null || die "wrk is not installed"
  [ -x /usr/sbin/nginx ] || die "nginx is not installed"
  ensure_project_venv
}

# -- the three servers -------------------------------------------------------------------------

start_ours() {
  "$ROOT/.venv/bin/mailwarden" users --config "$WORKDIR/ours/site.toml" \
    import "$WORKDIR/ours/users.csv" --replace >"$LOGS/ours-import.log" 2>&1 \
    || die "importing the bench users failed, see $LOGS/ours-import.log"
  start_mailwarden ours "$WORKDIR/ours/site.toml"
}

start_nginx() {  # serves the bytes ours answered for the first user as static files
  local port dir="$WORKDIR/nginx"; port="$(free_port)"
  rm -rf "$dir" && mkdir -p "$dir/html/mail" "$dir/html/autodiscover" "$dir/tmp"
  cp "$RESP/ours-autoconfig.xml" "$dir/html/mail/config-v1.1.xml"
  cp "$RESP/ours-autodiscover.xml" "$dir/html/autodiscover/autodiscover.xml"
  chmod -R a+rX "$dir"
  cat >"$dir/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type "text/xml; charset=utf-8";
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        root $dir/html;
        location = /mail/config-v1.1.xml { }
        # The static module answers POST with 405; turn that into the file (as GET).
        location = /autodiscover/autodiscover.xml { error_page 405 =200 \$uri; }
    }
}
EOF
  /usr/sbin/nginx -c "$dir/nginx.conf" -g 'daemon off;' >"$LOGS/nginx.log" 2>&1 &
  PID[nginx]=$!
  PORT[nginx]=$port
  wait_http nginx "http://127.0.0.1:$port/mail/config-v1.1.xml" || { cat "$dir/error.log" "$LOGS/nginx.log" >&2; die "nginx did not come up"; }
  log "nginx: worker_processes $WORKERS on 127.0.0.1:$port (pid ${PID[nginx]})"
}

start_uvicorn_static() {  # the same bytes from an ASGI app that does nothing, under uvicorn
  local port dir="$WORKDIR/static"; port="$(free_port)"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$RESP/ours-autoconfig.xml" "$dir/autoconfig.xml"
  cp "$RESP/ours-autodiscover.xml" "$dir/autodiscover.xml"
  (cd "$ROOT" && exec env BENCH_STATIC_DIR="$dir" "$ROOT/.venv/bin/uvicorn" bench.static_asgi:app \
    --host 127.0.0.1 --port "$port" --workers "$WORKERS" --no-access-log --no-server-header \
    --log-level warning) >"$LOGS/uvicorn-static.log" 2>&1 &
  PID[uvicorn-static]=$!
  PORT[uvicorn-static]=$port
  wait_http uvicorn-static "http://127.0.0.1:$port/mail/config-v1.1.xml" \
    || { tail -20 "$LOGS/uvicorn-static.log" >&2; die "uvicorn (static app) did not come up"; }
  log "uvicorn-static: uvicorn --workers $WORKERS on 127.0.0.1:$port (pid ${PID[uvicorn-static]})"
}

# -- checks and measurement --------------------------------------------------------------------

url() {  # $1 = server, $2 = endpoint
  case "$2" in
    autoconfig) echo "http://127.0.0.1:${PORT[$1]}/mail/config-v1.1.xml" ;;
    autodiscover) echo "http://127.0.0.1:${PORT[$1]}/autodiscover/autodiscover.xml" ;;
  esac
}

pox_body() {  # $1 = address
  printf '<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>%s</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>\n' "$1"
}

fetch() {  # $1 = server, $2 = endpoint, $3 = address, $4 = output file; prints the status
  if [ "$2" = autodiscover ]; then
    pox_body "$3" | curl -s -o "$4" -w '%{http_code}' -X POST \
      -H 'Content-Type: text/xml; charset=utf-8' --data-binary @- "$(url "$1" "$2")"
  else
    curl -s -o "$4" -w '%{http_code}' "$(url "$1" "$2")?emailaddress=${3/@/%40}"
  fi
}

expect() {  # $1 = server, $2 = endpoint, $3 = address, $4 = text the answer must contain
  local file="$RESP/$1-$2-$3.xml" code
  code="$(fetch "$1" "$2" "$3" "$file")"
  [ "$code" = 200 ] && grep -qF "$4" "$file" \
    || die "$1 $2 for $3: HTTP $code, expected '$4' in: $(head -c 400 "$file")"
}

smoke() {  # $1 = server: every endpoint answers right, for the first and the last user
  local first last ep
  first="$(head -1 "$WORKDIR/users.txt")"
  last="$(tail -1 "$WORKDIR/users.txt")"
  case "$1" in
    ours)  # the login names come from the directory: b00001 … (the address is bench00001@…)
      expect ours autoconfig "$first" "<username>b00001</username>"
      expect ours autoconfig "$last" "<username>b$(printf '%05d' "$USERS")</username>"
      expect ours autodiscover "$first" "<LoginName>b00001</LoginName>"
      expect ours autodiscover "$last" "<LoginName>b$(printf '%05d' "$USERS")</LoginName>"
      cp "$RESP/ours-autoconfig-$first.xml" "$RESP/ours-autoconfig.xml"
      cp "$RESP/ours-autodiscover-$first.xml" "$RESP/ours-autodiscover.xml"
      ;;
    automx2)  # no directory: Thunderbird gets the placeholder, Outlook the address
      expect automx2 autoconfig "$first" "<hostname>imap.example.edu</hostname>"
      expect automx2 autodiscover "$first" "<LoginName>$first</LoginName>"
      ;;
    nginx|uvicorn-static)
      for ep in $ENDPOINTS; do
        expect "$1" "$ep" "$first" "<"
        cmp -s "$RESP/$1-$ep-$first.xml" "$RESP/ours-$ep.xml" \
          || die "$1 does not serve the same bytes as ours for $ep"
      done
      ;;
  esac
  log "$1: smoke check ok"
}

tree_pids() {  # $1 and all its descendants
  local child
  echo "$1"
  for child in $(pgrep -P "$1" || true); do tree_pids "$child"; done
}

cpu_ticks() {  # user + system CPU time of $1's process tree, in clock ticks
  local total=0 pid fields
  for pid in $(tree_pids "$1"); do
    fields="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || continue
    # shellcheck disable=SC2086  # split the stat fields: after "pid (comm) ", utime is #12
    set -- $fields
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

wrk_run() {  # $1 = server, $2 = endpoint, $3 = duration, $4 = output file
  # Besides wrk's figures, record the CPU time the server used: on a shared machine
  # throughput follows whatever else runs, CPU time per request much less so.
  local before after
  before="$(cpu_ticks "${PID[$1]}")"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" --timeout 5s --latency -s "$ROTATE" \
    "$(url "$1" "$2")" -- "$2" "$WORKDIR/users.txt" >"$4" 2>&1 \
    || die "wrk failed against $1 $2: $(tail -3 "$4")"
  after="$(cpu_ticks "${PID[$1]}")"
  echo "server CPU ticks: $((after - before)) at $(getconf CLK_TCK) per second" >>"$4"
}

machine() {
  echo "machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -sr)," \
    "$("$PROJECT_PY" -V), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(/usr/sbin/nginx -v 2>&1 | cut -d' ' -f3)"
  echo "ours: mailwarden $("$PROJECT_PY" -c 'import mailwarden; print(mailwarden.__version__)' 2>/dev/null || echo '?')," \
    "$("$PROJECT_PY" -c 'import uvicorn, uvloop, httptools; print(f"uvicorn {uvicorn.__version__}, uvloop {uvloop.__version__}, httptools {httptools.__version__}")')"
  echo "automx2: automx2 $(automx2_version automx2), gunicorn $(automx2_version gunicorn)," \
    "Flask $(automx2_version flask), SQLAlchemy $(automx2_version sqlalchemy)"
}

main() {
  mkdir -p "$WORKDIR" "$LOGS"
  rm -rf "$RAW" "$RESP" && mkdir -p "$RAW" "$RESP"
  install_tools
  case " $SERVERS " in *" automx2 "*) install_automx2 ;; esac
  "$PROJECT_PY" -m bench.autoconfig_data "$WORKDIR" "$USERS" \
    || die "writing the bench data failed"
  # ours first: nginx serves the bytes ours answers.
  start_ours && smoke ours
  case " $SERVERS " in *" automx2 "*) start_automx2 && smoke automx2 ;; esac
  case " $SERVERS " in *" nginx "*) start_nginx && smoke nginx ;; esac
  case " $SERVERS " in *" uvicorn-static "*) start_uvicorn_static && smoke uvicorn-static ;; esac
  local servers=() s ep r
  for s in $SERVERS; do [ -n "${PID[$s]:-}" ] && servers+=("$s"); done
  log "warming up ($WARMUP per server and endpoint)"
  for ep in $ENDPOINTS; do for s in "${servers[@]}"; do
    wrk_run "$s" "$ep" "$WARMUP" "$WORKDIR/warmup.txt"
  done; done
  local load_before; load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
  for r in $(seq 1 "$RUNS"); do
    for ep in $ENDPOINTS; do
      for s in "${servers[@]}"; do
        wrk_run "$s" "$ep" "$DURATION" "$RAW/${s}__${ep}__run${r}.txt"
        log "run $r $ep $s: $(grep -E 'Requests/sec' "$RAW/${s}__${ep}__run${r}.txt" | tr -s ' ')"
      done
    done
  done
  local load_after; load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
  cleanup
  {
    echo
    echo "== autoconfiguration benchmark: median of $RUNS runs x $DURATION," \
      "wrk -t$THREADS -c$CONNECTIONS, $WORKERS server workers each, $USERS users in rotation, 127.0.0.1 =="
    machine
    echo "load average before the runs: $load_before; after: $load_after"
    echo "response sizes (bytes, first user): $(for s in "${servers[@]}"; do for ep in $ENDPOINTS; do
      printf '%s %s %s; ' "$s" "$ep" "$(wc -c <"$RESP/$s-$ep-$(head -1 "$WORKDIR/users.txt").xml")"; done; done)"
    echo
    "$PROJECT_PY" -m bench.summarize "$RAW" "$WORKDIR/results.json" || true
    echo
    echo "raw wrk output: $RAW; responses: $RESP; logs: $LOGS; figures: $WORKDIR/results.json"
  } | tee "$WORKDIR/summary.txt"
  # The summariser flags runs that measured error answers; such figures are not valid.
  if grep -q '^non-2xx answers in' "$WORKDIR/summary.txt"; then return 1; fi
}

cd "$ROOT"
main "$@"
