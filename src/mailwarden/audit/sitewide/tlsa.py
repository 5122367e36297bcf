"""TLSA records (RFC 6698, 7671, 7672) as values, and how one matches a presented chain.

Pure: a record in presentation form (``3 1 1 8f2a…``) becomes a :class:`Tlsa` or the reason it
is unusable; :func:`matches` says which certificates of a chain (DER, leaf first, as the
scanner recorded it) a record designates. For SMTP only DANE-TA(2) and DANE-EE(3) count
(RFC 7672 3.1.3): PKIX-TA(0) and PKIX-EE(1) are "unusable" there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

USAGE_NAMES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
SELECTOR_NAMES = {0: "Cert", 1: "SPKI"}
MTYPE_NAMES = {0: "Full", 1: "SHA2-256", 2: "SHA2-512"}
_DIGEST_SIZE = {1: 32, 2: 64}
MAX_DATA = 16 * 1024
"""Bytes of association data accepted (a full certificate is a few kB)."""


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable_for_smtp(self) -> bool:
        """DANE-TA(2) or DANE-EE(3) with a selector and matching type senders know."""
        return self.usage in (2, 3) and self.selector in (0, 1) and self.mtype in (0, 1, 2)

    def text(self) -> str:
        """``3 1 1 8f2a3b4c…`` (the data shortened): how reports name a record."""
        data = self.data.hex()
        return (
            f"{self.usage} {self.selector} {self.mtype} {data[:16]}{'…' if len(data) > 16 else ''}"
        )


def parse_tlsa(record: str) -> Tlsa | str:
    """A TLSA record in presentation form, or why it cannot be read (a string)."""
    parts = record.split()
    if len(parts) < 4 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts[:3]):
        return f"{record[:60]!r} is not 'usage selector type data'"
    usage, selector, mtype = (int(p) for p in parts[:3])
    hex_data = "".join(parts[3:])
    if len(hex_data) > 2 * MAX_DATA:
        return f"{usage} {selector} {mtype}: association data over {MAX_DATA} bytes"
    try:
        data = bytes.fromhex(hex_data)
    except ValueError:
        return f"{usage} {selector} {mtype}: the association data is not hexadecimal"
    if usage > 255 or selector > 255 or mtype > 255:
        return f"{record[:60]!r}: a field is over 255"
    size = _DIGEST_SIZE.get(mtype)
    if size is not None and len(data) != size:
        return (
            f"{usage} {selector} {mtype}: a {MTYPE_NAMES[mtype]} digest is {size} bytes, "
            f"this one {len(data)}"
        )
    return Tlsa(usage, selector, mtype, data)


def unusable_reason(tlsa: Tlsa) -> str | None:
    """Why SMTP senders ignore ``tlsa`` (RFC 7672 3.1.3, RFC 6698 7.2-7.4), or None."""
    if tlsa.usage in (0, 1):
        return (
            f"usage {tlsa.usage} ({USAGE_NAMES[tlsa.usage]}) is unusable for SMTP "
            "(RFC 7672 3.1.3): use 3 (DANE-EE) or 2 (DANE-TA)"
        )
    if tlsa.usage not in USAGE_NAMES:
        return f"usage {tlsa.usage} is not defined"
    if tlsa.selector not in SELECTOR_NAMES:
        return f"selector {tlsa.selector} is not defined (0 certificate, 1 public key)"
    if tlsa.mtype not in MTYPE_NAMES:
        return f"matching type {tlsa.mtype} is not defined (0 full, 1 SHA-256, 2 SHA-512)"
    return None


def association(der: bytes, selector: int, mtype: int) -> bytes | None:
    """What a TLSA record with ``selector`` and ``mtype`` holds for certificate ``der``; None
    when the certificate cannot be read (then nothing matches it)."""
    if selector == 0:
        selected = der
    else:
        try:
            key = x509.load_der_x509_certificate(der).public_key()
            selected = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None
    if mtype == 0:
        return selected
    if mtype == 1:
        return hashlib.sha256(selected).digest()
    if mtype == 2:
        return hashlib.sha512(selected).digest()
    return None


def matches(tlsa: Tlsa, chain: tuple[bytes, ...]) -> tuple[int, ...]:
    """The positions in ``chain`` (0 = leaf) ``tlsa`` designates: DANE-EE only the leaf,
    DANE-TA only a CA certificate the server sent (position 1 on). Records unusable for SMTP
    designate nothing."""
    if not tlsa.usable_for_smtp:
        return ()
    positions = (0,) if tlsa.usage == 3 else tuple(range(1, len(chain)))
    return tuple(
        i
        for i in positions
        if i < len(chain) and association(chain[i], tlsa.selector, tlsa.mtype) == tlsa.data
    )
