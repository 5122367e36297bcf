"""XML escaping: whatever the value, the output parses back to the value (less the characters
XML 1.0 cannot carry), both as character data and as an attribute."""

from __future__ import annotations

import defusedxml.ElementTree as ET
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.profiles.xmltext import attr, text

_ILLEGAL = {c for c in range(32) if c not in (9, 10, 13)} | {0x7F}


def _legal(value: str) -> str:
    return "".join(c for c in value if ord(c) not in _ILLEGAL)


values = st.text(st.characters(max_codepoint=0x2FFF, codec="utf-8"), max_size=40)


@given(values)
@example("imap.example.edu")
@example("a&b<c>d\"e'f\x00g\x7fh\ti\nj")
def test_text_round_trips(value: str) -> None:
    element = ET.fromstring(f"<v>{text(value)}</v>")
    # XML parsers normalise CR/CRLF in character data to LF (XML 1.0 §2.11).
    expected = _legal(value).replace("\r\n", "\n").replace("\r", "\n")
    assert (element.text or "") == expected


@given(values)
@example("x\"y'z&<>")
def test_attribute_round_trips_in_both_quotes(value: str) -> None:
    escaped = attr(value)
    # Attribute-value normalisation (XML 1.0 §3.3.3) turns literal tab/CR/LF into spaces.
    expected = _legal(value).replace("\r\n", " ").translate({9: " ", 10: " ", 13: " "})
    for quote in ('"', "'"):
        element = ET.fromstring(f"<v a={quote}{escaped}{quote}/>")
        assert element.get("a") == expected


def test_values_without_markup_are_returned_unchanged() -> None:
    for value in ("imap.example.edu", "993", "u0001", "Müller Straße", "%EMAILADDRESS%"):
        assert text(value) == value
        assert attr(value) == value
    assert text(993) == "993"
