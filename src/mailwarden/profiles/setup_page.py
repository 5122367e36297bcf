"""The self-service setup page: a form, then everything a person needs for one address.

It is rendered from the same site model and the same :func:`~mailwarden.profiles.subject.username`
as the autoconfig documents, so what people read can never disagree with what clients discover.
Pure: the server hands in the language, the subject and the URLs; this module returns bytes.
The page uses no JavaScript and one inline style sheet whose hash goes into the
Content-Security-Policy, so nothing but our own markup can run or load.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib.resources import files
from typing import Literal
from urllib.parse import quote, urlencode

import segno
from jinja2 import Environment, PackageLoader, StrictUndefined

from mailwarden.address import Address, unicode_domain
from mailwarden.profiles import xmltext
from mailwarden.profiles.subject import Subject, username
from mailwarden.site.model import DomainView, ServiceKind, Site

Lang = Literal["de", "en"]
LANGUAGES: tuple[Lang, ...] = ("en", "de")
CONTENT_TYPE = "text/html; charset=utf-8"

_ENV = Environment(
    loader=PackageLoader("mailwarden.profiles", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_CSS = files("mailwarden.profiles").joinpath("templates/setup.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"style-src 'sha256-{_CSS_HASH}'; "
    "img-src 'self' data: https:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_LANG_RE = re.compile(
    r"\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*"
)

STRINGS: dict[Lang, dict[str, str]] = {
    "en": {
        "title": "Set up your e-mail",
        "intro": "Enter your e-mail address to see the settings and step-by-step instructions "
        "for your mail program.",
        "label": "Your e-mail address",
        "hint": "For example {example}",
        "submit": "Show my settings",
        "switch": "Deutsch",
        "switch_lang": "de",
        "skip": "Skip to content",
        "settings": "Settings for {address}",
        "protocol": "Protocol",
        "server": "Server",
        "port": "Port",
        "security": "Security",
        "login": "User name",
        "auth": "Authentication",
        "auth_value": "normal password",
        "incoming": "Incoming mail",
        "outgoing": "Outgoing mail",
        "more": "Other servers and ports (if the ones above are blocked)",
        "login_generic": "the user name {org} gave you",
        "profile": "Install the profile for iPhone, iPad and Mac",
        "profile_heading": "iPhone, iPad and Mac: one tap",
        "profile_note": "The profile contains no password; your device asks for it once.",
        "qr": "Open this page on your phone",
        "qr_alt": "QR code with the address of this page",
        "instructions": "Step-by-step instructions",
        "other_address": "Another address",
        "support": "Help and support",
        "invalid": "That is not a complete e-mail address. Please enter it as name@domain, "
        "for example {example}.",
        "not_served": "We do not provide mail for {domain}. Please check the address, or ask "
        "the provider of that address.",
        "unknown": "This address is not known here. Please check the spelling, or contact support.",
        "unencrypted": "none (unencrypted)",
        "revocation": "Certificate check",
    },
    "de": {
        "title": "E-Mail einrichten",
        "intro": "Geben Sie Ihre E-Mail-Adresse ein, um die Einstellungen und eine "
        "Schritt-für-Schritt-Anleitung für Ihr E-Mail-Programm zu sehen.",
        "label": "Ihre E-Mail-Adresse",
        "hint": "Zum Beispiel {example}",
        "submit": "Meine Einstellungen anzeigen",
        "switch": "English",
        "switch_lang": "en",
        "skip": "Zum Inhalt springen",
        "settings": "Einstellungen für {address}",
        "protocol": "Protokoll",
        "server": "Server",
        "port": "Port",
        "security": "Verschlüsselung",
        "login": "Benutzername",
        "auth": "Authentifizierung",
        "auth_value": "Passwort, normal",
        "incoming": "Posteingang",
        "outgoing": "Postausgang",
        "more": "Weitere Server und Ports (falls die obigen gesperrt sind)",
        "login_generic": "der Benutzername, den Sie von {org} erhalten haben",
        "profile": "Profil für iPhone, iPad und Mac installieren",
        "profile_heading": "iPhone, iPad und Mac: ein Fingertipp",
        "profile_note": "Das Profil enthält kein Passwort; Ihr Gerät fragt einmal danach.",
        "qr": "Diese Seite auf dem Smartphone öffnen",
        "qr_alt": "QR-Code mit der Adresse dieser Seite",
        "instructions": "Schritt-für-Schritt-Anleitungen",
        "other_address": "Andere Adresse",
        "support": "Hilfe und Beratung",
        "invalid": "Das ist keine vollständige E-Mail-Adresse. Bitte geben Sie sie in der Form "
        "name@domain ein, zum Beispiel {example}.",
        "not_served": "Für {domain} stellen wir keine E-Mail bereit. Bitte prüfen Sie die "
        "Adresse oder fragen Sie den Anbieter dieser Adresse.",
        "unknown": "Diese Adresse ist hier nicht bekannt. Bitte prüfen Sie die Schreibweise "
        "oder wenden Sie sich an die Beratung.",
        "unencrypted": "keine (unverschlüsselt)",
        "revocation": "Zertifikatsprüfung",
    },
}

SECURITY_LABEL = {"implicit": "SSL/TLS", "starttls": "STARTTLS"}

CLIENTS = ("ios", "macos", "thunderbird", "outlook", "outlook-new", "android", "gmail", "other")


@dataclass(frozen=True, slots=True)
class SettingRow:
    """One server a person may type into a mail program."""

    direction: Literal["incoming", "outgoing"]
    protocol: str
    host: str
    port: int
    security: str
    login: str | None
    """None when the page does not know the user name (generic policy)."""
    main: bool
    """The server to use unless it is blocked: the first of the preferred incoming protocol,
    and the first SMTP server (the order of the site file, as in autoconfig documents)."""


@dataclass(frozen=True, slots=True)
class Result:
    """What the result page shows for one address."""

    address: str
    domain: DomainView
    rows: tuple[SettingRow, ...]
    profile_url: str
    qr_data_uri: str
    open_client: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Everything the template needs besides the site: the pure input of :func:`render`."""

    lang: Lang
    path_query: dict[str, str] = field(default_factory=dict)
    """The query of the current page (without ``lang``), for the language switch."""
    typed: str = ""
    message: str | None = None
    """A key of :data:`STRINGS` explaining why there is no result (invalid, not_served, …)."""
    message_domain: str = ""
    example: str = "name@example.org"
    result: Result | None = None


def choose_language(accept_language: str | None, explicit: str | None) -> Lang:
    """``explicit`` (the switch) if it is one of ours, else the best ``Accept-Language`` match;
    English when nothing matches, since more visitors read English than German."""
    if explicit in LANGUAGES:
        return explicit
    best: Lang = "en"
    best_q = 0.0
    for part in (accept_language or "")[:512].split(",")[:20]:
        match = _LANG_RE.fullmatch(part)
        if not match:
            continue
        tag = match.group(1).lower()
        q = float(match.group(2)) if match.group(2) else 1.0
        if tag in LANGUAGES and q > best_q:
            best, best_q = tag, q
    return best


def suggested_client(user_agent: str | None) -> str | None:
    """The instructions to open first for this browser's platform (a guess; all stay visible)."""
    agent = (user_agent or "")[:512]
    if "iPhone" in agent or "iPad" in agent:
        return "ios"
    if "Android" in agent:
        return "android"
    if "Macintosh" in agent:
        return "macos"
    return None


def setting_rows(domain: DomainView, subject: Subject) -> tuple[SettingRow, ...]:
    """Every server of the domain's service set, incoming first in the site's preferred order."""
    services = domain.services
    incoming: list[ServiceKind] = ["imap", "pop3"]
    if services.incoming_first == "pop3":
        incoming.reverse()
    rows: list[SettingRow] = []
    main_incoming = next(kind for kind in incoming if services.servers(kind))
    for kind in (*incoming, "smtp"):
        for index, server in enumerate(services.servers(kind)):
            rows.append(
                SettingRow(
                    direction="outgoing" if kind == "smtp" else "incoming",
                    protocol="POP3" if kind == "pop3" else kind.upper(),
                    host=server.host,
                    port=server.port_for(kind),
                    security=SECURITY_LABEL.get(server.tls, ""),
                    login=None if subject.generic else username(server, domain, subject),
                    main=index == 0 and kind in (main_incoming, "smtp"),
                )
            )
    return tuple(rows)


@lru_cache(maxsize=1024)
def qr_data_uri(url: str) -> str:
    """An SVG QR code for ``url`` as a data: URI (black on white, quiet zone included).

    Choosing the best mask costs ~10 ms of pure Python; reloads and language switches of the
    same address hit the cache (the URL carries no language: the phone picks its own)."""
    return str(segno.make(url, error="m").svg_data_uri(scale=4, border=4))


def result_for(
    domain: DomainView,
    subject: Subject,
    address: Address,
    *,
    page_url: str,
    open_client: str | None = None,
) -> Result:
    """The result part of the page for ``address`` (``page_url``: absolute, for the QR code)."""
    typed = subject.address or str(address)
    return Result(
        address=typed,
        domain=domain,
        rows=setting_rows(domain, subject),
        profile_url="/mobileconfig?" + urlencode({"emailaddress": typed}, quote_via=quote),
        qr_data_uri=qr_data_uri(page_url),
        open_client=open_client,
    )


def render(site: Site, page: Page) -> bytes:
    """The HTML page; every value from a request is escaped by the template engine.

    What was typed is echoed back (in the form, in the language switch) even when it is no
    address: characters no XML or HTML document may carry are dropped from it first, since
    the template engine escapes markup but passes control characters through.
    """
    page = replace(
        page,
        typed=xmltext.clean(page.typed),
        path_query={xmltext.clean(k): xmltext.clean(v) for k, v in page.path_query.items()},
    )
    strings = STRINGS[page.lang]
    other: Lang = "de" if page.lang == "en" else "en"
    switch_query = urlencode({**page.path_query, "lang": other}, quote_via=quote)
    result = page.result
    label = site.organisation.name
    if result is not None:
        label = result.domain.config.display_name or label
    html = _ENV.get_template("setup.html").render(
        t=strings,
        lang=page.lang,
        other_lang=other,
        switch_href="?" + switch_query,
        css=_CSS,
        org=site.organisation,
        label=label,
        page=page,
        result=result,
        clients=CLIENTS,
        display_domain=unicode_domain(result.domain.served) if result else "",
        steps_template=f"steps.{page.lang}.html",
    )
    return html.encode("utf-8")
