"""What an address setting is: an IPv4 or IPv6 literal, an IPv4-mapped IPv6 address, or a name.

MTAs accept the same setting in several spellings (sendmail's ``IPv6:`` prefix, Postfix's
``[…]`` brackets); everything here normalises them so that the rules compare like with like.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum


class Family(Enum):
    """An address family as the MTAs name it."""

    INET = "inet"
    INET6 = "inet6"

    @property
    def label(self) -> str:
        return "IPv4" if self is Family.INET else "IPv6"

    @property
    def wildcard(self) -> str:
        return "0.0.0.0" if self is Family.INET else "::"


@dataclass(frozen=True)
class Address:
    """A numeric address of one family; ``mapped`` is the IPv4 address inside ``::ffff:a.b.c.d``."""

    family: Family
    text: str

    @property
    def is_wildcard(self) -> bool:
        return self.text in ("0.0.0.0", "::")

    @property
    def mapped(self) -> str | None:
        if self.family is not Family.INET6:
            return None
        v4 = ipaddress.IPv6Address(self.text).ipv4_mapped
        return None if v4 is None else str(v4)

    def endpoint(self, port: int) -> str:
        return f"[{self.text}]:{port}" if self.family is Family.INET6 else f"{self.text}:{port}"


def strip_ipv6_prefix(value: str) -> str:
    """Drop sendmail's ``IPv6:`` tag and Postfix's brackets around an IPv6 literal."""
    text = value.strip()
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text


def parse_literal(value: str) -> Address | None:
    """The numeric address ``value`` spells, or None when it is (or might be) a host name."""
    text = strip_ipv6_prefix(value)
    if "%" in text:
        text = text.split("%", 1)[0]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv4Address):
        return Address(Family.INET, str(parsed))
    return Address(Family.INET6, _ipv6_text(parsed))


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    """Compressed form, but mapped addresses as ``::ffff:a.b.c.d`` like the MTAs log them."""
    v4 = address.ipv4_mapped
    return f"::ffff:{v4}" if v4 is not None else address.compressed


def mapped_address(ipv4: str) -> Address:
    """The IPv4-mapped IPv6 address an old resolver hands out for a name with only an A record."""
    return Address(Family.INET6, f"::ffff:{ipaddress.IPv4Address(ipv4)}")


def family_of(text: str) -> Family:
    """The family of a numeric address text (which must be valid)."""
    return Family.INET6 if ":" in text else Family.INET
