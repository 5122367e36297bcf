"""``dnsbl`` against a real Knot DNS serving block lists: a working one (test point, a listing
with TXT, a Spamhaus-style error answer, an answer outside 127/8), a small one, a dead one
without test point, one that lists everything, one refusing this resolver and an IPv6 one;
the pacing measured; once through ``mailwarden audit --only dnsbl``; then the properties of
the query names and of the answer classification."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import dnsbl
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.dnsbl import (
    DEFAULT_LISTS,
    Outcome,
    Pacer,
    classify,
    query_name,
    severity_of,
)
from mailwarden.cli import main
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import DnsStatus, Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.audit.sitewide.test_mtasts import site_text
from tests.fixtures.knot import KnotServer, running_knot

pytestmark = pytest.mark.slow  # starts knotd

BL = "bl.test"


def v6(address: str) -> str:
    """The reversed nibbles of an IPv6 address, relative (for zone text)."""
    return ipaddress.ip_address(address).reverse_pointer.removesuffix(".ip6.arpa")


ZONE = f"""\
$ORIGIN good.{BL}.
2.0.0.127 A 127.0.0.2
2.0.0.127 TXT "test point"
66.2.0.192 A 127.0.0.2
66.2.0.192 A 127.0.0.4
66.2.0.192 TXT "Listed for spam traps, see https://good.bl.test/q?ip=192.0.2.66"
77.2.0.192 A 127.255.255.254
88.2.0.192 A 192.0.2.1
$ORIGIN small.{BL}.
2.0.0.127 A 127.0.0.2
66.2.0.192 A 127.0.0.3
55.2.0.192 A 127.0.0.2
99.2.0.192 A 127.0.0.2
99.2.0.192 TXT "{"x" * 250}\\007" "{"y" * 250}" "{"z" * 250}"
$ORIGIN dead.{BL}.
66.2.0.192 A 127.0.0.2
10.2.0.192 A 127.0.0.2
$ORIGIN all.{BL}.
* A 127.0.0.2
$ORIGIN blocked.{BL}.
* A 127.255.255.254
$ORIGIN v6.{BL}.
2.0.0.127 A 127.0.0.2
{v6("::ffff:7f00:2")} A 127.0.0.2
{v6("2001:db8::66")} A 127.0.0.2
{v6("2001:db8::66")} TXT "v6 listing"
$ORIGIN v6dead.{BL}.
2.0.0.127 A 127.0.0.2
{v6("2001:db8::66")} A 127.0.0.2
"""

LISTS = f"""
[[audit.dnsbl]]
zone = "good.{BL}"
weight = 10
errors = ["127.255.255.0/24"]

[[audit.dnsbl]]
zone = "small.{BL}"
weight = 2

[[audit.dnsbl]]
zone = "dead.{BL}"
weight = 10

[[audit.dnsbl]]
zone = "all.{BL}"
weight = 10

[[audit.dnsbl]]
zone = "blocked.{BL}"
weight = 5
errors = ["127.255.255.0/24"]

[[audit.dnsbl]]
zone = "v6.{BL}"
weight = 3
ipv6 = true
"""

ADDRESSES = ["192.0.2.10", "192.0.2.66", "192.0.2.55", "192.0.2.77", "192.0.2.88"]
ADDRESSES6 = ["2001:db8::66", "2001:db8::10"]


def outbound(addresses: list[str]) -> str:
    return "".join(f'\n[[audit.outbound]]\naddress = "{a}"\n' for a in addresses)


def site(extra: str) -> str:
    return site_text(["example.test"], "dnsbl_threshold = 10\ndnsbl_rate = 200\n" + extra)


@dataclass
class Lab:
    knot: KnotServer
    tmp: Path

    def run(self, extra: str) -> dict[str, CheckResult]:
        resolver = Resolver(parse_nameserver(self.knot.nameserver), timeout=2.0)
        context = SiteContext(
            site=parse_site(site(extra)),
            resolver=resolver,
            network=Network(resolver, connect_timeout=2.0),
            now=datetime.datetime.now(datetime.UTC),
            timeout=2.0,
        )
        found = asyncio.run(dnsbl.run(context))
        return {r.subject: r for r in found}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("dnsbl")
    with running_knot({BL: ZONE}, tmp) as knot:
        yield Lab(knot, tmp)


@pytest.fixture(scope="module")
def mixed(lab: Lab) -> dict[str, CheckResult]:
    return lab.run(LISTS + outbound(ADDRESSES + ADDRESSES6))


def codes(result: CheckResult) -> list[tuple[str, Severity]]:
    return sorted((f.code, f.severity) for f in result.findings)


def by_code(result: CheckResult, code: str) -> list[str]:
    return [f.message for f in result.findings if f.code == code]


BROKEN_LISTS = [
    ("DNSBL-LIST-DEAD", Severity.UNKNOWN),  # dead: no test point
    ("DNSBL-LIST-DEAD", Severity.UNKNOWN),  # all: lists 127.0.0.1
    ("DNSBL-REFUSED", Severity.UNKNOWN),  # blocked: error code for the test point
]


def test_an_address_on_no_list_gets_only_the_broken_lists(mixed: dict[str, CheckResult]) -> None:
    result = mixed["192.0.2.10"]
    assert codes(result) == sorted(BROKEN_LISTS)
    dead = " ".join(by_code(result, "DNSBL-LIST-DEAD"))
    assert f"dead.{BL}" in dead
    assert "test point 127.0.0.2" in dead
    assert f"all.{BL}" in dead
    assert "127.0.0.1" in dead
    (refused,) = by_code(result, "DNSBL-REFUSED")
    assert f"blocked.{BL}" in refused
    assert "127.255.255.254" in refused
    # dead.bl.test lists 192.0.2.10, but a list failing its self-test does not count
    assert not by_code(result, "DNSBL-LISTED")
    assert result.detail == "not listed by 3 of 6 lists"


def test_weights_add_up_to_an_error(mixed: dict[str, CheckResult]) -> None:
    result = mixed["192.0.2.66"]
    assert codes(result) == sorted([("DNSBL-LISTED", Severity.ERROR), *BROKEN_LISTS])
    (message,) = by_code(result, "DNSBL-LISTED")
    assert f"good.{BL} (weight 10, 127.0.0.2, 127.0.0.4)" in message
    assert "Listed for spam traps, see https://good.bl.test/q?ip=192.0.2.66" in message
    assert f"small.{BL} (weight 2, 127.0.0.3)" in message
    assert "weight 12" in message
    assert f"dead.{BL} (" not in message


def test_a_light_listing_is_a_warning(mixed: dict[str, CheckResult]) -> None:
    result = mixed["192.0.2.55"]
    assert codes(result) == sorted([("DNSBL-LISTED", Severity.WARNING), *BROKEN_LISTS])


@pytest.mark.parametrize(
    ("address", "answer"), [("192.0.2.77", "127.255.255.254"), ("192.0.2.88", "192.0.2.1")]
)
def test_error_codes_and_foreign_answers_are_unknown(
    mixed: dict[str, CheckResult], address: str, answer: str
) -> None:
    result = mixed[address]
    assert codes(result) == sorted([("DNSBL-REFUSED", Severity.UNKNOWN), *BROKEN_LISTS])
    said = " ".join(by_code(result, "DNSBL-REFUSED"))
    assert f"good.{BL} refused to answer about {address}" in said
    assert answer in said


def test_ipv6_is_asked_of_ipv6_lists_only(mixed: dict[str, CheckResult]) -> None:
    listed = mixed["2001:db8::66"]
    assert codes(listed) == [("DNSBL-LISTED", Severity.WARNING)]
    (message,) = by_code(listed, "DNSBL-LISTED")
    assert f"v6.{BL}" in message
    assert "v6 listing" in message
    clean = mixed["2001:db8::10"]
    assert clean.findings == ()
    assert clean.detail == "not listed by 1 of 1 lists"


def test_an_ipv6_list_without_the_ipv6_test_point_is_dead(lab: Lab) -> None:
    extra = f'\n[[audit.dnsbl]]\nzone = "v6dead.{BL}"\nipv6 = true\n' + outbound(
        ["2001:db8::66", "192.0.2.66"]
    )
    results = lab.run(extra)
    (finding,) = results["2001:db8::66"].findings
    assert finding.code == "DNSBL-LIST-DEAD"
    assert "::ffff:7f00:2" in finding.message
    # for IPv4 the same list passes its self-test (and does not list 192.0.2.66)
    assert results["192.0.2.66"].findings == ()


def test_a_clean_address_on_working_lists_has_no_finding(lab: Lab) -> None:
    extra = LISTS.split('[[audit.dnsbl]]\nzone = "dead')[0] + outbound(["192.0.2.10"])
    (result,) = lab.run(extra).values()
    assert result.findings == ()
    assert result.detail == "not listed by 2 of 2 lists"


def test_a_long_txt_text_is_cut_and_printable(lab: Lab) -> None:
    extra = f'\n[[audit.dnsbl]]\nzone = "small.{BL}"\n' + outbound(["192.0.2.99"])
    (result,) = lab.run(extra).values()
    (finding,) = result.findings
    assert finding.code == "DNSBL-LISTED"
    quoted = finding.message.split(': "', 1)[1].split('"', 1)[0]
    assert quoted.startswith("xxx")
    assert len(quoted) <= 200
    assert quoted.isprintable()


def test_no_outbound_is_one_note(lab: Lab) -> None:
    (result,) = lab.run(LISTS).values()
    (finding,) = result.findings
    assert (finding.code, finding.severity) == ("DNSBL-NO-OUTBOUND", Severity.INFO)
    assert "[[audit.outbound]]" in finding.message


def test_ipv6_without_ipv6_lists_is_unchecked(lab: Lab) -> None:
    extra = f'\n[[audit.dnsbl]]\nzone = "good.{BL}"\n' + outbound(["2001:db8::66"])
    (result,) = lab.run(extra).values()
    (finding,) = result.findings
    assert (finding.code, finding.severity) == ("DNSBL-UNCHECKED", Severity.INFO)


def test_the_default_lists_are_asked_when_none_are_configured(lab: Lab) -> None:
    # knotd serves none of them: REFUSED, which the resolver reports as SERVFAIL
    (result,) = lab.run(outbound(["192.0.2.10"])).values()
    assert {f.code for f in result.findings} == {"DNSBL-DNS"}
    said = " ".join(f.message for f in result.findings)
    for entry in DEFAULT_LISTS:
        assert entry.zone in said


def test_an_unserved_list_is_a_dns_failure(lab: Lab) -> None:
    extra = '\n[[audit.dnsbl]]\nzone = "gone.example"\n' + outbound(["192.0.2.10"])
    (result,) = lab.run(extra).values()
    (finding,) = result.findings
    assert (finding.code, finding.severity) == ("DNSBL-DNS", Severity.UNKNOWN)


def test_every_code_is_documented(mixed: dict[str, CheckResult]) -> None:
    for result in mixed.values():
        assert all(f.code in dnsbl.CODES for f in result.findings)


# --- pacing --------------------------------------------------------------------------------


def test_the_pacer_keeps_the_rate() -> None:
    async def thirty() -> float:
        pacer = Pacer(20.0)
        started = time.perf_counter()
        await asyncio.gather(*(pacer.wait() for _ in range(30)))
        return time.perf_counter() - started

    elapsed = asyncio.run(thirty())
    assert elapsed >= 29 / 20 * 0.95, elapsed
    assert elapsed < 4.0, elapsed


def test_the_check_is_paced(lab: Lab) -> None:
    # 2 lists: 2 test points each, 2 address queries, 1 TXT = 7 queries at 10/s: >= 0.6 s
    extra = (LISTS.split('[[audit.dnsbl]]\nzone = "dead')[0] + outbound(["192.0.2.55"])).replace(
        "dnsbl_rate = 200", ""
    )
    text = site_text(["example.test"], "dnsbl_rate = 10\n" + extra)
    resolver = Resolver(parse_nameserver(lab.knot.nameserver), timeout=2.0)
    context = SiteContext(
        site=parse_site(text),
        resolver=resolver,
        network=Network(resolver),
        now=datetime.datetime.now(datetime.UTC),
        timeout=2.0,
    )
    started = time.perf_counter()
    (result,) = asyncio.run(dnsbl.run(context))
    elapsed = time.perf_counter() - started
    assert [f.code for f in result.findings] == ["DNSBL-LISTED"]
    assert elapsed >= 0.6 * 0.95, elapsed


def test_through_the_command_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    site_file = lab.tmp / "site.toml"
    site_file.write_text(site(LISTS + outbound(["192.0.2.66", "2001:db8::10"])), "utf-8")
    capsys.readouterr()
    status = main(
        [
            "audit",
            "--config",
            str(site_file),
            "--only",
            "dnsbl",
            "--resolver",
            lab.knot.nameserver,
            "--format",
            "json",
        ]
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert status == 2
    report = json.loads(out)
    assert {r["check"] for r in report["results"]} == {"dnsbl"}
    found = {(r["subject"], f["code"]) for r in report["results"] for f in r["findings"]}
    assert ("192.0.2.66", "DNSBL-LISTED") in found
    assert not any(subject == "2001:db8::10" for subject, _ in found)


# --- the pure core -------------------------------------------------------------------------


@given(st.ip_addresses(v=4))
@example(ipaddress.IPv4Address("0.0.0.0"))
def test_ipv4_query_names_are_the_reversed_octets(address: ipaddress.IPv4Address) -> None:
    name = query_name(str(address), "Bl.Example")
    assert name.endswith(".bl.example.")
    octets = name.removesuffix(".bl.example.").split(".")
    assert len(octets) == 4
    assert ".".join(reversed(octets)) == str(address)


@given(st.ip_addresses(v=6))
@example(ipaddress.IPv6Address("::ffff:7f00:2"))
def test_ipv6_query_names_are_the_reversed_nibbles(address: ipaddress.IPv6Address) -> None:
    name = query_name(str(address), "bl.example.")
    nibbles = name.removesuffix(".bl.example.").split(".")
    assert len(nibbles) == 32
    assert all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles)
    assert ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)) == address


_loopback = st.integers(0x7F000000, 0x7FFFFFFF).map(lambda n: str(ipaddress.IPv4Address(n)))
_errors = st.lists(
    st.sampled_from(["127.255.255.0/24", "127.0.0.0/30", "127.1.0.0/16", "10.0.0.0/8"]),
    max_size=3,
)


@given(st.lists(_loopback, min_size=1, max_size=5), _errors)
def test_loopback_answers_are_listings_unless_error_codes(
    answers: list[str], errors: list[str]
) -> None:
    networks = [ipaddress.IPv4Network(e) for e in errors]
    verdict = classify(DnsStatus.OK, answers, networks)
    if any(ipaddress.IPv4Address(a) in n for a in answers for n in networks):
        assert verdict.outcome is Outcome.REFUSED
    else:
        assert verdict.outcome is Outcome.LISTED
        assert set(verdict.codes) == set(answers)
    # the same answers in another order get the same verdict
    assert classify(DnsStatus.OK, list(reversed(answers)), networks).outcome is verdict.outcome


@given(st.lists(_loopback, max_size=3), st.ip_addresses().map(str))
def test_an_answer_outside_127_8_is_a_refusal(answers: list[str], other: str) -> None:
    verdict = classify(DnsStatus.OK, [*answers, other], [])
    inside = ipaddress.ip_address(other) in ipaddress.ip_network("127.0.0.0/8")
    assert verdict.outcome is (Outcome.LISTED if inside else Outcome.REFUSED)


@given(st.lists(st.text(max_size=60), max_size=20), st.sampled_from(list(DnsStatus)))
def test_any_answer_is_classified_not_raised(records: list[str], status: DnsStatus) -> None:
    verdict = classify(status, records, [])
    if status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        assert verdict.outcome is Outcome.CLEAR
    elif status.failed:
        assert verdict.outcome is Outcome.FAILED
    assert len(verdict.detail) < 2000


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_severity_follows_the_threshold(total: int, threshold: int) -> None:
    severity = severity_of(total, threshold)
    assert (severity is Severity.ERROR) == (total >= threshold)
    assert (severity is Severity.INFO) == (total == 0)
