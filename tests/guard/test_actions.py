"""Lock and alert actions against real endpoints: a command hook, an HTTP webhook."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from mailwarden.guard.actions import Alerter, Locker, _dn_escape
from mailwarden.guard.config import Alerts, LockAction
from tests.fixtures.net import free_port


def test_dn_escaping() -> None:
    assert _dn_escape("a,b+c") == "a\\,b\\+c"
    assert _dn_escape("#x ") == "\\#x\\ "
    assert _dn_escape("ok.user") == "ok.user"


def test_command_hook_gets_user_reason_and_action(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    script = tmp_path / "hook.py"
    script.write_text(
        "import os, sys\n"
        f"open({str(out)!r}, 'a').write(' '.join(os.environ[k] for k in "
        "('GUARD_ACTION', 'GUARD_USER', 'GUARD_REASON')) + '\\n')\n"
    )
    locker = Locker(LockAction(method="command", command=(sys.executable, str(script))))
    result = asyncio.run(locker.set("jdoe", locked=True, reason="42 domains"))
    assert result.ok, result
    asyncio.run(locker.set("jdoe", locked=False, reason="unlocked"))
    assert out.read_text().splitlines() == ["lock jdoe 42 domains", "unlock jdoe unlocked"]
    failing = Locker(LockAction(method="command", command=(sys.executable, "-c", "exit(3)")))
    bad = asyncio.run(failing.set("jdoe", locked=True, reason="x"))
    assert not bad.ok
    assert "exited with 3" in bad.detail


def test_webhook_receives_the_decision_as_json() -> None:
    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        alerter = Alerter(Alerts(webhook_url=f"http://127.0.0.1:{port}/hook"))
        results = asyncio.run(alerter.send("locked", {"user": "jdoe", "action": "lock"}))
        assert [r.ok for r in results] == [True]
        assert received == [{"user": "jdoe", "action": "lock"}]
        # an unreachable webhook is reported, never raised
        dead = Alerter(Alerts(webhook_url=f"http://127.0.0.1:{free_port()}/hook", timeout=1))
        assert [r.ok for r in asyncio.run(dead.send("x", {}))] == [False]
    finally:
        server.shutdown()
        server.server_close()


def _receive(sock: socket.socket) -> str:
    sock.settimeout(5)
    return sock.recv(65536).decode("utf-8")


def test_syslog_alert_arrives_on_a_unix_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        alerter = Alerter(Alerts(syslog=True, syslog_target=str(path)))
        record: dict[str, object] = {"user": "jdoe", "action": "lock"}
        subject = "mailwarden guard: account jdoe\nlocked\x1b[31m"
        results = asyncio.run(alerter.send(subject, record))
        assert [r.ok for r in results] == [True]
        message = _receive(sock)
    # RFC 3164: <PRI> with facility mail (2) and severity warning (4): 2 * 8 + 4
    match = re.fullmatch(
        r"<20>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ mailwarden-guard\[\d+\]: (.*)", message
    )
    assert match, message
    text = match.group(1)
    # control characters escaped: one alert, one log line
    assert text.startswith("mailwarden guard: account jdoe\\x0alocked\\x1b[31m ")
    assert "\n" not in message
    assert "\x1b" not in message
    assert '"user":"jdoe"' in text


def test_syslog_rfc5424_over_udp_is_bounded() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        alerts = Alerts(
            syslog=True, syslog_target=f"udp://127.0.0.1:{port}", syslog_format="rfc5424"
        )
        results = asyncio.run(Alerter(alerts).send("held", {"reasons": ["ü" * 5000]}))
        assert [r.ok for r in results] == [True]
        message = _receive(sock)
    assert re.match(
        r"<20>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ mailwarden-guard \d+ - - held ", message
    )
    assert len(message.encode()) <= 2048  # bounded, and cut on a character boundary
    assert message.endswith("ü")


def test_syslog_without_a_listening_socket_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.sock"
    alerter = Alerter(Alerts(syslog=True, syslog_target=str(missing)))
    results = asyncio.run(alerter.send("locked", {"user": "jdoe"}))
    assert [r.ok for r in results] == [False]
    assert str(missing) in results[0].detail


def test_syslog_target_must_be_a_socket_path_or_udp() -> None:
    for bad in ("dev/log", "udp://host", "udp://:514", "udp://h:99999"):
        with pytest.raises(ValueError, match="expected"):
            Alerts(syslog=True, syslog_target=bad)
