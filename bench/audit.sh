#!/usr/bin/env bash
# The audit benchmark: `mailwarden audit` against sslyze --certinfo (and testssl.sh) on a lab of
# 100 TLS endpoints, timed side by side in one run.
#
#   bash bench/audit.sh                    # or: make bench
#   bash bench/audit.sh --with-testssl     # also testssl.sh (Debian package): 42 minutes on 2 CPUs here
#   RUNS=1 bash bench/audit.sh             # a quick look
#
# What it does, all on loopback high ports (nothing on the system is changed):
#   1. installs the lab's servers (Knot DNS, nginx, Dovecot, Postfix: packaging/debian-test.txt)
#      and openssl; sslyze from PyPI into its own venv $SSLYZE_VENV (bench/sslyze-constraints.txt;
#      never a project dependency); with --with-testssl, Debian's testssl.sh;
#   2. starts the lab (bench/audit_lab.py): a PKI from tests/fixtures/ocsp_lab.py with its OCSP
#      responder and CRL, 100 endpoints ep001…ep100.bench.test, each on its own 127.0.10.N
#      address with its own certificate of a known class (good, expired, wrong name, RSA-1024,
#      revoked via OCSP only, revoked via CRL only, stapled revoked): 80 HTTPS on one nginx,
#      10 IMAP STARTTLS on one Dovecot, 10 SMTP STARTTLS on one Postfix; names in Knot;
#   3. runs, after one warm-up each, $RUNS rounds of
#        ours    mailwarden audit --config SITE --resolver KNOT --format json
#        sslyze  sslyze --certinfo --certinfo_ca_file ROOT (https, imap, smtp runs started together)
#      and checks every verdict of every run (bench/audit_verdicts.py): ours must be right on
#      100/100; sslyze's are counted by the same rule;
#   4. prints one table (medians, min–max, verdicts right, ratios against the targets: sslyze
#      ≥ 3× our time, testssl.sh ≥ 300×) and stops everything it started, by PID.
#
# Knobs (environment): RUNS (3), WARMUP (1), OUT (var/bench/audit: raw output, summary.json,
# summary.txt), SSLYZE_VENV (var/bench/sslyze-venv), OCSP (presigned | live: see
# bench/audit_lab.py), PYTHON (python3, for the sslyze venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUNS="${RUNS:-3}"
WARMUP="${WARMUP:-1}"
OUT="${OUT:-$ROOT/var/bench/audit}"
SSLYZE_VENV="${SSLYZE_VENV:-$ROOT/var/bench/sslyze-venv}"
OCSP="${OCSP:-presigned}"
PYTHON="${PYTHON:-python3}"
WITH_TESTSSL=0

for arg in "$@"; do
  case "$arg" in
    --with-testssl) WITH_TESTSSL=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

sslyze_version() {
  "$SSLYZE_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('sslyze'))" 2>/dev/null || true
}

install_tools() {
  bash "$ROOT/scripts/install-debian-packages.sh" "$ROOT/packaging/debian-test.txt" \
    "$ROOT/packaging/debian-bench.txt" \
    || die "cannot install the Debian packages in packaging/debian-test.txt and debian-bench.txt"
  if [ "$WITH_TESTSSL" = 1 ]; then
    local list; list="$(mktemp)"
    echo testssl.sh >"$list"
    bash "$ROOT/scripts/install-debian-packages.sh" "$list" || { rm -f "$list"; die "cannot install testssl.sh"; }
    rm -f "$list"
    command -v testssl >/dev/null || die "testssl.sh is installed but there is no testssl command"
  fi
  if [ ! -x "$ROOT/.venv/bin/mailwarden" ]; then
    log "creating the project venv (make venv)"
    mkdir -p "$OUT"
    make -C "$ROOT" venv >"$OUT/make-venv.log" 2>&1 || die "make venv failed, see $OUT/make-venv.log"
  fi
  local want; want="$(sed -n 's/^sslyze==//p' "$HERE/sslyze-constraints.txt")"
  if [ -x "$SSLYZE_VENV/bin/sslyze" ] && [ "$(sslyze_version)" = "$want" ]; then
    log "reusing $SSLYZE_VENV (sslyze $want)"
  else
    log "installing sslyze $want from PyPI into $SSLYZE_VENV"
    rm -rf "$SSLYZE_VENV"
    mkdir -p "$(dirname "$SSLYZE_VENV")" "$OUT"
    "$PYTHON" -m venv "$SSLYZE_VENV"
    "$SSLYZE_VENV/bin/pip" install -q -c "$HERE/sslyze-constraints.txt" sslyze \
      >"$OUT/pip-sslyze.log" 2>&1 || die "pip install sslyze failed, see $OUT/pip-sslyze.log"
  fi
}

cd "$ROOT"
install_tools
# Byte-compiled as pip compiles an installed package (and sslyze in its venv): an editable
# install under PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run.
"$ROOT/.venv/bin/python" -m compileall -q "$ROOT/src/mailwarden" >/dev/null \
  || die "cannot byte-compile src/mailwarden"
"$ROOT/.venv/bin/mailwarden" audit --help >/dev/null 2>&1 \
  || die "'mailwarden audit' is not available in this tree (src/mailwarden/cli/audit_cmd.py)"
args=(--sslyze "$SSLYZE_VENV/bin/sslyze" --runs "$RUNS" --warmup "$WARMUP" --out "$OUT" --ocsp "$OCSP")
if [ "$WITH_TESTSSL" = 1 ]; then args+=(--with-testssl --testssl "$(command -v testssl)"); fi
exec "$ROOT/.venv/bin/python" -m bench.audit_bench "${args[@]}"
