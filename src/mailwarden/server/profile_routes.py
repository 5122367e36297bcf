"""The routes people (not mail clients) use: the setup page and the Apple profile download.

Both resolve the address exactly as the autoconfig endpoints do (the same
:class:`~mailwarden.server.resolver.Resolver`: directory lookup, login rule, unknown-address
policy), then hand the values to the pure
renderers in :mod:`mailwarden.profiles`. The typed address is never echoed outside the page,
where the template escapes it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from mailwarden.address import AddressError, parse_address, unicode_domain
from mailwarden.profiles import apple, setup_page
from mailwarden.profiles.setup_page import Lang, Page
from mailwarden.profiles.signing import Signer, load_signer
from mailwarden.server.http import (
    Receive,
    Scope,
    Send,
    header,
    query_params,
    redirect,
    respond,
)
from mailwarden.server.resolver import Resolver, UnknownDomain, moved_location

if TYPE_CHECKING:
    from mailwarden.site.model import DomainView, Site

PROFILE_TYPE = apple.CONTENT_TYPE.encode("ascii")
HTML = setup_page.CONTENT_TYPE.encode("ascii")
_PAGE_HEADERS = [
    (b"content-security-policy", setup_page.CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"vary", b"Accept-Language, User-Agent"),
]
_HOST_RE = re.compile(r"[a-z0-9.-]{1,253}(?::[0-9]{1,5})?")


class ProfileRoutes:
    """Handlers for ``/`` and ``/mobileconfig``; the signer is loaded once, at start-up."""

    def __init__(self, site: Site, resolver: Resolver, signer: Signer | None = None) -> None:
        self.site = site
        self.resolver = resolver
        self.signer = signer if signer is not None else load_signer(site.profiles)

    def _language(self, scope: Scope, params: dict[str, str]) -> Lang:
        accept = (header(scope, b"accept-language") or b"").decode("latin-1")
        return setup_page.choose_language(accept, params.get("lang"))

    async def mobileconfig(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = query_params(scope)
        raw = params.get("emailaddress", "").strip()
        if not raw:
            await respond(send, 400, b"emailaddress is required\n")
            return
        try:
            address = parse_address(raw)
        except AddressError as exc:
            await respond(send, 400, f"invalid emailaddress: {exc}\n".encode())
            return
        domain = self.site.domain(address.domain)
        if domain is None:
            await respond(send, 404, b"unknown domain\n")
            return
        if domain.config.moved_to:
            await redirect(send, moved_location(domain, "/mobileconfig", address))
            return
        subject = await self.resolver.subject_for(address, domain, scope.get("client"))
        if subject is None:
            await respond(send, 404, b"unknown address\n")
            return
        lang = self._language(scope, params)
        body = apple.render(self.site, domain, subject, address, lang=lang)
        if self.signer is not None:
            body = self.signer.sign(body)
        disposition = f'attachment; filename="{apple.file_name(domain)}"'.encode("ascii")
        await respond(
            send,
            200,
            body,
            PROFILE_TYPE,
            extra_headers=[(b"content-disposition", disposition)],
        )

    def _host_domain(self, scope: Scope) -> DomainView | None:
        try:
            return self.resolver.domain_from_host(header(scope, b"host"))
        except UnknownDomain:  # an unknown Host still gets the form
            return None

    def _page_url(self, scope: Scope, host_domain: DomainView | None, domain: DomainView) -> str:
        """Where this page lives, for the QR code: the Host asked for when it is one of ours,
        else ``autoconfig.<domain>`` over HTTPS."""
        host = (header(scope, b"host") or b"").decode("latin-1").strip().lower()
        if host_domain is not None and _HOST_RE.fullmatch(host):
            scheme = "https" if scope.get("scheme") == "https" else "http"
            return f"{scheme}://{host}/"
        return f"https://autoconfig.{domain.name}/"

    async def setup_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = query_params(scope)
        lang = self._language(scope, params)
        host_domain = self._host_domain(scope)
        example_domain = host_domain.served if host_domain else self.site.primary_domain
        raw = params.get("emailaddress", "").strip()[: 2 * 254]
        page = Page(
            lang=lang,
            path_query={"emailaddress": raw} if raw else {},
            typed=raw,
            example=f"name@{unicode_domain(example_domain)}",
        )
        status, page, location = await self._result(scope, page, raw, host_domain)
        if location is not None:
            await redirect(send, location)
            return
        await respond(
            send,
            status,
            setup_page.render(self.site, page),
            HTML,
            extra_headers=[*_PAGE_HEADERS, (b"content-language", lang.encode("ascii"))],
        )

    async def _result(
        self, scope: Scope, page: Page, raw: str, host_domain: DomainView | None
    ) -> tuple[int, Page, str | None]:
        """The status, the page and (for a domain that moved) a redirect target."""
        if not raw:
            return 200, page, None
        try:
            address = parse_address(raw)
        except AddressError:
            return 400, replace(page, message="invalid"), None
        domain = self.site.domain(address.domain)
        if domain is None:
            shown = unicode_domain(address.domain)
            return 404, replace(page, message="not_served", message_domain=shown), None
        if domain.config.moved_to:
            return 302, page, moved_location(domain, "/", address, lang=page.lang)
        subject = await self.resolver.subject_for(address, domain, scope.get("client"))
        if subject is None:
            return 404, replace(page, message="unknown"), None
        typed = subject.address or str(address)
        query = urlencode({"emailaddress": typed}, quote_via=quote)
        result = setup_page.result_for(
            domain,
            subject,
            address,
            page_url=self._page_url(scope, host_domain, domain) + "?" + query,
            open_client=setup_page.suggested_client(
                (header(scope, b"user-agent") or b"").decode("latin-1")
            ),
        )
        return 200, replace(page, result=result), None
