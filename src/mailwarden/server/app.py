"""The autoconfiguration server's endpoints: which request, which renderer.

One request reads straight through: the router picks the row for the path and checks the
method (:mod:`mailwarden.server.router`); the endpoint parses what the client sent; the
resolver finds the domain and the subject (directory lookup, unknown-address and outage
policy: :mod:`mailwarden.server.resolver`); a pure renderer makes the bytes, cached per worker.
Nothing a client sends can produce a 5xx or a traceback: unexpected errors are logged and
answered with a short 500 text, and the hypothesis test in tests/ holds us to it.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import socket
from datetime import UTC, datetime

from mailwarden.address import AddressError
from mailwarden.directory.base import Directory
from mailwarden.profiles import autodiscover_json, outlook, thunderbird
from mailwarden.profiles.subject import GENERIC, Subject
from mailwarden.server.cache import LRUCache
from mailwarden.server.http import (
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
    redirect,
    respond,
)
from mailwarden.server.metrics import Metrics
from mailwarden.server.profile_routes import ProfileRoutes
from mailwarden.server.resolver import Resolver, UnknownDomain, moved_address, moved_location
from mailwarden.server.router import Route, Router
from mailwarden.site.model import DomainView, Site

log = logging.getLogger("mailwarden.server")

XML = thunderbird.CONTENT_TYPE.encode("ascii")
JSON = autodiscover_json.CONTENT_TYPE.encode("ascii")

AUTOCONFIG_PATH = "/mail/config-v1.1.xml"
AUTOCONFIG_PATHS = frozenset({AUTOCONFIG_PATH, "/.well-known/autoconfig/mail/config-v1.1.xml"})
POX_PATH = "/autodiscover/autodiscover.xml"
JSON_PATH = "/autodiscover/autodiscover.json"
JSON_V1_PREFIX = "/autodiscover/autodiscover.json/v1.0/"

DOCUMENT_CACHE_SIZE = 4096
"""Rendered documents kept per worker (a few KiB each); see :mod:`mailwarden.server.cache`."""
POX_REQUEST_CACHE_SIZE = 1024
POX_REQUEST_CACHE_MAX_BODY = 2048
"""Parsed POX request bodies kept per worker, only bodies up to this size (real ones are
about 350 bytes): Outlook sends the identical body for a user on every probe and retry."""


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
        self.resolver = Resolver(site, directory, metrics)
        set_event_hook = getattr(directory, "set_event_hook", None)
        if set_event_hook is not None:
            set_event_hook(metrics.directory_event)
        self.max_body = site.server.max_body_bytes
        self.server_id = int.from_bytes(
            hashlib.sha256(socket.gethostname().encode()).digest()[:4], "big"
        )
        self.documents: LRUCache[tuple[object, ...], bytes] = LRUCache(DOCUMENT_CACHE_SIZE)
        self.pox_requests: LRUCache[bytes, outlook.PoxRequest] = LRUCache(POX_REQUEST_CACHE_SIZE)
        # loads the signing key: fails at start-up
        self.profiles = ProfileRoutes(site, self.resolver)
        autoconfig = Route("autoconfig", self._autoconfig)
        json_refusal = autodiscover_json.render_error("MethodNotAllowed", "Only GET is supported")
        json_query = Route(
            "autodiscover-json", self._json_query, refusal=json_refusal, refusal_type=JSON
        )
        json_path = Route(
            "autodiscover-json", self._json_path, refusal=json_refusal, refusal_type=JSON
        )
        mobileconfig = Route("mobileconfig", self.profiles.mobileconfig)
        self.router = Router(
            {
                **dict.fromkeys(AUTOCONFIG_PATHS, autoconfig),
                POX_PATH: Route("autodiscover-xml", self._pox, methods=("POST", "GET")),
                JSON_PATH: json_query,
                "/healthz": Route("healthz", self._healthz),
                "/metrics": Route("metrics", self._metrics),
                "/": Route("setup-page", self.profiles.setup_page),
                "/mobileconfig": mobileconfig,
                "/mobileconfig/": mobileconfig,
            },
            [(JSON_V1_PREFIX, json_path)],
            fallback=Route("other", self._not_found, methods=None),
        )

    # -- ASGI entry -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route = self.router.match(scope["path"].lower())
        method = scope["method"]
        status_box = StatusSend(send, method == "HEAD")
        try:
            if method in route.allowed:
                await route.handler(scope, receive, status_box)
            else:
                await route.refuse(status_box)
        except BodyTooLarge:
            await respond(status_box, 413, b"request body too large\n")
        except QueryTooLong:
            await respond(status_box, 414, b"query string too long\n")
        except BadRequest as exc:
            await respond(status_box, 400, f"{exc}\n".encode())
        except UnknownDomain as exc:
            await respond(status_box, 404, f"{exc}\n".encode())
        except Exception:
            log.exception("internal error while answering %s", route.name)
            if not status_box.started:
                await respond(status_box, 500, b"internal error\n")
        self.metrics.count(route.name, status_box.status)

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

    def _thunderbird(self, domain: DomainView, subject: Subject) -> bytes:
        return self.documents.get_or_make(
            # The subject's fields, not the subject: hashing a tuple of strings costs less.
            ("thunderbird", domain.served, *_fields(subject)),
            lambda: thunderbird.render(self.site, domain, subject),
        )

    # -- endpoints ------------------------------------------------------------------------

    async def _autoconfig(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = query_params(scope).get("emailaddress", "").strip()
        if not raw:
            domain = self.resolver.domain_from_host(header(scope, b"host"))
            if domain.config.moved_to:
                await redirect(send, moved_location(domain, AUTOCONFIG_PATH))
                return
            await respond(send, 200, self._thunderbird(domain, GENERIC), XML)
            return
        try:
            address, domain = self.resolver.address_and_domain(raw)
        except AddressError as exc:
            await respond(send, 400, f"invalid emailaddress: {exc}\n".encode())
            return
        if domain.config.moved_to:
            await redirect(send, moved_location(domain, AUTOCONFIG_PATH, address))
            return
        subject = await self.resolver.subject_for(address, domain, scope.get("client"))
        if subject is None:
            await respond(send, 404, b"unknown address\n")
            return
        await respond(send, 200, self._thunderbird(domain, subject), XML)

    async def _pox(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            await self._pox_get(scope, send)
            return
        body = await read_body(scope, receive, self.max_body)
        try:
            request = (
                self.pox_requests.get_or_make(body, lambda: outlook.parse_request(body))
                if len(body) <= POX_REQUEST_CACHE_MAX_BODY
                else outlook.parse_request(body)
            )
            address, domain = self.resolver.address_and_domain(request.email)
        except outlook.PoxRequestError as exc:
            await self._pox_error(send, exc.code)
            return
        except AddressError:
            await self._pox_error(send, outlook.ErrorCode.INVALID_REQUEST)
            return
        except UnknownDomain:
            await self._pox_error(send, outlook.ErrorCode.ADDRESS_NOT_FOUND)
            return
        if not domain.config.autodiscover:
            await self._pox_error(send, outlook.ErrorCode.SCHEMA_UNAVAILABLE)
            return
        if domain.config.moved_to:
            await respond(
                send, 200, outlook.render_redirect_addr(moved_address(address, domain)), XML
            )
            return
        subject = await self.resolver.subject_for(address, domain, scope.get("client"))
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
                domain: DomainView | None = self.resolver.domain_from_host(header(scope, b"host"))
            except UnknownDomain:
                domain = None
            host = self.site.server.public_host or (
                f"autodiscover.{domain.name}" if domain else None
            )
            if host:
                await redirect(send, f"https://{host}{POX_PATH}", b"see HTTPS\n")
                return
        await self._pox_error(send, outlook.ErrorCode.INVALID_REQUEST)

    async def _pox_error(self, send: Send, code: outlook.ErrorCode) -> None:
        body = outlook.render_error(code, time_of_day=_time_of_day(), server_id=self.server_id)
        await respond(send, 200, body, XML)

    async def _json_query(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = query_params(scope)
        await self._json(send, params.get("email", ""), params.get("protocol", ""))

    async def _json_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        email = path_tail(scope, JSON_V1_PREFIX)  # decoded once (not again after the server)
        await self._json(send, email, query_params(scope).get("protocol", ""))

    async def _json(self, send: Send, email: str, protocol: str) -> None:
        if not autodiscover_json.is_supported(protocol):
            await respond(send, 400, autodiscover_json.invalid_protocol(protocol), JSON)
            return
        try:
            _address, domain = self.resolver.address_and_domain(email.strip())
        except AddressError as exc:
            body = autodiscover_json.render_error("InvalidUser", f"Invalid email address: {exc}")
            await respond(send, 400, body, JSON)
            return
        except UnknownDomain:
            body = autodiscover_json.render_error("NotFound", "Unknown domain")
            await respond(send, 404, body, JSON)
            return
        public_host = self.site.server.public_host or f"autodiscover.{domain.name}"
        body = self.documents.get_or_make(
            ("json-v1", protocol, public_host),
            lambda: autodiscover_json.render_v1(protocol, public_host),
        )
        await respond(send, 200, body, JSON)

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"ok\n")

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        from mailwarden.server.metrics import CONTENT_TYPE

        await respond(send, 200, self.metrics.exposition(), CONTENT_TYPE)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 404, b"not found\n")


def _fields(subject: Subject) -> tuple[str | None, str | None, str | None, str | None]:
    return subject.address, subject.localpart, subject.login, subject.display_name
