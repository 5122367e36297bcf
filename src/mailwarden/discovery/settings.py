"""What a mail client ends up with: the servers, ports, TLS modes and login names a user sees.

Each client reads its documents its own way (protocols.md §1.7, §2.4, §2.9): these functions are
those readings, so that the probe can show where two clients end with different settings for
the same address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mailwarden.address import Address
from mailwarden.discovery.pox import PoxProtocol
from mailwarden.ispdb.document import ProviderDocument, ServerEntry

TlsMode = Literal["implicit", "starttls", "none"]
Kind = Literal["imap", "pop3", "smtp"]

_SOCKET_TYPES: dict[str, TlsMode] = {"SSL": "implicit", "STARTTLS": "starttls", "plain": "none"}
_KINDS: dict[str, Kind] = {"imap": "imap", "pop3": "pop3", "smtp": "smtp"}
_STARTTLS_PORTS = {143, 110, 25, 587}


@dataclass(frozen=True, slots=True)
class ServerSetting:
    kind: Kind
    host: str
    port: int
    tls: TlsMode
    login: str
    auth: tuple[str, ...] = ()
    """Autoconfig method names (``password-cleartext``…); empty when the document gave none."""

    def line(self) -> str:
        return f"{self.kind.upper()} {self.host}:{self.port} {self.tls}, login {self.login}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "login": self.login,
            "auth": list(self.auth),
        }

    def same_as(self, other: ServerSetting) -> bool:
        """Same server as a user would configure it (auth methods aside)."""
        return (self.kind, self.host, self.port, self.tls, self.login) == (
            other.kind,
            other.host,
            other.port,
            other.tls,
            other.login,
        )


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """The incoming and outgoing server a client takes, and the ones it offers instead."""

    incoming: ServerSetting | None
    outgoing: ServerSetting | None
    alternatives: tuple[ServerSetting, ...] = ()

    def servers(self) -> tuple[ServerSetting, ...]:
        chosen = tuple(s for s in (self.incoming, self.outgoing) if s is not None)
        return chosen + self.alternatives

    def to_dict(self) -> dict[str, Any]:
        return {
            "incoming": self.incoming.to_dict() if self.incoming else None,
            "outgoing": self.outgoing.to_dict() if self.outgoing else None,
            "alternatives": [s.to_dict() for s in self.alternatives],
        }


def expand(template: str, address: Address) -> str:
    """Thunderbird's placeholders in a user name (protocols.md §1.4)."""
    return (
        template.replace("%EMAILADDRESS%", str(address))
        .replace("%EMAILLOCALPART%", address.localpart)
        .replace("%EMAILDOMAIN%", address.domain)
    )


def _from_entry(entry: ServerEntry, address: Address) -> ServerSetting | None:
    """A Thunderbird server entry, or None when Thunderbird would skip it as invalid."""
    kind = _KINDS.get(entry.type)
    tls = _SOCKET_TYPES.get(entry.socket_type or "")
    if kind is None or tls is None or not entry.hostname or entry.port is None:
        return None
    login = expand(entry.username, address) if entry.username is not None else "undefined"
    return ServerSetting(kind, entry.hostname.lower(), entry.port, tls, login, entry.authentication)


def from_autoconfig(document: ProviderDocument, address: Address) -> ClientSettings:
    """Thunderbird's reading: the first valid entry of each role wins, the rest in order are
    alternatives; invalid entries are skipped silently (protocols.md §1.7)."""
    incoming: list[ServerSetting] = []
    outgoing: list[ServerSetting] = []
    for entry in document.servers:
        setting = _from_entry(entry, address)
        if setting is None:
            continue
        if entry.role == "incoming" and setting.kind in ("imap", "pop3"):
            incoming.append(setting)
        elif entry.role == "outgoing" and setting.kind == "smtp":
            outgoing.append(setting)
    return ClientSettings(
        incoming[0] if incoming else None,
        outgoing[0] if outgoing else None,
        tuple(incoming[1:] + outgoing[1:]),
    )


def _outlook_tls(protocol: PoxProtocol) -> TlsMode:
    """Outlook: ``Encryption`` wins (SSL = implicit, TLS = STARTTLS); else ``SSL`` (default on)."""
    encryption = (protocol.encryption or "").lower()
    if encryption == "ssl":
        return "implicit"
    if encryption == "tls":
        return "starttls"
    if encryption == "none":
        return "none"
    return "implicit" if protocol.ssl else "none"


def _thunderbird_tls(protocol: PoxProtocol) -> TlsMode:
    """Thunderbird ignores ``Encryption`` except None and guesses from the port (§2.4)."""
    if not protocol.ssl or (protocol.encryption or "").lower() == "none":
        return "none"
    return "starttls" if protocol.port in _STARTTLS_PORTS else "implicit"


def from_pox(
    protocols: tuple[PoxProtocol, ...],
    address: Address,
    *,
    reader: Literal["outlook", "thunderbird"],
) -> ClientSettings:
    """An Autodiscover answer as Outlook or as Thunderbird reads it."""
    tls_of = _outlook_tls if reader == "outlook" else _thunderbird_tls
    incoming: list[ServerSetting] = []
    outgoing: list[ServerSetting] = []
    for protocol in protocols:
        kind = _KINDS.get(protocol.type.lower())
        if kind is None or not protocol.server or not protocol.port:
            continue
        login = protocol.login_name or str(address)
        auth = ("password-encrypted",) if protocol.spa else ("password-cleartext",)
        setting = ServerSetting(
            kind, protocol.server.lower(), protocol.port, tls_of(protocol), login, auth
        )
        (outgoing if kind == "smtp" else incoming).append(setting)
    return ClientSettings(
        incoming[0] if incoming else None,
        outgoing[0] if outgoing else None,
        tuple(incoming[1:] + outgoing[1:]),
    )
