"""``dmarc`` against a real Knot DNS: records good and broken, a subdomain covered by its
organisational domain's record, report destinations in other domains with and without their
authorisation record; then the record parser's properties."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import dmarc
from mailwarden.audit.sitewide.authrecords import RecordSyntaxError
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.dmarc import (
    external_destinations,
    organisational_domain,
    parse_dmarc,
    parse_uris,
)
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.audit.sitewide.test_mtasts import site_text
from tests.fixtures.knot import running_knot

pytestmark = pytest.mark.slow  # starts knotd

Z = "dmarc.test"
BROKEN = "broken.test"
E, W, U, N = Severity.ERROR, Severity.WARNING, Severity.UNKNOWN, Severity.INFO
RUA = "rua=mailto:dmarc@dmarc.test"

# label → (records under LABEL.dmarc.test, expected findings)
CASES: dict[str, tuple[str, dict[str, Severity]]] = {
    "good": (f'_dmarc TXT "v=DMARC1; p=reject; {RUA}"', {}),
    "spaced": (f'_dmarc TXT "v = DMARC1 ; p = quarantine ; " "{RUA}!10m ;"', {}),
    "inherits": ("@ A 192.0.2.1", {}),
    "monitor": (f'_dmarc TXT "v=DMARC1; p=none; {RUA}"', {"DMARC-POLICY-NONE": W}),
    "multi": (
        f'_dmarc TXT "v=DMARC1; p=reject; {RUA}"\n_dmarc TXT "v=DMARC1; p=none"',
        {"DMARC-MULTIPLE": E},
    ),
    "badp": ('_dmarc TXT "v=DMARC1; p=maybe"', {"DMARC-SYNTAX": E}),
    "nop": (f'_dmarc TXT "v=DMARC1; {RUA}"', {"DMARC-SYNTAX": E}),
    "vlower": ('_dmarc TXT "v=dmarc1; p=reject"', {"DMARC-SYNTAX": E}),
    "twice": ('_dmarc TXT "v=DMARC1; p=reject; p=none"', {"DMARC-SYNTAX": E}),
    "pct": (f'_dmarc TXT "v=DMARC1; p=quarantine; pct=25; {RUA}"', {"DMARC-PCT": N}),
    "badtags": (
        f'_dmarc TXT "v=DMARC1; p=reject; adkim=x; pct=200; fo=2; {RUA}"',
        {"DMARC-TAG-INVALID": W},
    ),
    "baduri": (
        '_dmarc TXT "v=DMARC1; p=reject; rua=https://r.dmarc.test/x,mailto:d@dmarc.test"',
        {"DMARC-URI": W},
    ),
    "norua": ('_dmarc TXT "v=DMARC1; p=reject"', {"DMARC-NO-RUA": N}),
    "subnone": (
        f'_dmarc TXT "v=DMARC1; p=reject; sp=none; {RUA}"',
        {"DMARC-SUBDOMAIN-NONE": N},
    ),
    "extok": ('_dmarc TXT "v=DMARC1; p=reject; rua=mailto:r@reports.example"', {}),
    "extwild": ('_dmarc TXT "v=DMARC1; p=reject; rua=mailto:r@wild.example"', {}),
    "extbad": (
        '_dmarc TXT "v=DMARC1; p=reject; rua=mailto:r@reports.example; ruf=mailto:f@other.example"',
        {"DMARC-REPORT-UNAUTHORISED": W},
    ),
}

ZONES = {
    Z: '_dmarc TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@dmarc.test"\n'
    + "".join(f"$ORIGIN {label}.{Z}.\n{records}\n" for label, (records, _) in CASES.items()),
    # only the first destination authorises its sender; wild.example authorises everyone
    "reports.example": f'extok.{Z}._report._dmarc TXT "v=DMARC1"\n',
    "wild.example": '*._report._dmarc TXT "v=DMARC1"\n',
    "other.example": "@ A 192.0.2.9\n",
    "weaksp.test": '_dmarc TXT "v=DMARC1; p=reject; sp=none; rua=mailto:d@weaksp.test"\n',
    "nodmarc.test": "@ A 192.0.2.10\n",
}
OTHERS: dict[str, dict[str, Severity]] = {
    "weaksp.test": {"DMARC-SUBDOMAIN-NONE": N},
    "lists.weaksp.test": {"DMARC-POLICY-NONE": W},  # covered by sp=none
    "nodmarc.test": {"DMARC-NONE": W},
    "sub.nodmarc.test": {"DMARC-NONE": W},
    BROKEN: {"DMARC-LOOKUP-FAILED": U},
}


def domain(label: str) -> str:
    return f"{label}.{Z}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CheckResult]]:
    tmp = tmp_path_factory.mktemp("dmarc")
    text = site_text([*(domain(label) for label in CASES), *OTHERS])
    with running_knot(ZONES, tmp, servfail=[BROKEN]) as knot:
        resolver = Resolver(parse_nameserver(knot.nameserver), timeout=2.0)
        context = SiteContext(
            site=parse_site(text),
            resolver=resolver,
            network=Network(resolver),
            now=datetime.datetime.now(datetime.UTC),
            timeout=2.0,
        )
        yield {r.subject: r for r in asyncio.run(dmarc.run(context))}


EXPECTED = {**{domain(label): want for label, (_, want) in CASES.items()}, **OTHERS}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_case_gets_its_findings(results: dict[str, CheckResult], name: str) -> None:
    result = results[name]
    got = {f.code: f.severity for f in result.findings}
    assert got == EXPECTED[name], [f.message for f in result.findings]
    assert all(f.code in dmarc.CODES for f in result.findings)


def test_inherited_policy_is_the_subdomain_policy(results: dict[str, CheckResult]) -> None:
    assert results[domain("inherits")].detail.startswith(f"p=quarantine (from _dmarc.{Z})")
    assert results[domain("good")].detail == "p=reject, reports to mailto:dmarc@dmarc.test"


def test_unauthorised_destinations_are_named(results: dict[str, CheckResult]) -> None:
    subjects = {f.subject for f in results[domain("extbad")].findings}
    assert subjects == {
        f"{domain('extbad')}._report._dmarc.reports.example",
        f"{domain('extbad')}._report._dmarc.other.example",
    }


# --- the parser ------------------------------------------------------------------------------


def test_report_uris() -> None:
    uris, problems = parse_uris("mailto:a@example.org!10m, mailto:b@Example.NET,https://x.y/z,")
    assert [(u.domain, u.size) for u in uris] == [("example.org", "10m"), ("example.net", "")]
    assert len(problems) == 2
    record = parse_dmarc("v=DMARC1; p=reject; rua=mailto:a@lists.example.org,mailto:b@x.example")
    assert external_destinations("example.org", record) == ["x.example"]
    assert organisational_domain("a.b.example.co.uk") == "example.co.uk"


@pytest.mark.parametrize(
    "text", ["", "p=reject", "v=DMARC1", "v=DMARC1; p=", "v=DMARC1; p=reject; p=none", "v=DMARC1 p"]
)
def test_records_receivers_ignore(text: str) -> None:
    with pytest.raises(RecordSyntaxError):
        parse_dmarc(text)


_policy = st.sampled_from(["none", "quarantine", "reject"])
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_address = st.builds(lambda u, a, b: f"mailto:{u}@{a}.{b}", _label, _label, _label)


@given(
    _policy,
    st.none() | _policy,
    st.integers(0, 100),
    st.lists(_address, min_size=1, max_size=4),
    st.lists(_address, max_size=2),
)
def test_valid_records_read_back(
    policy: str, sp: str | None, pct: int, rua: list[str], ruf: list[str]
) -> None:
    text = f"v=DMARC1; p={policy}; pct={pct}; rua={','.join(rua)}"
    text += f"; sp={sp}" if sp else ""
    text += f"; ruf={','.join(ruf)}" if ruf else ""
    record = parse_dmarc(text)
    assert (record.policy, record.subdomain_policy, record.pct) == (policy, sp, pct)
    assert [u.uri for u in record.rua] == rua
    assert [u.uri for u in record.ruf] == ruf
    assert not record.problems
    assert not record.uri_problems


@given(st.text(max_size=300))
@example("v=DMARC1; p=none; rua=" + ",".join(["mailto:a@b.c"] * 30))
@example("v=DMARC1; p=none; rua=mailto:a@b.c!99999999999999999999g")
@example("v=DMARC1; p=none; rua=!1")
def test_any_text_is_parsed_or_refused(text: str) -> None:
    try:
        record = parse_dmarc(text)
    except RecordSyntaxError:
        return
    assert record.policy in ("none", "quarantine", "reject")
    assert 0 <= record.pct <= 100
    assert len(record.rua) <= dmarc.MAX_URIS
