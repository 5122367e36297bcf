"""E-mail addresses and domain names as mailwarden compares them.

Addresses arrive from untrusted places (query strings, XML bodies, CSV files), so parsing is
bounded and strict: RFC 5321 length limits, a dot-atom local part, and a domain that must pass
IDNA 2008 (UTS 46 mapping). Domains are kept in their ASCII (A-label) lowercase form, so
``Müller.DE`` and ``xn--mller-kva.de`` are the same domain. Local parts are compared
case-insensitively, as virtually every mailbox server does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import idna

MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3 (path minus the angle brackets)
MAX_LOCALPART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 253

# RFC 5322 atext, plus dots between atoms (dot-atom). Quoted local parts are refused: no mail
# service we know hands out such mailboxes, and they are a favourite of injection attempts.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCALPART_RE = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# RFC 6532: atext plus non-ASCII, but never a character XML 1.0 cannot carry (lone surrogates,
# U+FFFE, U+FFFF: every profile we render is XML, and plistlib would write them raw into a
# document no parser accepts) nor a C1 control (RFC 5198 keeps them out of interchanged text).
_UTEXT = r"[^\x00-\x20\x7f-\x9f\"(),:;<>@\[\\\]\ud800-\udfff\ufffe\uffff]"
_LOCALPART_UTF8_RE = re.compile(rf"{_UTEXT}+(?:\.{_UTEXT}+)*")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class AddressError(ValueError):
    """Raised for a malformed address or domain; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Address:
    """A syntactically valid address: ``localpart`` as typed, ``domain`` as lowercase A-label."""

    localpart: str
    domain: str

    def __str__(self) -> str:
        return f"{self.localpart}@{self.domain}"

    @property
    def key(self) -> str:
        """The form used for lookups: case-folded local part, A-label domain."""
        return f"{self.localpart.lower()}@{self.domain}"


@lru_cache(maxsize=4096)
def normalise_domain(name: str) -> str:
    """Return the lowercase A-label form of ``name`` or raise :class:`AddressError`."""
    if not name or len(name) > MAX_DOMAIN * 4:
        raise AddressError("domain is empty or too long")
    candidate = name.rstrip(".") if name.endswith(".") and not name.endswith("..") else name
    if candidate.isascii():
        candidate = candidate.lower()
        if len(candidate) <= MAX_DOMAIN and all(
            _LABEL_RE.fullmatch(label) for label in candidate.split(".")
        ):
            if "." not in candidate:
                raise AddressError(f"domain {candidate!r} has only one label")
            return candidate
    try:
        # Map the whole name first (UTS 46: case, width, ideographic full stops), then convert
        # label by label: an ASCII label is checked as LDH, so names such as
        # ``r3---sn-4g5e.bücher.example`` behave exactly like their all-ASCII neighbours.
        mapped = idna.uts46_remap(candidate, std3_rules=True, transitional=False)
        labels = [
            label if label.isascii() else idna.alabel(label).decode("ascii")
            for label in mapped.rstrip(".").split(".")
        ]
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"domain is not a valid (internationalised) host name: {exc}") from None
    bad = next((label for label in labels if not _LABEL_RE.fullmatch(label)), None)
    if bad == "":
        raise AddressError("domain has an empty label (two dots in a row, or a leading dot)")
    if bad is not None:
        raise AddressError(f"domain label {bad!r} is not a valid host name label")
    ascii_name = ".".join(labels)
    if len(ascii_name) > MAX_DOMAIN:
        raise AddressError("domain is longer than 253 characters")
    if "." not in ascii_name:
        raise AddressError(f"domain {ascii_name!r} has only one label")
    return ascii_name


def parse_address(text: str) -> Address:
    """Parse ``text`` as ``localpart@domain``; raise :class:`AddressError` when it is not one."""
    if len(text) > MAX_ADDRESS * 2:  # before any work: bound what untrusted input costs
        raise AddressError("address is longer than 254 characters")
    text = text.strip()
    localpart, sep, domain = text.rpartition("@")
    if not sep or not localpart or not domain:
        raise AddressError("address must have the form local-part@domain")
    pattern = _LOCALPART_RE if localpart.isascii() else _LOCALPART_UTF8_RE
    if not pattern.fullmatch(localpart):  # first: a lone surrogate cannot even be encoded
        raise AddressError("local part has characters that are not allowed in a mailbox name")
    if len(localpart.encode("utf-8")) > MAX_LOCALPART:
        raise AddressError("local part is longer than 64 octets")
    ascii_domain = normalise_domain(domain)
    if len(localpart.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS:
        raise AddressError("address is longer than 254 characters")
    return Address(localpart, ascii_domain)


def unicode_domain(ascii_domain: str) -> str:
    """The U-label form of an A-label domain, for display (labels that are not A-labels stay)."""
    try:
        return ".".join(
            idna.ulabel(label) if label.startswith("xn--") else label
            for label in ascii_domain.split(".")
        )
    except (idna.IDNAError, UnicodeError):
        return ascii_domain
