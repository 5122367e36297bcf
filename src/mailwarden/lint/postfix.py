"""Postfix's ``main.cf`` and ``master.cf``, read the way Postfix reads them.

Logical lines: a line starting with whitespace continues the previous one; lines whose first
non-blank character is ``#`` are comments. ``main.cf`` holds ``name = value`` with ``$name``,
``${name}``, ``$(name)`` and the ``${name?value}``/``${name:value}`` conditionals expanded;
``master.cf`` holds service lines of eight fields plus the command's arguments, whose
``-o name=value`` (also ``-o { name = value }``) override ``main.cf`` for that service only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailwarden.lint.errors import LintInputError

# Postfix 3.7's defaults for the parameters the rules read (``postconf -d``).
DEFAULTS: dict[str, str] = {
    "inet_interfaces": "all",
    "inet_protocols": "all",
    "smtp_bind_address": "",
    "smtp_bind_address6": "",
    "lmtp_bind_address": "",
    "lmtp_bind_address6": "",
    "mynetworks": "",
}

SERVICE_TYPES = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})

SERVICE_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "smtps": 465,
    "lmtp": 24,
}


@dataclass(frozen=True)
class Parameter:
    """A ``main.cf`` setting (or a ``-o`` override): raw value and the line it is on."""

    name: str
    value: str
    file: str
    line: int


@dataclass(frozen=True)
class Service:
    """One ``master.cf`` service line."""

    name: str
    type: str
    command: str
    args: tuple[str, ...]
    overrides: Mapping[str, Parameter]
    file: str
    line: int
    text: str

    @property
    def host(self) -> str | None:
        """The address part of an inet service name (``192.0.2.25:smtp`` → ``192.0.2.25``)."""
        if self.type != "inet":
            return None
        if self.name.startswith("["):
            end = self.name.find("]")
            return self.name[1:end] if end > 0 else self.name
        host, sep, _ = self.name.rpartition(":")
        return host if sep else None

    @property
    def port_text(self) -> str:
        if self.name.startswith("["):
            return self.name.rpartition("]:")[2]
        return self.name.rpartition(":")[2]


@dataclass(frozen=True)
class PostfixConfig:
    """``main.cf`` parameters and ``master.cf`` services of one configuration directory."""

    main_file: str
    master_file: str
    parameters: Mapping[str, Parameter]
    services: tuple[Service, ...] = field(default=())


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, joined text) for each logical line; comments and blanks dropped."""
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[:1] in (" ", "\t"):
            if not lines:
                raise LintInputError(
                    "", number, "continuation line (starts with whitespace) before any setting"
                )
            start, previous = lines[-1]
            lines[-1] = (start, f"{previous} {stripped}")
        else:
            lines.append((number, stripped))
    return lines


_NAME = re.compile(r"[A-Za-z0-9_]+\Z")


def parse_main(text: str, file: str) -> dict[str, Parameter]:
    """``main.cf`` → parameters by name (the last setting wins, as in Postfix)."""
    parameters: dict[str, Parameter] = {}
    try:
        lines = logical_lines(text)
    except LintInputError as exc:
        raise LintInputError(file, exc.line, exc.message.split(": ", 1)[1]) from None
    for number, line in lines:
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep:
            raise LintInputError(file, number, f"missing '=' after parameter name: {name!r}")
        if not _NAME.match(name):
            raise LintInputError(file, number, f"{name!r} is not a parameter name")
        parameters[name] = Parameter(name, value.strip(), file, number)
    return parameters


def _overrides(args: list[str], file: str, line: int) -> dict[str, Parameter]:
    found: dict[str, Parameter] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        setting: str | None = None
        if arg == "-o" and index + 1 < len(args):
            index += 1
            setting = args[index]
            if setting == "{":
                close = args.index("}", index) if "}" in args[index:] else len(args)
                setting = " ".join(args[index + 1 : close])
                index = close
        elif arg.startswith("-o") and len(arg) > 2:
            setting = arg[2:]
        elif arg == "-o":
            raise LintInputError(file, line, "-o without name=value")
        if setting is not None:
            name, sep, value = setting.partition("=")
            if not sep or not _NAME.match(name.strip()):
                raise LintInputError(file, line, f"-o {setting!r}: expected name=value")
            found[name.strip()] = Parameter(name.strip(), value.strip(), file, line)
        index += 1
    return found


def parse_master(text: str, file: str) -> tuple[Service, ...]:
    """``master.cf`` → services in file order; short lines and unknown types are errors."""
    services: list[Service] = []
    try:
        lines = logical_lines(text)
    except LintInputError as exc:
        raise LintInputError(file, exc.line, exc.message.split(": ", 1)[1]) from None
    for number, line in lines:
        fields = line.split()
        if len(fields) < 8:
            raise LintInputError(
                file,
                number,
                "a service needs 8 fields (service type private unpriv chroot wakeup maxproc "
                f"command), got {len(fields)}",
            )
        name, kind = fields[0], fields[1]
        if kind not in SERVICE_TYPES:
            raise LintInputError(
                file, number, f"unknown service type {kind!r} ({', '.join(sorted(SERVICE_TYPES))})"
            )
        args = fields[8:]
        services.append(
            Service(
                name,
                kind,
                fields[7],
                tuple(args),
                _overrides(args, file, number),
                file,
                number,
                line,
            )
        )
    return tuple(services)


_REFERENCE = re.compile(
    r"\$(?:\{([A-Za-z0-9_]+)(?:([?:])([^}]*))?\}|\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+))"
)


def expand(value: str, lookup: Mapping[str, str], depth: int = 0) -> str:
    """Expand ``$name`` references against ``lookup`` (undefined names expand to nothing)."""
    if depth > 20:
        return value

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4) or match.group(5)
        current = expand(lookup.get(name, ""), lookup, depth + 1)
        if match.group(2) == "?":
            return expand(match.group(3), lookup, depth + 1) if current else ""
        if match.group(2) == ":":
            return "" if current else expand(match.group(3), lookup, depth + 1)
        return current

    return _REFERENCE.sub(one, value)


def split_list(value: str) -> list[str]:
    """Postfix lists: separated by commas and/or whitespace."""
    return [item for item in re.split(r"[\s,]+", value) if item]
