"""What Thunderbird, Outlook and Apple devices get for one address, as table rows.

The documents come from the very renderers the autoconfig server uses and are then read back
(defusedxml, plistlib): the table shows what a client receives, not a second opinion of it.
Pure.
"""

from __future__ import annotations

import plistlib
from dataclasses import dataclass

from defusedxml import ElementTree

from mailwarden.address import Address
from mailwarden.profiles import apple, outlook, thunderbird
from mailwarden.profiles.subject import Subject
from mailwarden.site.model import DomainView, Site


@dataclass(frozen=True, slots=True)
class ClientRow:
    client: str
    direction: str
    """``incoming`` or ``outgoing``."""
    protocol: str
    host: str
    port: str
    security: str
    login: str


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def thunderbird_rows(document: bytes) -> list[ClientRow]:
    root = ElementTree.fromstring(document)
    rows = []
    for server in root.iter():
        name = _local(server.tag)
        if name not in ("incomingServer", "outgoingServer"):
            continue
        fields = {_local(child.tag): (child.text or "") for child in server}
        rows.append(
            ClientRow(
                "Thunderbird",
                "incoming" if name == "incomingServer" else "outgoing",
                server.get("type", "").upper(),
                fields.get("hostname", ""),
                fields.get("port", ""),
                fields.get("socketType", ""),
                fields.get("username", ""),
            )
        )
    return rows


def outlook_rows(document: bytes) -> list[ClientRow]:
    root = ElementTree.fromstring(document)
    rows = []
    for protocol in root.iter():
        if _local(protocol.tag) != "Protocol":
            continue
        fields = {_local(child.tag): (child.text or "") for child in protocol}
        kind = fields.get("Type", "")
        security = fields.get("Encryption") or ("SSL" if fields.get("SSL") == "on" else "none")
        rows.append(
            ClientRow(
                "Outlook",
                "outgoing" if kind == "SMTP" else "incoming",
                kind,
                fields.get("Server", ""),
                fields.get("Port", ""),
                security,
                fields.get("LoginName", ""),
            )
        )
    return rows


def apple_rows(document: bytes) -> list[ClientRow]:
    profile = plistlib.loads(document)
    rows = []
    for account in profile.get("PayloadContent", []):
        kind = "IMAP" if account.get("EmailAccountType") == "EmailTypeIMAP" else "POP3"
        for prefix, direction, protocol in (
            ("Incoming", "incoming", kind),
            ("Outgoing", "outgoing", "SMTP"),
        ):
            rows.append(
                ClientRow(
                    "Apple",
                    direction,
                    protocol,
                    str(account.get(f"{prefix}MailServerHostName", "")),
                    str(account.get(f"{prefix}MailServerPortNumber", "")),
                    "TLS" if account.get(f"{prefix}MailServerUseSSL") else "none",
                    str(account.get(f"{prefix}MailServerUsername", "")),
                )
            )
    return rows


def client_rows(
    site: Site, domain: DomainView, subject: Subject, address: Address
) -> list[ClientRow]:
    """Every client's servers for ``subject`` at ``domain``."""
    return [
        *thunderbird_rows(thunderbird.render(site, domain, subject)),
        *outlook_rows(outlook.render_settings(domain, subject)),
        *apple_rows(apple.render(site, domain, subject, address)),
    ]
