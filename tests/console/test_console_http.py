"""The real ``mailwarden console`` over HTTP: local logins, sessions, CSRF, roles, actions
recorded in the guard's history, throttled logins."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.helpers import (
    Console,
    ConsoleClient,
    add_user,
    cli,
    console_site,
    running_console,
)
from tests.fixtures.guard_server import guard_cli
from tests.fixtures.paths import EXAMPLES

CONSOLE = """
[console]
auth = "local"
users_file = "console-users.txt"
login_attempts = 3
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("console")
    site = console_site(folder, CONSOLE)
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailwarden",
            "users",
            "--config",
            str(site),
            "import",
            str(EXAMPLES / "users.csv"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    add_user(site, "hilda", "helpdesk", "helpdesk-password-1")
    add_user(site, "ada", "admin", "admin-password-123")
    return site


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[Console]:
    with running_console(site) as running:
        yield running


def test_pages_need_a_login(server: Console) -> None:
    client = ConsoleClient(server.url)
    for path in ("/", "/account?q=jdoe", "/audit", "/config"):
        r = client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/login"


def test_login_sets_a_strict_cookie_and_shows_the_overview(server: Console) -> None:
    client = ConsoleClient(server.url)
    r = client.login("hilda", "helpdesk-password-1")
    assert r.status_code == 303, r.text
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("mwc_session="))
    for flag in ("Secure", "HttpOnly", "SameSite=Strict"):
        assert flag in cookie
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text
    assert "Signed in as hilda (helpdesk)" in page.text


def test_wrong_password_then_throttled(server: Console) -> None:
    client = ConsoleClient(server.url)
    for _ in range(3):
        assert client.login("nemo", "wrong-password-x").status_code == 401
    r = client.login("nemo", "wrong-password-x")
    assert r.status_code == 429
    assert "Too many failed logins" in r.text
    assert '"event": "console-login"' in server.log_text()


def test_login_form_without_its_token_is_refused(server: Console) -> None:
    client = ConsoleClient(server.url)
    r = client.post("/login", {"login": "ada", "password": "admin-password-123"})
    assert r.status_code == 403
    assert "mwc_session" not in client.cookies


def test_lock_by_admin_unlock_by_helpdesk_recorded(server: Console, site: Path) -> None:
    admin = ConsoleClient(server.url)
    assert admin.login("ada", "admin-password-123").status_code == 303
    token = admin.csrf("/account?q=jdoe42")
    form = {"csrf": token, "op": "lock", "user": "jdoe42", "reason": "phished, ticket 7"}
    ask = admin.post("/action", form)
    assert ask.status_code == 200
    assert "Lock jdoe42?" in ask.text  # the confirmation step: nothing done yet
    assert '"jdoe42"' not in guard_cli(site, "locked", "--format", "json").stdout
    done = admin.post("/action", {**form, "confirm": "yes"})
    assert done.status_code == 303
    assert '"jdoe42"' in guard_cli(site, "locked", "--format", "json").stdout
    page = admin.get(done.headers["location"])
    assert "jdoe42 locked" in page.text
    assert "phished, ticket 7" in page.text

    helpdesk = ConsoleClient(server.url)
    helpdesk.login("hilda", "helpdesk-password-1")
    token = helpdesk.csrf("/account?q=jdoe42")
    form = {"csrf": token, "op": "unlock", "user": "jdoe42", "confirm": "yes"}
    assert helpdesk.post("/action", form).status_code == 303
    assert '"jdoe42"' not in guard_cli(site, "locked", "--format", "json").stdout
    history = json.loads(guard_cli(site, "history", "jdoe42", "--format", "json").stdout)
    unlock = history[-1]
    assert unlock["action"] == "unlock"
    assert unlock["reason"].startswith("unlocked by hilda (console, from 127.0.0.1")
    assert unlock["detail"] == {"by": "hilda", "via": "console", "client": "127.0.0.1"}
    assert history[-2]["detail"]["by"] == "ada"
    log = server.log_text()
    assert '"event": "unlock"' in log
    assert '"by": "hilda"' in log
    page = helpdesk.get("/account?q=jdoe42")
    assert "By hilda (127.0.0.1)" in page.text


def test_helpdesk_may_not_lock(server: Console, site: Path) -> None:
    client = ConsoleClient(server.url)
    client.login("hilda", "helpdesk-password-1")
    token = client.csrf("/account?q=mallory")
    page = client.get("/account?q=mallory")
    assert 'id="lock"' not in page.text  # no button ...
    r = client.post(
        "/action",
        {"csrf": token, "op": "lock", "user": "mallory", "reason": "x", "confirm": "yes"},
    )
    assert r.status_code == 403  # ... and no way around it
    assert '"mallory"' not in guard_cli(site, "locked", "--format", "json").stdout
    assert client.get("/config").status_code == 403


def test_forged_form_without_csrf_is_refused(server: Console, site: Path) -> None:
    guard_cli(site, "lock", "eve", "--reason", "test")
    client = ConsoleClient(server.url)
    client.login("ada", "admin-password-123")
    for token in ("", "forged-token"):
        r = client.post("/action", {"csrf": token, "op": "unlock", "user": "eve", "confirm": "yes"})
        assert r.status_code == 403
    assert '"eve"' in guard_cli(site, "locked", "--format", "json").stdout


def test_logout_ends_the_session(server: Console) -> None:
    client = ConsoleClient(server.url)
    client.login("ada", "admin-password-123")
    session = client.cookies["mwc_session"]
    assert client.post("/logout", {"csrf": client.csrf()}).status_code == 303
    client.cookies["mwc_session"] = session  # a copied cookie is worth nothing now
    assert client.get("/").headers["location"] == "/login?expired=1"


def test_german_pages(server: Console) -> None:
    client = ConsoleClient(server.url, headers={"accept-language": "de-DE"})
    client.login("ada", "admin-password-123")
    page = client.get("/")
    assert '<html lang="de">' in page.text
    assert "Gesperrte Konten" in page.text


def test_user_commands(site: Path) -> None:
    listed = cli(site, "user", "list")
    assert "hilda\thelpdesk" in listed.stdout
    short = cli(site, "user", "add", "x", "--password-stdin", stdin="short\n")
    assert short.returncode == 2
    assert "mailwarden: error [INPUT-INVALID]" in short.stderr
    assert "Traceback" not in short.stderr
    text = (site.parent / "console-users.txt").read_text()
    assert "$argon2id$" in text
    assert (site.parent / "console-users.txt").stat().st_mode & 0o077 == 0
