"""Reading ``config-v1.1.xml`` documents (the Thunderbird ISP database format).

The same parser reads the ISPDB files an operator imports and, in the tests, the documents our
own server renders, so both sides of a comparison go through one reading of the format.

Input is untrusted: the size is capped before parsing, DTDs, entities and external references
are refused by defusedxml before anything is expanded, and every text value is bounded. A SAX
parse (rather than a tree) keeps the line of every element, so errors point at the line.
"""

from __future__ import annotations

import xml.sax
from dataclasses import dataclass, field
from typing import Literal

import defusedxml.sax
from defusedxml import DefusedXmlException

from mailwarden.errors import InputError

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_TEXT = 2048
MAX_ELEMENTS = 20_000

Role = Literal["incoming", "outgoing"]


@dataclass(frozen=True, slots=True)
class Pop3Options:
    """The ``<pop3>`` block of a POP3 server (all optional)."""

    leave_messages_on_server: bool | None = None
    days_to_leave_messages_on_server: int | None = None


@dataclass(frozen=True, slots=True)
class ServerEntry:
    """One ``incomingServer`` or ``outgoingServer``, values as written (white space trimmed)."""

    role: Role
    type: str
    line: int
    hostname: str | None = None
    port: int | None = None
    socket_type: str | None = None
    username: str | None = None
    authentication: tuple[str, ...] = ()
    url: str | None = None
    pop3: Pop3Options | None = None


@dataclass(frozen=True, slots=True)
class ProviderDocument:
    """The first ``emailProvider`` of a document: what a client would read."""

    source: str
    provider_id: str
    domains: tuple[str, ...]
    display_name: str | None = None
    display_short_name: str | None = None
    display_short_name_tag: str = "displayShortName"
    """``displayNameShort`` when the document used that misspelling."""
    documentation_urls: tuple[str, ...] = ()
    servers: tuple[ServerEntry, ...] = ()

    def entries(self, role: Role, kind: str | None = None) -> list[ServerEntry]:
        return [s for s in self.servers if s.role == role and (kind is None or s.type == kind)]


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[_Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def child(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def all(self, tag: str) -> list[_Node]:
        return [c for c in self.children if c.tag == tag]

    def value(self) -> str:
        return "".join(self.text).strip()


class _TreeBuilder(xml.sax.handler.ContentHandler):
    """Builds a small tree of :class:`_Node` with line numbers, within fixed bounds."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.root: _Node | None = None
        self._stack: list[_Node] = []
        self._count = 0
        self._locator: xml.sax.xmlreader.Locator | None = None

    def setDocumentLocator(self, locator: xml.sax.xmlreader.Locator) -> None:
        self._locator = locator

    def _line(self) -> int:
        line = self._locator.getLineNumber() if self._locator is not None else None
        return line or 0

    def startElement(self, name: str, attrs: xml.sax.xmlreader.AttributesImpl) -> None:
        self._count += 1
        if self._count > MAX_ELEMENTS:
            raise InputError(f"{self.source}: more than {MAX_ELEMENTS} elements")
        node = _Node(name, {k: attrs.getValue(k) for k in attrs.getNames()}, self._line())
        if self._stack:
            self._stack[-1].children.append(node)
        else:
            self.root = node
        self._stack.append(node)

    def endElement(self, name: str) -> None:
        node = self._stack.pop()
        if len(node.value()) > MAX_TEXT:
            raise InputError(
                f"{self.source}:{node.line}: <{name}> holds more than {MAX_TEXT} characters"
            )

    def characters(self, content: str) -> None:
        if self._stack:
            node = self._stack[-1]
            if sum(map(len, node.text)) <= MAX_TEXT:
                node.text.append(content)


def _parse_tree(data: bytes, source: str) -> _Node:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InputError(
            f"{source}: larger than {MAX_DOCUMENT_BYTES // 1024} KiB; "
            "an ISPDB document is a few KiB"
        )
    builder = _TreeBuilder(source)
    try:
        defusedxml.sax.parseString(
            data, builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        kind = type(exc).__name__.removesuffix("Forbidden")
        raise InputError(
            f"{source}: refused: the document declares a {kind} (DTDs, entities and external "
            "references are not accepted)"
        ) from None
    except xml.sax.SAXParseException as exc:
        raise InputError(
            f"{source}:{exc.getLineNumber()}: not well-formed XML: {exc.getMessage()}"
        ) from None
    if builder.root is None:
        raise InputError(f"{source}: empty document")
    return builder.root


def _int(node: _Node, source: str, low: int, high: int) -> int:
    text = node.value()
    if not text.isdigit() or not low <= int(text) <= high:
        raise InputError(
            f"{source}:{node.line}: <{node.tag}> must be a number from {low} to {high} "
            f"(got {text[:40]!r})"
        )
    return int(text)


def _bool(node: _Node, source: str) -> bool:
    text = node.value().lower()
    if text not in ("true", "false"):
        raise InputError(f"{source}:{node.line}: <{node.tag}> must be true or false")
    return text == "true"


def _text(node: _Node | None) -> str | None:
    if node is None:
        return None
    return node.value() or None


def _server(node: _Node, source: str) -> ServerEntry:
    role: Role = "incoming" if node.tag == "incomingServer" else "outgoing"
    kind = node.attrs.get("type", "").strip()
    if not kind:
        raise InputError(f"{source}:{node.line}: <{node.tag}> has no type attribute")
    port_node = node.child("port")
    pop3: Pop3Options | None = None
    pop3_node = node.child("pop3")
    if pop3_node is not None:
        leave = pop3_node.child("leaveMessagesOnServer")
        days = pop3_node.child("daysToLeaveMessagesOnServer")
        pop3 = Pop3Options(
            leave_messages_on_server=_bool(leave, source) if leave is not None else None,
            days_to_leave_messages_on_server=(
                _int(days, source, 0, 36500) if days is not None else None
            ),
        )
    username_node = node.child("username")
    return ServerEntry(
        role=role,
        type=kind,
        line=node.line,
        hostname=_text(node.child("hostname")),
        port=_int(port_node, source, 1, 65535) if port_node is not None else None,
        socket_type=_text(node.child("socketType")),
        # An empty <username/> is a value (""), a missing one is None.
        username=username_node.value() if username_node is not None else None,
        authentication=tuple(a.value() for a in node.all("authentication") if a.value()),
        url=_text(node.child("url")),
        pop3=pop3,
    )


def parse_document(data: bytes, source: str) -> ProviderDocument:
    """Parse one ``config-v1.1.xml`` document; raise :class:`InputError` naming ``source``."""
    root = _parse_tree(data, source)
    if root.tag != "clientConfig":
        raise InputError(
            f"{source}:{root.line}: root element is <{root.tag}>, expected <clientConfig> "
            "(is this a config-v1.1.xml document?)"
        )
    provider = root.child("emailProvider")
    if provider is None:
        raise InputError(f"{source}:{root.line}: no <emailProvider> in <clientConfig>")
    provider_id = provider.attrs.get("id", "").strip()
    if not provider_id:
        raise InputError(f"{source}:{provider.line}: <emailProvider> has no id attribute")
    domains = tuple(d.value() for d in provider.all("domain") if d.value())
    if not domains:
        raise InputError(f"{source}:{provider.line}: <emailProvider> lists no <domain>")
    short = provider.child("displayShortName")
    short_tag = "displayShortName"
    if short is None:
        short = provider.child("displayNameShort")
        short_tag = "displayNameShort"
    docs = [d.attrs.get("url", "").strip() for d in provider.all("documentation")]
    servers = tuple(
        _server(node, source)
        for node in provider.children
        if node.tag in ("incomingServer", "outgoingServer")
    )
    return ProviderDocument(
        source=source,
        provider_id=provider_id,
        domains=domains,
        display_name=_text(provider.child("displayName")),
        display_short_name=_text(short),
        display_short_name_tag=short_tag,
        documentation_urls=tuple(u for u in docs if u),
        servers=servers,
    )
