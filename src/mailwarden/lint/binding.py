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


class _Taken:
    """What the sockets listening on one port hold in one family: addresses and the wildcard,
    each with the index of the earliest socket that took it."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.wildcard: int | None = None
        self.addresses: dict[str, int] = {}

    def blocker(self, covers: str | None) -> int | None:
        """The earliest listening socket that overlaps ``covers`` (see :func:`_overlap`)."""
        if covers is None:
            return None
        if covers == ANY:
            return self.first
        candidates = [i for i in (self.wildcard, self.addresses.get(covers)) if i is not None]
        return min(candidates, default=None)

    def take(self, covers: str | None, index: int) -> None:
        if covers is None:
            return
        if self.first is None:
            self.first = index
        if covers == ANY:
            self.wildcard = index if self.wildcard is None else self.wildcard
        else:
            self.addresses.setdefault(covers, index)


def simulate(endpoints: list[Endpoint | None]) -> list[BindResult | None]:
    """Set up the sockets in order; None entries (no socket) are passed through as None.

    The blocker of a socket is the earliest listening one that :func:`conflict` says it collides
    with. It is found through an index per port and family rather than by asking every
    listening socket, so thousands of daemons cost linear time, not quadratic.
    """
    results: list[BindResult | None] = []
    taken: dict[int, tuple[_Taken, _Taken]] = {}
    for index, endpoint in enumerate(endpoints):
        if endpoint is None:
            results.append(None)
            continue
        if not endpoint.bindable:
            results.append(BindResult(BindStatus.INVALID))
            continue
        v4, v6 = endpoint.covers()
        ipv4, ipv6 = taken.setdefault(endpoint.port, (_Taken(), _Taken()))
        found = [i for i in (ipv4.blocker(v4), ipv6.blocker(v6)) if i is not None]
        if found:
            results.append(BindResult(BindStatus.IN_USE, min(found)))
            continue
        ipv4.take(v4, index)
        ipv6.take(v6, index)
        results.append(BindResult(BindStatus.OK))
    return results
