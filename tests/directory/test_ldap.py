"""The LDAP backend against a real slapd: lookups, TLS, credentials, failover, recovery."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailwarden.address import Address, parse_address
from mailwarden.directory.base import Account
from mailwarden.directory.config import LdapConfig
from mailwarden.directory.factory import read_password
from mailwarden.directory.ldap import (
    LdapAuthError,
    LdapDirectory,
    LdapTlsError,
    LdapUnreachable,
)
from mailwarden.errors import DirectoryError
from tests.directory.helpers import ldap_config
from tests.fixtures.net import free_port
from tests.fixtures.slapd import Slapd, running_slapd


def _directory(config: LdapConfig) -> LdapDirectory:
    return LdapDirectory(config, read_password(config))


async def _lookup(config: LdapConfig, *addresses: str) -> list[Account | None]:
    directory = _directory(config)
    try:
        return [await directory.lookup(parse_address(a)) for a in addresses]
    finally:
        await directory.close()


def test_primary_alias_unknown_disabled_duplicate(slapd: Slapd) -> None:
    found = asyncio.run(
        _lookup(
            ldap_config(slapd),
            "alice@example.com",
            "A.Example@Example.COM",
            "Juergen.Mueller@example.com",
            "juergen@example.com",
            "nobody@example.com",
            "disabled@example.com",
            "shared@example.com",
            "user0007@example.com",
        )
    )
    alice, alias, jm, jm_alias, unknown, disabled, shared, plain = found
    assert alice == Account("alice@example.com", "ab1234", "Alice Example", True)
    assert alias is not None
    assert alias.login == "ab1234"
    assert jm is not None
    assert jm.login == "mu01"
    assert jm.display_name == "Jürgen Müller"
    assert jm_alias is not None
    assert jm_alias.login == "mu01"
    assert unknown is None
    assert disabled is not None
    assert disabled.enabled is False
    assert shared is None  # two entries match: never guess
    assert plain is not None
    assert plain.login == "zz0007"


def test_starttls_with_test_ca(slapd: Slapd) -> None:
    config = ldap_config(slapd, starttls=True, ca_file=slapd.tls.ca_file)
    assert asyncio.run(_lookup(config, "alice@example.com"))[0] is not None


def test_ldaps_with_test_ca(slapd: Slapd) -> None:
    config = ldap_config(slapd, servers=[slapd.ldaps_url], ca_file=slapd.tls.ca_file)
    assert asyncio.run(_lookup(config, "alice@example.com"))[0] is not None


def test_ldaps_untrusted_certificate_is_refused(slapd: Slapd) -> None:
    config = ldap_config(slapd, servers=[slapd.ldaps_url], ca_file=slapd.tls.other_ca_file)
    with pytest.raises(LdapTlsError, match="TLS handshake failed"):
        asyncio.run(_lookup(config, "alice@example.com"))


def test_starttls_untrusted_certificate_is_refused(slapd: Slapd) -> None:
    config = ldap_config(slapd, starttls=True, ca_file=slapd.tls.other_ca_file)
    with pytest.raises(LdapTlsError):
        asyncio.run(_lookup(config, "alice@example.com"))


def test_verification_can_be_turned_off_explicitly(slapd: Slapd) -> None:
    config = ldap_config(
        slapd,
        servers=[slapd.ldaps_url],
        ca_file=slapd.tls.other_ca_file,
        verify_certificate=False,
    )
    assert asyncio.run(_lookup(config, "alice@example.com"))[0] is not None


def test_wrong_password(slapd: Slapd, tmp_path) -> None:
    bad = tmp_path / "bad.secret"
    bad.write_text("not-the-password\n")
    with pytest.raises(LdapAuthError, match="invalid credentials") as info:
        asyncio.run(_lookup(ldap_config(slapd, password_file=bad), "alice@example.com"))
    assert "not-the-password" not in info.value.message


def test_unreachable_server() -> None:
    port = free_port()
    config = LdapConfig.model_validate(
        {
            "backend": "ldap",
            "servers": [f"ldap://127.0.0.1:{port}"],
            "starttls": False,
            "base_dn": "dc=example,dc=com",
            "connect_timeout": 1.0,
        }
    )
    with pytest.raises(LdapUnreachable, match=str(port)):
        asyncio.run(_lookup(config, "alice@example.com"))


def test_failover_to_second_server(slapd: Slapd) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    config = ldap_config(slapd, servers=[dead, slapd.url])

    async def run() -> str:
        directory = _directory(config)
        try:
            entries, trace = await directory.search(parse_address("alice@example.com"))
            assert entries is not None
            assert len(entries) == 1
            return trace.server
        finally:
            await directory.close()

    assert asyncio.run(run()) == slapd.url


def test_anonymous_bind_sees_nothing(slapd: Slapd) -> None:
    """The ACL gives anonymous no read access: proves lookups really use the bind DN."""
    config = ldap_config(slapd, bind_dn=None, password_file=None)
    assert asyncio.run(_lookup(config, "alice@example.com")) == [None]


def test_pool_survives_a_server_restart(slapd: Slapd) -> None:
    config = ldap_config(slapd)

    async def run() -> list[Account | None]:
        directory = _directory(config)
        try:
            first = await directory.lookup(parse_address("alice@example.com"))
            slapd.stop()
            with pytest.raises(DirectoryError):
                await directory.lookup(parse_address("alice@example.com"))
            slapd.start()
            second = await directory.lookup(parse_address("alice@example.com"))
            return [first, second]
        finally:
            await directory.close()

    first, second = asyncio.run(run())
    assert first == second
    assert first is not None


def test_hung_server_times_out(slapd: Slapd) -> None:
    config = ldap_config(slapd, timeout=0.5)

    async def run() -> float:
        directory = _directory(config)
        try:
            await directory.lookup(parse_address("alice@example.com"))  # pooled connection
            slapd.pause()
            started = time.monotonic()
            try:
                with pytest.raises(DirectoryError, match="timed out"):
                    await directory.lookup(parse_address("user0001@example.com"))
            finally:
                slapd.resume()
            return time.monotonic() - started
        finally:
            await directory.close()

    assert asyncio.run(run()) < 2.0


def test_concurrent_lookups_share_the_pool(slapd: Slapd) -> None:
    config = ldap_config(slapd, pool_size=4)

    async def run() -> list[Account | None]:
        directory = _directory(config)
        try:
            return list(
                await asyncio.gather(
                    *(
                        directory.lookup(Address(f"user{i % 40 + 1:04d}", "example.com"))
                        for i in range(200)
                    )
                )
            )
        finally:
            await directory.close()

    results = asyncio.run(run())
    assert all(r is not None and r.login == f"zz{i % 40 + 1:04d}" for i, r in enumerate(results))


def test_filter_with_localpart_and_domain(slapd: Slapd) -> None:
    config = ldap_config(slapd, filter="(&(uid=*)(mail={localpart}@{domain}))")
    assert asyncio.run(_lookup(config, "alice@example.com"))[0] is not None


def test_password_never_in_repr(slapd: Slapd) -> None:
    directory = _directory(ldap_config(slapd))
    assert "service-secret" not in repr(directory)


def test_failover_when_the_first_server_dies(slapd: Slapd, tmp_path) -> None:
    """Pooled connections to the first server break; the next search goes to the second."""
    with running_slapd(tmp_path / "second") as second:
        config = ldap_config(slapd, servers=[slapd.url, second.url])

        async def run() -> list[str]:
            directory = _directory(config)
            servers = []
            try:
                for stop_first in (False, True):
                    if stop_first:
                        slapd.stop()
                    entries, trace = await directory.search(parse_address("alice@example.com"))
                    assert entries is not None
                    assert len(entries) == 1
                    servers.append(trace.server)
            finally:
                slapd.start()
                await directory.close()
            return servers

        assert asyncio.run(run()) == [slapd.url, second.url]
