"""sendmail's daemon and client port options, read from a ``.mc`` file or a generated ``.cf``.

Both forms produce the same :class:`SendmailConfig`: the ``DaemonPortOptions`` and
``ClientPortOptions`` in the order sendmail applies them, each remembering the line it came from
and how to write a corrected version of that line in the same form. Keys are recognised the way
sendmail does (by their first letter: ``A``/``Addr``, ``F``/``Family``, ``M``/``Modifiers``, …);
a key sendmail would reject with ``PortOptions parameter … unknown`` is an error here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum

from mailwarden.lint.addresses import Family
from mailwarden.lint.errors import LintInputError
from mailwarden.lint.m4 import scan

# First letter of a key → its documented name (sendmail's setsockaddroptions() switch).
KEYS: dict[str, str] = {
    "A": "Addr",
    "a": "Addr",
    "F": "Family",
    "f": "Family",
    "P": "Port",
    "p": "Port",
    "N": "Name",
    "n": "Name",
    "M": "Modifiers",
    "m": "Modifiers",
    "I": "InputMailFilters",
    "L": "Listen",
    "R": "ReceiveSize",
    "S": "SendSize",
    "c": "children",
    "D": "DeliveryMode",
    "d": "delayLA",
    "r": "refuseLA",
    "q": "queueLA",
}

PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "smtps": 465,
    "submissions": 465,
    "lmtp": 24,
}

NON_TCP_FAMILIES = ("local", "unix")

DEFAULT_VERSION = (8, 17)


class PortKind(Enum):
    DAEMON = "daemon"
    CLIENT = "client"

    @property
    def cf_option(self) -> str:
        return "DaemonPortOptions" if self is PortKind.DAEMON else "ClientPortOptions"

    @property
    def macro(self) -> str:
        return "DAEMON_OPTIONS" if self is PortKind.DAEMON else "CLIENT_OPTIONS"


@dataclass(frozen=True)
class Part:
    """One ``Key=Value`` of an options line, as written (``raw``) and understood."""

    raw: str
    key: str
    value: str


@dataclass(frozen=True)
class PortOptions:
    """One ``DAEMON_OPTIONS``/``CLIENT_OPTIONS`` (or its ``O …PortOptions=`` line)."""

    kind: PortKind
    parts: tuple[Part, ...]
    file: str
    line: int
    form: str
    dnl: bool = False
    number: int = -1
    """The daemon's place among all DaemonPortOptions (sendmail names an unnamed one
    ``Daemon<number>`` in its log)."""

    def get(self, key: str) -> str | None:
        """The value of ``key`` (documented name); the last one written wins, as in sendmail."""
        values = [p.value for p in self.parts if p.key == key]
        return values[-1] if values else None

    @property
    def name(self) -> str:
        given = self.get("Name")
        if given:
            return given
        if self.kind is PortKind.DAEMON and self.number >= 0:
            return f"Daemon{self.number}"
        return "(unnamed " + self.kind.value + (f" port {self.port}" if self.tcp else "") + ")"

    @property
    def family_text(self) -> str:
        return (self.get("Family") or "inet").lower()

    @property
    def tcp(self) -> bool:
        return self.family_text not in NON_TCP_FAMILIES

    @property
    def family(self) -> Family:
        return Family.INET6 if self.family_text == "inet6" else Family.INET

    @property
    def port(self) -> int:
        return port_number(self.get("Port") or "smtp")

    @property
    def addr(self) -> str | None:
        value = self.get("Addr")
        return value if value else None

    @property
    def modifiers(self) -> str:
        return "".join(ch for ch in (self.get("Modifiers") or "") if ch.isalpha())

    @property
    def optional(self) -> bool:
        return "O" in self.modifiers

    def with_value(self, key: str, value: str | None) -> PortOptions:
        """A copy with ``key`` set to ``value`` (None removes it), other parts kept as written."""
        parts: list[Part] = []
        done = False
        for part in self.parts:
            if part.key != key:
                parts.append(part)
            elif value is not None and not done:
                prefix = part.raw[: len(part.raw) - len(part.raw.lstrip())]
                spelled = part.raw.lstrip().split("=", 1)[0].strip()
                parts.append(Part(f"{prefix}{spelled}={value}", key, value))
                done = True
        if value is not None and not done:
            sep = " " if any(p.raw.startswith(" ") for p in self.parts[1:]) else ""
            parts.append(Part(f"{sep}{key}={value}", key, value))
        return replace(self, parts=tuple(parts))

    def text(self) -> str:
        """The line(s) as sendmail's configuration in this form would spell them."""
        options = ",".join(p.raw for p in self.parts).strip()
        if self.form == "cf":
            return f"O {self.kind.cf_option}={options}"
        return f"{self.kind.macro}(`{options}')" + ("dnl" if self.dnl else "")


@dataclass(frozen=True)
class SendmailConfig:
    """The port options of one sendmail configuration, daemons and clients in sendmail's order."""

    file: str
    form: str
    daemons: tuple[PortOptions, ...]
    clients: tuple[PortOptions, ...]
    version: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        numbered = tuple(replace(d, number=i) for i, d in enumerate(self.daemons))
        object.__setattr__(self, "daemons", numbered)


def port_number(value: str) -> int:
    """``smtp``, ``submission``, ``25`` … → the TCP port; ValueError when sendmail refuses it."""
    text = value.strip().lower()
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    if text in PORTS:
        return PORTS[text]
    raise ValueError(f'service "{value}" unknown (use a number or one of {", ".join(PORTS)})')


def parse_options(
    text: str, kind: PortKind, file: str, line: int, form: str, dnl: bool = False
) -> PortOptions:
    """``Name=MTA-v4,Family=inet,A=…`` → :class:`PortOptions`; bad keys and values are errors."""
    parts: list[Part] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key_text, sep, value = item.partition("=")
        key_text = key_text.strip()
        if not sep or not key_text:
            raise LintInputError(
                file, line, f"{kind.cf_option}: {item!r} is not KEY=VALUE (e.g. Addr=192.0.2.25)"
            )
        key = KEYS.get(key_text[0])
        if key is None:
            known = ", ".join(sorted(set(KEYS.values())))
            raise LintInputError(
                file, line, f"{kind.cf_option}: unknown key {key_text!r} (known: {known})"
            )
        parts.append(Part(raw.rstrip(), key, value.strip()))
    options = PortOptions(kind, tuple(parts), file, line, form, dnl)
    family = options.family_text
    if family not in ("inet", "inet6", *NON_TCP_FAMILIES):
        raise LintInputError(
            file, line, f"{kind.cf_option}: unknown Family={family} (inet, inet6 or local)"
        )
    if options.tcp and kind is PortKind.DAEMON:
        try:
            options.port  # noqa: B018 - validates the Port value
        except ValueError as exc:
            raise LintInputError(file, line, f"{kind.cf_option}: {exc}") from None
    return options


_CF_OPTION = re.compile(r"O\s*(DaemonPortOptions|ClientPortOptions)\s*(=?)(.*)\Z", re.IGNORECASE)
_CF_VERSION = re.compile(r"DZ(\d+)\.(\d+)")


def parse_cf(text: str, file: str) -> SendmailConfig:
    """A generated ``sendmail.cf``: ``O DaemonPortOptions=…``, ``O ClientPortOptions=…``, ``DZ``."""
    daemons: list[PortOptions] = []
    clients: list[PortOptions] = []
    version: tuple[int, int] | None = None
    # Continuation lines are collected as lists and joined once: appending to a growing string
    # would make a long run of them quadratic.
    pieces: list[tuple[int, list[str]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw[:1] in (" ", "\t") and pieces and raw.strip():
            pieces[-1][1].append(raw.strip())
        else:
            pieces.append((number, [raw]))
    logical = [(number, " ".join(parts)) for number, parts in pieces]
    for number, line in logical:
        if line.startswith("DZ"):
            found = _CF_VERSION.match(line)
            if found:
                version = (int(found.group(1)), int(found.group(2)))
            continue
        match = _CF_OPTION.match(line)
        if not match:
            continue
        if not match.group(2):
            raise LintInputError(file, number, f"{match.group(1)} needs '=' and a value")
        kind = PortKind.DAEMON if match.group(1).lower() == "daemonportoptions" else PortKind.CLIENT
        options = parse_options(match.group(3), kind, file, number, "cf")
        (daemons if kind is PortKind.DAEMON else clients).append(options)
    return SendmailConfig(file, "cf", tuple(daemons), tuple(clients), version)


_MC_MACROS = frozenset({"DAEMON_OPTIONS", "CLIENT_OPTIONS", "FEATURE", "define"})


def parse_mc(text: str, file: str) -> SendmailConfig:
    """A ``.mc`` file, with the defaults ``cf.m4`` adds (the MTA daemon(s), the MSA on 587)."""
    daemons: list[PortOptions] = []
    clients: list[PortOptions] = []
    defined: dict[str, tuple[str, int]] = {}
    for call in scan(text, file, _MC_MACROS):
        first = call.args[0] if call.args else ""
        if call.name == "DAEMON_OPTIONS":
            daemons.append(parse_options(first, PortKind.DAEMON, file, call.line, "mc", call.dnl))
        elif call.name == "CLIENT_OPTIONS":
            clients.append(parse_options(first, PortKind.CLIENT, file, call.line, "mc", call.dnl))
        elif call.name == "FEATURE" and first.strip() == "no_default_msa":
            defined["_NO_MSA_"] = ("1", call.line)
        elif call.name == "define" and call.args:
            value = call.args[1] if len(call.args) > 1 else ""
            defined[first.strip()] = (value, call.line)
    for macro, kind, found in (
        ("confDAEMON_OPTIONS", PortKind.DAEMON, daemons),
        ("confCLIENT_OPTIONS", PortKind.CLIENT, clients),
    ):
        if macro in defined and defined[macro][0]:
            value, line = defined[macro]
            found.append(parse_options(value, kind, file, line, "mc"))
    if not daemons:
        if "_NETINET6_" in defined:
            daemons.append(
                parse_options("Name=MTA-v4, Family=inet", PortKind.DAEMON, file, 0, "mc")
            )
            daemons.append(
                parse_options("Name=MTA-v6, Family=inet6", PortKind.DAEMON, file, 0, "mc")
            )
        else:
            daemons.append(parse_options("Name=MTA", PortKind.DAEMON, file, 0, "mc"))
    if "_NO_MSA_" not in defined:
        daemons.append(parse_options("Port=587, Name=MSA, M=E", PortKind.DAEMON, file, 0, "mc"))
    return SendmailConfig(file, "mc", tuple(daemons), tuple(clients))


def looks_like_mc(text: str, file: str) -> bool:
    """``.mc`` by name, else by content (m4 macro calls rather than ``O Option=`` lines)."""
    if file.endswith(".mc"):
        return True
    if file.endswith(".cf"):
        return False
    return bool(re.search(r"\b(DAEMON_OPTIONS|CLIENT_OPTIONS|OSTYPE|divert|MAILER)\(", text))


def parse_sendmail(text: str, file: str) -> SendmailConfig:
    return parse_mc(text, file) if looks_like_mc(text, file) else parse_cf(text, file)
