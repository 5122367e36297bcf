"""Parsers for the mail authentication records: SPF terms (RFC 7208) and DKIM/DMARC tag lists.

Pure functions over the text of one TXT record (joined by :func:`dnstxt.txt_text`). The text is
untrusted: anything that is not what the RFCs allow raises :class:`RecordSyntaxError` (whose
message says what and where, for a finding), nothing else. The SPF parser is strict where
receivers are (an unknown mechanism, a bad CIDR length or domain-spec makes the whole record a
``permerror``, RFC 7208 4.6), so the audit reports exactly what a receiver would refuse.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

IPNetworkAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RecordSyntaxError(ValueError):
    """The record text breaks its RFC's grammar; ``str()`` says how (for a finding)."""


# --- SPF (RFC 7208 section 4.5, 4.6, 5, 6, 7) ------------------------------------------------

QUALIFIERS = "+-~?"
"""pass, fail, softfail, neutral."""

MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
LOOKUP_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
"""Mechanisms that cost one of the ten DNS look-ups a check_host() may make (RFC 7208 4.6.4);
the ``redirect`` modifier costs one too."""

_DOMAIN_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
_NEEDS_DOMAIN = frozenset({"include", "exists"})
_MODIFIER = re.compile(r"\A([A-Za-z][A-Za-z0-9._-]*)=(.*)\Z", re.DOTALL)
_CIDR = re.compile(r"(?:/(0|[1-9][0-9]{0,2}))?(?://(0|[1-9][0-9]{0,2}))?\Z")
_TOPLABEL = re.compile(
    r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$"
)
_MACRO = re.compile(r"%\{([A-Za-z])([0-9]{0,3})(r?)([.+,/_=-]*)\}|%[%_-]", re.IGNORECASE)
_DOMAIN_MACRO_LETTERS = frozenset("slodiphv")
"""Macro letters a domain-spec may use (``c``, ``r``, ``t`` belong to explanation text)."""


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One directive: ``[qualifier] name[:domain-spec | :network][/cidr4][//cidr6]``."""

    qualifier: str
    """One of ``+ - ~ ?``; ``+`` when none was written."""
    name: str
    """The mechanism, lower case (``include``)."""
    domain: str | None = None
    """The domain-spec as written (macros unexpanded), or None when none was given."""
    address: IPNetworkAddress | None = None
    """``ip4``/``ip6``: the network's address as written."""
    cidr4: int | None = None
    cidr6: int | None = None
    """Prefix lengths as written (``ip4``/``ip6`` use the one of their family)."""

    @property
    def lookups(self) -> bool:
        """Whether this mechanism costs one of the ten DNS look-ups."""
        return self.name in LOOKUP_MECHANISMS

    def __str__(self) -> str:
        text = ("" if self.qualifier == "+" else self.qualifier) + self.name
        if self.address is not None:
            text += f":{self.address}"
        elif self.domain is not None:
            text += f":{self.domain}"
        if self.cidr4 is not None:
            text += f"/{self.cidr4}"
        if self.cidr6 is not None:
            text += f"//{self.cidr6}" if self.name in ("a", "mx") else f"/{self.cidr6}"
        return text


@dataclass(frozen=True, slots=True)
class Modifier:
    """``name=value``: ``redirect``, ``exp`` or one receivers ignore."""

    name: str
    """Lower case."""
    value: str

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


Term = Mechanism | Modifier


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A syntactically valid SPF record: its terms in order."""

    terms: tuple[Term, ...]

    @property
    def mechanisms(self) -> tuple[Mechanism, ...]:
        return tuple(t for t in self.terms if isinstance(t, Mechanism))

    def modifier(self, name: str) -> str | None:
        for term in self.terms:
            if isinstance(term, Modifier) and term.name == name:
                return term.value
        return None

    @property
    def all(self) -> Mechanism | None:
        """The first ``all`` (anything after it is never evaluated)."""
        return next((m for m in self.mechanisms if m.name == "all"), None)

    @property
    def redirect(self) -> str | None:
        """The redirect target, or None; ignored by receivers when the record has ``all``."""
        return None if self.all is not None else self.modifier("redirect")

    def __str__(self) -> str:
        return " ".join(["v=spf1", *(str(t) for t in self.terms)])


def is_spf(text: str) -> bool:
    """Whether a TXT text is an SPF record: ``v=spf1`` alone or followed by a space (4.5)."""
    head = text[:7].lower()
    return head == "v=spf1" or head in ("v=spf1 ", "v=spf1\t")


def check_domain_spec(spec: str) -> None:
    """Raise :class:`RecordSyntaxError` unless ``spec`` is a domain-spec (RFC 7208 7.1).

    A macro-string (``%{d}``-style expansions and printable literals) whose end is either a
    macro or ``.toplabel`` with an optional trailing dot. A spec without macros must also be
    a usable DNS name (labels of 1 to 63 characters, 253 in all): receivers cannot look up
    anything else.
    """
    if not spec:
        raise RecordSyntaxError("an empty domain-spec")
    position = 0
    last_macro_end = -1
    has_macro = False
    for match in _MACRO.finditer(spec):
        _literal(spec[position : match.start()])
        letter = match.group(1)
        if letter is not None:
            if letter.lower() not in _DOMAIN_MACRO_LETTERS:
                raise RecordSyntaxError(f"{spec!r}: %{{{letter}}} is no domain-spec macro")
            if match.group(2) and int(match.group(2)) == 0:
                raise RecordSyntaxError(f"{spec!r}: a macro keeps 0 labels")
        position = match.end()
        last_macro_end = match.end()
        has_macro = True
    _literal(spec[position:])
    if last_macro_end == len(spec):
        return  # domain-end is a macro-expand
    literal_end = spec[max(last_macro_end, 0) :]
    stripped = literal_end[:-1] if literal_end.endswith(".") else literal_end
    _, dot, toplabel = stripped.rpartition(".")
    if not dot or not _TOPLABEL.fullmatch(toplabel):
        raise RecordSyntaxError(f"{spec!r} does not end in a domain name (.toplabel)")
    if has_macro:
        return
    name = spec[:-1] if spec.endswith(".") else spec
    labels = name.split(".")
    if len(name) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        raise RecordSyntaxError(f"{spec[:80]!r} is not a valid domain name")


def _literal(text: str) -> None:
    for char in text:
        if not ("\x21" <= char <= "\x7e") or char == "%":
            raise RecordSyntaxError(f"character {char!r} is not allowed in a domain-spec")


def _cidr(text: str, limit: int, what: str) -> int:
    value = int(text)
    if value > limit:
        raise RecordSyntaxError(f"{what} prefix length /{value} is over {limit}")
    return value


def parse_term(term: str) -> Term:
    """One SPF term (mechanism or modifier), or :class:`RecordSyntaxError`."""
    if not term:
        raise RecordSyntaxError("an empty term")
    modifier = _MODIFIER.match(term)
    if modifier:
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            check_domain_spec(value)
        else:
            _macro_string(value)
        return Modifier(name, value)
    qualifier = "+"
    body = term
    if term[0] in QUALIFIERS:
        qualifier, body = term[0], term[1:]
    name, colon, rest = body.partition(":")
    cidr_text = ""
    if not colon:
        slash = name.find("/")
        if slash >= 0:
            name, cidr_text = name[:slash], name[slash:]
    name = name.lower()
    if name not in MECHANISMS:
        raise RecordSyntaxError(f"{term[:80]!r}: unknown mechanism {name[:40]!r}")
    if name == "all":
        if colon or cidr_text:
            raise RecordSyntaxError(f"{term[:80]!r}: all takes no argument")
        return Mechanism(qualifier, name)
    if name in ("ip4", "ip6"):
        return _ip_mechanism(term, qualifier, name, rest if colon else None, cidr_text)
    domain: str | None = None
    cidr4: int | None = None
    cidr6: int | None = None
    if colon:
        argument = rest
        if name in ("a", "mx"):
            match = _CIDR.search(rest)
            assert match is not None  # every group is optional: the pattern always matches
            argument = rest[: match.start()]
            cidr_text = rest[match.start() :]
        if name in ("a", "mx") and not argument and cidr_text:
            raise RecordSyntaxError(f"{term[:80]!r}: a colon without a domain")
        check_domain_spec(argument)
        domain = argument
    elif name in _NEEDS_DOMAIN:
        raise RecordSyntaxError(f"{term[:80]!r}: {name} needs :domain")
    if cidr_text:
        if name not in ("a", "mx"):
            raise RecordSyntaxError(f"{term[:80]!r}: {name} takes no prefix length")
        match = _CIDR.fullmatch(cidr_text)
        if match is None or not cidr_text:
            raise RecordSyntaxError(f"{term[:80]!r}: malformed prefix length {cidr_text[:20]!r}")
        if match.group(1) is not None:
            cidr4 = _cidr(match.group(1), 32, "IPv4")
        if match.group(2) is not None:
            cidr6 = _cidr(match.group(2), 128, "IPv6")
    assert name in _DOMAIN_MECHANISMS
    return Mechanism(qualifier, name, domain, None, cidr4, cidr6)


def _macro_string(value: str) -> None:
    position = 0
    for match in _MACRO.finditer(value):
        _literal(value[position : match.start()])
        position = match.end()
    _literal(value[position:])


def _ip_mechanism(
    term: str, qualifier: str, name: str, argument: str | None, cidr_text: str
) -> Mechanism:
    if argument is None or cidr_text:
        raise RecordSyntaxError(f"{term[:80]!r}: {name} needs :address")
    text, slash, prefix = argument.partition("/")
    address: IPNetworkAddress
    try:
        if name == "ip4":
            if not re.fullmatch(r"[0-9.]{7,15}", text):
                raise ValueError(text)
            address = ipaddress.IPv4Address(text)
        else:
            if not re.fullmatch(r"[0-9A-Fa-f:.]{2,45}", text):
                raise ValueError(text)
            address = ipaddress.IPv6Address(text)
    except ValueError:
        problem = f"{term[:80]!r}: {text[:50]!r} is no IPv{name[-1]} address"
        raise RecordSyntaxError(problem) from None
    length: int | None = None
    if slash:
        if not re.fullmatch(r"0|[1-9][0-9]{0,2}", prefix):
            raise RecordSyntaxError(f"{term[:80]!r}: malformed prefix length {prefix[:20]!r}")
        length = _cidr(prefix, 32 if name == "ip4" else 128, f"IPv{name[-1]}")
    if name == "ip4":
        return Mechanism(qualifier, name, None, address, cidr4=length)
    return Mechanism(qualifier, name, None, address, cidr6=length)


MAX_PROBLEMS = 8
"""Syntax problems of one record named in a finding."""


def parse_spf(text: str) -> SpfRecord:
    """A whole SPF record, or :class:`RecordSyntaxError` naming its bad terms (at most
    :data:`MAX_PROBLEMS`): any of them makes receivers return ``permerror``."""
    words = re.split(r"[ \t]+", text.strip(" \t"))
    if not words or words[0].lower() != "v=spf1":
        raise RecordSyntaxError("it does not begin with v=spf1")
    terms: list[Term] = []
    problems: list[str] = []
    for word in words[1:]:
        try:
            terms.append(parse_term(word))
        except RecordSyntaxError as exc:
            problem = str(exc)
            problems.append(problem if problem.startswith("'") else f"{word[:80]!r}: {problem}")
            if len(problems) >= MAX_PROBLEMS:
                break
    for name in ("redirect", "exp"):
        count = sum(1 for t in terms if isinstance(t, Modifier) and t.name == name)
        if count > 1:
            problems.append(f"{name}= given {count} times (at most once)")
    if problems:
        raise RecordSyntaxError("; ".join(problems[:MAX_PROBLEMS]))
    return SpfRecord(tuple(terms))


def trivial_target(spec: str | None, current: str, sender_domain: str) -> str | None:
    """The name a domain-spec stands for, when it can be told without the message.

    No spec: the current domain. Macros: only ``%{d}`` (the current domain) and ``%{o}`` (the
    sender's domain) without transformers are expanded; any other macro depends on the
    client or the message (None: cannot tell).
    """
    if spec is None:
        return current
    if "%" not in spec:
        return spec.rstrip(".").lower()
    expanded = spec.replace("%{d}", current).replace("%{o}", sender_domain)
    expanded = expanded.replace("%{D}", current).replace("%{O}", sender_domain)
    if "%" in expanded:
        return None
    return expanded.rstrip(".").lower()


# --- tag=value lists (RFC 6376 3.2, used by DKIM keys and DMARC records) ------------------

_TAG_NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_]*\Z")
_TAG_VALUE = re.compile(r"\A[\x21-\x3a\x3c-\x7e]+(?:[ \t\r\n]+[\x21-\x3a\x3c-\x7e]+)*\Z")
_FWS = " \t\r\n"


def parse_tags(
    text: str, *, case: Literal["keep", "lower"] = "keep"
) -> tuple[tuple[str, str], ...]:
    """``tag=value; tag=value;`` as (name, value) pairs in order, or :class:`RecordSyntaxError`.

    Whitespace around names and values is dropped (RFC 6376 FWS); a value may hold inner
    whitespace (``p=MIIB AQAB``: DKIM strips it, DMARC URIs forbid it). An empty field
    between two ``;`` is tolerated (receivers accept ``p=none;;``). A name given twice makes
    the whole list invalid (RFC 6376 3.2). DKIM tag names are case-sensitive; DMARC's are not
    (``case="lower"``).
    """
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for field in text.split(";"):
        field = field.strip(_FWS)
        if not field:
            continue
        name, sep, value = field.partition("=")
        name, value = name.strip(_FWS), value.strip(_FWS)
        if not sep:
            raise RecordSyntaxError(f"{field[:40]!r} is not tag=value")
        if not _TAG_NAME.match(name):
            raise RecordSyntaxError(f"{name[:40]!r} is not a tag name")
        if value and not _TAG_VALUE.match(value):
            raise RecordSyntaxError(f"the value of {name}= holds a character not allowed")
        if case == "lower":
            name = name.lower()
        if name in seen:
            raise RecordSyntaxError(f"{name}= given twice")
        seen.add(name)
        pairs.append((name, value))
    return tuple(pairs)


def render_tags(pairs: tuple[tuple[str, str], ...]) -> str:
    """The inverse of :func:`parse_tags`: ``a=1; b=2``."""
    return "; ".join(f"{name}={value}" for name, value in pairs)
