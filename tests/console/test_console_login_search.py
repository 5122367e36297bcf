"""The account page for a user name: the real console finds the accounts whose login it is,
in the embedded directory, a real slapd (with the aliases its filter's attributes hold) and an
SQL directory (with and without ``login_query``)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.helpers import ConsoleClient, add_user, console_site, running_console
from tests.directory.helpers import ldap_toml
from tests.fixtures.paths import EXAMPLES
from tests.fixtures.slapd import running_slapd

CONSOLE = '[console]\nauth = "local"\nusers_file = "console-users.txt"\n'
EXAMPLES_CSV = str(EXAMPLES / "users.csv")
EMBEDDED = 'backend = "embedded"\npath = "users.sqlite"\n'


def _table(page: str, name: str) -> str:
    found = re.search(rf'<table id="{name}">(.*?)</table>', page, re.DOTALL)
    assert found, page[:3000]
    return found.group(1)


def _site(folder: Path, directory: str, extra: str = "") -> Path:
    site = console_site(folder, CONSOLE + extra)
    text = site.read_text(encoding="utf-8")
    assert EMBEDDED in text
    site.write_text(text.replace(EMBEDDED, directory), encoding="utf-8")
    add_user(site, "hilda", "helpdesk", "helpdesk-password-1")
    return site


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleClient]:
    folder = tmp_path_factory.mktemp("by-login")
    site = _site(folder, EMBEDDED)
    imported = subprocess.run(
        [sys.executable, "-m", "mailwarden", "users", "-c", str(site), "import", EXAMPLES_CSV],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    with running_console(site) as server:
        client = ConsoleClient(server.url)
        assert client.login("hilda", "helpdesk-password-1").status_code == 303
        yield client


def test_a_login_lists_its_accounts_with_aliases(embedded: ConsoleClient) -> None:
    page = embedded.get("/account?q=jdoe42")
    assert page.status_code == 200
    rows = _table(page.text, "matches")
    assert '<a href="/account?q=jdoe%40example.edu">jdoe@example.edu</a>' in rows
    assert "Jane Doe" in rows
    assert "jane.doe@example.edu" in rows
    assert "<h2>Guard: jdoe42</h2>" in page.text  # the guard knows the account by its login


def test_a_login_in_other_case_shows_the_guard_state_of_the_real_login(
    embedded: ConsoleClient,
) -> None:
    page = embedded.get("/account?q=JDOE42")
    assert "jdoe@example.edu" in _table(page.text, "matches")
    assert "<h2>Guard: jdoe42</h2>" in page.text


def test_an_unknown_login_says_so(embedded: ConsoleClient) -> None:
    page = embedded.get("/account?q=nobody-here")
    assert "The directory has no account with this login." in page.text
    assert 'id="matches"' not in page.text


def test_an_address_shows_the_aliases_of_its_account(embedded: ConsoleClient) -> None:
    page = embedded.get("/account?q=jdoe%40example.edu")
    entry = _table(page.text, "entry")
    assert '<td class="login">jdoe42</td>' in entry
    assert "jane.doe@example.edu" in entry


def test_ldap_login_and_address_list_the_alias_attributes(tmp_path: Path) -> None:
    with running_slapd(tmp_path / "slapd", users=3) as slapd:
        site = _site(
            tmp_path,
            ldap_toml(slapd) + "\n",
            '\n[domains."example.com"]\nservices = "campus"\n',
        )
        with running_console(site) as server:
            client = ConsoleClient(server.url)
            assert client.login("hilda", "helpdesk-password-1").status_code == 303
            rows = _table(client.get("/account?q=ab1234").text, "matches")
            assert "alice@example.com" in rows
            assert "a.example@example.com" in rows  # mailAlternateAddress
            star = client.get("/account?q=%2A").text  # "*": an equality match, nothing found
            assert "The directory has no account with this login." in star
            entry = _table(client.get("/account?q=a.example%40example.com").text, "entry")
            assert '<td class="login">ab1234</td>' in entry
            assert "alice@example.com" in entry  # the other address of the same entry
            assert "not listed" not in entry


def _sql_site(tmp_path: Path, login_query: str | None) -> Path:
    db = tmp_path / "mail.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS mailbox (username TEXT, login TEXT, name TEXT, active INT)"
        )
        conn.execute("DELETE FROM mailbox")
        conn.execute("INSERT INTO mailbox VALUES ('jdoe@example.edu', 'jdoe42', 'Jane Doe', 1)")
    lines = [
        'backend = "sql"',
        f'url = "sqlite+aiosqlite:///{db}"',
        'query = "SELECT login, name AS display_name FROM mailbox WHERE username = :address"',
    ]
    if login_query is not None:
        lines.append(f'login_query = "{login_query}"')
    return _site(tmp_path, "\n".join(lines) + "\n")


@pytest.mark.parametrize("with_query", [False, True])
def test_sql_searches_by_login_only_with_login_query(tmp_path: Path, with_query: bool) -> None:
    query = (
        "SELECT username AS address, login, name AS display_name FROM mailbox WHERE login = :login"
    )
    site = _sql_site(tmp_path, query if with_query else None)
    with running_console(site) as server:
        client = ConsoleClient(server.url)
        assert client.login("hilda", "helpdesk-password-1").status_code == 303
        page = client.get("/account?q=jdoe42").text
        if with_query:
            rows = _table(page, "matches")
            assert "jdoe@example.edu" in rows
            assert "not listed by this directory" in rows
        else:
            assert "the SQL directory cannot search by login: set [directory] login_query" in page
