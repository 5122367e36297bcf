"""The console's pure parts: chart, audit grid, sessions, login throttling, the users file,
the clients table and the proxy header rule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.address import parse_address
from mailwarden.console import chart
from mailwarden.console.audit import grid_of, read_audit
from mailwarden.console.auth import proxy_operator
from mailwarden.console.clients import client_rows
from mailwarden.console.config import ConsoleProxy
from mailwarden.console.ratelimit import LoginLimiter
from mailwarden.console.sessions import Operator, Sessions, cookie_value, csrf_ok
from mailwarden.console.users import load_users, make_user, parse_users, save_users, verify
from mailwarden.errors import ConfigError
from mailwarden.guard.store.base import Event
from mailwarden.profiles.subject import Subject
from mailwarden.site import load_site
from tests.fixtures.paths import EXAMPLES

NOW = 1_800_001_800.0  # half past an hour


def test_chart_counts_decisions_per_hour_and_skips_admin_actions() -> None:
    events = [
        Event("a", NOW - 10, "throttle", "x", {"ref": "R1"}),
        Event("a", NOW - 20, "lock", "x", {"ref": "R2"}),
        Event("a", NOW - 30, "lock", "by hand", {"by": "ada"}),
        Event("b", NOW - 3 * 3600, "hold", "x", {"ref": "R3"}),
        Event("b", NOW - 30 * 3600, "hold", "too old", {}),
        Event("b", NOW - 5, "unlock", "unlocked", {}),
    ]
    hours = chart.per_hour(events, NOW)
    assert len(hours) == 24
    assert hours[-1].counts == {"throttle": 1, "hold": 0, "lock": 1, "reject": 0}
    assert hours[-4].counts["hold"] == 1
    assert chart.summary(hours) == {"throttle": 1, "hold": 1, "lock": 1, "reject": 0}
    svg = chart.render_svg(hours, {"lock": "<locked>"}, 'Decisions "24 h"')
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert "&lt;locked&gt;" in svg
    assert "<locked>" not in svg
    assert svg.count("<rect") == 3


def test_empty_chart_is_still_a_chart() -> None:
    svg = chart.render_svg(chart.per_hour([], NOW), {}, "t")
    assert "<rect" not in svg
    assert svg.count("<line") == 5


def report(
    started: str, results: list[dict[str, str]], counts: dict[str, int]
) -> dict[str, object]:
    return {
        "schema": "mailwarden-audit",
        "started": started,
        "status": "warning",
        "counts": counts,
        "results": results,
        "findings": [
            {
                "severity": "warning",
                "code": "TLS-X",
                "endpoint": "imap.example.edu:993",
                "message": "m",
            }
        ],
    }


def test_audit_grid_and_history(tmp_path: Path) -> None:
    results = [
        {"check": "chain", "subject": "imap.example.edu:993", "severity": "ok"},
        {"check": "expiry", "subject": "imap.example.edu:993", "severity": "warning"},
        {"check": "expiry", "subject": "imap.example.edu:993", "severity": "info"},
        {"check": "spf", "subject": "example.edu", "severity": "critical"},
    ]
    grid = grid_of(report("x", results, {}))
    assert grid.checks == ["chain", "expiry", "spf"]
    assert grid.rows == [
        ("imap.example.edu:993", ["ok", "warning", ""]),
        ("example.edu", ["", "", "critical"]),
    ]
    (tmp_path / "audit-2.json").write_text(
        json.dumps(report("2026-01-02T00:00:00Z", results, {"warning": 2}))
    )
    (tmp_path / "audit-1.json").write_text(
        json.dumps(report("2026-01-01T00:00:00Z", [], {"critical": 1}))
    )
    (tmp_path / "notes.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    view = read_audit(tmp_path)
    assert [r.started[:10] for r in view.history] == ["2026-01-01", "2026-01-02"]
    assert view.latest is not None
    assert view.latest.counts["warning"] == 2
    assert sorted(view.skipped) == ["broken.json", "notes.json"]
    assert view.findings[0]["code"] == "TLS-X"
    assert read_audit(tmp_path / "missing").latest is None


def test_sessions_expire_when_idle_and_when_old() -> None:
    sessions = Sessions(idle=60, max_age=3600)
    op = Operator("ada", "admin", "local")
    s = sessions.create(op, "127.0.0.1", 0)
    assert sessions.get(s.id, 59) is s
    assert sessions.get(s.id, 118) is s  # each request moves the idle limit
    assert sessions.get(s.id, 179) is None
    s = sessions.create(op, "127.0.0.1", 0)
    for t in range(50, 3600, 50):
        assert sessions.get(s.id, t) is s
    assert sessions.get(s.id, 3601) is None
    assert sessions.get("", 0) is None
    assert sessions.get("nope", 0) is None


def test_csrf_and_cookies() -> None:
    s = Sessions(60, 60).create(Operator("a", "helpdesk", "local"), "", 0)
    assert csrf_ok(s, s.csrf)
    assert not csrf_ok(s, "")
    assert not csrf_ok(s, s.csrf + "x")
    assert cookie_value("a=1; mwc_session=abc; b=2") == "abc"
    assert cookie_value("a=1") is None


def test_login_limiter_per_account_and_per_client() -> None:
    limiter = LoginLimiter(per_account=2, per_client=3, window=60)
    limiter.failed("10.0.0.1", "ada", 0)
    limiter.failed("10.0.0.2", "ADA", 1)
    assert not limiter.allowed("10.0.0.3", "ada", 2)  # the account, from anywhere
    assert limiter.allowed("10.0.0.3", "bob", 2)
    limiter.failed("10.0.0.3", "x", 2)
    limiter.failed("10.0.0.3", "y", 2)
    limiter.failed("10.0.0.3", "z", 2)
    assert not limiter.allowed("10.0.0.3", "fresh", 3)  # the client, whatever name
    assert limiter.allowed("10.0.0.3", "fresh", 63)
    assert limiter.allowed("10.0.0.9", "ada", 62)


def test_users_file_roundtrip_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    assert load_users(path) == {}
    users = {"ada": make_user("ada", "admin", "correct horse battery")}
    save_users(path, users)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_users(path)
    assert verify(loaded, "ada", "correct horse battery") == users["ada"]
    assert verify(loaded, "ada", "wrong horse battery") is None
    assert verify(loaded, "nobody", "correct horse battery") is None


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("ada:root:$argon2id$v=19$x", "role"),
        ("a d:admin:$argon2id$v=19$x", "name"),
        ("ada:admin:$2b$12$bcrypt", "argon2id"),
    ],
)
def test_users_file_errors_name_the_line(line: str, what: str) -> None:
    with pytest.raises(ConfigError, match=rf"f:2: .*{what}"):
        parse_users("# comment\n" + line + "\n", "f")


@given(st.text(max_size=300))
def test_users_parser_never_crashes(text: str) -> None:
    try:
        parse_users(text, "f")
    except ConfigError as exc:
        message = exc.message
    else:
        return
    assert message.startswith("f:")


def test_proxy_header_only_from_trusted_proxies() -> None:
    proxy = ConsoleProxy(trusted=("127.0.0.1", "10.1.0.0/16"), admins=("ada",))
    assert proxy_operator(proxy, "127.0.0.1", "ada") == Operator("ada", "admin", "proxy")
    assert proxy_operator(proxy, "10.1.2.3", "bob") == Operator("bob", "helpdesk", "proxy")
    assert proxy_operator(proxy, "192.0.2.1", "ada") is None
    assert proxy_operator(proxy, "127.0.0.1", None) is None
    assert proxy_operator(proxy, "127.0.0.1", "a\nb") is None
    strict = ConsoleProxy(trusted=("127.0.0.1",), helpdesk=("hilda",))
    assert proxy_operator(strict, "127.0.0.1", "mallory") is None


def test_clients_table_reads_the_real_documents() -> None:
    site = load_site(EXAMPLES / "site.toml")
    domain = site.domain("example.edu")
    assert domain is not None
    address = parse_address("jdoe@example.edu")
    rows = client_rows(site, domain, Subject("jdoe@example.edu", "jdoe", "jdoe42"), address)
    clients = {r.client for r in rows}
    assert clients == {"Thunderbird", "Outlook", "Apple"}
    imap = [r for r in rows if r.protocol == "IMAP"]
    assert imap
    assert all(r.port and r.host for r in imap)
    assert {r.direction for r in rows} == {"incoming", "outgoing"}


def test_now_is_sane() -> None:
    assert abs(time.time() - NOW) < 10 * 365 * 86400
