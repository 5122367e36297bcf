"""TXT records as the policy text they carry: one string per record, bounded.

The resolver hands records back in presentation form (``"v=STSv1; " "id=2024"``): quoted
character-strings with ``\\"``, ``\\\\`` and ``\\DDD`` escapes. A TXT record's meaning is its
strings joined without a separator (RFC 7208 3.3, RFC 8461 3.1, RFC 8460 3), so every check of a
TXT policy starts here. DNS is untrusted input: the joined text is cut at :data:`MAX_TXT`
characters, which no sane policy record approaches.
"""

from __future__ import annotations

MAX_TXT = 4096
"""Characters of one joined TXT record kept; beyond this it is no policy anyone publishes."""

MAX_RECORDS = 64
"""TXT records at one name looked at; the rest are ignored."""


def txt_text(record: str, limit: int = MAX_TXT) -> str:
    """The text of one TXT record in presentation form: its strings unquoted and joined.

    Unquoted words (``v=spf1`` as some tools print them) are taken as they are; a malformed
    escape is kept literally rather than refused, since the caller judges the text anyway.
    """
    out: list[str] = []
    size = 0
    index = 0
    quoted = False
    length = len(record)
    while index < length and size < limit:
        char = record[index]
        if char == '"':
            quoted = not quoted
            index += 1
            continue
        if char == "\\" and index + 1 < length:
            digits = record[index + 1 : index + 4]
            if len(digits) == 3 and digits.isdigit() and int(digits) < 256:
                out.append(chr(int(digits)))
                index += 4
            else:
                out.append(record[index + 1])
                index += 2
            size += 1
            continue
        if not quoted and char in " \t":
            index += 1  # the space between two strings is no part of the text
            continue
        out.append(char)
        size += 1
        index += 1
    return "".join(out)


def txt_texts(records: tuple[str, ...]) -> list[str]:
    """Each record's text (at most :data:`MAX_RECORDS` of them)."""
    return [txt_text(record) for record in records[:MAX_RECORDS]]


def tag_list(text: str) -> list[tuple[str, str]] | None:
    """``k1=v1; k2=v2;`` as (key, value) pairs, whitespace around each stripped.

    The ``tag=value`` form shared by STSv1 (RFC 8461 3.1) and TLSRPTv1 (RFC 8460 3) records.
    An empty field (``;;`` or a trailing ``;``) is allowed; a field without ``=`` makes the
    whole record malformed: None.
    """
    pairs: list[tuple[str, str]] = []
    for field in text.split(";"):
        field = field.strip(" \t")
        if not field:
            continue
        key, sep, value = field.partition("=")
        if not sep:
            return None
        pairs.append((key.strip(" \t"), value.strip(" \t")))
    return pairs
