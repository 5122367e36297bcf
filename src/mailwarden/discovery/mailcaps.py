"""What an IMAP, POP3 or SMTP server says it can do, read from the lines it sent.

Pure functions over bytes: the probe's network code reads bounded lines and hands them here.
Whatever the bytes, these functions return a bounded :class:`Capabilities` or raise
:class:`ProtocolError` with a one-line reason, never anything else (a property test feeds them
arbitrary input). Capability names are compared upper case; words that are not printable ASCII
are dropped, since no capability or SASL mechanism name contains anything else.

The second half maps autoconfig ``<authentication>`` values to what a server must offer for a
client configured with them to log in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

MAX_LINE = 8192
"""Longest line accepted from a server, CRLF included."""
MAX_LINES = 200
"""Most lines accepted in one capability reply."""
MAX_WORDS = 1000
"""Most capability words kept from one reply (real servers list a few dozen)."""

Kind = Literal["imap", "pop3", "smtp"]


class ProtocolError(Exception):
    """The server said something its protocol does not allow; the message says what, in a line."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    words: tuple[str, ...]
    """Capability names, upper case, in the server's order (IMAP atoms, POP3 tags, EHLO words)."""
    mechanisms: tuple[str, ...]
    """SASL mechanisms offered: IMAP ``AUTH=``, POP3 ``SASL``, SMTP ``AUTH``; upper case."""
    starttls: bool
    """The server offers to switch to TLS (IMAP/SMTP ``STARTTLS``, POP3 ``STLS``)."""
    password_command: bool
    """A password can be sent outside SASL: IMAP ``LOGIN`` (no ``LOGINDISABLED``), POP3 ``USER``."""


def shorten(text: str, limit: int = 120) -> str:
    """One printable line of at most ``limit`` characters, for messages about server replies."""
    if text.isprintable():  # the usual case, without a loop over every character
        clean = text.strip()
    else:
        clean = "".join(c if c.isprintable() else " " for c in text).strip()
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def line_text(line: bytes) -> str:
    """A server line without its line end, as text; refuses lines longer than :data:`MAX_LINE`."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
    return line.rstrip(b"\r\n").decode("ascii", errors="replace")


def _is_word(word: str) -> bool:
    return all("!" <= c <= "~" for c in word)


def _words(text: str) -> list[str]:
    return [w.upper() for w in text.split(" ") if w and _is_word(w)]


def _unique(words: Iterable[str]) -> tuple[str, ...]:
    kept = tuple(dict.fromkeys(words))
    if len(kept) > MAX_WORDS:
        raise ProtocolError(f"more than {MAX_WORDS} capabilities listed")
    return kept


def _check_count(lines: Sequence[bytes]) -> None:
    if len(lines) > MAX_LINES:
        raise ProtocolError(f"more than {MAX_LINES} lines in one reply")


def imap_capabilities(line: bytes) -> Capabilities:
    """The untagged reply to ``CAPABILITY``: ``* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN …``."""
    text = line_text(line)
    head, _, rest = text.partition(" ")
    verb, _, atoms = rest.partition(" ")
    if head != "*" or verb.upper() != "CAPABILITY":
        raise ProtocolError(f"expected '* CAPABILITY …', got {shorten(text)!r}")
    words = _unique(_words(atoms))
    mechanisms = _unique(w[5:] for w in words if w.startswith("AUTH=") and len(w) > 5)
    return Capabilities(
        words=words,
        mechanisms=mechanisms,
        starttls="STARTTLS" in words,
        password_command="LOGINDISABLED" not in words,
    )


def pop3_capabilities(lines: Sequence[bytes]) -> Capabilities:
    """The lines of a ``CAPA`` reply between ``+OK`` and the final ``.`` (RFC 2449)."""
    _check_count(lines)
    words: list[str] = []
    mechanisms: list[str] = []
    for line in lines:
        text = line_text(line)
        if text.startswith(".."):
            text = text[1:]
        parts = _words(text)
        if not parts:
            continue
        words.append(parts[0])
        if parts[0] == "SASL":
            mechanisms.extend(parts[1:])
    kept = _unique(words)
    return Capabilities(
        words=kept,
        mechanisms=_unique(mechanisms),
        starttls="STLS" in kept,
        password_command="USER" in kept,
    )


def smtp_is_last_line(line: bytes) -> bool:
    """Whether this line ends an SMTP reply (``250 x`` or ``250``, not ``250-x``)."""
    text = line.rstrip(b"\r\n")
    return len(text) < 4 or text[3:4] != b"-"


def smtp_reply(lines: Sequence[bytes]) -> tuple[int, tuple[str, ...]]:
    """The code and the text of each line of one SMTP reply (RFC 5321 §4.2)."""
    _check_count(lines)
    if not lines:
        raise ProtocolError("an empty SMTP reply")
    code: int | None = None
    texts: list[str] = []
    for index, line in enumerate(lines):
        text = line_text(line)
        digits, separator = text[:3], text[3:4]
        if len(digits) != 3 or not all("0" <= c <= "9" for c in digits):
            raise ProtocolError(f"expected an SMTP reply code, got {shorten(text)!r}")
        if code is not None and int(digits) != code:
            raise ProtocolError(f"reply code changes within one reply: {shorten(text)!r}")
        code = int(digits)
        last = index == len(lines) - 1
        if separator not in (("", " ") if last else ("-",)):
            raise ProtocolError(f"malformed SMTP reply line {shorten(text)!r}")
        texts.append(text[4:])
    assert code is not None
    return code, tuple(texts)


def smtp_capabilities(lines: Sequence[bytes]) -> Capabilities:
    """The reply to ``EHLO``: ``250-name greets``, then one extension a line (RFC 5321 4.1.1.1)."""
    code, texts = smtp_reply(lines)
    if code != 250:
        raise ProtocolError(f"EHLO refused: {code} {shorten(texts[0])}")
    words: list[str] = []
    mechanisms: list[str] = []
    for text in texts[1:]:
        parts = _words(text)
        if not parts:
            continue
        keyword = parts[0]
        if keyword == "AUTH" or keyword.startswith("AUTH="):
            # "AUTH=PLAIN LOGIN" is the pre-standard form some servers still send alongside.
            first = keyword[5:] if keyword.startswith("AUTH=") else ""
            mechanisms.extend(m for m in (first, *parts[1:]) if m)
            keyword = "AUTH"
        words.append(keyword)
    kept = _unique(words)
    return Capabilities(
        words=kept,
        mechanisms=_unique(mechanisms),
        starttls="STARTTLS" in kept,
        password_command=False,
    )


# --- what an advertised authentication method needs ---------------------------------------

_CLEARTEXT = ("PLAIN", "LOGIN")
_SASL_FOR_METHOD: dict[str, tuple[str, ...]] = {
    "password-cleartext": _CLEARTEXT,
    "password-encrypted": ("CRAM-MD5", "DIGEST-MD5", "SCRAM-*"),
    "OAuth2": ("XOAUTH2", "OAUTHBEARER"),
    "NTLM": ("NTLM",),
    "GSSAPI": ("GSSAPI",),
    "TLS-client-cert": ("EXTERNAL",),
}
_ALIASES = {"plain": "password-cleartext", "secure": "password-encrypted"}
NOTHING_TO_CHECK = frozenset({"client-IP-address", "none", "smtp-after-pop"})
"""Methods that need nothing from the server's capability list."""


def _method(name: str) -> str:
    return _ALIASES.get(name, name)


def _mechanism_matches(offered: str, wanted: str) -> bool:
    return offered.startswith(wanted[:-1]) if wanted.endswith("*") else offered == wanted


def method_offered(
    kind: Kind, method: str, caps: Capabilities, *, apop: bool = False
) -> bool | None:
    """Whether ``caps`` let a client configured with autoconfig ``method`` log in.

    ``None``: nothing to check (``none``, ``client-IP-address``, or a value no client knows).
    ``apop``: the POP3 greeting carried an APOP timestamp (Thunderbird's "encrypted password"
    for POP3 also uses APOP).
    """
    method = _method(method)
    wanted = _SASL_FOR_METHOD.get(method)
    if wanted is None:
        return None
    if any(_mechanism_matches(m, w) for m in caps.mechanisms for w in wanted):
        return True
    if method == "password-cleartext" and kind != "smtp" and caps.password_command:
        return True
    return method == "password-encrypted" and kind == "pop3" and apop


def method_needs(kind: Kind, method: str) -> str:
    """What ``method`` needs from a server of ``kind``, in words, for messages."""
    method = _method(method)
    wanted = " or ".join(_SASL_FOR_METHOD.get(method, ()))
    if method == "password-cleartext" and kind == "imap":
        return f"AUTH={wanted.replace(' or ', ' or AUTH=')} or the LOGIN command"
    if method == "password-cleartext" and kind == "pop3":
        return f"SASL {wanted} or USER"
    if method == "password-encrypted" and kind == "pop3":
        return f"SASL {wanted} or APOP"
    return f"AUTH={wanted.replace(' or ', ' or AUTH=')}" if kind == "imap" else wanted


def cleartext_offers(kind: Kind, caps: Capabilities) -> tuple[str, ...]:
    """What ``caps`` (read before TLS) would let a client send a password with in the clear.

    IMAP: ``AUTH=PLAIN``/``AUTH=LOGIN``, or the ``LOGIN`` command without ``LOGINDISABLED``;
    POP3: ``USER`` or SASL PLAIN/LOGIN; SMTP: any ``AUTH`` before STARTTLS (the user name, at
    least, crosses the network in clear, and ``smtpd_tls_auth_only`` exists to prevent it).
    """
    if kind == "smtp":
        return tuple(f"AUTH {m}" for m in caps.mechanisms)
    offers = [m for m in caps.mechanisms if m in _CLEARTEXT]
    if kind == "imap":
        found = [f"AUTH={m}" for m in offers]
        if caps.password_command:
            found.append("LOGIN without LOGINDISABLED")
        return tuple(found)
    found = ["USER"] if caps.password_command else []
    return (*found, *(f"SASL {m}" for m in offers))
