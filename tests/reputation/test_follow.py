"""``--follow`` end to end: a real growing, rotated log, alerts through the guard's real
channels (a webhook served by this test, syslog to a UDP socket it opens); and the window."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from mailwarden.reputation.follow import TailFile
from mailwarden.reputation.logline import Attempt, format_classic
from mailwarden.reputation.signatures import load_signatures
from mailwarden.reputation.watch import Watch
from tests.fixtures.paths import ROOT, example_site_text

GMAIL_RATE = (
    "postfix/smtp[2114]: 4TwQ2V1cJqz9rx1: to=<max@gmail.com>, relay=gmail-smtp-in.l.google.com"
    "[142.250.102.27]:25, delay=0.91, delays=0.02/0/0.41/0.48, dsn=4.7.28, status=deferred (host "
    "gmail-smtp-in.l.google.com[142.250.102.27] said: 421-4.7.28 [192.0.2.10      15] Our system "
    "has detected an unusual rate of 421-4.7.28 unsolicited mail originating from your IP "
    "address. 421-4.7.28  https://support.google.com/mail/?p=UnsolicitedRateLimitError to 421 "
    "4.7.28 review our Bulk Email Senders Guidelines. a1si1.413 - gsmtp (in reply to end of DATA "
    "command))"
)
GMAIL_AUTH = (
    "postfix/smtp[2120]: 4TwQ6b2xYvz9rxC: to=<jens@gmail.com>, relay=gmail-smtp-in.l.google.com"
    "[142.250.27.26]:25, delay=0.77, delays=0.01/0/0.35/0.41, dsn=5.7.26, status=bounced (host "
    "gmail-smtp-in.l.google.com[142.250.27.26] said: 550-5.7.26 This mail has been blocked "
    "because the sender is unauthenticated. 550 5.7.26 https://support.google.com/mail/answer/"
    "81126#authentication a1-2.113 - gsmtp (in reply to end of DATA command))"
)
MS_BLOCK = (
    "postfix/smtp[2131]: 4TwQF24rKqz9rxM: to=<kim@hotmail.com>, relay=hotmail-com.olc.protection."
    "outlook.com[52.101.42.8]:25, delay=1.2, delays=0.01/0/0.7/0.49, dsn=5.7.1, status=bounced "
    "(host hotmail-com.olc.protection.outlook.com[52.101.42.8] said: 550 5.7.1 Unfortunately, "
    "messages from [192.0.2.10] weren't sent. Please contact your Internet service provider "
    "since part of their network is on our block list (S3150). (in reply to MAIL FROM command))"
)
SENT = (
    "postfix/smtp[2110]: 4TwQ1k0Zz8z9rwZ: to=<jane@gmail.com>, relay=gmail-smtp-in.l.google.com"
    "[142.250.102.27]:25, delay=1.2, delays=0.06/0.01/0.45/0.68, dsn=2.0.0, status=sent (250 "
    "2.0.0 OK  1710406682 a640c23a62f3a - gsmtp)"
)


def _now_iso(offset: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset, UTC).isoformat()


def _line(message: str, offset: float = 0.0, classic: bool = False) -> str:
    stamp = format_classic(time.time() + offset, UTC) if classic else _now_iso(offset)
    return f"{stamp} mx-out1 {message}\n"


class _Hook(BaseHTTPRequestHandler):
    received: queue.Queue[dict[str, Any]] = queue.Queue()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    _Hook.received = queue.Queue()
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def _next(q: queue.Queue[dict[str, Any]], timeout: float = 15.0) -> dict[str, Any]:
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        pytest.fail("no alert arrived through the webhook", pytrace=False)


def test_follow_alerts_through_the_guard_channels(
    tmp_path: Path, webhook: tuple[str, queue.Queue[dict[str, Any]]]
) -> None:
    url, received = webhook
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(15)
    site = tmp_path / "site.toml"
    site.write_text(
        example_site_text(guard=False)
        + f'\n[guard]\nstore = "memory"\n[guard.alerts]\nwebhook_url = "{url}"\nsyslog = true\n'
        f'syslog_target = "udp://127.0.0.1:{syslog.getsockname()[1]}"\ntimeout = 5\n',
        encoding="utf-8",
    )
    log = tmp_path / "mail.log"
    # already in the log when the watch starts: an old throttle (outside the window) and mail
    log.write_text(_line(GMAIL_RATE, -7200) + _line(SENT, -60, classic=True), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailwarden",
            "reputation",
            "scan",
            str(log),
            "--follow",
            "--since",
            "1h",
            "--poll",
            "0.1",
            "--cooldown",
            "1h",
            "--tz",
            "UTC",
            "--config",
            str(site),
            "--format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "following"
        assert "site.toml" in ready["alerts"]
        assert received.empty()  # the old throttle is outside the window: no alert

        _append(log, _line(GMAIL_RATE))
        alert = _next(received)
        assert (alert["provider"], alert["state"], alert["previous_state"]) == (
            "google",
            "throttle",
            "ok",
        )
        assert alert["outbound"] == "mx-out1 postfix/smtp"
        assert alert["signatures"] == {"google-unsolicited-rate": 1}
        assert "UnsolicitedRateLimitError" in alert["sample"]
        assert alert["advice"][0]["link"].startswith("https://")
        datagram = syslog.recv(65536).decode()
        assert "mailwarden reputation: Google (Gmail, Workspace) throttling mail" in datagram

        # logrotate (create mode): the old file gets one more line after the rename, then a
        # new file appears; nothing may be lost
        rotated = tmp_path / "mail.log.1"
        log.rename(rotated)
        _append(rotated, _line(GMAIL_RATE))  # same state, no alert
        time.sleep(0.3)
        log.write_text(_line(MS_BLOCK, classic=True), encoding="utf-8")
        alert = _next(received)
        assert (alert["provider"], alert["state"]) == ("microsoft", "block")
        assert alert["signatures"] == {"microsoft-s3150": 1}

        # more of the same: no alert per line; a worse answer escalates at once
        _append(log, _line(GMAIL_RATE) + _line(GMAIL_RATE))
        time.sleep(0.5)
        assert received.empty()
        _append(log, _line(GMAIL_AUTH))
        alert = _next(received)
        assert (alert["provider"], alert["state"], alert["previous_state"]) == (
            "google",
            "block",
            "throttle",
        )
        assert alert["counts"]["throttle"] == 4
        assert alert["counts"]["block"] == 1

        # copytruncate: the file shrinks, the follower starts again from its top
        log.write_text("", encoding="utf-8")
        time.sleep(0.3)
        _append(log, _line(SENT))
        time.sleep(0.5)
        assert received.empty()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        syslog.close()
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    states = [(e["provider"], e["state"]) for e in events if e.get("event") == "reputation"]
    assert states == [("google", "throttle"), ("microsoft", "block"), ("google", "block")]
    assert "Traceback" not in err


def test_follow_without_channels_alerts_on_stderr(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("", encoding="utf-8")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailwarden",
            "reputation",
            "scan",
            str(log),
            "--follow",
            "--since",
            "10m",
            "--poll",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"following {log}")
        _append(log, _line(MS_BLOCK))
        line = proc.stdout.readline()
        assert "ALERT" in line
        assert "ok → block" in line
        assert "microsoft-s3150" in line
        # The alert goes to stderr right after the line above: read it before stopping the
        # process (a SIGTERM at once could come before it is written).
        assert proc.stderr is not None
        said = [proc.stderr.readline() for _ in range(1)]
        while "blocking" not in said[-1] and said[-1] and len(said) < 50:
            said.append(proc.stderr.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    wanted = "mailwarden reputation: Microsoft (Outlook.com, Exchange Online) blocking"
    assert any(wanted in text for text in said), said


def _attempt(ts: float, status: str = "deferred", reply: str = "") -> Attempt:
    return Attempt(ts, "mx1 postfix/smtp", "mta5.am0.yahoodns.net", "1.2.3.4", "", status, reply)


TSS04 = "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred"


def test_window_cooldown_and_recovery() -> None:
    watch = Watch(load_signatures(), window=600, cooldown=3600, min_hits=2)
    t0 = 1_800_000_000.0
    watch.evaluate(t0)
    watch.add(_attempt(t0 + 1, reply=TSS04))
    assert watch.evaluate(t0 + 2) == []  # one answer is below min_hits
    watch.add(_attempt(t0 + 3, reply=TSS04))
    [change] = watch.evaluate(t0 + 4)
    assert change.alert
    assert change.state == "throttle"
    assert change.counts["deferred"] == 2
    # both leave the window: back to ok (reported, not alerted)
    [change] = watch.evaluate(t0 + 700)
    assert (change.state, change.alert) == ("ok", False)
    # throttling again within the cooldown: a state change, but no second alert
    watch.add(_attempt(t0 + 701, reply=TSS04))
    watch.add(_attempt(t0 + 702, reply=TSS04))
    [change] = watch.evaluate(t0 + 703)
    assert (change.state, change.alert) == ("throttle", False)
    # after the cooldown it alerts again
    watch.evaluate(t0 + 1500)
    watch.add(_attempt(t0 + 4000, reply=TSS04))
    watch.add(_attempt(t0 + 4001, reply=TSS04))
    [change] = watch.evaluate(t0 + 4002)
    assert (change.state, change.alert) == ("throttle", True)
    # old lines (priming from a long log) never count
    watch.add(_attempt(t0, reply=TSS04))
    assert watch.pairs[("yahoo", "mx1 postfix/smtp")].row[3] == 2


def test_tail_file_reads_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"one\ntw")
    tail = TailFile(log)
    assert tail.read() == ["one"]
    _append(log, "o\n")
    log.rename(tmp_path / "mail.log.1")
    assert tail.read() == ["two"]  # the path is gone: keep reading the open file
    _append(tmp_path / "mail.log.1", "three")  # unterminated last line of the old file
    log.write_bytes(b"four\n")
    assert tail.read() == ["three", "four"]
    tail.close()
