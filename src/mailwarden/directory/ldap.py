"""The LDAP directory: OpenLDAP, Active Directory or any LDAPv3 server.

Built on bonsai (OpenLDAP's libldap underneath, native asyncio): every search is an
asynchronous libldap operation on the event loop, so a lookup costs one round trip on a pooled,
already bound connection, never a connect, a bind or a schema download.

Safety: the address is escaped into the filter (:mod:`mailwarden.directory.filter`); a search
asks for at most two entries, and more than one match counts as unknown (and is logged), so a
filter that is broader than the operator meant never hands out someone else's login. TLS
certificates are verified unless the site file explicitly says otherwise.

Failover: servers are tried in order when a connection is opened; a pooled connection that
breaks (server restarted) is dropped and the search is retried once on a fresh one.

bonsai is the optional extra ``mailwarden[ldap]`` (it has no binary wheels): this module is
imported only by :func:`mailwarden.directory.factory.open_backend`, after
:func:`~mailwarden.directory.ldap_client.require_ldap_client` has checked that it loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import bonsai
import bonsai.errors
from bonsai.asyncio import AIOLDAPConnection

from mailwarden.address import MAX_ADDRESS, Address
from mailwarden.directory.base import MAX_BY_LOGIN, Account, LoginEntry
from mailwarden.directory.config import LdapConfig
from mailwarden.directory.filter import FilterError, escape_value, render_filter
from mailwarden.errors import DirectoryError

log = logging.getLogger("mailwarden.directory.ldap")

_SCOPES = {"base": bonsai.LDAPSearchScope.BASE, "one": bonsai.LDAPSearchScope.ONELEVEL}
MAX_VALUE = 1024
"""Longest attribute value taken from the directory (login and display name)."""


class LdapTlsError(DirectoryError):
    """The server answered but the TLS handshake failed (untrusted or mismatched certificate)."""

    code = "DIRECTORY-TLS"


class LdapAuthError(DirectoryError):
    """The bind DN or password was refused."""

    code = "DIRECTORY-AUTH"


class LdapUnreachable(DirectoryError):
    """No configured server accepted a connection."""

    code = "DIRECTORY-UNREACHABLE"


class LdapFilterError(DirectoryError):
    """The server refused the filter (bad syntax or an attribute it does not know)."""

    code = "DIRECTORY-FILTER"


class _Connection(AIOLDAPConnection):
    """bonsai's asyncio connection, polling for results on read readiness only.

    bonsai waits for its socket to become readable *or writable*; an idle socket is always
    writable, so every pending search would spin the event loop until its answer arrives (at
    load, most CPU goes there and every request waits). Once the connection is open and bound
    (``steady``), an answer can only arrive as readable bytes, so we wait for exactly that.
    """

    steady = False

    async def _poll(self, msg_id: int, timeout: float | None = None) -> Any:
        if not self.steady:
            return await super()._poll(msg_id, timeout)  # type: ignore[no-untyped-call]
        fetch = super(AIOLDAPConnection, self).get_result
        result = fetch(msg_id)
        if result is not None:
            return result
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        fd = self.fileno()

        def readable() -> None:
            if future.done():
                return
            try:
                answer = fetch(msg_id)
            except bonsai.errors.LDAPError as exc:
                future.set_exception(exc)
                return
            if answer is not None:
                future.set_result(answer)

        def expired() -> None:
            if not future.done():
                future.set_exception(TimeoutError())

        # One timer on the one future (asyncio.wait_for would add a second future and its
        # callbacks to every search).
        timer = loop.call_later(timeout, expired) if timeout is not None else None
        loop.add_reader(fd, readable)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(OSError, ValueError):  # fd already closed by libldap
                loop.remove_reader(fd)


@dataclass(slots=True)
class _Conn:
    conn: AIOLDAPConnection
    server: str


@dataclass(frozen=True, slots=True)
class LookupTrace:
    """What ``mailwarden directory check`` shows: who answered, how long it took."""

    server: str
    seconds: float
    filter: str
    matches: int


def _first(entry: bonsai.LDAPEntry, attribute: str | None) -> str | None:
    if attribute is None:
        return None
    values = entry.get(attribute)
    if not values:
        return None
    value = values[0]
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:MAX_VALUE]


_ADDRESS_ASSERTION = re.compile(r"\(([A-Za-z][A-Za-z0-9-]{0,63})=([^(){}*=\\]{0,32})\{address\}\)")


def address_attributes(template: str) -> tuple[tuple[str, str], ...]:
    """The attributes the filter compares with the whole address, in order, each with the
    prefix its values carry: where an entry's addresses are (``mail`` and
    ``mailAlternateAddress`` for the default filter; ``proxyAddresses`` with ``smtp:`` for
    Active Directory). A filter on ``{localpart}`` alone names none; then ``mail`` is read."""
    found = dict.fromkeys((m.group(1), m.group(2)) for m in _ADDRESS_ASSERTION.finditer(template))
    return tuple(found) or (("mail", ""),)


def login_filter(config: LdapConfig, login: str) -> str:
    """``(&(uid=LOGIN)(|(mail=*)(…=*)))``: the login escaped (RFC 4515), and only entries
    with an address (a group or a machine with the same uid is not an account)."""
    names = dict.fromkeys(name for name, _ in address_attributes(config.filter))
    present = "".join(f"({name}=*)" for name in names)
    has_address = present if len(names) == 1 else f"(|{present})"
    return f"(&({config.attributes.login}={escape_value(login)}){has_address})"


def _addresses(entry: bonsai.LDAPEntry, attributes: tuple[tuple[str, str], ...]) -> list[str]:
    """Pure: the entry's addresses, lower-cased, in the order of ``attributes``; a value
    without the attribute's prefix (an ``X400:`` proxy address) is not one."""
    found: list[str] = []
    for attribute, prefix in attributes:
        for value in entry.get(attribute) or []:
            raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            text = raw.strip()[:MAX_VALUE]
            if prefix:
                if not text.lower().startswith(prefix.lower()):
                    continue
                text = text[len(prefix) :]
            text = text.lower()
            if "@" in text and text not in found:
                found.append(text)
    return found


def _reachable(url: str, timeout: float) -> bool:
    """Whether a plain TCP connection to ``url``'s host and port succeeds."""
    parts = urlsplit(url)
    port = parts.port or (636 if parts.scheme == "ldaps" else 389)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


class LdapDirectory:
    """Address → account over LDAP with a small pool of bound connections."""

    name = "ldap"

    def __init__(self, config: LdapConfig, password: str | None) -> None:
        self.config = config
        self._password = password
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(config.pool_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        attrs = config.attributes
        self._attrlist = [a for a in (attrs.login, attrs.display_name, attrs.enabled) if a]
        self._enabled_values = {v.casefold() for v in attrs.enabled_values}
        self._scope = _SCOPES.get(config.scope, bonsai.LDAPSearchScope.SUBTREE)
        self._address_attributes = address_attributes(config.filter)

    def __repr__(self) -> str:  # never show the password
        return f"LdapDirectory(servers={self.config.servers!r})"

    def _client(self, url: str) -> bonsai.LDAPClient:
        starttls = url.startswith("ldap://") and self.config.starttls
        client = bonsai.LDAPClient(url, tls=starttls)
        client.set_async_connection_class(_Connection)
        if self.config.bind_dn:
            client.set_credentials("SIMPLE", user=self.config.bind_dn, password=self._password)
        client.set_cert_policy("demand" if self.config.verify_certificate else "never")
        if self.config.ca_file is not None:
            client.set_ca_cert(str(self.config.ca_file))
        client.set_ignore_referrals(True)
        client.set_auto_page_acquire(False)
        return client

    async def _connect(self) -> _Conn:
        """A new bound connection to the first server that accepts one."""
        errors: list[str] = []
        last: DirectoryError | None = None
        for url in self.config.servers:
            try:
                conn = await self._client(url).connect(
                    is_async=True, timeout=self.config.connect_timeout
                )
                conn.steady = True
                return _Conn(conn, url)
            except bonsai.errors.AuthenticationError:
                raise LdapAuthError(
                    f"{url}: bind as {self.config.bind_dn!r} refused: invalid credentials"
                ) from None
            except (bonsai.errors.LDAPError, TimeoutError, OSError) as exc:
                tls = url.startswith("ldaps://") or self.config.starttls
                if tls and isinstance(exc, bonsai.errors.ConnectionError):
                    reachable = await asyncio.to_thread(
                        _reachable, url, self.config.connect_timeout
                    )
                    if reachable:
                        last = LdapTlsError(
                            f"{url}: TLS handshake failed (is the certificate signed by "
                            f"{self.config.ca_file or 'the system CA store'} and issued for "
                            "this host name?)"
                        )
                        errors.append(last.message)
                        continue
                reason = "timed out" if isinstance(exc, TimeoutError) else _reason(exc)
                errors.append(f"{url}: {reason}")
        if last is not None and len(errors) == 1:
            raise last
        raise LdapUnreachable("no LDAP server answered: " + "; ".join(errors))

    async def _search(
        self, conn: _Conn, text: str, attrlist: list[str], limit: int
    ) -> list[bonsai.LDAPEntry]:
        result = await conn.conn.search(
            self.config.base_dn,
            self._scope,
            text,
            attrlist=attrlist,
            timeout=self.config.timeout,
            sizelimit=limit,
        )
        return list(result)

    async def _run(
        self, text: str, attrlist: list[str], limit: int
    ) -> tuple[list[bonsai.LDAPEntry] | None, str]:
        """The entries ``text`` finds (None: more than ``limit``) and the server that answered,
        on a pooled connection; a pooled connection that broke is retried once on a new one."""
        self._bind_to_loop()
        async with self._slots:
            pooled = bool(self._idle)
            conn = self._idle.pop() if pooled else await self._connect()
            entries: list[bonsai.LDAPEntry] | None
            try:
                try:
                    entries = await self._search(conn, text, attrlist, limit)
                except (bonsai.errors.ConnectionError, bonsai.errors.ClosedConnection):
                    if not pooled:
                        raise
                    # The server went away since this connection was last used: start over.
                    conn.conn.close()
                    self._close_idle()
                    conn = await self._connect()
                    entries = await self._search(conn, text, attrlist, limit)
            except bonsai.errors.SizeLimitError:
                entries = None  # more entries match than asked for
            except DirectoryError:
                raise
            except (TimeoutError, bonsai.errors.TimeoutError):
                conn.conn.close()
                raise DirectoryError(
                    f"{conn.server}: search timed out after {self.config.timeout} s"
                ) from None
            except bonsai.errors.LDAPError as exc:
                conn.conn.close()
                if "filter" in str(exc).lower():
                    raise LdapFilterError(
                        f"{conn.server}: the server refused the filter {text!r}: {_reason(exc)}"
                    ) from None
                raise DirectoryError(f"{conn.server}: search failed: {_reason(exc)}") from None
            except BaseException:
                conn.conn.close()
                raise
            self._idle.append(conn)
        return entries, conn.server

    async def search(self, address: Address) -> tuple[list[bonsai.LDAPEntry] | None, LookupTrace]:
        """The entries matching ``address`` (None: more than one) and how they were found."""
        if len(address.key.encode("utf-8")) > MAX_ADDRESS:  # no such mailbox can exist
            return [], LookupTrace("-", 0.0, "", 0)
        try:
            text = render_filter(self.config.filter, address)
        except FilterError as exc:
            raise LdapFilterError(str(exc)) from None
        started = time.perf_counter()
        entries, server = await self._run(text, self._attrlist, 2)
        matches = 2 if entries is None else len(entries)
        trace = LookupTrace(server, time.perf_counter() - started, text, matches)
        return entries, trace

    async def by_login(self, login: str) -> list[LoginEntry]:
        """The entries whose login attribute is ``login`` (RFC 4515-escaped: an equality
        match, never a wildcard) and that have an address, with their other addresses."""
        if not login or len(login.encode("utf-8")) > MAX_VALUE:
            return []
        text = login_filter(self.config, login)
        attrlist = list(dict.fromkeys([*self._attrlist, *(a for a, _ in self._address_attributes)]))
        entries, _ = await self._run(text, attrlist, MAX_BY_LOGIN)
        if entries is None:
            raise DirectoryError(
                f"more than {MAX_BY_LOGIN} LDAP entries have {self.config.attributes.login}="
                f"{login[:64]!r}; search by address instead"
            )
        found = [e for e in (self._login_entry(entry) for entry in entries) if e is not None]
        return sorted(found, key=lambda e: e.account.address)

    def _login_entry(self, entry: bonsai.LDAPEntry) -> LoginEntry | None:
        """Pure: an entry as an account; its first address attribute's first value is the
        primary address, every other value of those attributes an alias."""
        addresses = _addresses(entry, self._address_attributes)
        login = _first(entry, self.config.attributes.login)
        if not addresses or not login:
            return None
        account = Account(
            address=addresses[0],
            login=login,
            display_name=_first(entry, self.config.attributes.display_name),
            enabled=self._enabled(entry),
        )
        return LoginEntry(account, tuple(addresses[1:]))

    def _enabled(self, entry: bonsai.LDAPEntry) -> bool:
        attrs = self.config.attributes
        if attrs.enabled is None:
            return True
        flag = _first(entry, attrs.enabled)
        return flag is None or flag.casefold() in self._enabled_values

    def account(self, address: Address, entries: list[bonsai.LDAPEntry] | None) -> Account | None:
        """Pure: the account for ``entries`` (exactly one match), else None."""
        if entries is None or len(entries) != 1:
            if entries is None or entries:
                log.warning(
                    "more than one LDAP entry matches %s: treated as unknown (check the filter)",
                    address.key,
                )
            return None
        entry = entries[0]
        attrs = self.config.attributes
        login = _first(entry, attrs.login)
        if not login:
            log.warning("LDAP entry %s has no %s: treated as unknown", entry.dn, attrs.login)
            return None
        return Account(
            address=address.key,
            login=login,
            display_name=_first(entry, attrs.display_name),
            enabled=self._enabled(entry),
        )

    async def lookup(self, address: Address) -> Account | None:
        entries, _ = await self.search(address)
        return self.account(address, entries)

    def _bind_to_loop(self) -> None:
        """Connections and the pool's semaphore belong to one event loop; a new loop (a new
        ``asyncio.run`` in tools and tests) starts with a fresh pool."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self._close_idle()
            self._slots = asyncio.Semaphore(self.config.pool_size)
            self._loop = loop

    def _close_idle(self) -> None:
        while self._idle:
            self._idle.pop().conn.close()

    async def close(self) -> None:
        self._close_idle()


def _reason(exc: BaseException) -> str:
    text = str(exc).split(" (0x")[0].strip()
    return text or type(exc).__name__
