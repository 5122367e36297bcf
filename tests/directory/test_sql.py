"""The SQL backend against real servers with the PostfixAdmin schema: PostgreSQL (asyncpg) and
MariaDB (aiomysql), the same tests for both; SQLite (aiosqlite) from a file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mailwarden.address import Address, parse_address
from mailwarden.directory.base import Account
from mailwarden.directory.config import SqlConfig
from mailwarden.directory.factory import read_password
from mailwarden.directory.sql import SqlDirectory
from mailwarden.errors import ConfigError, DirectoryError
from tests.directory.helpers import POSTFIXADMIN_QUERY, site_toml, sql_config, sql_toml
from tests.directory.test_server_lookups import URL, USERNAME
from tests.fixtures import mariadb, postgres
from tests.fixtures.postgres import POSTFIXADMIN_SCHEMA, postfixadmin_rows
from tests.fixtures.server import running_server

INJECTIONS = [
    "x'or'1'='1@example.com",
    "alice'--@example.com",
    "a';drop_table_mailbox;--@example.com",
    "%@example.com",
    "_lice@example.com",
    "*@example.com",
]


@dataclass(frozen=True)
class Engine:
    """One SQL server under test and what differs between the servers."""

    name: str
    server: postgres.Postgres | mariadb.MariaDB
    sql: Callable[[str], str]
    driver: str
    """The scheme of the documented SQLAlchemy URL."""
    password: str
    wrong_password: str
    """What the server's refusal of a wrong password says (a regular expression)."""
    same_domain_query: str
    """A query that finds every mailbox of the address's domain: more than one row."""


@pytest.fixture(scope="module", params=["postgres", "mariadb"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "postgres":
        with postgres.running_postgres(users=50) as pg:
            yield Engine(
                "postgres",
                pg,
                pg.psql,
                "postgresql+asyncpg://",
                postgres.PASSWORD,
                "password authentication failed",
                "SELECT username AS login FROM mailbox WHERE domain = split_part(:address, '@', 2)",
            )
    else:
        with mariadb.running_mariadb(users=50) as maria:
            yield Engine(
                "mariadb",
                maria,
                maria.sql,
                "mysql+aiomysql://",
                mariadb.PASSWORD,
                "Access denied",
                "SELECT username AS login FROM mailbox "
                "WHERE domain = SUBSTRING_INDEX(:address, '@', -1)",
            )


async def _lookup(config: SqlConfig, addresses: list[Address]) -> list[Account | None]:
    directory = SqlDirectory(config, read_password(config))
    try:
        return [await directory.lookup(a) for a in addresses]
    finally:
        await directory.close()


def test_url_is_the_documented_driver(engine: Engine) -> None:
    config = sql_config(engine.server)
    assert config.url.startswith(engine.driver)
    assert config.query == POSTFIXADMIN_QUERY
    assert ":address" in config.query


def test_postfixadmin_lookups(engine: Engine) -> None:
    found = asyncio.run(
        _lookup(
            sql_config(engine.server),
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
    assert juergen.login == "jürgen@example.com"
    assert juergen.display_name == "Jürgen Müller"
    assert gone is not None
    assert gone.enabled is False  # MariaDB: tinyint(1) 0 from (m.active AND a.active)
    assert team is None  # a distribution alias is no mailbox
    assert nobody is None
    assert plain is not None
    assert plain.login == "user0005@example.com"


def test_inactive_alias_disables(engine: Engine) -> None:
    engine.sql(
        "INSERT INTO alias (address, goto, domain, active) VALUES "
        "('old.alice@example.com', 'alice@example.com', 'example.com', false);"
    )
    (old,) = asyncio.run(
        _lookup(sql_config(engine.server), [parse_address("old.alice@example.com")])
    )
    assert old is not None
    assert old.login == "alice@example.com"
    assert old.enabled is False


def test_injection_is_just_an_unknown_address(engine: Engine) -> None:
    addresses = [Address(*a.rsplit("@", 1)) for a in INJECTIONS]
    addresses.append(Address("alice\\'--", "example.com"))  # backslash escapes exist in MariaDB
    assert asyncio.run(_lookup(sql_config(engine.server), addresses)) == [None] * len(addresses)
    assert engine.sql("SELECT count(*) FROM mailbox").strip() not in ("", "0")


def test_more_than_one_row_is_unknown(engine: Engine) -> None:
    config = sql_config(engine.server, query=engine.same_domain_query)
    (found,) = asyncio.run(_lookup(config, [parse_address("alice@example.com")]))
    assert found is None


def test_wrong_password(engine: Engine, tmp_path: Path) -> None:
    bad = tmp_path / "bad.secret"
    bad.write_text("wrong\n")
    config = sql_config(engine.server, password_file=bad)
    with pytest.raises(DirectoryError, match=engine.wrong_password) as info:
        asyncio.run(_lookup(config, [parse_address("a@example.com")]))
    assert "wrong" not in info.value.message.replace("password authentication", "")
    assert engine.password not in info.value.message


def test_restart_recovers(engine: Engine) -> None:
    config = sql_config(engine.server)
    server = engine.server

    async def run() -> tuple[Account | None, Account | None]:
        directory = SqlDirectory(config, read_password(config))
        try:
            first = await directory.lookup(parse_address("alice@example.com"))
            server.stop()
            try:
                with pytest.raises(DirectoryError):
                    await directory.lookup(parse_address("alice@example.com"))
            finally:
                server.start()
            second = await directory.lookup(parse_address("alice@example.com"))
            return first, second
        finally:
            await directory.close()

    first, second = asyncio.run(run())
    assert first == second
    assert first is not None


def test_accents_and_the_collation(engine: Engine) -> None:
    """PostgreSQL compares exactly; MariaDB's default *_ci collations fold accents (jurgen@
    finds jürgen@) unless the query says COLLATE utf8mb4_bin."""
    addresses = [parse_address("jurgen@example.com"), parse_address("jürgen@example.com")]
    folded, juergen = asyncio.run(_lookup(sql_config(engine.server), addresses))
    assert juergen is not None
    assert juergen.login == "jürgen@example.com"
    if engine.name == "postgres":
        assert folded is None
        return
    assert folded is not None
    assert folded.login == "jürgen@example.com"
    exact = POSTFIXADMIN_QUERY.replace("= :address", "= :address COLLATE utf8mb4_bin")
    plain, juergen = asyncio.run(_lookup(sql_config(engine.server, query=exact), addresses))
    assert plain is None
    assert juergen is not None
    assert juergen.login == "jürgen@example.com"


def test_server_answers_inactive_as_unknown(engine: Engine, tmp_path: Path) -> None:
    """Through the real server: an inactive mailbox or alias gets the unknown-address answer."""
    engine.sql(
        "INSERT INTO alias (address, goto, domain, active) VALUES "
        "('former.alice@example.com', 'alice@example.com', 'example.com', false);"
    )
    site = tmp_path / "site.toml"
    site.write_text(site_toml(sql_toml(engine.server)))
    with running_server(site) as base, httpx.Client(base_url=base) as client:

        def usernames(address: str) -> set[str]:
            response = client.get(URL, params={"emailaddress": address})
            assert response.status_code == 200
            return set(USERNAME.findall(response.text))

        def unknown_total() -> float:
            (line,) = [
                x
                for x in client.get("/metrics").text.splitlines()
                if x.startswith("mailwarden_unknown_addresses_total ")
            ]
            return float(line.split()[1])

        assert usernames("a.example@example.com") == {"alice@example.com"}  # active alias
        assert unknown_total() == 0
        # Unknown answers repeat the typed address; a known one would give alice's login.
        assert usernames("former.alice@example.com") == {"former.alice@example.com"}
        assert unknown_total() == 1
        assert usernames("gone@example.com") == {"gone@example.com"}  # inactive mailbox
        assert usernames("nobody@example.com") == {"nobody@example.com"}
        assert unknown_total() == 3


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
