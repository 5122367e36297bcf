"""The console's edge: the guard's store, the directory, the lock action and the audit
folder, opened once at start-up; each page's data is read here and handed to the pure views.

Every outside call is bounded by a timeout and turned into a message on the page when it
fails (a Redis outage shows as "store: unreachable", not as a 500).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailwarden.address import Address, AddressError, parse_address
from mailwarden.console.audit import AuditView, read_audit
from mailwarden.console.clients import ClientRow, client_rows
from mailwarden.directory.base import Account, Directory, LoginEntry, by_login
from mailwarden.errors import ConfigError, MailwardenError
from mailwarden.guard.actions import (
    ActionResult,
    Actor,
    Alerter,
    Locker,
    Released,
    Unlocked,
    lock_account,
    release,
    unlock_account,
)
from mailwarden.guard.config import GuardConfig
from mailwarden.guard.store.base import Event, HoldInfo, LockInfo, Store
from mailwarden.profiles.subject import subject_for_account
from mailwarden.site.model import Site

log = logging.getLogger("mailwarden.console")
TIMEOUT = 5.0
CHART_EVENTS = 20000
HISTORY = 200


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str


@dataclass(slots=True)
class OverviewData:
    locks: list[LockInfo] = field(default_factory=list)
    holds: list[HoldInfo] = field(default_factory=list)
    events: list[Event] | None = None
    """Every user's recent history (None: this store cannot list it)."""
    store: Health = Health(False, "no [guard] section")
    directory: Health = Health(False, "not checked")
    audit: AuditView = field(default_factory=AuditView)


@dataclass(slots=True)
class AccountData:
    query: str
    user: str
    """The guard's name for the account: the SASL login."""
    address: str | None = None
    account: Account | None = None
    aliases: tuple[str, ...] | None = None
    """None: the directory backend cannot list them."""
    directory_error: str = ""
    matches: list[LoginEntry] | None = None
    """For a login: the directory's accounts with that login (None: not searched)."""
    clients: list[ClientRow] = field(default_factory=list)
    clients_note: str = ""
    lock: LockInfo | None = None
    holds: list[HoldInfo] = field(default_factory=list)
    history: list[Event] = field(default_factory=list)
    store_error: str = ""


class Backend:
    """What the console reads and changes. Construct with :func:`open_backend`."""

    def __init__(
        self,
        site: Site,
        guard: GuardConfig | None,
        store: Store | None,
        directory: Directory,
        locker: Locker | None,
        alerter: Alerter | None,
        audit_dir: Path | None,
    ) -> None:
        self.site = site
        self.guard = guard
        self.store = store
        self.directory = directory
        self.locker = locker
        self.alerter = alerter
        self.audit_dir = audit_dir

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
        await self.directory.close()

    # -- reading ----------------------------------------------------------------------------

    async def store_health(self) -> Health:
        if self.store is None:
            return Health(False, "no [guard] section in the site file")
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.store.ping()
        except (MailwardenError, TimeoutError, OSError) as exc:
            return Health(False, _why(exc))
        return Health(True, self.store.name)

    async def directory_health(self) -> Health:
        probe = Address("postmaster", self.site.primary_domain)
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.directory.lookup(probe)
        except (MailwardenError, TimeoutError, OSError) as exc:
            return Health(False, _why(exc))
        return Health(True, self.site.directory.backend)

    async def overview(self, now: float) -> OverviewData:
        data = OverviewData()
        data.store, data.directory = await asyncio.gather(
            self.store_health(), self.directory_health()
        )
        data.audit = await asyncio.to_thread(read_audit, self.audit_dir)
        if self.store is None or not data.store.ok:
            return data
        try:
            async with asyncio.timeout(TIMEOUT):
                data.locks = sorted(await self.store.locks(), key=lambda x: -x.since)
                data.holds = sorted(await self.store.holds(), key=lambda h: -h.since)
                since = getattr(self.store, "events_since", None)
                if since is not None:
                    data.events = await since(now - 24 * 3600, CHART_EVENTS)
        except (MailwardenError, TimeoutError) as exc:
            data.store = Health(False, _why(exc))
        return data

    async def account(self, query: str) -> AccountData:
        """Everything about ``query``: an address (looked up in the directory) or a login."""
        query = query.strip()[:254]
        data = AccountData(query, query)
        if "@" in query:
            await self._directory_part(data)
        else:
            await self._login_part(data)
        if self.store is None:
            data.store_error = "no [guard] section in the site file"
            return data
        try:
            async with asyncio.timeout(TIMEOUT):
                reason = await self.store.locked(data.user)
                if reason is not None:
                    found = [x for x in await self.store.locks() if x.user == data.user]
                    data.lock = found[0] if found else LockInfo(data.user, reason, 0.0)
                data.holds = [h for h in await self.store.holds() if h.user == data.user]
                data.history = list(reversed(await self.store.history(data.user, HISTORY)))
        except (MailwardenError, TimeoutError) as exc:
            data.store_error = _why(exc)
        return data

    async def _directory_part(self, data: AccountData) -> None:
        try:
            address = parse_address(data.query)
        except AddressError as exc:
            data.directory_error = str(exc)
            return
        data.address = str(address)
        domain = self.site.domain(address.domain)
        if domain is None:
            data.directory_error = "not a domain of this site"
            return
        try:
            async with asyncio.timeout(TIMEOUT):
                account = await self.directory.lookup(address)
        except (MailwardenError, TimeoutError) as exc:
            data.directory_error = _why(exc)
            account = None
        data.account = account
        if account is not None:
            data.user = account.login
            data.aliases = await self._aliases(account)
        subject = subject_for_account(
            str(address), address.localpart, account, domain.config.unknown_address
        )
        if subject is None or subject.generic:
            data.clients_note = "refused" if subject is None else "generic"
        else:
            data.clients = client_rows(self.site, domain, subject, address)

    async def _login_part(self, data: AccountData) -> None:
        """A user name: the accounts whose login it is (the guard knows the account by it)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                data.matches = await by_login(self.directory, data.query)
        except (MailwardenError, TimeoutError) as exc:
            data.directory_error = _why(exc)
            return
        logins = {entry.account.login for entry in data.matches}
        if len(logins) == 1:
            data.user = logins.pop()  # "JDoe" typed, "jdoe" is what the guard knows

    async def _aliases(self, account: Account) -> tuple[str, ...] | None:
        """The account's other addresses, where the directory can list them (the reverse
        look-up by its login finds the entry that owns the address); None otherwise."""
        try:
            async with asyncio.timeout(TIMEOUT):
                entries = await by_login(self.directory, account.login)
        except (MailwardenError, TimeoutError):
            return None
        for entry in entries:
            if entry.aliases is not None and entry.owns(account.address):
                every = (entry.account.address, *entry.aliases)
                return tuple(a for a in every if a != account.address)
        return None

    # -- actions ------------------------------------------------------------------------------

    def _ready(self) -> tuple[Store, Locker, Alerter, GuardConfig]:
        store, locker, alerter, guard = self.store, self.locker, self.alerter, self.guard
        if store is None or locker is None or alerter is None or guard is None:
            raise ConfigError("no [guard] section in the site file")
        return store, locker, alerter, guard

    async def unlock(self, user: str, actor: Actor) -> Unlocked:
        store, locker, alerter, _ = self._ready()
        return await unlock_account(store, locker, alerter, user, actor)

    async def lock(self, user: str, reason: str, actor: Actor) -> ActionResult:
        store, locker, alerter, _ = self._ready()
        return await lock_account(store, locker, alerter, user, reason, actor)

    async def release(self, key: str, actor: Actor) -> list[Released]:
        store, _, _, guard = self._ready()
        return await release(store, guard, key, actor=actor)


def _why(exc: BaseException) -> str:
    if isinstance(exc, MailwardenError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT:g} s"
    return str(exc) or type(exc).__name__


def open_backend(site: Site, base_dir: Path, audit_dir: Path | None) -> Backend:
    """Open the store (not the memory store: it lives in the guard process only), the
    directory and the lock action; fail here, at start-up, with a clear message."""
    from mailwarden.directory.factory import open_directory
    from mailwarden.guard.service import open_store

    guard = site.guard
    store: Store | None = None
    locker: Locker | None = None
    alerter: Alerter | None = None
    if guard is not None:
        if guard.store == "memory":
            raise ConfigError(
                "[guard] store = 'memory' keeps its state inside the guard process; the "
                "console needs 'sqlite' or 'redis'"
            )
        locker = Locker(guard.lock)  # LDAP lock without its client: refused now
        alerter = Alerter(guard.alerts)
        store = open_store(guard, base_dir)
    return Backend(site, guard, store, open_directory(site.directory), locker, alerter, audit_dir)


def now() -> float:
    return time.time()
