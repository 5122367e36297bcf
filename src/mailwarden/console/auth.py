"""The three ways into the console, each returning an :class:`Operator` or None.

* local: a name and password checked against the argon2id hashes of the users file;
* ldap: the operator's entry is found with the service account, the operator's own password
  is checked by binding as that entry, and the role comes from group membership;
* proxy: an SSO proxy in front has authenticated the person and names them in a header; the
  header is believed only on connections from the configured proxy addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailwarden.console.config import ConsoleConfig, ConsoleLdap, ConsoleProxy
from mailwarden.console.sessions import Operator
from mailwarden.console.users import MAX_PASSWORD, NAME_RE, Role, load_users, verify
from mailwarden.directory.filter import escape_value
from mailwarden.errors import ConfigError
from mailwarden.site.model import Site

log = logging.getLogger("mailwarden.console")
MAX_LOGIN = 128


class PasswordAuth(Protocol):
    method: str

    async def authenticate(self, login: str, password: str) -> Operator | None: ...


class LocalAuth:
    """Accounts from the users file, re-read when it changes (``console user add`` while the
    console runs takes effect at the next login)."""

    method = "local"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._users = load_users(path)
        self._remember_stamp()

    def _remember_stamp(self) -> None:
        try:
            st = self.path.stat()
            self._stamp = (st.st_mtime, st.st_size)
        except OSError:
            self._stamp = None

    def _reload(self) -> None:
        try:
            st = self.path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            try:
                self._users = load_users(self.path)
            except ConfigError as exc:  # keep the accounts we had; say why loudly
                log.error("console users file not reloaded: %s", exc.message)
            self._stamp = stamp

    async def authenticate(self, login: str, password: str) -> Operator | None:
        self._reload()
        user = await asyncio.to_thread(verify, self._users, login, password)
        return None if user is None else Operator(user.name, user.role, "local")


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """Where and how to bind: ``[console.ldap]`` completed from an LDAP ``[directory]``."""

    uri: str
    starttls: bool
    ca_file: Path | None
    base_dn: str
    bind_dn: str | None
    password: str | None
    config: ConsoleLdap


def ldap_settings(site: Site, config: ConsoleLdap) -> LdapSettings:
    """``config`` with its unset keys taken from the site's directory when that is LDAP."""
    directory = site.directory
    is_ldap = getattr(directory, "backend", "") == "ldap"
    servers: tuple[str, ...] = getattr(directory, "servers", ()) if is_ldap else ()
    uri = config.uri or (servers[0] if servers else None)
    base_dn = config.base_dn or (getattr(directory, "base_dn", None) if is_ldap else None)
    if uri is None or base_dn is None:
        raise ConfigError(
            "[console.ldap] needs uri and base_dn (or an LDAP [directory] to take them from)"
        )
    password: str | None = None
    bind_dn = config.bind_dn
    if config.password_file is not None:
        try:
            lines = config.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(
                f"console.ldap.password_file: cannot read {config.password_file}: {exc.strerror}"
            ) from None
        password = lines[0] if lines else ""
    elif bind_dn is None and is_ldap:
        from mailwarden.directory.factory import read_password

        bind_dn = getattr(directory, "bind_dn", None)
        password = read_password(directory)  # type: ignore[arg-type]
    starttls = config.starttls
    if starttls is None:
        starttls = bool(getattr(directory, "starttls", True)) if is_ldap else False
    ca_file = config.ca_file or (getattr(directory, "ca_file", None) if is_ldap else None)
    return LdapSettings(uri, starttls, ca_file, base_dn, bind_dn, password, config)


class LdapAuth:
    method = "ldap"

    def __init__(self, settings: LdapSettings) -> None:
        from mailwarden.directory.ldap_client import require_ldap_client

        require_ldap_client('console.auth = "ldap"')
        self.settings = settings

    def _client(self, user: str | None, password: str | None) -> object:
        import bonsai

        s = self.settings
        client = bonsai.LDAPClient(s.uri, tls=s.uri.startswith("ldap://") and s.starttls)
        if s.ca_file is not None:
            client.set_ca_cert(str(s.ca_file))
        client.set_ignore_referrals(True)
        if user is not None:
            client.set_credentials("SIMPLE", user=user, password=password or "")
        return client

    async def authenticate(self, login: str, password: str) -> Operator | None:
        import bonsai
        import bonsai.errors

        if not password or not NAME_RE.fullmatch(login):
            return None  # an empty password would be an anonymous bind: never a login
        s, c = self.settings, self.settings.config
        try:
            async with asyncio.timeout(c.timeout):
                service = self._client(s.bind_dn, s.password)
                conn = await service.connect(is_async=True, timeout=c.timeout)  # type: ignore[attr-defined]
                try:
                    found = await conn.search(
                        s.base_dn,
                        bonsai.LDAPSearchScope.SUBTREE,
                        c.user_filter.replace("{login}", escape_value(login)),
                        attrlist=["1.1"],
                        sizelimit=2,
                    )
                    if len(found) != 1:
                        return None
                    dn = str(found[0].dn)
                    user_conn = await self._client(dn, password[:MAX_PASSWORD]).connect(  # type: ignore[attr-defined]
                        is_async=True, timeout=c.timeout
                    )
                    user_conn.close()
                    role = await self._role(conn, dn)
                finally:
                    conn.close()
        except bonsai.errors.AuthenticationError:
            return None
        except (bonsai.errors.LDAPError, TimeoutError, OSError) as exc:
            log.error("console LDAP login of %r failed: %s", login, exc)
            raise ConfigError(f"LDAP {s.uri}: {type(exc).__name__}: {exc}") from None
        return None if role is None else Operator(login, role, "ldap")

    async def _role(self, conn: object, dn: str) -> Role | None:
        import bonsai

        c = self.settings.config
        member = f"({c.member_attribute}={escape_value(dn)})"
        order: tuple[tuple[Role, str | None], ...] = (
            ("admin", c.admin_group),
            ("helpdesk", c.helpdesk_group),
        )
        for role, group in order:
            if group is None:
                continue
            hit = await conn.search(  # type: ignore[attr-defined]
                group, bonsai.LDAPSearchScope.BASE, member, attrlist=["1.1"]
            )
            if hit:
                return role
        return None


def proxy_operator(proxy: ConsoleProxy, client: str, value: str | None) -> Operator | None:
    """The operator a trusted proxy names, or None (untrusted peer, no or bad header, no role)."""
    if not value or not trusted(client, proxy.trusted):
        return None
    name = value.strip()
    if len(name) > MAX_LOGIN or not NAME_RE.fullmatch(name):
        return None
    if name in proxy.admins:
        return Operator(name, "admin", "proxy")
    if "*" in proxy.helpdesk or name in proxy.helpdesk:
        return Operator(name, "helpdesk", "proxy")
    return None


def trusted(client: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def password_auth(site: Site, config: ConsoleConfig) -> PasswordAuth | None:
    """The form login of ``config`` (None with proxy authentication)."""
    if config.auth == "local":
        return LocalAuth(config.users_file)
    if config.auth == "ldap":
        assert config.ldap is not None
        return LdapAuth(ldap_settings(site, config.ldap))
    return None
