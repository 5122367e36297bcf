"""Wildcards and filter injection against the real slapd: never a match one should not get.

Each hostile address goes two ways: through the address parser (what the server does), and
straight into the backend as an :class:`Address` built by hand, so that the LDAP layer's own
escaping is tested even for characters the parser would refuse.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.address import Address, AddressError, parse_address
from mailwarden.directory.base import Account
from mailwarden.directory.factory import read_password
from mailwarden.directory.filter import escape_value, render_filter
from mailwarden.directory.ldap import LdapDirectory
from tests.directory.helpers import ldap_config
from tests.fixtures.slapd import Slapd

HOSTILE_LOCALPARTS = [
    "*",
    "user09*",
    "user*",
    "*user09",
    "a*e",
    "alice)(uid=*",
    "alice)(|(uid=*",
    "*)(uid=*",
    ")(uid=*",
    "alice)(objectClass=*",
    "\\2a",
    "x\\2a",  # the entry whose address really contains backslash-2-a
    "\\2A",
    "alice\\29",
    "alice\x00",
    "alice\x00)(uid=*",
    "star\\2auser",
    "star*",
    "p(a",
    "p(a)ren*",
    "back\\5cslash",
    "jürgen*",
    "ü*",
    "a" * 64,
    "a" * 300,
    "(",
    ")",
    "\\",
    "%2a",
    "alice%00",
]


def _expected(slapd: Slapd, key: str) -> str | None:
    """The uid of the one entry whose mail or alias equals ``key`` exactly (case-insensitive)."""
    owners = [
        p.uid
        for p in slapd.entries
        if key.lower() in (p.mail.lower(), *(a.lower() for a in p.aliases))
    ]
    return owners[0] if len(owners) == 1 else None


async def _lookup_all(slapd: Slapd, addresses: list[Address]) -> list[Account | None]:
    config = ldap_config(slapd)
    directory = LdapDirectory(config, read_password(config))
    try:
        return [await directory.lookup(a) for a in addresses]
    finally:
        await directory.close()


def test_hostile_addresses_never_match_someone_else(slapd: Slapd) -> None:
    raw = [Address(lp, "example.com") for lp in HOSTILE_LOCALPARTS]
    parsed = []
    for lp in HOSTILE_LOCALPARTS:
        try:
            parsed.append(parse_address(f"{lp}@example.com"))
        except AddressError:
            continue
    addresses = raw + parsed
    results = asyncio.run(_lookup_all(slapd, addresses))
    for address, account in zip(addresses, results, strict=True):
        expected = _expected(slapd, address.key)
        got = account.login if account else None
        assert got == expected, f"{address.key!r} matched {got!r}, expected {expected!r}"
    # The literal entries with special characters are found by their exact address only.
    by_key = {a.key: r for a, r in zip(addresses, results, strict=True)}
    star = by_key.get("star*@example.com")
    assert star is None
    found = asyncio.run(
        _lookup_all(
            slapd,
            [
                Address("star*user", "example.com"),
                Address("x\\2a", "example.com"),
                Address("p(a)ren", "example.com"),
                Address("back\\slash", "example.com"),
            ],
        )
    )
    assert [a.login if a else None for a in found] == ["star01", "esc01", "paren01", "bs01"]


def test_wildcard_does_not_list_users(slapd: Slapd) -> None:
    """automx2's bug: ``user09*@…`` must not reveal user09's (or anybody's) login."""
    results = asyncio.run(
        _lookup_all(slapd, [parse_address("user09*@example.com"), parse_address("*@example.com")])
    )
    assert results == [None, None]


def test_long_address_is_bounded(slapd: Slapd) -> None:
    address = Address("a" * 5000, "example.com")
    assert asyncio.run(_lookup_all(slapd, [address])) == [None]


_ALPHABET = st.sampled_from([*list("ab*()\\\x00ü.-_=|&!~"), "user09", "alice", "\\2a"])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(_ALPHABET, min_size=1, max_size=8).map("".join))
def test_random_hostile_localparts(slapd: Slapd, localpart: str) -> None:
    address = Address(localpart, "example.com")
    (account,) = asyncio.run(_lookup_all(slapd, [address]))
    expected = _expected(slapd, address.key)
    assert (account.login if account else None) == expected


@given(st.text(max_size=200))
def test_escaped_value_has_no_filter_syntax(value: str) -> None:
    escaped = escape_value(value)
    assert escaped.isascii()
    assert escaped.isprintable()
    assert not any(c in escaped for c in "*()\x00")
    # Every backslash starts a two-hex-digit escape; decoding gives the UTF-8 bytes back.
    out = bytearray()
    i = 0
    while i < len(escaped):
        if escaped[i] == "\\":
            out.append(int(escaped[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(escaped[i].encode())
            i += 1
    assert out.decode("utf-8", "surrogatepass") == value


def test_render_filter_escapes_each_placeholder() -> None:
    text = render_filter(
        "(|(mail={address})(&(uid={localpart})(dc={domain})))", Address("a*)(x", "example.org")
    )
    assert text == "(|(mail=a\\2a\\29\\28x@example.org)(&(uid=a\\2a\\29\\28x)(dc=example.org)))"
