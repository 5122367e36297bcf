"""Turning raw protocol values into the guard's privacy-preserving signals.

Nothing here keeps message content: a Subject becomes a short keyed hash of its normalised form
(equal subjects give equal fingerprints, the text cannot be read back), an IP address becomes its
network (IPv4 /24, IPv6 /48: the granularity at which a user's usual places are stable), and a
recipient becomes its domain plus whether that domain is internal. All functions are pure and
bounded in the work they do on untrusted input.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from functools import lru_cache

MAX_SUBJECT = 998  # RFC 5322 line limit: anything longer is cut before hashing
MAX_HEADER = 4096

_PREFIX_RE = re.compile(r"^(?:\s*(?:re|aw|fwd?|wg|sv|antw)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_DIGITS_RE = re.compile(r"\d+")
_SPACE_RE = re.compile(r"\s+")
# "from NAME (HOST [1.2.3.4])" or "from [1.2.3.4]" or "from 2001:db8::1 ..."; the first
# bracketed or bare IP literal in the from clause is the browser's address.
_FROM_IP_RE = re.compile(
    r"\bfrom\b[^;]*?[\[(]?(?:IPv6:)?([0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]+)",
    re.IGNORECASE,
)
_BY_RE = re.compile(r"\bby\s+([A-Za-z0-9.-]+)", re.IGNORECASE)


def subject_fingerprint(subject: str, key: bytes = b"mailwarden-guard") -> str:
    """A 16-hex-digit fingerprint of a Subject that ignores case, reply prefixes and numbers.

    Spam runs vary counters and ticket numbers in the subject; normalising digits makes
    ``Invoice 4711`` and ``Invoice 4712`` one campaign. The keyed hash is not reversible for
    anyone without the key (a site may set its own).
    """
    text = subject[:MAX_SUBJECT]
    text = _PREFIX_RE.sub("", text)
    text = _DIGITS_RE.sub("0", text)
    text = _SPACE_RE.sub(" ", text).strip().casefold()
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8, key=key).hexdigest()


@lru_cache(maxsize=65536)
def network_of(address: str) -> str:
    """The network an address belongs to for "is this a new place" (IPv4 /24, IPv6 /48).

    IPv4-mapped IPv6 addresses count as IPv4. Anything that is not an IP address gives ``""``
    (unknown), which never counts as new. Cached: the same clients come back all day, and
    parsing an address costs more than the rest of a decision.
    """
    text = address.strip()[:64]
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def recipient_domain(address: str) -> str:
    """The lowercase domain of a recipient (``<a@B.example>`` → ``b.example``), or ``""``."""
    text = address.strip()[:512].strip("<>")
    _, sep, domain = text.rpartition("@")
    if not sep:
        return ""
    return domain.rstrip(".").lower()[:253]


def browser_ip(received: str, webmail_host: str) -> str:
    """The client IP in a Received header written by the webmail host ``webmail_host``.

    Roundcube and friends add ``Received: from [203.0.113.7] by webmail.example.edu with
    HTTP``; only a header whose ``by`` names the configured host is trusted, since any sender
    can write Received headers of their own.
    """
    if not webmail_host:
        return ""
    text = received[:MAX_HEADER]
    by = _BY_RE.search(text)
    if by is None or by.group(1).rstrip(".").lower() != webmail_host.lower():
        return ""
    match = _FROM_IP_RE.search(text[: by.start()])
    if match is None:
        return ""
    candidate = match.group(1)
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return ""
