"""The guard milter behind the real sendmail: INPUT_MAIL_FILTER over TCP, SMTP AUTH through
Cyrus SASL (sasldb) so that the milter sees ``{auth_authen}``, ``message_stage =
"milter-only"`` as docs/guard.md says for sendmail (no policy delegation there)."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fixtures.guard_server import (
    BURST_CLASSES,
    GuardProcess,
    running_guard,
    write_site,
)
from tests.fixtures.net import free_port, wait_for_port
from tests.fixtures.sendmail import Sendmail, running_sendmail, write_mc
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow  # starts sendmail and the guard

USERS = {f"zz000{i}": f"secret-{i}" for i in range(1, 6)}

GUARD = """
[guard]
store = "sqlite"
state_path = "{state}"
message_stage = "milter-only"
local_domains = ["example.com"]
{classes}"""


@dataclass
class World:
    guard: GuardProcess
    sendmail: Sendmail
    port: int


@dataclass
class Outcome:
    stage: str  # "accepted", or the SMTP command that was refused: mail, rcpt, data
    code: int
    text: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("guard-sendmail")
    site = write_site(tmp, GUARD.format(state=tmp / "guard.sqlite", classes=BURST_CLASSES))
    with running_guard(site, name="sendmail", milter=True) as guard:
        port = free_port()
        mc = write_mc(
            tmp / "sendmail",
            "FEATURE(`accept_unresolvable_domains')dnl\n"
            "define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl\n"
            "TRUST_AUTH_MECH(`PLAIN LOGIN')dnl\n"
            "define(`confMILTER_LOG_LEVEL', `14')dnl\n"
            f"DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MSA, M=Ea')dnl\n"
            "INPUT_MAIL_FILTER(`mailwarden', "
            f"`S=inet:{guard.milter_port}@127.0.0.1, F=T, T=S:5s;R:5s;E:10s')dnl",
        )
        with running_sendmail(mc.parent, mc, sasl_users=USERS) as daemon:
            wait_for_port(port, alive=lambda: daemon.poll() is None)
            yield World(guard, daemon, port)


def submit(world: World, user: str, rcpts: list[str], subject: str) -> Outcome:
    """One authenticated message; where sendmail refused it, if it did."""
    with smtplib.SMTP("127.0.0.1", world.port, timeout=30) as smtp:
        smtp.ehlo("client.example.com")
        smtp.login(user, USERS[user])
        code, text = smtp.mail(f"{user}@example.com")
        if code != 250:
            return Outcome("mail", code, text.decode())
        refused = None
        for rcpt in rcpts:
            code, text = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused = refused or Outcome("rcpt", code, text.decode())
        if refused is not None:
            return refused
        code, text = smtp.data(f"Subject: {subject}\r\n\r\nhello\r\n".encode())
        if code != 250:
            return Outcome("data", code, text.decode())
        return Outcome("accepted", code, text.decode())


def queue_id(outcome: Outcome) -> str:
    match = re.search(r"(\w+) Message accepted for delivery", outcome.text)
    assert match, outcome
    return match.group(1)


def milter_lines(world: World, qid: str) -> list[str]:
    return [
        line for line in world.sendmail.syslog.lines if qid in line and "milter" in line.lower()
    ]


def test_normal_message_passes_every_milter_stage(world: World) -> None:
    outcome = submit(world, "zz0001", ["friend@example.org"], "minutes of today")
    assert outcome.stage == "accepted", outcome
    qid = queue_id(outcome)
    world.sendmail.wait_log(f"{qid}: Milter accept: message")
    log = "\n".join(milter_lines(world, qid))
    # Every stage sendmail sends is answered (the body is skipped: negotiated away).
    for action in ("connect", "helo", "mail", "rcpt", "data", "header", "eoh"):
        assert f"milter=mailwarden, action={action}, continue" in log, log
    assert "milter=mailwarden, action=body" not in log, log


def test_burst_is_throttled_then_locked_at_mail_from(world: World) -> None:
    results: list[Outcome] = []
    for i in range(30):
        rcpts = [f"victim{i}-{k}@target{i}-{k}.example" for k in range(4)]
        results.append(submit(world, "zz0002", rcpts, f"Your parcel {i}"))
        if results[-1].code == 550:
            break
    accepted = [r for r in results if r.stage == "accepted"]
    assert 1 <= len(accepted) <= 6, results
    throttled = [r for r in results if r.code == 451]
    assert throttled, results
    assert all("4.7.1" in r.text and r.stage in ("rcpt", "data") for r in throttled), results
    last = results[-1]
    assert (last.code, "5.7.1" in last.text, "locked" in last.text) == (550, True, True), results
    # Once locked, the account is refused at MAIL FROM, before any recipient.
    again = submit(world, "zz0002", ["friend@example.org"], "sorry about that")
    assert (again.stage, again.code) == ("mail", 550), again
    assert "is locked" in again.text


def test_watched_user_over_the_hourly_ceiling_is_held_in_quarantine(world: World) -> None:
    rcpts = [f"member{k}@club{k}.example" for k in range(4)]
    outcome = submit(world, "zz0005", rcpts, "club newsletter draft")
    assert outcome.stage == "accepted", outcome
    qid = queue_id(outcome)
    line = world.sendmail.wait_log(f"{qid}: milter=mailwarden, quarantine=")
    assert "4 recipients in 1 h > 3" in line, line
    world.sendmail.wait_log(f"{qid}: to=<member3@club3.example>")
    stats = [x for x in world.sendmail.syslog.lines if f"{qid}: to=<" in x]
    assert len(stats) == 4, stats
    assert all("stat=quarantined" in x for x in stats), stats
    # In the queue it is a quarantined ("hf") file carrying the reason: it does not leave.
    held = world.sendmail.folder / "mqueue" / f"hf{qid}"
    wait_until(held.is_file, 10)
    reasons = [x for x in held.read_text(errors="replace").splitlines() if x.startswith("q")]
    assert reasons, held.read_text(errors="replace")
    assert "mailwarden guard" in reasons[0]


def test_sendmail_logs_no_milter_timeout_or_error(world: World) -> None:
    lines = [line for line in world.sendmail.syslog.lines if "milter" in line.lower()]
    assert lines, world.sendmail.syslog.text()
    bad = [
        line
        for line in lines
        if re.search(r"timeout|timed out|error|to error state|tempfail", line, re.IGNORECASE)
    ]
    assert bad == [], bad
