"""Routes: which endpoint, which domain, which account — then a pure renderer.

One request reads straight through: path → endpoint handler → domain (from the address or the
Host header) → :meth:`AutoconfigApp.subject_for` (directory lookup, unknown-address policy) →
renderer → bytes. Nothing a client sends can produce a 5xx or a traceback: unexpected errors are
logged and answered with a short 500 text, and the hypothesis test in tests/ holds us to it.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hashlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import quote

from mailwarden.address import Address, AddressError, normalise_domain, parse_address
from mailwarden.directory.base import Account, Directory
from mailwarden.errors import DirectoryError
from mailwarden.profiles import autodiscover_json, outlook, thunderbird
from mailwarden.profiles.subject import GENERIC, Subject, subject_for_account
from mailwarden.server.cache import LRUCache
from mailwarden.server.http import (
    GET_HEAD,
    BadRequest,
    BodyTooLarge,
    QueryTooLong,
    Receive,
    Scope,
    Send,
    StatusSend,
    header,
    path_tail,
    query_params,
    read_body,
    respond,
)
from mailwarden.server.metrics import Metrics
from mailwarden.server.profile_routes import ProfileRoutes
from mailwarden.server.ratelimit import TokenBuckets
from mailwarden.site.model import DomainView, Site

log = logging.getLogger("mailwarden.server")

XML = thunderbird.CONTENT_TYPE.encode("ascii")
JSON = autodiscover_json.CONTENT_TYPE.encode("ascii")

AUTOCONFIG_PATHS = frozenset(
    {"/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"}
)
POX_PATH = "/autodiscover/autodiscover.xml"
JSON_PATH = "/autodiscover/autodiscover.json"
JSON_V1_PREFIX = "/autodiscover/autodiscover.json/v1.0/"

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("client", default=None)
"""The requesting client's IP (after trusted proxies), for the lookup token bucket."""

DOCUMENT_CACHE_SIZE = 4096
"""Rendered documents kept per worker (a few KiB each); see :mod:`mailwarden.server.cache`."""
POX_REQUEST_CACHE_SIZE = 1024
EXEMPT_CACHE_SIZE = 4096
ADDRESS_CACHE_SIZE = 4096
"""Parsed addresses with their domain kept per worker: clients repeat the same address on
every URL they probe and every retry; parsing cost more than the rest of a cached answer."""
POX_REQUEST_CACHE_MAX_BODY = 2048
"""Parsed POX request bodies kept per worker, only bodies up to this size (real ones are
about 350 bytes): Outlook sends the identical body for a user on every probe and retry."""


class _NotFound(Exception):
    """The request names a domain this site does not serve."""


def outlook_2007_warning(site: Site) -> list[str]:
    """Service sets whose Outlook 2007 users get an unencrypted setting (start-up warning).

    Outlook 2007 reads only the ``SSL`` flag, so it is told implicit TLS or nothing: a protocol
    the set offers only with STARTTLS reaches it unencrypted. SMTP is the usual case; IMAP and
    POP3 are checked the same way where the set offers them at all.
    """
    ports = {"smtp": 465, "imap": 993, "pop3": 995}
    return [
        f"service set {name!r} has no implicit-TLS {kind.upper()} server: Outlook 2007 cannot "
        f"be told to use STARTTLS, so its users get an unencrypted {kind.upper()} setting "
        f"(add a port {ports[kind]} server)"
        for name, services in site.services.items()
        for kind in ("smtp", "imap", "pop3")
        if services.servers(kind) and not any(s.tls == "implicit" for s in services.servers(kind))
    ]


def _time_of_day() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S.%f")


class AutoconfigApp:
    """The ASGI application. Construct with a loaded site and an open directory."""

    def __init__(self, site: Site, directory: Directory, metrics: Metrics) -> None:
        self.site = site
        self.directory = directory
        self.metrics = metrics
        self.in_flight = 0
        """Requests being answered (kept by :class:`~mailwarden.server.live.LiveApp`, which
        retires a reloaded-away application only when it reaches 0)."""
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
        set_event_hook = getattr(directory, "set_event_hook", None)
        if set_event_hook is not None:
            set_event_hook(metrics.directory_event)
        self.max_body = site.server.max_body_bytes
        self.server_id = int.from_bytes(
            hashlib.sha256(socket.gethostname().encode()).digest()[:4], "big"
        )
        self.documents: LRUCache[tuple[object, ...], bytes] = LRUCache(DOCUMENT_CACHE_SIZE)
        self.pox_requests: LRUCache[bytes, outlook.PoxRequest] = LRUCache(POX_REQUEST_CACHE_SIZE)
        self.profiles = ProfileRoutes(self)  # loads the signing key: fails at start-up
        self._routes: dict[str, tuple[str, Handler]] = {
            **dict.fromkeys(AUTOCONFIG_PATHS, ("autoconfig", self._autoconfig)),
            POX_PATH: ("autodiscover-xml", self._pox),
            JSON_PATH: ("autodiscover-json", self._json_query),
            "/healthz": ("healthz", self._healthz),
            "/metrics": ("metrics", self._metrics),
            "/": ("setup-page", self.profiles.setup_page),
            "/mobileconfig": ("mobileconfig", self.profiles.mobileconfig),
            "/mobileconfig/": ("mobileconfig", self.profiles.mobileconfig),
        }

    # -- ASGI entry -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        client = scope.get("client")
        _CLIENT.set(client[0] if client else None)
        path = scope["path"].lower()
        route = self._routes.get(path)
        if route is None and path.startswith(JSON_V1_PREFIX):
            route = ("autodiscover-json", self._json_path)
        endpoint, handler = route if route is not None else ("other", self._not_found)
        status_box = StatusSend(send)
        try:
            await handler(scope, receive, status_box)
        except BodyTooLarge:
            await respond(status_box, 413, b"request body too large\n")
        except QueryTooLong:
            await respond(status_box, 414, b"query string too long\n")
        except BadRequest as exc:
            await respond(status_box, 400, f"{exc}\n".encode())
        except _NotFound as exc:
            await respond(status_box, 404, f"{exc}\n".encode())
        except Exception:
            log.exception("internal error while answering %s", endpoint)
            if not status_box.started:
                await respond(status_box, 500, b"internal error\n")
        self.metrics.count(endpoint, status_box.status)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Everything loaded so far (site, templates, libraries) lives as long as the
                # worker: keep it out of the collector's full passes, which otherwise stop
                # every request of the worker for ~30 ms once its caches have filled.
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.directory.close()
                self.metrics.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- shared steps ---------------------------------------------------------------------

    def domain_from_host(self, scope: Scope) -> DomainView:
        raw = header(scope, b"host") or b""
        host = raw.decode("latin-1").strip()
        if host.startswith("["):  # IPv6 literal: never a mail domain
            raise _NotFound("unknown domain")
        host = host.rpartition(":")[0] if ":" in host else host
        try:
            name = normalise_domain(host)
        except Exception:
            raise _NotFound("unknown domain") from None
        view = self.site.domain(name)
        if view is None:
            # autoconfig.<domain> (Thunderbird) and autodiscover.<domain> (Outlook's probe)
            for prefix in ("autoconfig.", "autodiscover."):
                if name.startswith(prefix):
                    view = self.site.domain(name.removeprefix(prefix))
        if view is None:
            raise _NotFound("unknown domain")
        return view

    def _may_look_up(self) -> bool:
        """Whether this request's client has a token left (anti-enumeration)."""
        client = _CLIENT.get()
        if not self.lookup_buckets.enabled or client is None or self._exempt(client):
            return True
        if self.lookup_buckets.take(client, time.monotonic()):
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

    async def lookup(self, address: Address, domain: DomainView) -> Account | None:
        """The enabled account for ``address`` (trying the canonical domain for aliases).

        Raises :class:`DirectoryError` when the directory gives no answer within the deadline
        (outage) or this client used up its lookups; :meth:`subject_for` applies the outage
        policy then.
        """
        if not self._may_look_up():
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

    async def subject_for(self, address: Address, domain: DomainView) -> Subject | None:
        """The subject to render for ``address``; None when policy says to refuse."""
        typed = str(address)
        if not self.needs_directory(domain):
            return Subject(address=typed, localpart=address.localpart)
        try:
            account = await self.lookup(address, domain)
        except DirectoryError:
            if self.site.directory.on_outage == "generic":
                return GENERIC
            account = None
        return subject_for_account(typed, address.localpart, account, domain.config.unknown_address)

    def _address_and_domain(self, text: str) -> tuple[Address, DomainView]:
        parsed = self._parsed.get(text)
        if parsed is not None:
            return parsed
        address = parse_address(text)
        domain = self.site.domain(address.domain)
        if domain is None:
            raise _NotFound("unknown domain")
        if len(self._parsed) >= ADDRESS_CACHE_SIZE:  # bounded whatever clients send
            self._parsed.clear()
        self._parsed[text] = address, domain
        return address, domain

    def _thunderbird(self, domain: DomainView, subject: Subject) -> bytes:
        return self.documents.get_or_make(
            # The subject's fields, not the subject: hashing a tuple of strings costs less.
            ("thunderbird", domain.served, *_fields(subject)),
            lambda: thunderbird.render(self.site, domain, subject),
        )

    # -- endpoints ------------------------------------------------------------------------

    async def _autoconfig(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await respond(
                send, 405, b"method not allowed\n", extra_headers=[(b"allow", b"GET, HEAD")]
            )
            return
        head = method == "HEAD"
        raw = query_params(scope).get("emailaddress", "").strip()
        if not raw:
            domain = self.domain_from_host(scope)
            if domain.config.moved_to:
                location = f"https://autoconfig.{domain.config.moved_to}/mail/config-v1.1.xml"
                await respond(
                    send,
                    302,
                    b"moved\n",
                    extra_headers=[(b"location", location.encode())],
                    head=head,
                )
                return
            await respond(send, 200, self._thunderbird(domain, GENERIC), XML, head=head)
            return
        try:
            address, domain = self._address_and_domain(raw)
        except AddressError as exc:
            await respond(send, 400, f"invalid emailaddress: {exc}\n".encode(), head=head)
            return
        if domain.config.moved_to:
            moved = f"{address.localpart}@{domain.config.moved_to}"
            location = (
                f"https://autoconfig.{domain.config.moved_to}/mail/config-v1.1.xml"
                f"?emailaddress={quote(moved, safe='')}"
            )
            await respond(
                send, 302, b"moved\n", extra_headers=[(b"location", location.encode())], head=head
            )
            return
        subject = await self.subject_for(address, domain)
        if subject is None:
            await respond(send, 404, b"unknown address\n", head=head)
            return
        await respond(send, 200, self._thunderbird(domain, subject), XML, head=head)

    async def _pox(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "GET":
            await self._pox_get(scope, send)
            return
        if method != "POST":
            await respond(
                send, 405, b"method not allowed\n", extra_headers=[(b"allow", b"POST, GET")]
            )
            return
        body = await read_body(scope, receive, self.max_body)
        try:
            request = (
                self.pox_requests.get_or_make(body, lambda: outlook.parse_request(body))
                if len(body) <= POX_REQUEST_CACHE_MAX_BODY
                else outlook.parse_request(body)
            )
            address, domain = self._address_and_domain(request.email)
        except outlook.PoxRequestError as exc:
            await self._pox_error(send, exc.code)
            return
        except AddressError:
            await self._pox_error(send, outlook.ErrorCode.INVALID_REQUEST)
            return
        except _NotFound:
            await self._pox_error(send, outlook.ErrorCode.ADDRESS_NOT_FOUND)
            return
        if not domain.config.autodiscover:
            await self._pox_error(send, outlook.ErrorCode.SCHEMA_UNAVAILABLE)
            return
        if domain.config.moved_to:
            moved = f"{address.localpart}@{domain.config.moved_to}"
            await respond(send, 200, outlook.render_redirect_addr(moved), XML)
            return
        subject = await self.subject_for(address, domain)
        if subject is None:
            await self._pox_error(send, outlook.ErrorCode.ADDRESS_NOT_FOUND)
            return
        if subject.generic:  # POX has no placeholders: the typed address is the login
            subject = Subject(address=str(address), localpart=address.localpart)
        agent = header(scope, b"user-agent") or b""
        outlook_2007 = b"Microsoft Office/12." in agent
        body = self.documents.get_or_make(
            ("pox", domain.served, *_fields(subject), outlook_2007),
            lambda: outlook.render_settings(domain, subject, outlook_2007=outlook_2007),
        )
        await respond(send, 200, body, XML)

    async def _pox_get(self, scope: Scope, send: Send) -> None:
        """GET: over plain HTTP this is Outlook's redirect probe (§2.2 step 4), answered with a
        302 to the HTTPS endpoint; over HTTPS there is nothing to answer but an error (§2.8)."""
        if scope.get("scheme") == "http":
            try:
                domain: DomainView | None = self.domain_from_host(scope)
            except _NotFound:
                domain = None
            host = self.site.server.public_host or (
                f"autodiscover.{domain.name}" if domain else None
            )
            if host:
                location = f"https://{host}{POX_PATH}"
                await respond(
                    send, 302, b"see HTTPS\n", extra_headers=[(b"location", location.encode())]
                )
                return
        await self._pox_error(send, outlook.ErrorCode.INVALID_REQUEST)

    async def _pox_error(self, send: Send, code: outlook.ErrorCode) -> None:
        body = outlook.render_error(code, time_of_day=_time_of_day(), server_id=self.server_id)
        await respond(send, 200, body, XML)

    async def _json_query(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = query_params(scope)
        await self._json(scope, send, params.get("email", ""), params.get("protocol", ""))

    async def _json_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        email = path_tail(scope, JSON_V1_PREFIX)  # decoded once (not again after the server)
        await self._json(scope, send, email, query_params(scope).get("protocol", ""))

    async def _json(self, scope: Scope, send: Send, email: str, protocol: str) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await respond(
                send,
                405,
                autodiscover_json.render_error("MethodNotAllowed", "Only GET is supported"),
                JSON,
                extra_headers=[(b"allow", b"GET, HEAD")],
            )
            return
        head = scope["method"] == "HEAD"
        if not autodiscover_json.is_supported(protocol):
            await respond(send, 400, autodiscover_json.invalid_protocol(protocol), JSON, head=head)
            return
        try:
            _address, domain = self._address_and_domain(email.strip())
        except AddressError as exc:
            body = autodiscover_json.render_error("InvalidUser", f"Invalid email address: {exc}")
            await respond(send, 400, body, JSON, head=head)
            return
        except _NotFound:
            body = autodiscover_json.render_error("NotFound", "Unknown domain")
            await respond(send, 404, body, JSON, head=head)
            return
        public_host = self.site.server.public_host or f"autodiscover.{domain.name}"
        body = self.documents.get_or_make(
            ("json-v1", protocol, public_host),
            lambda: autodiscover_json.render_v1(protocol, public_host),
        )
        await respond(send, 200, body, JSON, head=head)

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed\n", extra_headers=[GET_HEAD])
            return
        await respond(send, 200, b"ok\n", head=scope["method"] == "HEAD")

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        from mailwarden.server.metrics import CONTENT_TYPE

        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed\n", extra_headers=[GET_HEAD])
            return
        body = self.metrics.exposition()
        await respond(send, 200, body, CONTENT_TYPE, head=scope["method"] == "HEAD")

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 404, b"not found\n")


def _fields(subject: Subject) -> tuple[str | None, str | None, str | None, str | None]:
    return subject.address, subject.localpart, subject.login, subject.display_name
