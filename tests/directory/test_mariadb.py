"""The SQL backend against a real MariaDB (aiomysql) with the PostfixAdmin schema."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailwarden.address import Address, parse_address
from mailwarden.directory.base import Account
from mailwarden.directory.factory import read_password
from mailwarden.directory.sql import SqlDirectory
from mailwarden.errors import DirectoryError
from mailwarden.site.model import SqlDirectory as SqlConfig
from tests.directory.helpers import POSTFIXADMIN_QUERY, site_toml, sql_config, sql_toml
from tests.directory.test_server_lookups import URL, USERNAME
from tests.directory.test_sql import INJECTIONS
from tests.fixtures.mariadb import PASSWORD, MariaDB, running_mariadb
from tests.fixtures.server import running_server


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    with running_mariadb(users=50) as server:
        yield server


async def _lookup(config: SqlConfig, addresses: list[Address]) -> list[Account | None]:
    directory = SqlDirectory(config, read_password(config))
    try:
        return [await directory.lookup(a) for a in addresses]
    finally:
        await directory.close()


def test_url_is_the_documented_driver(mariadb: MariaDB) -> None:
    config = sql_config(mariadb)
    assert config.url.startswith("mysql+aiomysql://")
    assert config.query == POSTFIXADMIN_QUERY
    assert ":address" in config.query


def test_postfixadmin_lookups(mariadb: MariaDB) -> None:
    found = asyncio.run(
        _lookup(
            sql_config(mariadb),
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
    assert gone.enabled is False  # tinyint(1) 0 from (m.active AND a.active)
    assert team is None  # a distribution alias is no mailbox
    assert nobody is None
    assert plain is not None
    assert plain.login == "user0005@example.com"


def test_inactive_alias_disables(mariadb: MariaDB) -> None:
    mariadb.sql(
        "INSERT INTO alias (address, goto, domain, active) VALUES "
        "('old.alice@example.com', 'alice@example.com', 'example.com', false);"
    )
    (old,) = asyncio.run(_lookup(sql_config(mariadb), [parse_address("old.alice@example.com")]))
    assert old is not None
    assert old.login == "alice@example.com"
    assert old.enabled is False


def test_injection_is_just_an_unknown_address(mariadb: MariaDB) -> None:
    addresses = [Address(*a.rsplit("@", 1)) for a in INJECTIONS]
    addresses.append(Address("alice\\'--", "example.com"))  # backslash escapes exist in MariaDB
    assert asyncio.run(_lookup(sql_config(mariadb), addresses)) == [None] * len(addresses)
    assert mariadb.sql("SELECT count(*) FROM mailbox").strip() not in ("", "0")


def test_more_than_one_row_is_unknown(mariadb: MariaDB) -> None:
    query = (
        "SELECT username AS login FROM mailbox WHERE domain = SUBSTRING_INDEX(:address, '@', -1)"
    )
    (found,) = asyncio.run(
        _lookup(sql_config(mariadb, query=query), [parse_address("alice@example.com")])
    )
    assert found is None


def test_wrong_password(mariadb: MariaDB, tmp_path: Path) -> None:
    bad = tmp_path / "bad.secret"
    bad.write_text("wrong\n")
    with pytest.raises(DirectoryError, match="Access denied") as info:
        asyncio.run(
            _lookup(sql_config(mariadb, password_file=bad), [parse_address("a@example.com")])
        )
    assert "wrong" not in info.value.message
    assert PASSWORD not in info.value.message


def test_restart_recovers(mariadb: MariaDB) -> None:
    config = sql_config(mariadb)

    async def run() -> tuple[Account | None, Account | None]:
        directory = SqlDirectory(config, read_password(config))
        try:
            first = await directory.lookup(parse_address("alice@example.com"))
            mariadb.stop()
            try:
                with pytest.raises(DirectoryError):
                    await directory.lookup(parse_address("alice@example.com"))
            finally:
                mariadb.start()
            second = await directory.lookup(parse_address("alice@example.com"))
            return first, second
        finally:
            await directory.close()

    first, second = asyncio.run(run())
    assert first == second
    assert first is not None


def test_accent_insensitive_collation_and_the_binary_fix(mariadb: MariaDB) -> None:
    """MariaDB's default *_ci collations fold accents: jurgen@ finds jürgen@ unless COLLATE."""
    addresses = [parse_address("jurgen@example.com"), parse_address("jürgen@example.com")]
    folded, _ = asyncio.run(_lookup(sql_config(mariadb), addresses))
    assert folded is not None
    assert folded.login == "jürgen@example.com"
    exact = POSTFIXADMIN_QUERY.replace("= :address", "= :address COLLATE utf8mb4_bin")
    plain, juergen = asyncio.run(_lookup(sql_config(mariadb, query=exact), addresses))
    assert plain is None
    assert juergen is not None
    assert juergen.login == "jürgen@example.com"


def test_server_answers_inactive_as_unknown(mariadb: MariaDB, tmp_path: Path) -> None:
    """Through the real server: an inactive mailbox or alias gets the unknown-address answer."""
    mariadb.sql(
        "INSERT INTO alias (address, goto, domain, active) VALUES "
        "('former.alice@example.com', 'alice@example.com', 'example.com', false);"
    )
    site = tmp_path / "site.toml"
    site.write_text(site_toml(sql_toml(mariadb)))
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
