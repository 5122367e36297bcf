"""The reverse look-up, login → accounts, that the operator console uses for a user name:
the embedded directory, a real slapd (the login escaped, the aliases from the attributes the
filter matches), PostgreSQL and MariaDB (``login_query`` with ``:login`` bound), and the cache
passing it through."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mailwarden.directory.base import MAX_BY_LOGIN, Account, LoginEntry, NoLoginSearch, by_login
from mailwarden.directory.cache import CachedDirectory
from mailwarden.directory.config import CacheConfig, LdapConfig, SqlConfig
from mailwarden.directory.embedded import EmbeddedDirectory, UserRecord, UserStore
from mailwarden.directory.factory import read_password
from mailwarden.directory.ldap import LdapDirectory, address_attributes, login_filter
from mailwarden.directory.sql import SqlDirectory
from mailwarden.errors import DirectoryError
from tests.directory.helpers import ldap_config, sql_config
from tests.fixtures import mariadb, postgres
from tests.fixtures.slapd import PEOPLE_DN, ROOT_DN, ROOT_PASSWORD, Slapd

OFFLINE = LdapConfig.model_validate(
    {"backend": "ldap", "servers": ["ldap://127.0.0.1:1"], "base_dn": "dc=example,dc=com"}
)


INJECTIONS = ["*", "ab*", "ab1234)(uid=*", "*)(|(uid=*", "ab1234\\", "x'or'1'='1", "%", "_b1234"]


def _run(directory: object, *logins: str) -> list[list[LoginEntry]]:
    async def go() -> list[list[LoginEntry]]:
        try:
            return [await by_login(directory, login) for login in logins]  # type: ignore[arg-type]
        finally:
            await directory.close()  # type: ignore[attr-defined]

    return asyncio.run(go())


def _addresses(entries: list[LoginEntry]) -> list[str]:
    return [e.account.address for e in entries]


# -- embedded -------------------------------------------------------------------------------


def test_embedded_finds_every_account_of_a_login_with_its_aliases(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    store = UserStore(path)
    store.add(UserRecord("jdoe@example.edu", "jdoe42", "Jane Doe", ("jane.doe@example.edu",), True))
    store.add(UserRecord("shared@example.edu", "jdoe42", None, (), False))
    store.add(UserRecord("other@example.edu", "other", None, (), True))
    store.close()
    found, upper, other, unknown, *injected = _run(
        EmbeddedDirectory(path), "jdoe42", "JDOE42", "other", "nobody", *INJECTIONS
    )
    assert found == [
        LoginEntry(
            Account("jdoe@example.edu", "jdoe42", "Jane Doe", True), ("jane.doe@example.edu",)
        ),
        LoginEntry(Account("shared@example.edu", "jdoe42", None, False), ()),
    ]
    assert upper == found  # logins compare ignoring ASCII case, as IMAP servers do
    assert _addresses(other) == ["other@example.edu"]
    assert unknown == []
    assert injected == [[]] * len(INJECTIONS)


def test_embedded_returns_at_most_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    store = UserStore(path)
    for n in range(MAX_BY_LOGIN + 5):
        store.add(UserRecord(f"box{n:02d}@example.edu", "team", None, (), True))
    store.close()
    (found,) = _run(EmbeddedDirectory(path), "team")
    assert len(found) == MAX_BY_LOGIN
    assert _addresses(found) == sorted(_addresses(found))


def test_the_cache_passes_the_search_through_uncached(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    store = UserStore(path)
    store.add(UserRecord("a@example.edu", "a1", None, (), True))
    cached = CachedDirectory(EmbeddedDirectory(path), CacheConfig(), deadline=1, retry_interval=1)

    async def go() -> tuple[list[LoginEntry], list[LoginEntry]]:
        first = await by_login(cached, "a1")
        store.add(UserRecord("b@example.edu", "a1", None, (), True))
        return first, await by_login(cached, "a1")

    first, second = asyncio.run(go())
    store.close()
    assert _addresses(first) == ["a@example.edu"]
    assert _addresses(second) == ["a@example.edu", "b@example.edu"]  # no stale answer


def test_a_backend_without_the_capability_says_so() -> None:
    class AddressOnly:
        name = "custom"

        async def lookup(self, address: object) -> None:
            return None

        async def close(self) -> None:
            return None

    cached = CachedDirectory(AddressOnly(), CacheConfig(), deadline=1, retry_interval=1)
    with pytest.raises(NoLoginSearch, match="the custom directory cannot search by login"):
        asyncio.run(by_login(cached, "jdoe"))


# -- LDAP -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ldap(slapd: Slapd) -> Slapd:
    """slapd with a second mailbox of the login ab1234 and a machine entry with the same uid
    but no address (not an account)."""
    ldif = f"""\
dn: cn=Alice Second,{PEOPLE_DN}
objectClass: inetOrgPerson
cn: Alice Second
sn: Second
uid: ab1234
mail: alice.lab@example.com
description: smtp:Lab.Alias@example.com
description: X400:c=US;a= ;p=Example;o=Lab;s=Alice;

dn: host=ab1234-host,{PEOPLE_DN}
objectClass: account
host: ab1234-host
uid: ab1234
"""
    subprocess.run(
        ["ldapadd", "-x", "-H", slapd.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
        input=ldif,
        text=True,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return slapd


def _ldap(slapd: Slapd, **overrides: object) -> LdapDirectory:
    config = ldap_config(slapd, **overrides)
    return LdapDirectory(config, read_password(config))


def test_ldap_finds_the_login_with_aliases_and_nothing_for_wildcards(ldap: Slapd) -> None:
    alice, upper, juergen, off, unknown, *injected = _run(
        _ldap(ldap), "ab1234", "AB1234", "mu01", "off01", "nobody", *INJECTIONS
    )
    assert alice == [
        LoginEntry(
            Account("alice.lab@example.com", "ab1234", "Alice Second", True), ()
        ),  # no mailEnabled: enabled
        LoginEntry(
            Account("alice@example.com", "ab1234", "Alice Example", True),
            ("a.example@example.com",),
        ),
    ]
    assert upper == alice  # uid compares ignoring case on the server
    assert juergen[0].aliases == ("juergen@example.com",)
    assert juergen[0].account.display_name == "Jürgen Müller"
    assert off[0].account.enabled is False
    assert unknown == []
    assert injected == [[]] * len(INJECTIONS)


def test_ldap_aliases_come_from_the_attributes_the_filter_matches(ldap: Slapd) -> None:
    # A filter on mail alone: mailAlternateAddress is not an address of the account here.
    (found,) = _run(_ldap(ldap, filter="(mail={address})"), "mu01")
    assert found == [
        LoginEntry(Account("juergen.mueller@example.com", "mu01", "Jürgen Müller", True), ())
    ]


def test_ldap_aliases_with_a_prefix_as_in_active_directory(ldap: Slapd) -> None:
    """proxyAddresses-style values: ``smtp:`` stripped, other kinds (X400) left out."""
    directory = _ldap(ldap, filter="(|(mail={address})(description=smtp:{address}))")
    (found,) = _run(directory, "ab1234")
    second = next(e for e in found if e.account.address == "alice.lab@example.com")
    assert second.aliases == ("lab.alias@example.com",)


def test_ldap_login_attribute_is_configurable(ldap: Slapd) -> None:
    (found,) = _run(_ldap(ldap, attributes={"login": "cn", "display_name": "sn"}), "Jürgen Müller")
    assert _addresses(found) == ["juergen.mueller@example.com"]
    assert found[0].account.login == "Jürgen Müller"


def test_login_filter_is_an_equality_match_on_an_entry_with_an_address() -> None:
    assert login_filter(OFFLINE, "jd*)(x") == (
        "(&(uid=jd\\2a\\29\\28x)(|(mail=*)(mailAlternateAddress=*)))"
    )
    single = OFFLINE.model_copy(update={"filter": "(&(objectClass=person)(mail={address}))"})
    assert login_filter(single, "jdoe") == "(&(uid=jdoe)(mail=*))"
    assert address_attributes("(uid={localpart})") == (("mail", ""),)
    ad = "(&(objectCategory=person)(|(mail={address})(proxyAddresses=smtp:{address})))"
    assert address_attributes(ad) == (("mail", ""), ("proxyAddresses", "smtp:"))


@given(st.text(min_size=1, max_size=64))
def test_a_login_never_adds_a_clause(login: str) -> None:
    """Whatever the login, the filter has exactly its three clauses: no ``*`` or parenthesis
    from the value survives escaping."""
    text = login_filter(OFFLINE, login)
    value = text[len("(&(uid=") : text.index(")(|(mail=*)")]
    assert not set(value) & set("*()\x00")
    assert text.endswith(")(|(mail=*)(mailAlternateAddress=*)))")


# -- SQL ------------------------------------------------------------------------------------

LOGIN_QUERY = (
    "SELECT username AS address, username AS login, name AS display_name, active AS enabled "
    "FROM mailbox WHERE username = :login"
)


@pytest.fixture(scope="module", params=["postgres", "mariadb"])
def engine(request: pytest.FixtureRequest) -> Iterator[postgres.Postgres | mariadb.MariaDB]:
    if request.param == "postgres":
        with postgres.running_postgres(users=5) as pg:
            yield pg
    else:
        with mariadb.running_mariadb(users=5) as maria:
            yield maria


def test_sql_login_query_binds_the_login(engine: postgres.Postgres | mariadb.MariaDB) -> None:
    config = sql_config(engine, login_query=LOGIN_QUERY)
    alice, unknown, *injected = _run(
        SqlDirectory(config, read_password(config)), "alice@example.com", "nobody", *INJECTIONS
    )
    assert alice == [
        LoginEntry(Account("alice@example.com", "alice@example.com", "Alice Example", True))
    ]
    assert alice[0].aliases is None  # not listed by this backend
    assert unknown == []
    assert injected == [[]] * len(INJECTIONS)


def test_sql_without_login_query_cannot_search(engine: postgres.Postgres | mariadb.MariaDB) -> None:
    config = sql_config(engine)
    with pytest.raises(NoLoginSearch, match="set \\[directory\\] login_query"):
        _run(SqlDirectory(config, read_password(config)), "alice@example.com")


def test_sql_login_query_without_an_address_column(
    engine: postgres.Postgres | mariadb.MariaDB,
) -> None:
    query = "SELECT username AS login FROM mailbox WHERE username = :login"
    config = sql_config(engine, login_query=query)
    with pytest.raises(DirectoryError, match="no column named 'address'"):
        _run(SqlDirectory(config, read_password(config)), "alice@example.com")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT address FROM mailbox WHERE username = :address", "must use the bound"),
        ("DELETE FROM mailbox WHERE username = :login", "must be a SELECT"),
    ],
)
def test_login_query_is_checked_at_load(query: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SqlConfig.model_validate(
            {
                "backend": "sql",
                "url": "sqlite+aiosqlite:///x.db",
                "query": "SELECT 1 AS login WHERE :address = 1",
                "login_query": query,
            }
        )
