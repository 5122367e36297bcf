"""docs/discovery.md explains every finding code ``dns check`` and ``probe`` report, and no other.

Monitoring matches on these codes and operators look them up in the doc, so a code added to one
of the ``CODES`` dicts without a row in the doc's tables, or a code the doc still names after it
was renamed or removed, fails here.
"""

from __future__ import annotations

import re

from mailwarden.discovery import check, mailserver, verdicts
from tests.fixtures.paths import ROOT

DOC = ROOT / "docs" / "discovery.md"

CODE = re.compile(r"(?<![\w-])(?:DNS|PROBE)(?:-[A-Z0-9]+)+(?![\w*…-])")
"""A finding code as written in running text: ``DNS-MISSING``, ``PROBE-SERVER-CERT``. A prefix
such as ``PROBE-SERVER-…`` or ``DNS-*`` is not a code."""

ROW = re.compile(r"^\|\s*`((?:DNS|PROBE)(?:-[A-Z0-9]+)+)`\s*\|", re.MULTILINE)
"""The first cell of a row of a code table: ``| `DNS-MISSING` | error … |``."""

SOURCES = {
    "mailwarden.discovery.check.CODES": check.CODES,
    "mailwarden.discovery.verdicts.CODES": verdicts.CODES,
    "mailwarden.discovery.mailserver.CODES": mailserver.CODES,
}


def codes_in(text: str) -> set[str]:
    return set(CODE.findall(text))


def known_codes() -> set[str]:
    return {code for codes in SOURCES.values() for code in codes}


def doc_text() -> str:
    assert DOC.is_file(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


def test_code_pattern_finds_codes_and_skips_prefixes() -> None:
    text = (
        "DNS-MISSING and `PROBE-SERVER-CERT`; (PROBE-TLS). Codes PROBE-SERVER-… and DNS-* are "
        "families; X-DNS-FOO, DNS-based and PROBE-tls are not codes."
    )
    assert codes_in(text) == {"DNS-MISSING", "PROBE-SERVER-CERT", "PROBE-TLS"}


def test_the_code_dicts_are_disjoint_and_prefixed() -> None:
    seen: dict[str, str] = {}
    for source, codes in SOURCES.items():
        assert codes, f"{source} is empty"
        for code in codes:
            assert CODE.fullmatch(code), f"{source}: {code!r} does not look like a finding code"
            assert code not in seen, f"{code} is in both {seen[code]} and {source}"
            seen[code] = source
    assert all(c.startswith("DNS-") for c in check.CODES)
    assert all(c.startswith("PROBE-SERVER-") for c in mailserver.CODES)
    assert not any(c.startswith(("DNS-", "PROBE-SERVER-")) for c in verdicts.CODES)


def test_every_code_is_in_the_doc() -> None:
    found = codes_in(doc_text())
    missing = {
        f"{code} ({source})"
        for source, codes in SOURCES.items()
        for code in codes
        if code not in found
    }
    assert not missing, f"{DOC.name} does not mention: {', '.join(sorted(missing))}"


def test_every_code_has_one_row_in_a_code_table() -> None:
    rows = ROW.findall(doc_text())
    counted = {code: rows.count(code) for code in known_codes()}
    without = sorted(code for code, n in counted.items() if n == 0)
    twice = sorted(code for code, n in counted.items() if n > 1)
    assert not without, f"{DOC.name} has no table row for: {', '.join(without)}"
    assert not twice, f"{DOC.name} has more than one table row for: {', '.join(twice)}"


def test_the_doc_names_no_unknown_code() -> None:
    unknown = codes_in(doc_text()) - known_codes()
    assert not unknown, (
        f"{DOC.name} names codes no CODES dict has (renamed or removed?): "
        + ", ".join(sorted(unknown))
    )
