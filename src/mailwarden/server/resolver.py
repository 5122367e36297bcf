"""Who is asking about which account: everything between a request's address and a renderer.

Every endpoint resolves the same way: the domain (from the typed address, or from the Host
header when no address is given), then the subject to render: a directory lookup (rate-limited
per client, bounded by the directory's deadline) and the site's unknown-address and outage
policies. The endpoints in :mod:`mailwarden.server.app` only parse their request and pick the
renderer; nothing here knows about HTTP beyond the Host header's bytes.

The client (the ASGI ``client`` pair of IP address and port, after trusted proxies) is passed
to each call that needs it, for the lookup token bucket: no request state lives in module
globals or context variables.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from urllib.parse import quote

from mailwarden.address import Address, normalise_domain, parse_address
from mailwarden.directory.base import Account, Directory
from mailwarden.errors import DirectoryError
from mailwarden.profiles.subject import GENERIC, Subject, subject_for_account
from mailwarden.server.metrics import Metrics
from mailwarden.server.ratelimit import TokenBuckets
from mailwarden.site.model import DomainView, Site

log = logging.getLogger("mailwarden.server")

Client = tuple[str, int] | None
"""The ASGI scope's ``client``: the peer's IP address and port, None when unknown."""

EXEMPT_CACHE_SIZE = 4096
ADDRESS_CACHE_SIZE = 4096
"""Parsed addresses with their domain kept per worker: clients repeat the same address on
every URL they probe and every retry; parsing cost more than the rest of a cached answer."""


class UnknownDomain(Exception):
    """The request names a domain this site does not serve."""

    def __init__(self) -> None:
        super().__init__("unknown domain")


def moved_address(address: Address, domain: DomainView) -> str:
    """The address a user of a domain that moved (``moved_to``) has at the new domain."""
    return f"{address.localpart}@{domain.config.moved_to}"


def moved_location(
    domain: DomainView, path: str, address: Address | None = None, **params: str
) -> str:
    """Where a request about a domain that moved is sent: the same ``path`` on the new
    domain's ``autoconfig.`` host, with the address rewritten to the new domain (as
    ``emailaddress``) and ``params`` after it, each value percent-encoded once."""
    location = f"https://autoconfig.{domain.config.moved_to}{path}"
    query = {} if address is None else {"emailaddress": moved_address(address, domain)}
    query.update(params)
    if query:
        location += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return location


class Resolver:
    """Domain, account and subject for a request; one per loaded site (a reload makes anew)."""

    def __init__(self, site: Site, directory: Directory, metrics: Metrics) -> None:
        self.site = site
        self.directory = directory
        self.metrics = metrics
        settings = site.server
        self.lookup_buckets = TokenBuckets(settings.lookup_rate, settings.lookup_burst)
        self._rate_exempt = tuple(
            ipaddress.ip_network(net, strict=False) for net in settings.lookup_rate_exempt
        )
        self._exempt_seen: dict[str, bool] = {}  # parsing the client IP cost more than a lookup
        self._parsed: dict[str, tuple[Address, DomainView]] = {}
        self._needs_directory = {
            name: view.needs_directory()
            for name in site.served_names()
            if (view := site.domain(name)) is not None
        }
        self._last_outage_log = 0.0

    # -- domains --------------------------------------------------------------------------

    def domain_from_host(self, raw: bytes | None) -> DomainView:
        """The served domain a ``Host`` header names, directly or as ``autoconfig.<domain>``
        (Thunderbird) or ``autodiscover.<domain>`` (Outlook's probe)."""
        host = (raw or b"").decode("latin-1").strip()
        if host.startswith("["):  # IPv6 literal: never a mail domain
            raise UnknownDomain
        host = host.rpartition(":")[0] if ":" in host else host
        try:
            name = normalise_domain(host)
        except Exception:
            raise UnknownDomain from None
        view = self.site.domain(name)
        if view is None:
            for prefix in ("autoconfig.", "autodiscover."):
                if name.startswith(prefix):
                    view = self.site.domain(name.removeprefix(prefix))
        if view is None:
            raise UnknownDomain
        return view

    def address_and_domain(self, text: str) -> tuple[Address, DomainView]:
        """The parsed address and its served domain (:class:`~mailwarden.address.AddressError`
        for an invalid address, :class:`UnknownDomain` for a domain not served)."""
        parsed = self._parsed.get(text)
        if parsed is not None:
            return parsed
        address = parse_address(text)
        domain = self.site.domain(address.domain)
        if domain is None:
            raise UnknownDomain
        if len(self._parsed) >= ADDRESS_CACHE_SIZE:  # bounded whatever clients send
            self._parsed.clear()
        self._parsed[text] = address, domain
        return address, domain

    # -- accounts -------------------------------------------------------------------------

    def _may_look_up(self, client: Client) -> bool:
        """Whether ``client`` has a token left (anti-enumeration)."""
        if not self.lookup_buckets.enabled or client is None:
            return True
        ip = client[0]
        if self._exempt(ip):
            return True
        if self.lookup_buckets.take(ip, time.monotonic()):
            return True
        self.metrics.throttled()
        return False

    def _exempt(self, client: str) -> bool:
        seen = self._exempt_seen.get(client)
        if seen is not None:
            return seen
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            exempt = False
        else:
            exempt = any(ip in net for net in self._rate_exempt)
        if len(self._exempt_seen) >= EXEMPT_CACHE_SIZE:  # bounded whatever clients connect
            self._exempt_seen.clear()
        self._exempt_seen[client] = exempt
        return exempt

    async def lookup(self, address: Address, domain: DomainView, client: Client) -> Account | None:
        """The enabled account for ``address`` (trying the canonical domain for aliases).

        Raises :class:`DirectoryError` when the directory gives no answer within the deadline
        (outage) or ``client`` used up its lookups; :meth:`subject_for` applies the outage
        policy then.
        """
        if not self._may_look_up(client):
            raise DirectoryError("lookups of this client are throttled")
        started = time.perf_counter()
        try:
            # The directory (its cache) bounds each wait for the backend by the deadline
            # itself; only a second lookup (alias domains) needs the rest of it set here.
            account = await self.directory.lookup(address)
            if account is None and domain.is_alias:
                left = self.site.directory.deadline - (time.perf_counter() - started)
                async with asyncio.timeout(max(left, 0.0)):
                    account = await self.directory.lookup(Address(address.localpart, domain.name))
        except (DirectoryError, TimeoutError) as exc:
            # Fail soft for users, loud for admins: a metric always, a log line at most 1/s.
            self.metrics.directory_error()
            now = time.monotonic()
            if now - self._last_outage_log >= 1.0:
                self._last_outage_log = now
                reason = exc.message if isinstance(exc, DirectoryError) else "deadline passed"
                log.error("directory lookup failed, answering per on_outage: %s", reason)
            raise DirectoryError("directory unavailable") from None
        finally:
            self.metrics.observe_lookup(time.perf_counter() - started)
        if account is None or not account.enabled:
            self.metrics.unknown_address()
            return None
        return account

    def needs_directory(self, domain: DomainView) -> bool:
        needed = self._needs_directory.get(domain.served)
        return domain.needs_directory() if needed is None else needed

    async def subject_for(
        self, address: Address, domain: DomainView, client: Client
    ) -> Subject | None:
        """The subject to render for ``address``; None when policy says to refuse."""
        typed = str(address)
        if not self.needs_directory(domain):
            return Subject(address=typed, localpart=address.localpart)
        try:
            account = await self.lookup(address, domain, client)
        except DirectoryError:
            if self.site.directory.on_outage == "generic":
                return GENERIC
            account = None
        return subject_for_account(typed, address.localpart, account, domain.config.unknown_address)
