#!/usr/bin/env bash
# Directory lookups: mailwarden with its LDAP backend against automx2 with its LDAP lookup,
# both asking the same slapd (1,000 users) in the same run.
#
#   bash bench/directory.sh
#   RUNS=1 DURATION=3s WARMUP=1s bash bench/directory.sh     # a quick look
#
# What it does, all on 127.0.0.1 with free high ports:
#   1. installs wrk and curl (packaging/debian-bench.txt), slapd (packaging/debian-test.txt),
#      automx2 + gunicorn from PyPI into their own venv (versions: bench/automx2-constraints.txt);
#   2. writes one slapd with $USERS people whose login names differ from their addresses
#      (userNNNN@example.com -> zzNNNN) and both servers' configurations
#      (bench/directory_env.py): same filter (mail=ADDRESS), base, service account;
#   3. starts slapd, then
#        ours       mailwarden serve --workers $WORKERS, LDAP directory, default cache
#        ours-cold  the same with the cache turned off: every request is an LDAP search
#        automx2    gunicorn --workers $WORKERS (sync), its per-request LDAP lookup
#      and checks each answers user0001 with login zz0001;
#   4. measures GET autoconfig rotating through all users (bench/wrk/rotate.lua),
#      wrk -t$THREADS -c$CONNECTIONS, $RUNS x $DURATION, interleaved:
#        warm  ours      vs automx2  (repeat users: our cache answers)
#        cold  ours-cold vs automx2  (every request a cache miss, one LDAP search each)
#   5. prints medians, p50/p99 and our ratios against the targets (bench/directory_summary.py)
#      and stops everything it started, by PID.
#
# Knobs (environment): WORKDIR (${TMPDIR:-/tmp}/mailwarden-bench-directory), USERS (1000),
# RUNS (3), DURATION (10s), WARMUP (3s), CONNECTIONS (64), THREADS (2), WORKERS (2),
# PYTHON (python3, for the automx2 venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
WORKDIR="${WORKDIR:-${TMPDIR:-/tmp}/mailwarden-bench-directory}"
USERS="${USERS:-1000}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WORKERS="${WORKERS:-2}"
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

install_tools() {
  bash "$ROOT/scripts/install-debian-packages.sh" "$ROOT/packaging/debian-bench.txt" \
    "$ROOT/packaging/debian-test.txt" || die "cannot install the Debian packages"
  command -v wrk >/dev/null || die "wrk is not installed"
  [ -x /usr/sbin/slapd ] || die "slapd is not installed"
  ensure_project_venv
}

start_slapd() {
  # shellcheck source=/dev/null
  . "$WORKDIR/env.sh"
  /usr/sbin/slapd -d 0 -f "$SLAPD_CONF" -h "ldap://127.0.0.1:$LDAP_PORT/" >"$LOGS/slapd.log" 2>&1 &
  PID[slapd]=$!
  local i
  for i in $(seq 1 60); do
    (exec 3<>"/dev/tcp/127.0.0.1/$LDAP_PORT") 2>/dev/null && break
    sleep 0.25
  done
  log "slapd on 127.0.0.1:$LDAP_PORT (pid ${PID[slapd]}), $USERS people"
}

url() { echo "http://127.0.0.1:${PORT[$1]}/mail/config-v1.1.xml"; }

smoke() {  # $1 = server: user0001 gets login zz0001 from the directory
  local file="$RESP/$1.xml" code
  code="$(curl -s -o "$file" -w '%{http_code}' "$(url "$1")?emailaddress=user0001%40example.com")"
  [ "$code" = 200 ] && grep -qF "<username>zz0001</username>" "$file" \
    || die "$1: HTTP $code, expected <username>zz0001</username> in: $(head -c 400 "$file")"
  log "$1: smoke check ok (user0001 -> zz0001)"
}

wrk_run() {  # $1 = server, $2 = duration, $3 = output file
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --timeout 5s --latency -s "$ROTATE" \
    "$(url "$1")" -- autoconfig "$WORKDIR/users.txt" >"$3" 2>&1 \
    || die "wrk failed against $1: $(tail -3 "$3")"
}

main() {
  mkdir -p "$WORKDIR" "$LOGS"
  rm -rf "$RAW" "$RESP" "$WORKDIR/slapd" && mkdir -p "$RAW" "$RESP"
  install_tools
  install_automx2
  "$PROJECT_PY" -m bench.directory_env "$WORKDIR" "$USERS" || die "writing the bench data failed"
  start_slapd
  start_mailwarden ours "$WORKDIR/ours/site.toml" && smoke ours
  start_mailwarden ours-cold "$WORKDIR/ours-cold/site.toml" && smoke ours-cold
  start_automx2 && smoke automx2
  log "warming up ($WARMUP each; ours also fills its cache with every user)"
  local s r
  for s in ours ours-cold automx2; do wrk_run "$s" "$WARMUP" "$WORKDIR/warmup.txt"; done
  local load_before; load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
  for r in $(seq 1 "$RUNS"); do
    for s in ours automx2 ours-cold; do
      local path=warm server=$s
      [ "$s" = ours-cold ] && path=cold server=ours
      wrk_run "$s" "$DURATION" "$RAW/${path}__${server}__run${r}.txt"
      log "run $r $path $s: $(grep -E 'Requests/sec' "$RAW/${path}__${server}__run${r}.txt" | tr -s ' ')"
    done
    # automx2 has no cache: its cold path is its warm path; measured again in the same round.
    cp "$RAW/warm__automx2__run${r}.txt" "$RAW/cold__automx2__run${r}.txt"
  done
  local load_after; load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
  cleanup
  {
    echo
    echo "== directory benchmark: median of $RUNS runs x $DURATION, wrk -t$THREADS -c$CONNECTIONS," \
      "$WORKERS server workers each, one slapd with $USERS users, all users in rotation, 127.0.0.1 =="
    echo "machine: $(nproc) CPUs, $(uname -sr), $("$PROJECT_PY" -V), $(/usr/sbin/slapd -VV 2>&1 | sed -n 's/.*\(slapd [0-9.]*\).*/\1/p' | head -1)"
    echo "automx2: automx2 $(automx2_version automx2), gunicorn $(automx2_version gunicorn), ldap3 $(automx2_version ldap3)"
    echo "load average before the runs: $load_before; after: $load_after"
    echo
    "$PROJECT_PY" -m bench.directory_summary "$RAW" "$WORKDIR/results.json"
    echo
    echo "raw wrk output: $RAW; logs: $LOGS; figures: $WORKDIR/results.json"
  } | tee "$WORKDIR/summary.txt"
}

cd "$ROOT"
main "$@"
