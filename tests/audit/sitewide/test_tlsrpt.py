"""``tls-rpt`` against a real Knot DNS (good and broken records, one served domain each), once
through ``mailwarden audit --only tls-rpt``; then the record parser's properties."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import tlsrpt
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.tlsrpt import parse_tlsrpt, uri_problem
from mailwarden.cli import main
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.audit.sitewide.test_mtasts import site_text
from tests.fixtures.knot import KnotServer, running_knot

pytestmark = pytest.mark.slow  # starts knotd

Z = "example.test"
BROKEN = "broken.test"

CASES: dict[str, tuple[str, dict[str, Severity]]] = {
    "good": (
        '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.test,https://r.example.test/x"',
        {},
    ),
    "split": ('_smtp._tls TXT "v=TLSRPTv1; " "rua=mailto:tls@example.test"', {}),
    "withsts": ('_mta-sts TXT "v=STSv1; id=1"', {"TLSRPT-NONE": Severity.WARNING}),
    "none": ("", {"TLSRPT-NONE": Severity.INFO}),
    "other": ('_smtp._tls TXT "hello world"', {"TLSRPT-NONE": Severity.INFO}),
    "ftp": (
        '_smtp._tls TXT "v=TLSRPTv1; rua=ftp://r.example.test/x"',
        {"TLSRPT-INVALID": Severity.ERROR, "TLSRPT-URI": Severity.WARNING},
    ),
    "norua": ('_smtp._tls TXT "v=TLSRPTv1;"', {"TLSRPT-INVALID": Severity.ERROR}),
    "field": ('_smtp._tls TXT "v=TLSRPTv1; rua"', {"TLSRPT-INVALID": Severity.ERROR}),
    "partial": (
        '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:ok@example.test,mailto:broken"',
        {"TLSRPT-URI": Severity.WARNING},
    ),
    "multi": (
        '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:a@example.test"\n'
        '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:b@example.test"',
        {"TLSRPT-MULTIPLE": Severity.ERROR},
    ),
}


@dataclass
class Lab:
    knot: KnotServer
    site_file: Path
    results: dict[str, CheckResult]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("tlsrpt")
    zone = f"$ORIGIN {Z}.\n" + "".join(
        f"$ORIGIN {label}.{Z}.\n@ MX 10 mx.{Z}.\n{records}\n"
        for label, (records, _) in CASES.items()
    )
    domains = [*(f"{label}.{Z}" for label in CASES), BROKEN]
    text = site_text(domains)
    site_file = tmp / "site.toml"
    site_file.write_text(text, encoding="utf-8")
    with running_knot({Z: zone}, tmp, servfail=[BROKEN]) as knot:
        resolver = Resolver(parse_nameserver(knot.nameserver), timeout=2.0)
        context = SiteContext(
            site=parse_site(text),
            resolver=resolver,
            network=Network(resolver),
            now=datetime.datetime.now(datetime.UTC),
            timeout=2.0,
        )
        found = asyncio.run(tlsrpt.run(context))
        yield Lab(knot, site_file, {r.subject: r for r in found})


@pytest.mark.parametrize("label", list(CASES))
def test_each_case_gets_its_findings(lab: Lab, label: str) -> None:
    result = lab.results[f"{label}.{Z}"]
    got = {f.code: f.severity for f in result.findings}
    assert got == CASES[label][1], [f.message for f in result.findings]
    assert all(f.code in tlsrpt.CODES for f in result.findings)


def test_good_detail_lists_the_addresses(lab: Lab) -> None:
    detail = lab.results[f"good.{Z}"].detail
    assert "mailto:tlsrpt@example.test" in detail
    assert "https://r.example.test/x" in detail


def test_servfail_is_unknown(lab: Lab) -> None:
    (finding,) = lab.results[BROKEN].findings
    assert (finding.code, finding.severity) == ("TLSRPT-DNS", Severity.UNKNOWN)


def test_through_the_command_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    status = main(
        [
            "audit",
            "--config",
            str(lab.site_file),
            "--only",
            "tls-rpt",
            "--resolver",
            lab.knot.nameserver,
            "--format",
            "json",
        ]
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert status == 2  # errors among the cases
    report = json.loads(out)
    codes = {
        (result["subject"], finding["code"])
        for result in report["results"]
        for finding in result["findings"]
    }
    assert (f"multi.{Z}", "TLSRPT-MULTIPLE") in codes
    assert (f"withsts.{Z}", "TLSRPT-NONE") in codes
    assert {r["check"] for r in report["results"]} == {"tls-rpt"}


# --- the parser ----------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=2, max_size=3).map(".".join)
_uri = st.one_of(
    st.builds(lambda u, d: f"mailto:{u}@{d}", _label, _domain),
    st.builds(lambda d, p: f"https://{d}/{p}", _domain, _label),
)


@given(st.lists(_uri, min_size=1, max_size=5), st.sampled_from(["; ", ";", " ; "]))
def test_valid_records_read_back(uris: list[str], delim: str) -> None:
    record = parse_tlsrpt(f"v=TLSRPTv1{delim}rua={','.join(uris)}")
    assert record.valid
    assert not record.warnings
    assert record.uris == tuple(uris)


@given(st.text(max_size=300))
@example("v=TLSRPTv1; rua=")
@example("v=TLSRPTv1; rua=https://[::1/")
@example("v=TLSRPTv1; rua=" + ",".join(["mailto:a@b.c"] * 50))
def test_any_text_is_judged_not_raised(text: str) -> None:
    record = parse_tlsrpt(text)
    assert record.valid == (not record.errors)
    if record.valid:
        assert record.uris
        assert all(uri_problem(u) is None for u in record.uris)
