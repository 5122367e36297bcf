"""The policy server over the real wire: TCP and unix socket, SQLite state, kill -9."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.guard.detector import Action, Verdict
from mailwarden.guard.policy import ProtocolError, action_for, parse_request
from mailwarden.guard.stages import Decision
from tests.fixtures.guard_server import PolicyClient, running_guard, write_site
from tests.fixtures.guard_server import guard_cli as cli
from tests.fixtures.net import free_port

pytestmark = pytest.mark.slow  # starts the guard

GUARD = """
[guard]
store = "sqlite"
state_path = "guard.sqlite"

[guard.classes.default]
rcpts_per_minute = 1000
rcpts_per_hour = 5000
rcpts_per_day = 20000

[guard.members]
bulk = ["newsletter"]
"""


def blast(client: PolicyClient, user: str, messages: int, per_message: int = 20) -> list[str]:
    """A scripted spam run: many external domains, RCPT checks then END-OF-MESSAGE."""
    actions = []
    for m in range(messages):
        instance = f"{user}-{m}"
        for k in range(per_message):
            actions.append(client.rcpt(user, f"v{m}x{k}@d{m}-{k}.example", instance=instance))
        actions.append(client.eom(user, per_message, instance=instance, queue_id=f"Q{m}"))
    return actions


@given(st.binary(max_size=3000))
def test_parse_request_only_raises_protocol_errors(block: bytes) -> None:
    try:
        request = parse_request(block)
    except ProtocolError:
        return
    assert len(request) <= 64
    assert all("\n" not in k + v for k, v in request.items())


def test_parse_request_bounds() -> None:
    assert parse_request(b"a=b\nc==d\n\n") == {"a": "b", "c": "=d"}
    assert parse_request(b"a=b\r\n\r\n") == {"a": "b"}
    with pytest.raises(ProtocolError):
        parse_request(b"garbage\n\n")
    with pytest.raises(ProtocolError):
        parse_request(b"".join(f"a{i}=b\n".encode() for i in range(65)))
    with pytest.raises(ProtocolError):
        parse_request(b"a=" + b"x" * 9000 + b"\n\n")


def test_actions_map_to_postfix_access_verbs() -> None:
    def act(action: Action, stage: str, *reasons: str) -> str:
        return action_for(Decision(Verdict(action, 2, reasons), "K7QW2M4A"), stage)

    assert action_for(Decision(Verdict(Action.ACCEPT)), "RCPT") == "DUNNO"
    assert act(Action.THROTTLE, "RCPT", "x") == (
        "DEFER_IF_PERMIT 4.7.1 Sending from this account is paused; try again later (ref K7QW2M4A)"
    )
    assert act(Action.THROTTLE, "END-OF-MESSAGE", "x").startswith("DEFER 4.7.1 ")
    assert act(Action.HOLD, "RCPT", "x").startswith("HOLD ")
    locked = act(Action.LOCK, "RCPT", "a\r\nb")
    assert locked == "REJECT 5.7.1 This account is locked; contact the helpdesk (ref K7QW2M4A)"
    helpdesk = action_for(Decision(Verdict(Action.REJECT)), "RCPT", "the IT desk, ext. 4711")
    assert helpdesk == "REJECT 5.7.1 This account is locked; contact the IT desk, ext. 4711"


REPLY = re.compile(
    r"(DEFER_IF_PERMIT|DEFER) 4\.7\.1 Sending from this account is paused; try again later "
    r"\(ref (?P<t>[A-Z2-7]{8})\)"
    r"|REJECT 5\.7\.1 This account is locked; contact the IT desk \(room 101\) "
    r"\(ref (?P<r>[A-Z2-7]{8})\)"
)


def test_refusals_say_no_reason_and_their_reference_finds_the_reasons(tmp_path: Path) -> None:
    """A spammer reading the replies learns no reason and no threshold (before: "... try
    again later (12 messages in 1 min)", "... (72 external recipients in 1 h (usual ? 40))");
    the admin finds them with the reference the sender quotes."""
    helpdesk = '[guard]\nhelpdesk = "the IT desk (room 101)"\n'
    site = write_site(tmp_path, GUARD.replace("[guard]\n", helpdesk, 1))
    with running_guard(site) as guard:
        client = PolicyClient(("127.0.0.1", guard.policy_port))
        actions = blast(client, "mallory", 12)
        client.close()
    refused = [a for a in actions if a != "DUNNO" and not a.startswith("HOLD ")]
    assert refused, actions
    throttle_refs, lock_refs = set(), set()
    for action in refused:
        match = REPLY.fullmatch(action)
        assert match is not None, action  # a fixed text and a reference, nothing else
        if match["t"]:
            throttle_refs.add(match["t"])
        else:
            lock_refs.add(match["r"])
    assert throttle_refs
    assert len(lock_refs) == 1, lock_refs  # every refusal of the lock quotes the lock's
    for hold in (a for a in actions if a.startswith("HOLD ")):  # Postfix logs it, no one reads it
        assert "held for review, ref " in hold
    # the reference finds the decision and its reasons in the history
    (ref,) = lock_refs
    found = cli(site, "history", "mallory", "--ref", ref.lower(), "--format", "json")
    assert found.returncode == 0, found.stderr
    (entry,) = json.loads(found.stdout)
    assert (entry["action"], entry["ref"]) == ("lock", ref)
    assert "external" in entry["reason"] or "domains" in entry["reason"], entry
    some = sorted(throttle_refs)[0]
    (throttled,) = json.loads(
        cli(site, "history", "mallory", "--ref", some, "--format", "json").stdout
    )
    assert throttled["action"] == "throttle"
    assert re.search(r"\d", throttled["reason"]), throttled  # the counts are there, for admins
    table = cli(site, "history", "mallory")
    assert ref in table.stdout
    unknown = cli(site, "history", "mallory", "--ref", "AAAAAAAA")
    assert unknown.returncode == 2
    assert "no history entry with reference AAAAAAAA" in unknown.stderr


def test_policy_server_tcp_and_unix_socket_and_kill9_keeps_the_lock(tmp_path: Path) -> None:
    sock = tmp_path / "policy.sock"
    site = write_site(tmp_path, GUARD)
    with running_guard(site) as guard:
        tcp = PolicyClient(("127.0.0.1", guard.policy_port))
        # unauthenticated: not ours to judge
        assert (
            tcp.ask(request="smtpd_access_policy", protocol_state="RCPT", recipient="x@example.net")
            == "DUNNO"
        )
        # a normal message is accepted at RCPT and END-OF-MESSAGE
        assert tcp.rcpt("alice", "friend@example.org", instance="a1") == "DUNNO"
        assert tcp.eom("alice", 1, instance="a1") == "DUNNO"
        # several requests on one connection, and a spam run climbs the ladder
        actions = blast(tcp, "mallory", 12)
        assert any(a.startswith("DEFER_IF_PERMIT 4.7.1") for a in actions), actions
        assert any(a.startswith("REJECT 5.7.1") and "locked" in a for a in actions), actions
        first_refusal = next(i for i, a in enumerate(actions) if a != "DUNNO")
        assert first_refusal < 60, actions[: first_refusal + 1]
        # the END-OF-MESSAGE check is the final gate for a locked account
        assert tcp.eom("mallory", 1, instance="late").startswith("REJECT 5.7.1")
        # alice is unaffected; the bulk class is allowed a newsletter
        assert tcp.rcpt("alice", "friend2@example.org", instance="a2") == "DUNNO"
        assert set(blast(tcp, "newsletter", 5, per_message=40)) == {"DUNNO"}
        tcp.close()
        guard.kill9()
        events = [
            json.loads(line) for line in guard.log_text().splitlines() if line.startswith("{")
        ]
        assert any(e.get("action") == "lock" and e.get("user") == "mallory" for e in events)

    # after kill -9 the lock is still there: the CLI sees it, a new server enforces it
    locked = cli(site, "locked", "--format", "json")
    assert locked.returncode == 0, locked.stderr
    assert [x["user"] for x in json.loads(locked.stdout)] == ["mallory"]
    with running_guard(site, unix=sock) as guard:
        unix = PolicyClient(str(sock))
        assert unix.rcpt("mallory", "friend@example.org").startswith("REJECT 5.7.1")
        status = cli(site, "status", "--format", "json")
        assert status.returncode == 1  # monitoring: something is locked
        assert json.loads(status.stdout)["locked"] == 1
        # unlock from the CLI while the server runs: the server notices at once
        unlocked = cli(site, "unlock", "mallory")
        assert unlocked.returncode == 0, unlocked.stderr
        assert unix.rcpt("mallory", "friend@example.org", instance="n1") == "DUNNO"
        history = json.loads(cli(site, "history", "mallory", "--format", "json").stdout)
        assert [e["action"] for e in history][-1] == "unlock"
        assert "lock" in [e["action"] for e in history]
        # an admin locks by hand: enforced at once, listed as the admin's lock
        assert cli(site, "lock", "alice", "--reason", "phished, ticket 12").returncode == 0
        assert unix.rcpt("alice", "friend@example.org", instance="n2").startswith("REJECT 5.7.1")
        unix.close()
    locks = json.loads(cli(site, "locked", "--format", "json").stdout)
    assert [(x["user"], x["by"], x["reason"]) for x in locks] == [
        ("alice", "admin", "phished, ticket 12")
    ]


def test_sigterm_saves_what_was_learned(tmp_path: Path) -> None:
    site = write_site(tmp_path, GUARD)
    with running_guard(site) as guard:
        client = PolicyClient(("127.0.0.1", guard.policy_port))
        assert client.rcpt("carol", "friend@example.org") == "DUNNO"
        client.close()
        guard.proc.terminate()
        assert guard.proc.wait(timeout=20) == 0
    db = sqlite3.connect(tmp_path / "guard.sqlite")
    users = [row[0] for row in db.execute("SELECT user FROM baselines")]
    db.close()
    assert users == ["carol"]


def test_policy_server_survives_garbage(tmp_path: Path) -> None:
    site = write_site(tmp_path, GUARD.replace('"sqlite"', '"memory"', 1))
    metrics = free_port()
    with running_guard(site, extra=("--metrics", f"127.0.0.1:{metrics}")) as guard:
        with socket.create_connection(("127.0.0.1", guard.policy_port), timeout=5) as s:
            s.settimeout(5)
            try:
                s.sendall(b"x" * 200_000 + b"\n\n")
                answer = s.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # disconnected, no answer
        good = PolicyClient(("127.0.0.1", guard.policy_port))
        assert good.rcpt("alice", "a@example.org") == "DUNNO"
        good.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'mailwarden_guard_decisions_total{action="accept",front="policy"} 1.0' in text
