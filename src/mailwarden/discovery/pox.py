"""Reading an Autodiscover POX *response*, as a client does (the server side is
``mailwarden.profiles.outlook``).

Elements are matched by local name (servers differ in namespace spelling); DTDs and entities
are refused by defusedxml before anything is expanded; the size is bounded by the HTTP layer
and every value here is cut at :data:`MAX_VALUE`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

MAX_VALUE = 512


class PoxResponseError(ValueError):
    """Not an Autodiscover answer a client can use; the message says why."""


@dataclass(frozen=True, slots=True)
class PoxProtocol:
    type: str
    server: str | None
    port: int | None
    login_name: str | None
    ssl: bool
    """``SSL``, which defaults to on."""
    encryption: str | None
    spa: bool
    """``SPA``, which defaults to on (Outlook then tries NTLM: fails on IMAP servers)."""


@dataclass(frozen=True, slots=True)
class PoxAnswer:
    action: Literal["settings", "redirectAddr", "redirectUrl", "error"]
    protocols: tuple[PoxProtocol, ...] = ()
    redirect: str | None = None
    error_code: str | None = None
    error_message: str | None = None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: ET.Element, name: str) -> ET.Element | None:
    for child in node:
        if _local(child.tag) == name:
            return child
    return None


def _text(node: ET.Element, name: str) -> str | None:
    child = _child(node, name)
    if child is None or child.text is None:
        return None
    value = child.text.strip()
    return value[:MAX_VALUE] if value else None


def _flag(node: ET.Element, name: str, default: bool) -> bool:
    value = _text(node, name)
    return default if value is None else value.lower() == "on"


def _protocol(node: ET.Element) -> PoxProtocol:
    port_text = _text(node, "Port")
    port = int(port_text) if port_text and port_text.isdigit() and int(port_text) < 65536 else None
    return PoxProtocol(
        type=_text(node, "Type") or "",
        server=_text(node, "Server"),
        port=port,
        login_name=_text(node, "LoginName"),
        ssl=_flag(node, "SSL", True),
        encryption=_text(node, "Encryption"),
        spa=_flag(node, "SPA", True),
    )


def parse_response(body: bytes) -> PoxAnswer:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise PoxResponseError("refused: the answer has a DTD or entities") from None
    except ET.ParseError as exc:
        raise PoxResponseError(f"not well-formed XML ({exc})") from None
    if _local(root.tag) != "Autodiscover":
        raise PoxResponseError(f"root element is <{_local(root.tag)}>, expected <Autodiscover>")
    response = _child(root, "Response")
    if response is None:
        raise PoxResponseError("no <Response> in <Autodiscover>")
    error = _child(response, "Error")
    if error is not None:
        return PoxAnswer(
            "error",
            error_code=_text(error, "ErrorCode"),
            error_message=_text(error, "Message"),
        )
    account = _child(response, "Account")
    if account is None:
        raise PoxResponseError("no <Account> (and no <Error>) in <Response>")
    action = (_text(account, "Action") or "settings").strip()
    if action == "redirectAddr":
        target = _text(account, "RedirectAddr")
        if not target:
            raise PoxResponseError("Action redirectAddr without <RedirectAddr>")
        return PoxAnswer("redirectAddr", redirect=target)
    if action == "redirectUrl":
        target = _text(account, "RedirectUrl")
        if not target:
            raise PoxResponseError("Action redirectUrl without <RedirectUrl>")
        return PoxAnswer("redirectUrl", redirect=target)
    if action != "settings":
        raise PoxResponseError(f"unknown <Action> {action!r}")
    protocols = tuple(_protocol(node) for node in account if _local(node.tag) == "Protocol")
    if not protocols:
        raise PoxResponseError("Action settings without any <Protocol>")
    return PoxAnswer("settings", protocols=protocols)


REQUEST_TEMPLATE = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/'
    'requestschema/2006">\n'
    "  <Request>\n"
    "    <EMailAddress>{address}</EMailAddress>\n"
    "    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/"
    "responseschema/2006a</AcceptableResponseSchema>\n"
    "  </Request>\n"
    "</Autodiscover>\n"
)


def request_body(address: str) -> bytes:
    """The POST body Outlook sends (protocols.md §2.1); the address is escaped for XML."""
    from mailwarden.profiles.xmltext import text

    return REQUEST_TEMPLATE.format(address=text(address)).encode("utf-8")
