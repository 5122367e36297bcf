"""Name resolution as the MTA would see it, as a value: a table, a hosts file, a fallback.

The lint predicts what another host will do, so resolution is a knob, not a fact of this machine:
``--hosts FILE`` (that file only), ``--resolve NAME=ADDR[,ADDR]`` (wins over everything) and
otherwise the system resolver, which lives at the edge (:mod:`mailwarden.lint.system`).
Lookups are per family, as ``gethostbyname2(name, AF_INET6)`` does: a name with only an A record
has *no* IPv6 address here; the IPv4-mapped answer of old resolvers is the rules' business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mailwarden.lint.addresses import Family, family_of, parse_literal
from mailwarden.lint.errors import LintInputError


class Resolver(Protocol):
    """Answers "which addresses of this family does NAME have", in the order the MTA gets them."""

    @property
    def description(self) -> str: ...

    def lookup(self, name: str, family: Family) -> tuple[str, ...]: ...


def _key(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True)
class StaticResolver:
    """A fixed table of names; unknown names go to ``fallback`` (or have no address)."""

    table: Mapping[str, tuple[str, ...]]
    description: str
    fallback: Resolver | None = None

    def lookup(self, name: str, family: Family) -> tuple[str, ...]:
        addresses = self.table.get(_key(name))
        if addresses is None:
            return () if self.fallback is None else self.fallback.lookup(name, family)
        return tuple(a for a in addresses if family_of(a) is family)


def parse_hosts(text: str, file: str) -> dict[str, tuple[str, ...]]:
    """An ``/etc/hosts``-format table: address, canonical name, aliases; ``#`` comments."""
    table: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2:
            raise LintInputError(file, number, f"expected 'ADDRESS NAME [ALIAS…]', got {raw!r}")
        literal = parse_literal(fields[0])
        if literal is None or fields[0].startswith(("[", "IPv6:", "ipv6:")):
            raise LintInputError(file, number, f"{fields[0]!r} is not an IP address")
        for name in fields[1:]:
            entries = table.setdefault(_key(name), [])
            if literal.text not in entries:
                entries.append(literal.text)
    return {name: tuple(addresses) for name, addresses in table.items()}


def parse_resolve_option(spec: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=ADDR[,ADDR]`` from the command line → (name, addresses in the given order)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise LintInputError("--resolve", 0, f"expected NAME=ADDR[,ADDR…], got {spec!r}")
    addresses: list[str] = []
    for item in rest.split(","):
        literal = parse_literal(item)
        if literal is None:
            raise LintInputError("--resolve", 0, f"{item.strip()!r} in {spec!r} is not an address")
        addresses.append(literal.text)
    return _key(name), tuple(addresses)
