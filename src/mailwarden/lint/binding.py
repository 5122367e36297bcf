"""Which listening sockets can coexist on Linux: a model of bind()/listen() for TCP.

Both MTAs set ``SO_REUSEADDR`` and neither uses ``SO_REUSEPORT``, so on Linux two listeners on
one port conflict whenever their addresses overlap: equal addresses, or a wildcard beside anything
of the same family. An inet6 socket without ``IPV6_V6ONLY`` (sendmail leaves it to the sysctl
``net.ipv6.bindv6only``; Postfix always sets it) also covers IPv4: ``::`` every IPv4 address,
``::ffff:a.b.c.d`` the address ``a.b.c.d`` (and with ``IPV6_V6ONLY`` set a mapped address cannot
be bound at all: ``EINVAL``). The socket set up later in configuration order is the one that fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mailwarden.lint.addresses import Address, Family

ANY = "*"


class BindStatus(Enum):
    OK = "ok"
    IN_USE = "Address already in use"
    INVALID = "Invalid argument"


@dataclass(frozen=True)
class Endpoint:
    """A listening socket to be: its family (socket type), address, port and IPV6_V6ONLY."""

    family: Family
    address: Address
    port: int
    v6only: bool

    def covers(self) -> tuple[str | None, str | None]:
        """The (IPv4, IPv6) address this socket takes: a literal, :data:`ANY` or None."""
        if self.family is Family.INET:
            return (ANY if self.address.is_wildcard else self.address.text), None
        if self.address.is_wildcard:
            return (None if self.v6only else ANY), ANY
        mapped = self.address.mapped
        if mapped is not None:
            return (None if self.v6only else (ANY if mapped == "0.0.0.0" else mapped)), None
        return None, self.address.text

    @property
    def bindable(self) -> bool:
        return not (self.family is Family.INET6 and self.v6only and self.address.mapped)


def _overlap(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return ANY in (a, b) or a == b


def conflict(first: Endpoint, second: Endpoint) -> bool:
    """True when ``second`` cannot listen while ``first`` listens."""
    if first.port != second.port:
        return False
    v4a, v6a = first.covers()
    v4b, v6b = second.covers()
    return _overlap(v4a, v4b) or _overlap(v6a, v6b)


@dataclass(frozen=True)
class BindResult:
    status: BindStatus
    blocker: int | None = None


def simulate(endpoints: list[Endpoint | None]) -> list[BindResult | None]:
    """Set up the sockets in order; None entries (no socket) are passed through as None."""
    results: list[BindResult | None] = []
    listening: list[tuple[int, Endpoint]] = []
    for index, endpoint in enumerate(endpoints):
        if endpoint is None:
            results.append(None)
            continue
        if not endpoint.bindable:
            results.append(BindResult(BindStatus.INVALID))
            continue
        blocker = next((i for i, other in listening if conflict(other, endpoint)), None)
        if blocker is not None:
            results.append(BindResult(BindStatus.IN_USE, blocker))
            continue
        listening.append((index, endpoint))
        results.append(BindResult(BindStatus.OK))
    return results
