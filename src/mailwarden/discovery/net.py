"""How the probe reaches a host: names through the chosen resolver, connections bounded in time.

Every name is resolved through :class:`~mailwarden.discovery.resolver.Resolver` (the resolver the
operator named with ``--resolver``), never the system's ``getaddrinfo``: the probe must see what
that resolver says. ``--connect-to HOST:PORT:ADDR:PORT`` (curl's option of the same name) sends
connections for one name and port elsewhere while TLS still checks the original name, so a new
server can be tried before DNS points at it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailwarden.discovery.resolver import DnsAnswer, DnsStatus, Resolver
from mailwarden.errors import InputError

DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ConnectTo:
    """``HOST:PORT:ADDR:PORT``: a connection for HOST:PORT goes to ADDR:PORT instead.

    An empty HOST or PORT matches any; an empty ADDR keeps the host (resolved as usual), an
    empty PORT after it keeps the port.
    """

    host: str | None
    port: int | None
    to_host: str | None
    to_port: int | None

    def matches(self, host: str, port: int) -> bool:
        return (self.host is None or self.host == host.rstrip(".").lower()) and (
            self.port is None or self.port == port
        )

    def __str__(self) -> str:
        def part(value: object) -> str:
            text = "" if value is None else str(value)
            return f"[{text}]" if ":" in text else text

        return ":".join(part(v) for v in (self.host, self.port, self.to_host, self.to_port))


def _split_connect_to(text: str) -> list[str]:
    """Split on ':' outside brackets (IPv6 addresses are written ``[::1]``)."""
    parts: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_connect_to(text: str) -> ConnectTo:
    parts = _split_connect_to(text.strip())
    if len(parts) != 4:
        raise InputError(
            f"--connect-to {text!r}: expected HOST:PORT:ADDR:PORT (e.g. "
            "autoconfig.example.org:443:192.0.2.10:443; empty parts match any / keep the original)"
        )

    def port(value: str) -> int | None:
        if not value:
            return None
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise InputError(f"--connect-to {text!r}: {value!r} is not a port number (1-65535)")
        return int(value)

    host = parts[0].strip("[]").rstrip(".").lower() or None
    to_host = parts[2].strip("[]") or None
    return ConnectTo(host, port(parts[1]), to_host, port(parts[3]))


class Unreachable(Exception):
    """No connection could be made; the message says why (DNS, refused, timeout)."""

    def __init__(self, message: str, *, kind: Literal["dns", "connect", "timeout"]) -> None:
        super().__init__(message)
        self.kind = kind
        """``dns``, ``connect`` or ``timeout``."""


@dataclass(frozen=True, slots=True)
class Connected:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    address: str
    port: int


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """What a careful client checks: the chain (system store, or only ``ca_file``) and the name."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"--ca-file {ca_file}: cannot read CA certificates ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Network:
    """Resolves through ``resolver``, applies ``connect_to`` rules, bounds every connect."""

    def __init__(
        self,
        resolver: Resolver,
        connect_to: Sequence[ConnectTo] = (),
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ca_file: Path | None = None,
    ) -> None:
        self.resolver = resolver
        self.connect_to = tuple(connect_to)
        self.connect_timeout = connect_timeout
        self.ca_file = ca_file
        self._tls: ssl.SSLContext | None = None
        self._answers: dict[str, asyncio.Task[tuple[DnsAnswer, DnsAnswer]]] = {}

    @property
    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = tls_context(self.ca_file)
        return self._tls

    def rewrite(self, host: str, port: int) -> tuple[str, int, ConnectTo | None]:
        for rule in self.connect_to:
            if rule.matches(host, port):
                return rule.to_host or host, rule.to_port or port, rule
        return host, port, None

    async def addresses(self, host: str) -> tuple[DnsAnswer, DnsAnswer]:
        """A and AAAA of ``host``, asked once per probe however many steps need them."""
        key = host.rstrip(".").lower()
        task = self._answers.get(key)
        if task is None:
            task = asyncio.ensure_future(self.resolver.addresses(key))
            self._answers[key] = task
        # Shielded: one step giving up (its own timeout) must not cancel the others' answer.
        return await asyncio.shield(task)

    async def candidates(self, host: str, port: int) -> tuple[list[tuple[str, int]], str]:
        """The (address, port) pairs to try for ``host:port``, and how they were found.

        Raises :class:`Unreachable` when the name has no address.
        """
        target, target_port, rule = self.rewrite(host, port)
        via = f" (--connect-to {rule})" if rule else ""
        if is_ip(target):
            return [(target, target_port)], via
        a, aaaa = await self.addresses(target)
        found = [(r, target_port) for r in aaaa.records] + [(r, target_port) for r in a.records]
        if not found:
            worst = a if a.status.failed else aaaa
            if a.status is DnsStatus.NXDOMAIN:
                why = "no such name (NXDOMAIN)"
            elif worst.status.failed:
                why = worst.summary()
            else:
                why = "no A or AAAA record"
            raise Unreachable(f"{target}: {why}{via}", kind="dns")
        return found, via

    async def open(self, host: str, port: int) -> Connected:
        """A TCP connection to ``host:port``: each address in turn (IPv6 first), each bounded."""
        pairs, via = await self.candidates(host, port)
        errors: list[str] = []
        for address, target_port in pairs:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(address, target_port)
            except TimeoutError:
                errors.append(f"{hostport(address, target_port)}: no answer in time")
            except OSError as exc:
                # asyncio words a refused connect "Connect call failed (addr)": say why instead.
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                errors.append(f"{hostport(address, target_port)}: {reason}")
            else:
                return Connected(reader, writer, address, target_port)
        timed_out = all("in time" in e for e in errors)
        raise Unreachable("; ".join(errors) + via, kind="timeout" if timed_out else "connect")


def hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
