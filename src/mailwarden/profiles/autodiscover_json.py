"""Autodiscover v2 (JSON), as Outlook mobile / Mac / new Outlook and Microsoft's cloud use it.

An IMAP/SMTP site answers ``Protocol=AutodiscoverV1`` with the URL of its POX endpoint and
every other protocol with Exchange's documented 400 error (protocols.md §3).
"""

from __future__ import annotations

import json

CONTENT_TYPE = "application/json; charset=utf-8"
SUPPORTED = "AutodiscoverV1"


def render_v1(protocol_as_sent: str, public_host: str) -> bytes:
    """The success answer; the protocol is echoed in the client's own spelling (as O365 does)."""
    return json.dumps(
        {
            "Protocol": protocol_as_sent,
            "Url": f"https://{public_host}/autodiscover/autodiscover.xml",
        },
        ensure_ascii=True,
        separators=(",", ":"),
    ).encode("ascii")


def render_error(code: str, message: str) -> bytes:
    return json.dumps(
        {"ErrorCode": code, "ErrorMessage": message}, ensure_ascii=True, separators=(",", ":")
    ).encode("ascii")


def invalid_protocol(protocol_as_sent: str) -> bytes:
    return render_error(
        "InvalidProtocol",
        f"The given protocol value '{protocol_as_sent[:64]}' is invalid. "
        f"Supported values are '{SUPPORTED}'",
    )


def is_supported(protocol: str) -> bool:
    return protocol.strip().lower() == SUPPORTED.lower()
