"""Escaping for the XML we write by hand (string building is ~10× faster than a DOM)."""

from __future__ import annotations

_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"})
_CONTROL = {c: None for c in range(32) if c not in (9, 10, 13)} | {0x7F: None}


def text(value: object) -> str:
    """``value`` as XML character data: markup escaped, XML-illegal control characters dropped."""
    return str(value).translate(_CONTROL).translate(_TEXT)


def attr(value: object) -> str:
    """``value`` for a double- or single-quoted attribute."""
    return str(value).translate(_CONTROL).translate(_ATTR)
