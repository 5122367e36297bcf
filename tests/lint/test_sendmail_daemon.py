"""The lint's sendmail predictions against the real sendmail daemon.

Every case is a .mc with DAEMON_OPTIONS/CLIENT_OPTIONS on loopback; the real m4 + sendmail-cf
make the .cf and the real sendmail 8.17 (``sendmail -bD``) runs it in a network namespace of
its own with the case's ``net.ipv6.bindv6only`` and ``/etc/hosts``. All cases run at once
(sendmail needs ~50 s to give up on a socket it cannot listen on); then what the lint predicts
for each daemon and for the MTA is compared with what the daemon did: the sockets in LISTEN,
its syslog lines, its exit status and when it exited.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.net import free_port
from tests.fixtures.sendmail import Sendmail, start_sendmail, write_mc
from tests.lint.tools import lint

pytestmark = pytest.mark.slow  # starts sendmail daemons

DUAL = "dual.sendmail-test.example"  # A and AAAA
V4ONLY = "v4only.sendmail-test.example"  # A only
MAPPED = "mapped.sendmail-test.example"  # a resolver that answers AAAA with ::ffff:a.b.c.d
HOSTS = f"127.0.0.1 {DUAL} {V4ONLY} {MAPPED}\n::1 {DUAL}\n::ffff:127.0.0.1 {MAPPED}\n"
# sendmail retries a socket it cannot listen on 10 times, 5 s apart, then exits: wait past that.
WINDOW = 62.0


@dataclass(frozen=True)
class Case:
    body: str  # DAEMON_OPTIONS/CLIENT_OPTIONS; {p} and {q} are free ports
    bindv6only: int


CASES = {
    "inet-and-inet6-wildcard-v6only-0": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Name=MTA-v6, Family=inet6')dnl",
        0,
    ),
    "inet-and-inet6-wildcard-v6only-1": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Name=MTA-v6, Family=inet6')dnl",
        1,
    ),
    "inet6-wildcard-first": Case(
        "DAEMON_OPTIONS(`Port={p}, Name=MTA-v6, Family=inet6')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA')dnl",
        0,
    ),
    "optional-inet6-wildcard": Case(
        "DAEMON_OPTIONS(`Port={p}, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Name=MTA-v6, Family=inet6, M=O')dnl",
        0,
    ),
    "name-with-a-and-aaaa": Case(
        f"DAEMON_OPTIONS(`Port={{p}}, Name=MTA-v4, Family=inet, A={DUAL}, M=fh')dnl\n"
        f"DAEMON_OPTIONS(`Port={{p}}, Name=MTA-v6, Family=inet6, A={DUAL}, M=fh')dnl\n"
        f"CLIENT_OPTIONS(`Name=MSA-v6, Family=inet6, A={DUAL}')dnl",
        0,
    ),
    "name-with-a-only-for-inet6": Case(
        f"DAEMON_OPTIONS(`Port={{p}}, Name=MTA-v4, Family=inet, A={V4ONLY}, M=fh')dnl\n"
        f"DAEMON_OPTIONS(`Port={{p}}, Name=MTA-v6, Family=inet6, A={V4ONLY}, M=fh')dnl",
        0,
    ),
    "name-with-a-mapped-aaaa": Case(
        f"DAEMON_OPTIONS(`Port={{p}}, Name=MTA-v4, Family=inet, A={MAPPED}, M=fh')dnl\n"
        f"DAEMON_OPTIONS(`Port={{p}}, Name=MTA-v6, Family=inet6, A={MAPPED}, M=fh')dnl",
        0,
    ),
    # A listen conflict (S6) first, a bind error (mapped, bindv6only=1) later in the file.
    "listen-conflict-before-bind-error": Case(
        "DAEMON_OPTIONS(`Port={p}, Name=MTA')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA-local')dnl\n"
        "DAEMON_OPTIONS(`Port={q}, Addr=IPv6:::ffff:127.0.0.1, Name=MTA-v6, Family=inet6')dnl",
        1,
    ),
    "client-name-with-a-only-for-inet6": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA')dnl\n"
        f"CLIENT_OPTIONS(`Name=MSA-v6, Family=inet6, A={V4ONLY}')dnl",
        0,
    ),
    "inet-wildcard-and-address": Case(
        "DAEMON_OPTIONS(`Port={p}, Name=MTA')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA-local')dnl",
        1,
    ),
    "mapped-literal-v6only-0": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Addr=IPv6:::ffff:127.0.0.1, Name=MTA-v6, Family=inet6')dnl",
        0,
    ),
    "mapped-literal-v6only-1": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Addr=IPv6:::ffff:127.0.0.1, Name=MTA-v6, Family=inet6')dnl",
        1,
    ),
    "lone-inet6-wildcard-v6only-1": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=::, Name=MTA-v6, Family=inet6')dnl", 1
    ),
    "lone-inet6-wildcard-v6only-0": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=::, Name=MTA-v6, Family=inet6')dnl", 0
    ),
    # sendmail calls a daemon without Name= "Daemon<n>" (its place among all daemons).
    "unnamed-wildcard-and-address": Case(
        "DAEMON_OPTIONS(`Port={p}')dnl\nDAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1')dnl", 0
    ),
    # One Name= for two daemons: both are set up, the later one fails on the shared port.
    "one-name-for-two-daemons": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA')dnl\n"
        "DAEMON_OPTIONS(`Port={q}, Addr=127.0.0.1, Name=MTA')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Addr=IPv6:::1, Name=MTA, Family=inet6')dnl\n"
        "DAEMON_OPTIONS(`Port={q}, Name=MTA, Family=inet6')dnl",
        0,
    ),
    "specific-addresses-both-families": Case(
        "DAEMON_OPTIONS(`Port={p}, Addr=127.0.0.1, Name=MTA-v4, Family=inet')dnl\n"
        "DAEMON_OPTIONS(`Port={p}, Addr=IPv6:::1, Name=MTA-v6, Family=inet6')dnl\n"
        "DAEMON_OPTIONS(`Port={q}, Addr=127.0.0.1, Name=MSA, M=E')dnl",
        0,
    ),
}


@dataclass
class Run:
    case: Case
    mc: Path
    daemon: Sendmail
    listening: set[str]
    ipv4_connects: bool | None = None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    started: dict[str, Run] = {}
    try:
        for name, case in CASES.items():
            folder = tmp_path_factory.mktemp(f"sm-{name}")
            body = case.body.replace("{p}", str(free_port())).replace("{q}", str(free_port()))
            mc = write_mc(folder, body)
            daemon = start_sendmail(folder, mc, hosts=HOSTS, bindv6only=case.bindv6only)
            started[name] = Run(case, mc, daemon, set())
        # A daemon sets up its sockets right after it logs "started as": look at them a moment
        # later (polling meanwhile notes when a daemon exits).
        settle = time.monotonic() + 30
        while time.monotonic() < settle:
            if all(
                run.daemon.poll() is not None or "started as:" in run.daemon.syslog.text()
                for run in started.values()
            ):
                break
            time.sleep(0.1)
        for _ in range(20):
            for run in started.values():
                run.daemon.poll()
            time.sleep(0.1)
        for run in started.values():
            if run.daemon.poll() is None:
                run.listening = run.daemon.listening()
                port = int(re.findall(r"Port=(\d+)", run.mc.read_text())[0])
                run.ipv4_connects = run.daemon.connects("127.0.0.1", port)
        deadline = time.monotonic() + WINDOW
        while time.monotonic() < deadline:
            if all(run.daemon.poll() is not None for run in started.values()):
                break
            time.sleep(0.5)
        yield started
    finally:
        for run in started.values():
            run.daemon.stop()


def predicted(run: Run, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    hosts = str(run.daemon.folder / "hosts")
    _, report = lint(
        "sendmail", str(run.mc), "--hosts", hosts, "--bindv6only", str(run.case.bindv6only),
        capsys=capsys,
    )  # fmt: skip
    return report


def failures(run: Run) -> dict[str, str]:
    """Daemon name → the first error sendmail logged for its socket."""
    found: dict[str, str] = {}
    for line in run.daemon.syslog.lines:
        match = re.search(r"opendaemonsocket: daemon (\S+): (cannot \w+: .*)$", line)
        if match and match.group(1) not in found:
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_lint_prediction_matches_the_real_sendmail(
    runs: dict[str, Run], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = runs[name]
    report = predicted(run, capsys)
    log = run.daemon.syslog.text()
    context = f"\n--- prediction: {report['predictions']}\n--- sendmail log:\n{log}"
    context += f"\n--- sendmail output:\n{run.daemon.output}"
    mta = next(p for p in report["predictions"] if p["kind"] == "mta")
    code = run.daemon.poll()
    lifetime = (run.daemon.ended or time.monotonic()) - run.daemon.started

    # The MTA as a whole.
    if mta["outcome"] == "fatal at start-up":
        assert (code, lifetime < 10) == (70, True), (code, lifetime, context)
        # The names sendmail could not resolve are the ones of the lint's fatal findings.
        unknown = set(re.findall(r'host "([^"]+)" unknown', run.daemon.output))
        fatal = {
            name
            for f in report["findings"]
            if f["severity"] == "fatal"
            for name in re.findall(r'host "([^"]+)" unknown', f["message"])
        }
        assert unknown, context
        assert unknown == fatal, (unknown, fatal, context)
        return
    if mta["outcome"] in ("MTA exits after ~50 s", "MTA exits at once"):
        assert code == 71, (code, context)
        at_once = mta["outcome"] == "MTA exits at once"
        assert (lifetime < 10) if at_once else (40 < lifetime < WINDOW + 10), (lifetime, context)
        assert "server SMTP socket wedged: exiting" in log, context
    else:
        assert mta["outcome"] == "starts", context
        assert code is None, (code, lifetime, context)

    # Each daemon: the ones predicted to fail are the ones sendmail logged, with that error.
    failed = failures(run)
    expected_failed = {
        p["subject"]: p["detail"]
        for p in report["predictions"]
        if p["kind"] == "daemon"
        and p["outcome"] in ("MTA exits after ~50 s", "MTA exits at once", "silently disabled")
    }
    assert set(failed) == set(expected_failed), (failed, context)
    for daemon, cause in expected_failed.items():
        errno = "Invalid argument" if "Invalid argument" in cause else "Address already in use"
        assert failed[daemon].endswith(errno), (failed, cause, context)

    # The sockets in LISTEN are the ones the lint says the daemons listen on.
    listens = {
        match.group(1)
        for p in report["predictions"]
        if p["outcome"] in ("binds", "IPv4 refused")
        and (match := re.search(r"listens on (\S+?),?(?: |$)", p["detail"]))
    }
    assert run.listening == listens, (run.listening, context)

    # An inet6 wildcard on its own: IPv4 clients get through only with bindv6only=0.
    refused = [p for p in report["predictions"] if p["outcome"] == "IPv4 refused"]
    if refused or name.startswith("lone-inet6-wildcard"):
        assert run.ipv4_connects is (not refused), (run.ipv4_connects, context)
