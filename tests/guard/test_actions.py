"""Lock and alert actions against real endpoints: a command hook, an HTTP webhook."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

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
