"""docs/audit.md explains every code the audit can report, and names no code that does not exist."""

from __future__ import annotations

import re

from mailwarden.audit.checks import CHECK_CODES, CHECKS, CODES
from mailwarden.audit.endpoints import CODES as ENDPOINT_CODES
from mailwarden.audit.runner import CODES as RUNNER_CODES
from mailwarden.audit.sitewide import CHECK_CODES as SITE_CHECK_CODES
from mailwarden.audit.sitewide import CODES as SITE_CODES
from mailwarden.audit.sitewide import SITE_CHECKS
from tests.fixtures.paths import ROOT

DOC = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
CODE = re.compile(
    r"`((?:TLS|AUTH|DUALSTACK|ENDPOINT|AUDIT|SPF|DKIM|DMARC|MTA-STS|TLSRPT|DANE|DNSBL|PTR|AV)"
    r"-[A-Z0-9-]+)`"
)


def table_rows() -> dict[str, int]:
    rows: dict[str, int] = {}
    for line in DOC.splitlines():
        match = re.match(r"\| `([A-Z0-9-]+)` \|", line)
        if match:
            rows[match.group(1)] = rows.get(match.group(1), 0) + 1
    return rows


def test_every_code_has_one_row() -> None:
    rows = table_rows()
    for code in [*CODES, *ENDPOINT_CODES, *SITE_CODES, *RUNNER_CODES]:
        assert rows.get(code) == 1, code


def test_the_doc_names_no_unknown_code() -> None:
    known = set(CODES) | set(ENDPOINT_CODES) | set(SITE_CODES) | set(RUNNER_CODES)
    named = set(CODE.findall(DOC))
    assert named - known == set()


def test_every_check_has_a_section_and_owns_its_codes() -> None:
    for name in CHECKS:
        assert f"### `{name}`" in DOC, name
    owned = [code for codes in CHECK_CODES.values() for code in codes]
    assert sorted(owned) == sorted(CODES)


def test_every_site_wide_check_has_a_section_and_owns_its_codes() -> None:
    for name in SITE_CHECKS:
        assert f"### `{name}`" in DOC, name
    owned = [code for codes in SITE_CHECK_CODES.values() for code in codes]
    assert sorted(owned) == sorted(SITE_CODES)
    assert not set(SITE_CODES) & (set(CODES) | set(ENDPOINT_CODES))
