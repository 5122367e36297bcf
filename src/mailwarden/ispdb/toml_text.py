"""A :class:`~mailwarden.ispdb.convert.SiteFragment` as site.toml text.

Written by hand rather than with a TOML library: the fragment has a fixed, small shape, and
an operator pastes it into a commented file, so it should read like the hand-written
examples (one ``[[services.NAME.imap]]`` table per server, notes as comments beside the
service set they concern).
"""

from __future__ import annotations

import re
from typing import Any

from mailwarden.ispdb.convert import SiteFragment

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
SERVER_KINDS = ("imap", "pop3", "smtp")


def string(value: str) -> str:
    """A TOML basic string; control characters become ``\\uXXXX`` escapes."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else string(name)


def value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v) for v in item) + "]"
    raise TypeError(f"cannot write {type(item).__name__} as TOML")


def _pairs(table: dict[str, Any]) -> list[str]:
    return [f"{key(k)} = {value(v)}" for k, v in table.items()]


def _comment(text: str) -> str:
    return "# " + " ".join(text.split())


def render(fragment: SiteFragment) -> str:
    """The fragment as TOML; paste it below a site file's top-level keys.

    Each service set is followed by the domains that use it, headed by the document it came
    from and the notes about that document.
    """
    lines: list[str] = []
    by_source: dict[str, list[str]] = {}
    for note in fragment.notes:
        by_source.setdefault(note.source, []).append(str(note))
    commented: set[str] = set()
    for name, entry in fragment.services.items():
        source = fragment.origin.get(name, "")
        if source and source not in commented:
            commented.add(source)
            lines.append(_comment(f"Imported from {source}"))
            lines += [_comment(f"note: {n}") for n in by_source.get(source, [])]
        options = {k: v for k, v in entry.items() if k not in SERVER_KINDS}
        if options:
            lines.append(f"[services.{key(name)}]")
            lines += _pairs(options)
            lines.append("")
        for kind in SERVER_KINDS:
            for server in entry.get(kind, []):
                lines.append(f"[[services.{key(name)}.{kind}]]")
                lines += _pairs(server)
                lines.append("")
        for domain, table in fragment.domains.items():
            if table.get("services") == name:
                lines.append(f"[domains.{string(domain)}]")
                lines += _pairs(table)
                lines.append("")
    for source, notes in by_source.items():
        if source not in commented:
            lines += [_comment(f"note: {n}") for n in notes]
            lines.append("")
    return "\n".join(lines)


def site_header(primary_domain: str, name: str = "Imported providers") -> str:
    """The top-level keys a fragment needs to be a whole site file (for checks and demos)."""
    return (
        f"primary_domain = {string(primary_domain)}\n\n"
        f"[organisation]\nname = {string(name)}\nshort_name = {string(name[:60])}\n\n"
    )
