"""The SQL backend against a real PostgreSQL (PostfixAdmin schema) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mailwarden.address import Address, parse_address
from mailwarden.directory.base import Account
from mailwarden.directory.factory import read_password
from mailwarden.directory.sql import SqlDirectory
from mailwarden.errors import ConfigError, DirectoryError
from mailwarden.site.model import SqlDirectory as SqlConfig
from tests.directory.helpers import POSTFIXADMIN_QUERY, sql_config
from tests.fixtures.postgres import POSTFIXADMIN_SCHEMA, Postgres, postfixadmin_rows

INJECTIONS = [
    "x'or'1'='1@example.com",
    "alice'--@example.com",
    "a';drop_table_mailbox;--@example.com",
    "%@example.com",
    "_lice@example.com",
    "*@example.com",
]


async def _lookup(config: SqlConfig, addresses: list[Address]) -> list[Account | None]:
    directory = SqlDirectory(config, read_password(config))
    try:
        return [await directory.lookup(a) for a in addresses]
    finally:
        await directory.close()


def test_postfixadmin_lookups(postgres: Postgres) -> None:
    found = asyncio.run(
        _lookup(
            sql_config(postgres),
            [
                parse_address(a)
                for a in (
                    "Alice@Example.com",
                    "a.example@example.com",
                    "o'brien@example.com",
                    "jürgen@example.com",
                    "gone@example.com",
                    "team@example.com",
                    "nobody@example.com",
                    "user0005@example.com",
                )
            ],
        )
    )
    alice, alias, obrien, juergen, gone, team, nobody, plain = found
    assert alice == Account("alice@example.com", "alice@example.com", "Alice Example", True)
    assert alias is not None
    assert alias.login == "alice@example.com"
    assert obrien is not None
    assert obrien.display_name == "Pat O'Brien"
    assert juergen is not None
    assert juergen.display_name == "Jürgen Müller"
    assert gone is not None
    assert gone.enabled is False
    assert team is None  # a distribution alias is no mailbox
    assert nobody is None
    assert plain is not None
    assert plain.login == "user0005@example.com"


def test_injection_is_just_an_unknown_address(postgres: Postgres) -> None:
    addresses = [Address(*a.rsplit("@", 1)) for a in INJECTIONS]
    assert asyncio.run(_lookup(sql_config(postgres), addresses)) == [None] * len(INJECTIONS)
    assert postgres.psql("SELECT count(*) FROM mailbox").strip() != "0"


def test_more_than_one_row_is_unknown(postgres: Postgres) -> None:
    query = "SELECT username AS login FROM mailbox WHERE domain = split_part(:address, '@', 2)"
    (found,) = asyncio.run(
        _lookup(sql_config(postgres, query=query), [parse_address("alice@example.com")])
    )
    assert found is None


def test_wrong_password(postgres: Postgres, tmp_path: Path) -> None:
    bad = tmp_path / "bad.secret"
    bad.write_text("wrong\n")
    with pytest.raises(DirectoryError, match="password authentication failed") as info:
        asyncio.run(
            _lookup(sql_config(postgres, password_file=bad), [parse_address("a@example.com")])
        )
    assert "wrong" not in info.value.message.replace("password authentication", "")


def test_restart_recovers(postgres: Postgres) -> None:
    config = sql_config(postgres)

    async def run() -> tuple[Account | None, Account | None]:
        directory = SqlDirectory(config, read_password(config))
        try:
            first = await directory.lookup(parse_address("alice@example.com"))
            postgres.stop()
            try:
                with pytest.raises(DirectoryError):
                    await directory.lookup(parse_address("alice@example.com"))
            finally:
                postgres.start()
            second = await directory.lookup(parse_address("alice@example.com"))
            return first, second
        finally:
            await directory.close()

    first, second = asyncio.run(run())
    assert first == second
    assert first is not None


def test_sqlite_postfixadmin(tmp_path: Path) -> None:
    db = tmp_path / "postfix.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            POSTFIXADMIN_SCHEMA.replace("boolean NOT NULL DEFAULT true", "INTEGER DEFAULT 1")
            + postfixadmin_rows(0).replace("false", "0")
        )
    config = SqlConfig.model_validate(
        {"backend": "sql", "url": f"sqlite+aiosqlite:///{db}", "query": POSTFIXADMIN_QUERY}
    )
    alice, gone, unknown, injected = asyncio.run(
        _lookup(
            config,
            [
                parse_address("alice@example.com"),
                parse_address("gone@example.com"),
                parse_address("nobody@example.com"),
                Address("x'or'1'='1", "example.com"),
            ],
        )
    )
    assert alice is not None
    assert alice.display_name == "Alice Example"
    assert gone is not None
    assert gone.enabled is False
    assert unknown is None
    assert injected is None


def test_bad_url_is_a_config_error() -> None:
    config = SqlConfig.model_validate(
        {"backend": "sql", "url": "nosuch+driver://x/y", "query": POSTFIXADMIN_QUERY}
    )
    with pytest.raises(ConfigError, match=r"directory\.url"):
        asyncio.run(_lookup(config, [parse_address("a@example.com")]))
