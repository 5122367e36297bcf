"""Outlook Autodiscover "POX" (plain old XML): request parsing and response rendering.

Facts from protocols.md §2: responses are HTTP 200 even for errors; ``Error`` is a child of
``Response`` in the ``responseschema/2006`` namespace; ``SPA`` and ``SSL`` default to *on* and so
are always written out; ``Encryption TLS`` (STARTTLS) never appears on an implicit-TLS port.
Requests are parsed by local name, tolerate ``https://`` namespace spellings, and never resolve
a DTD or an entity (defusedxml refuses them before any expansion).
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from mailwarden.profiles.subject import Subject, username
from mailwarden.profiles.xmltext import text
from mailwarden.site.model import DomainView, Server, ServiceKind, Site

CONTENT_TYPE = "text/xml; charset=utf-8"

NS_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
NS_OUTLOOK_RESPONSE = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)
_OUTLOOK_SCHEMA = "schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"

MAX_FIELD = 512


class ErrorCode(enum.IntEnum):
    """MS-OXDSCLI §2.2.4.1.1.3.2."""

    ADDRESS_NOT_FOUND = 500
    BAD_ADDRESS = 501
    INVALID_REQUEST = 600
    SCHEMA_UNAVAILABLE = 601
    CONFIGURATION_ERROR = 602
    INTERNAL_ERROR = 603


ERROR_MESSAGES = {
    ErrorCode.ADDRESS_NOT_FOUND: "The e-mail address cannot be found.",
    ErrorCode.BAD_ADDRESS: "No configuration is available for this e-mail address.",
    ErrorCode.INVALID_REQUEST: "Invalid Request",
    ErrorCode.SCHEMA_UNAVAILABLE: "The requested configuration type is not available.",
    ErrorCode.CONFIGURATION_ERROR: "The configuration for this address has errors.",
    ErrorCode.INTERNAL_ERROR: "Internal server error.",
}


@dataclass(frozen=True, slots=True)
class PoxRequest:
    email: str


class PoxRequestError(ValueError):
    """The request cannot be answered with settings; ``code`` says which POX error to send."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _schema_ok(value: str) -> bool:
    value = value.strip().lower()
    return value.removeprefix("http://").removeprefix("https://") == _OUTLOOK_SCHEMA


def parse_request(body: bytes) -> PoxRequest:
    """Parse an Autodiscover request body; raise :class:`PoxRequestError` when unusable."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise PoxRequestError(
            ErrorCode.INVALID_REQUEST, "DTDs and entities are not accepted"
        ) from None
    except (ET.ParseError, ValueError, LookupError):  # LookupError: unknown encoding="…"
        raise PoxRequestError(ErrorCode.INVALID_REQUEST, "body is not well-formed XML") from None
    if _local(root.tag) != "Autodiscover":
        raise PoxRequestError(ErrorCode.INVALID_REQUEST, "root element is not Autodiscover")
    request = next((c for c in root if _local(c.tag) == "Request"), None)
    if request is None:
        raise PoxRequestError(ErrorCode.INVALID_REQUEST, "no Request element")
    fields: dict[str, str] = {}
    for child in request:
        name = _local(child.tag)
        if name not in fields:
            fields[name] = (child.text or "").strip()[: MAX_FIELD + 1]
    schema = fields.get("AcceptableResponseSchema", "")
    if not _schema_ok(schema):
        raise PoxRequestError(
            ErrorCode.SCHEMA_UNAVAILABLE, "only the Outlook 2006a response schema is offered"
        )
    email = fields.get("EMailAddress", "")
    if not email:
        # A LegacyDN alone names an Exchange mailbox; an IMAP/SMTP site cannot resolve it.
        raise PoxRequestError(ErrorCode.INVALID_REQUEST, "no EMailAddress in the request")
    if len(email) > MAX_FIELD:
        raise PoxRequestError(ErrorCode.INVALID_REQUEST, "EMailAddress is too long")
    return PoxRequest(email=email)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _ssl_flag(server: Server, *, outlook_2007: bool) -> bool:
    """The ``SSL`` element: on for implicit TLS; for STARTTLS on as well, because Outlook 2010+
    follows ``Encryption`` (which overrides ``SSL``) and Thunderbird reads ``SSL off`` as "no
    encryption" and otherwise infers STARTTLS from the port. Outlook 2007 reads only ``SSL`` and
    would try implicit TLS on a STARTTLS port, so it gets ``off`` there (the server warns about
    such sites at start-up)."""
    if server.tls == "implicit":
        return True
    return server.tls == "starttls" and not outlook_2007


def _protocol(
    kind: str, server: Server, domain: DomainView, subject: Subject, *, outlook_2007: bool
) -> str:
    encryption = {"implicit": "SSL", "starttls": "TLS", "none": "None"}[server.tls]
    spa = server.auth[0] in ("password-encrypted", "NTLM")
    auth_required = server.auth != ("none",)
    tail = "<UsePOPAuth>off</UsePOPAuth><SMTPLast>off</SMTPLast>" if kind == "smtp" else ""
    return (
        "<Protocol>"
        f"<Type>{kind.upper()}</Type>"
        f"<Server>{text(server.host)}</Server>"
        f"<Port>{server.port_for(kind)}</Port>"
        f"<LoginName>{text(username(server, domain, subject))}</LoginName>"
        "<DomainRequired>off</DomainRequired>"
        f"<SPA>{_on(spa)}</SPA>"
        f"<SSL>{_on(_ssl_flag(server, outlook_2007=outlook_2007))}</SSL>"
        f"<Encryption>{encryption}</Encryption>"
        f"<AuthRequired>{_on(auth_required)}</AuthRequired>"
        f"{tail}</Protocol>"
    )


def choose(servers: tuple[Server, ...], *, implicit_only_client: bool) -> Server | None:
    """The server of one protocol to offer: the site's first, or for a client that cannot do
    STARTTLS (Outlook 2007) the first implicit-TLS one where the site has one."""
    if not servers:
        return None
    if implicit_only_client:
        for server in servers:
            if server.tls == "implicit":
                return server
    return servers[0]


def render_settings(domain: DomainView, subject: Subject, *, outlook_2007: bool = False) -> bytes:
    """The settings response for ``subject`` (must be a per-user subject)."""
    display = subject.display_name or subject.address or ""
    protocols = []
    kinds: tuple[ServiceKind, ...] = ("imap", "pop3", "smtp")
    if domain.services.incoming_first == "pop3":
        kinds = ("pop3", "imap", "smtp")
    for kind in kinds:
        server = choose(domain.services.servers(kind), implicit_only_client=outlook_2007)
        if server is not None:
            protocols.append(_protocol(kind, server, domain, subject, outlook_2007=outlook_2007))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{NS_RESPONSE}">'
        f'<Response xmlns="{NS_OUTLOOK_RESPONSE}">'
        f"<User><DisplayName>{text(display)}</DisplayName></User>"
        "<Account><AccountType>email</AccountType><Action>settings</Action>"
        f"{''.join(protocols)}</Account></Response></Autodiscover>\n"
    ).encode()


def render_redirect_addr(new_address: str) -> bytes:
    """Tell the client to start over with ``new_address`` (a domain that moved)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{NS_RESPONSE}">'
        f'<Response xmlns="{NS_OUTLOOK_RESPONSE}">'
        "<Account><AccountType>email</AccountType><Action>redirectAddr</Action>"
        f"<RedirectAddr>{text(new_address)}</RedirectAddr></Account></Response></Autodiscover>\n"
    ).encode()


def render_error(code: ErrorCode, *, time_of_day: str, server_id: int) -> bytes:
    """An error document (§2.7): ``Response/Error`` in the generic 2006 namespace.

    ``time_of_day`` is ``hh:mm:ss.ffffff``; ``server_id`` identifies this server instance.
    Callers pass both so that this function stays pure.
    """
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{NS_RESPONSE}"><Response>'
        f'<Error Time="{time_of_day}" Id="{server_id}">'
        f"<ErrorCode>{int(code)}</ErrorCode><Message>{text(ERROR_MESSAGES[code])}</Message>"
        "<DebugData /></Error></Response></Autodiscover>\n"
    ).encode()


IMPLICIT_TLS_PORTS = {"smtp": 465, "imap": 993, "pop3": 995}


def outlook_2007_gaps(site: Site) -> list[tuple[str, str]]:
    """(service set, protocol) pairs whose Outlook 2007 users get an unencrypted setting.

    Outlook 2007 reads only the ``SSL`` flag, so it is told implicit TLS or nothing: a protocol
    a set offers only with STARTTLS reaches it unencrypted. SMTP is the usual case; IMAP and
    POP3 are checked the same way where the set offers them at all.
    """
    return [
        (name, kind)
        for name, services in site.services.items()
        for kind in ("smtp", "imap", "pop3")
        if services.servers(kind) and not any(s.tls == "implicit" for s in services.servers(kind))
    ]


def outlook_2007_warnings(site: Site) -> list[str]:
    """:func:`outlook_2007_gaps` as one sentence each (``check-config --json``: ``warnings``)."""
    return [
        f"service set {name!r} has no implicit-TLS {kind.upper()} server: Outlook 2007 cannot "
        f"be told to use STARTTLS, so its users get an unencrypted {kind.upper()} setting "
        f"(add a port {IMPLICIT_TLS_PORTS[kind]} server)"
        for name, kind in outlook_2007_gaps(site)
    ]
