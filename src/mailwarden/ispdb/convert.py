"""ISPDB documents → site-file entries (service sets and domains).

Pure: documents in, a :class:`SiteFragment` out. Everything the site model cannot express the
same way is not silently dropped but reported as a :class:`Note` (the CLI prints notes and
writes them into the fragment as comments), so an operator sees exactly what changed.

Mapping, in short:

* ``incomingServer type="imap"|"pop3"`` and ``outgoingServer type="smtp"`` become servers of one
  service set, in document order; URL-based entries (``ews``, ``owa``, ``graph``) and the old
  ``exchange`` entry are left out, because mailwarden serves IMAP/POP3/SMTP.
* ``socketType`` ``SSL``/``STARTTLS``/``plain`` → ``tls`` ``implicit``/``starttls``/``none``.
* ``username`` ``%EMAILADDRESS%``/``%EMAILLOCALPART%`` → login rule ``address``/``localpart``;
  any other pattern of placeholders → ``login_template``.
* ``%EMAILDOMAIN%`` in a host name (hosters with one server name per customer domain) → one
  service set per domain with the name filled in; otherwise the first ``<domain>`` is the
  domain and the others are its aliases.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailwarden.address import AddressError, normalise_domain
from mailwarden.ispdb.document import ProviderDocument, ServerEntry

KINDS = {("incoming", "imap"): "imap", ("incoming", "pop3"): "pop3", ("outgoing", "smtp"): "smtp"}
TLS = {"SSL": "implicit", "STARTTLS": "starttls", "plain": "none"}
AUTH = {
    "password-cleartext": "password-cleartext",
    "plain": "password-cleartext",
    "password-encrypted": "password-encrypted",
    "secure": "password-encrypted",
    "OAuth2": "OAuth2",
    "NTLM": "NTLM",
    "GSSAPI": "GSSAPI",
    "TLS-client-cert": "TLS-client-cert",
    "client-IP-address": "client-IP-address",
    "none": "none",
}
LOGIN_RULES = {"%EMAILADDRESS%": "address", "%EMAILLOCALPART%": "localpart"}
TYPO_ADDRESS = "%EMAILADDRESS"
DOMAIN_PLACEHOLDER = "%EMAILDOMAIN%"
IMPLICIT_PORTS = {993, 995, 465}
STARTTLS_PORTS = {143, 110, 587, 25}
MAX_DISPLAY_NAME = 60
MAX_DISPLAY_SHORT_NAME = 20
_URL_RE = re.compile(r"https?://\S+")
_PLACEHOLDER_RE = re.compile(r"%[A-Za-z]+%?")

NoteFn = Callable[[ServerEntry | None, str], None]


@dataclass(frozen=True, slots=True)
class Note:
    """Something imported differently from the document, or left out, and why."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


@dataclass
class SiteFragment:
    """``[services.*]`` and ``[domains.*]`` tables, ready to be written as TOML."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    """Service set name → the document it came from (for comments)."""
    notes: list[Note] = field(default_factory=list)


@dataclass
class _Server:
    kind: str
    table: dict[str, Any]
    rule: str | None
    """``address``/``localpart`` for rule-based logins, None for a template."""
    per_domain_host: bool


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "provider"


def _domains(doc: ProviderDocument, taken: dict[str, str], notes: list[Note]) -> list[str]:
    result: list[str] = []
    for raw in doc.domains:
        try:
            name = normalise_domain(raw)
        except AddressError as exc:
            notes.append(Note(doc.source, None, f"domain {raw!r} left out: {exc}"))
            continue
        if name in result:
            notes.append(Note(doc.source, None, f"domain {name!r} is listed twice; kept once"))
            continue
        if name in taken:
            notes.append(
                Note(
                    doc.source,
                    None,
                    f"domain {name!r} left out: already imported from {taken[name]}",
                )
            )
            continue
        result.append(name)
    return result


def _login(entry: ServerEntry, note: NoteFn) -> tuple[str | None, str | None]:
    """(rule, template) for the entry's ``username``."""
    value = entry.username
    if value is None:
        note(
            entry,
            "no <username>: mailwarden always sends one (clients need it), "
            "here the address (login rule 'address')",
        )
        return "address", None
    if value == TYPO_ADDRESS:
        note(entry, f"<username>{value}</username> lacks its closing '%'; read as %EMAILADDRESS%")
        return "address", None
    if value in LOGIN_RULES:
        return LOGIN_RULES[value], None
    placeholders = _PLACEHOLDER_RE.findall(value)
    known = {"%EMAILADDRESS%", "%EMAILLOCALPART%", DOMAIN_PLACEHOLDER}
    if (
        placeholders
        and all(p in known for p in placeholders)
        and not any(c.isspace() for c in value)
    ):
        return None, value
    note(
        entry,
        f"<username>{value[:60]}</username> is not built from the address; "
        "replaced by the address (login rule 'address')",
    )
    return "address", None


def _server(entry: ServerEntry, kind: str, note: NoteFn) -> _Server | None:
    host = entry.hostname
    if not host:
        note(entry, f"{kind} server without <hostname> left out")
        return None
    per_domain = DOMAIN_PLACEHOLDER in host
    rest = host.replace(DOMAIN_PLACEHOLDER, "example.org")
    if "%" in rest:
        note(entry, f"host name {host!r} uses a placeholder other than %EMAILDOMAIN%; left out")
        return None
    try:
        normalise_domain(rest)
    except AddressError as exc:
        note(entry, f"host name {host!r} left out: {exc}")
        return None
    if entry.socket_type not in TLS:
        note(entry, f"socketType {entry.socket_type!r} is not SSL, STARTTLS or plain; left out")
        return None
    tls = TLS[entry.socket_type]
    table: dict[str, Any] = {"host": host.lower()}
    if entry.port is not None:
        table["port"] = entry.port
    table["tls"] = tls
    port = entry.port
    if port is not None and tls == "starttls" and port in IMPLICIT_PORTS:
        note(entry, f"STARTTLS on the implicit-TLS port {port} breaks Outlook; left out")
        return None
    auth: list[str] = []
    for value in entry.authentication:
        mapped = AUTH.get(value)
        if mapped is None:
            note(entry, f"authentication {value!r} is not supported; dropped")
        elif mapped not in auth:
            auth.append(mapped)
    if auth:
        table["auth"] = auth
    else:
        note(entry, "no usable <authentication>; password-cleartext assumed")
    if port is not None and tls == "implicit" and port in STARTTLS_PORTS:
        note(entry, f"implicit TLS on port {port} (normally STARTTLS): allow_unusual_port set")
        table["allow_unusual_port"] = True
    rule, template = _login(entry, note)
    if template is not None:
        table["login_template"] = template
    return _Server(kind, table, rule, per_domain)


def _pop3_keep_days(doc: ProviderDocument) -> int | None:
    for entry in doc.entries("incoming", "pop3"):
        if entry.pop3 is None:
            continue
        if entry.pop3.leave_messages_on_server is False:
            return 0
        if entry.pop3.days_to_leave_messages_on_server is not None:
            return min(entry.pop3.days_to_leave_messages_on_server, 3650)
    return None


def _domain_table(doc: ProviderDocument, services: str, note: NoteFn) -> dict[str, Any]:
    table: dict[str, Any] = {"services": services}
    if doc.display_name:
        if len(doc.display_name) <= MAX_DISPLAY_NAME:
            table["display_name"] = doc.display_name
        else:
            note(None, f"displayName longer than {MAX_DISPLAY_NAME} characters; left out")
    if doc.display_short_name:
        if doc.display_short_name_tag != "displayShortName":
            note(None, f"<{doc.display_short_name_tag}> read as <displayShortName>")
        if len(doc.display_short_name) <= MAX_DISPLAY_SHORT_NAME:
            table["display_short_name"] = doc.display_short_name
        else:
            note(
                None,
                f"displayShortName {doc.display_short_name!r} is longer than "
                f"{MAX_DISPLAY_SHORT_NAME} characters (the draft's limit); left out",
            )
    url = next((u for u in doc.documentation_urls if _URL_RE.fullmatch(u)), None)
    if url:
        table["documentation_url"] = url
    return table


def convert(documents: Sequence[ProviderDocument]) -> SiteFragment:
    """Turn ``documents`` into one fragment; later documents never take an earlier's domain."""
    fragment = SiteFragment()
    taken: dict[str, str] = {}
    for doc in documents:
        _convert_one(doc, fragment, taken)
    return fragment


def _unique(name: str, existing: dict[str, Any]) -> str:
    candidate, n = name, 2
    while candidate in existing:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _convert_one(doc: ProviderDocument, fragment: SiteFragment, taken: dict[str, str]) -> None:
    notes = fragment.notes

    def note(entry: ServerEntry | None, message: str) -> None:
        notes.append(Note(doc.source, entry.line if entry else None, message))

    domains = _domains(doc, taken, notes)
    servers: list[_Server] = []
    for entry in doc.servers:
        kind = KINDS.get((entry.role, entry.type))
        if kind is None:
            what = "URL-based" if entry.url and not entry.hostname else "not IMAP/POP3/SMTP"
            note(entry, f"{entry.role} server type {entry.type!r} ({what}) left out")
            continue
        server = _server(entry, kind, note)
        if server is not None:
            servers.append(server)
    kinds = [s.kind for s in servers]
    if not domains or "smtp" not in kinds or not ({"imap", "pop3"} & set(kinds)):
        missing = (
            "no domain"
            if not domains
            else "no usable outgoing server"
            if "smtp" not in kinds
            else "no usable incoming server"
        )
        note(None, f"nothing imported: {missing} left")
        return
    rules = Counter(s.rule for s in servers if s.rule is not None)
    domain_rule = rules.most_common(1)[0][0] if rules else "address"
    options: dict[str, Any] = {}
    incoming = [k for k in kinds if k != "smtp"]
    if incoming[0] == "pop3" and "imap" in incoming:
        options["incoming_first"] = "pop3"
    keep = _pop3_keep_days(doc)
    if keep is not None and "pop3" in kinds:
        options["pop3_keep_days"] = keep

    def service_set(domain: str | None) -> dict[str, Any]:
        result: dict[str, Any] = dict(options)
        for server in servers:
            table = dict(server.table)
            if domain is not None:
                table["host"] = table["host"].replace(DOMAIN_PLACEHOLDER.lower(), domain)
            if server.rule is not None and server.rule != domain_rule:
                table["login"] = server.rule
            result.setdefault(server.kind, []).append(table)
        return result

    base = _slug(doc.provider_id)
    per_domain_hosts = any(s.per_domain_host for s in servers)
    groups: list[tuple[str, str, tuple[str, ...]]]
    if per_domain_hosts:
        note(None, "host names depend on the domain: one service set per domain")
        groups = [(f"{base}-{_slug(d)}", d, ()) for d in domains]
    else:
        groups = [(base, domains[0], tuple(domains[1:]))]
    domain_table = _domain_table(doc, "", note)
    for name, domain, aliases in groups:
        set_name = _unique(name, fragment.services)
        fragment.services[set_name] = service_set(domain if per_domain_hosts else None)
        fragment.origin[set_name] = doc.source
        table = {**domain_table, "services": set_name}
        if aliases:
            table["aliases"] = list(aliases)
        if domain_rule != "address":
            table["login"] = domain_rule
        fragment.domains[domain] = table
        for served in (domain, *aliases):
            taken[served] = doc.source
