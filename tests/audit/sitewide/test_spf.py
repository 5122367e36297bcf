"""``spf`` against a real Knot DNS: one served domain per case (good and broken records), a
real-world-shaped include/redirect chain whose look-ups are counted exactly, SERVFAIL, the
query budget; then check_host() over loaded data, pure."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import dkim, dmarc, spf
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.dnsquery import MAX_IN_FLIGHT, BoundedDns
from mailwarden.audit.sitewide.spf import Loader
from mailwarden.audit.sitewide.spfeval import SpfData, check_host, tally
from mailwarden.cli import main
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import DnsAnswer, Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.audit.sitewide.test_mtasts import site_text
from tests.fixtures.knot import KnotServer, running_knot

pytestmark = pytest.mark.slow  # starts knotd

Z = "spf.test"
BROKEN = "broken.test"
OUT = "ip4:192.0.2.25 ip6:2001:db8::25"
OUTBOUND = (
    '[[audit.outbound]]\naddress = "192.0.2.25"\n\n[[audit.outbound]]\naddress = "2001:db8::25"\n'
)
E, W, U, N = Severity.ERROR, Severity.WARNING, Severity.UNKNOWN, Severity.INFO

CASES: dict[str, tuple[str, dict[str, Severity]]] = {
    "good": (f'@ TXT "v=spf1 {OUT} -all"', {}),
    "split": ('@ TXT "v=spf1 ip4:192.0.2.0/24 " "ip6:2001:db8::/32 -all"', {}),
    "mx": (
        '@ TXT "v=spf1 mx -all"\n@ MX 10 out\nout A 192.0.2.25\nout AAAA 2001:db8::25',
        {},
    ),
    "cidr": (
        '@ TXT "v=spf1 a:net.cidr.spf.test/24//64 -all"\nnet A 192.0.2.1\nnet AAAA 2001:db8::1',
        {},
    ),
    "macro": ('@ TXT "v=spf1 a:%{d} -all"\n@ A 192.0.2.25\n@ AAAA 2001:db8::25', {}),
    "nothing": ('@ TXT "v=spf1 -all"', {}),
    "none": ("@ A 192.0.2.80", {"SPF-NONE": W}),
    "other": ('@ TXT "google-site-verification=abc"', {"SPF-NONE": W}),
    "multi": (f'@ TXT "v=spf1 {OUT} -all"\n@ TXT "v=spf1 mx -all"', {"SPF-MULTIPLE": E}),
    "syntax": ('@ TXT "v=spf1 ip4:192.0.2.300 foo -all"', {"SPF-SYNTAX": E}),
    "passall": ('@ TXT "v=spf1 +all"', {"SPF-PASS-ALL": E}),
    "neutral": (
        '@ TXT "v=spf1 ip4:192.0.2.25 ?all"',
        {"SPF-NEUTRAL-ALL": W, "SPF-OUTBOUND-NOT-PERMITTED": W},
    ),
    "noall": (f'@ TXT "v=spf1 {OUT}"', {"SPF-NO-ALL": N}),
    "ptr": (f'@ TXT "v=spf1 {OUT} ptr -all"', {"SPF-PTR": W}),
    "fail": ('@ TXT "v=spf1 ip4:198.51.100.0/24 -all"', {"SPF-OUTBOUND-NOT-PERMITTED": E}),
    "softfail": ('@ TXT "v=spf1 ip4:198.51.100.1 ~all"', {"SPF-OUTBOUND-NOT-PERMITTED": E}),
    "exists": (
        '@ TXT "v=spf1 exists:%{i}._spf.exists.spf.test -all"',
        {"SPF-OUTBOUND-UNKNOWN": U},
    ),
    "toomany": (
        f'@ TXT "v=spf1 include:t1.toomany.spf.test include:t2.toomany.spf.test {OUT} -all"\n'
        + "h A 192.0.2.99\n"
        + "".join(f't{n} TXT "v=spf1{" a:h.toomany.spf.test" * 5} ~all"\n' for n in (1, 2)),
        {"SPF-TOO-MANY-LOOKUPS": E, "SPF-OUTBOUND-NOT-PERMITTED": E},
    ),
    "void": (
        f'@ TXT "v=spf1 {OUT} a:g1.void.spf.test a:g2.void.spf.test mx:g3.void.spf.test -all"',
        {"SPF-VOID-LOOKUPS": E},
    ),
    "loop": (
        f'@ TXT "v=spf1 include:l.loop.spf.test {OUT} -all"\n'
        'l TXT "v=spf1 include:loop.spf.test ~all"',
        {"SPF-INCLUDE-LOOP": E, "SPF-OUTBOUND-NOT-PERMITTED": E},
    ),
    "incnone": (
        f'@ TXT "v=spf1 include:x.incnone.spf.test {OUT} -all"\nx A 192.0.2.1',
        {"SPF-INCLUDE-NONE": E, "SPF-OUTBOUND-NOT-PERMITTED": E},
    ),
    "incsyntax": (
        f'@ TXT "v=spf1 {OUT} include:x.incsyntax.spf.test -all"\nx TXT "v=spf1 ip4:1.2.3 -all"',
        {"SPF-SYNTAX": E},
    ),
    "manymx": (
        f'@ TXT "v=spf1 mx {OUT} -all"\n' + "".join(f"@ MX {n} mx{n}\n" for n in range(11)),
        {"SPF-TOO-MANY-MX": E, "SPF-OUTBOUND-NOT-PERMITTED": E},
    ),
    "redirect": (
        '@ TXT "v=spf1 redirect=_spf.redirect.spf.test"\n'
        '_spf TXT "v=spf1 ip4:192.0.2.25 ip6:2001:db8::/32 ?all"',
        {"SPF-NEUTRAL-ALL": W},
    ),
    "incpassall": (
        '@ TXT "v=spf1 include:p.incpassall.spf.test -all"\np TXT "v=spf1 +all"',
        {"SPF-PASS-ALL": E},
    ),
    "incfail": (
        f'@ TXT "v=spf1 include:x.{BROKEN} {OUT} -all"',
        {"SPF-LOOKUP-FAILED": U, "SPF-OUTBOUND-UNKNOWN": U},
    ),
    # the shape of a real university's record: a provider chain with include of include,
    # a redirect at the end of one branch, a and mx on the way
    "chain": (
        '@ TXT "v=spf1 ip4:192.0.2.25 include:_spf.chain.spf.test mx -all"\n'
        "@ MX 10 mx\nmx A 192.0.2.25\nrelay A 203.0.113.5\n"
        '_spf TXT "v=spf1 include:_a._spf.chain.spf.test include:_b._spf.chain.spf.test ~all"\n'
        '_a._spf TXT "v=spf1 ip4:203.0.113.0/24 a:relay.chain.spf.test ~all"\n'
        '_b._spf TXT "v=spf1 ip6:2001:db8::/64 redirect=_c._spf.chain.spf.test"\n'
        '_c._spf TXT "v=spf1 mx:chain.spf.test -all"',
        {},
    ),
}


def domain(label: str) -> str:
    return f"{label}.{Z}"


@dataclass
class Lab:
    knot: KnotServer
    context: SiteContext
    results: dict[str, CheckResult]


def context_for(knot: KnotServer, text: str) -> SiteContext:
    resolver = Resolver(parse_nameserver(knot.nameserver), timeout=2.0)
    return SiteContext(
        site=parse_site(text),
        resolver=resolver,
        network=Network(resolver),
        now=datetime.datetime.now(datetime.UTC),
        timeout=2.0,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("spf")
    zone = f"$ORIGIN {Z}.\n" + "".join(
        f"$ORIGIN {label}.{Z}.\n{records}\n" for label, (records, _) in CASES.items()
    )
    text = site_text([*(domain(label) for label in CASES), BROKEN], OUTBOUND)
    with running_knot({Z: zone}, tmp, servfail=[BROKEN]) as knot:
        context = context_for(knot, text)
        found = asyncio.run(spf.run(context))
        yield Lab(knot, context, {r.subject: r for r in found})


@pytest.mark.parametrize("label", list(CASES))
def test_each_case_gets_its_findings(lab: Lab, label: str) -> None:
    result = lab.results[domain(label)]
    got = {f.code: f.severity for f in result.findings}
    assert got == CASES[label][1], [f.message for f in result.findings]
    assert all(f.code in spf.CODES for f in result.findings)
    assert result.check == "spf"


def test_good_detail_says_outbound_passes(lab: Lab) -> None:
    detail = lab.results[domain("good")].detail
    assert "192.0.2.25 pass" in detail
    assert "2001:db8::25 pass" in detail
    assert "0 of 10 look-ups" in detail


def test_a_domain_sending_nothing_is_not_checked_for_outbound(lab: Lab) -> None:
    assert "sends no mail" in lab.results[domain("nothing")].detail


def test_real_world_chain_counts_lookups_exactly(lab: Lab) -> None:
    """top: include, mx (2); _spf: include, include (2); _a: a (1); _b: redirect (1);
    _c: mx (1) = 7."""
    assert "7 of 10 look-ups" in lab.results[domain("chain")].detail

    async def load() -> SpfData:
        loader = Loader(BoundedDns(lab.context.resolver))
        await loader.load(domain("chain"))
        return loader.data

    data = asyncio.run(load())
    found = tally(data, domain("chain"))
    assert found.lookups == 7
    assert not found.void
    assert not found.loops
    assert not found.failed
    # the relay is permitted through include → include → a, the /64 through the redirect
    relay = check_host(ipaddress.ip_address("203.0.113.5"), domain("chain"), data)
    assert relay.result == "pass"
    other = check_host(ipaddress.ip_address("203.0.113.77"), domain("chain"), data)
    assert other.result == "pass"  # the /24 of _a
    v6 = check_host(ipaddress.ip_address("2001:db8::99"), domain("chain"), data)
    assert v6.result == "pass"
    stranger = check_host(ipaddress.ip_address("198.51.100.7"), domain("chain"), data)
    assert stranger.result == "fail"  # softfail in the includes is no match; -all decides


def test_too_many_lookups_message_counts(lab: Lab) -> None:
    (finding,) = [
        f for f in lab.results[domain("toomany")].findings if f.code == "SPF-TOO-MANY-LOOKUPS"
    ]
    assert finding.message.startswith("12 DNS look-ups")


def test_outbound_verdicts_name_the_reason(lab: Lab) -> None:
    messages = [f.message for f in lab.results[domain("fail")].findings]
    assert any("192.0.2.25 gets fail" in m and "-all" in m for m in messages)
    loop = [f.message for f in lab.results[domain("loop")].findings]
    assert any("permerror" in m for m in loop)


def test_servfail_is_unknown(lab: Lab) -> None:
    (finding,) = lab.results[BROKEN].findings
    assert (finding.code, finding.severity) == ("SPF-LOOKUP-FAILED", Severity.UNKNOWN)


def test_query_budget_ends_in_unknown(lab: Lab) -> None:
    async def load() -> tuple[SpfData, bool]:
        loader = Loader(BoundedDns(lab.context.resolver), budget=3)
        await loader.load(domain("chain"))
        return loader.data, loader.exhausted

    data, exhausted = asyncio.run(load())
    assert exhausted
    findings, _ = spf.judge(domain("chain"), data, [], exhausted)
    assert ("SPF-LOOKUP-FAILED", Severity.UNKNOWN) in {(f.code, f.severity) for f in findings}


def test_lookups_run_concurrently_bounded_and_once(lab: Lab) -> None:
    """All domains at once, never more than the bound in flight, each name asked once (the
    loop case's record is reached twice, asked once)."""
    asked: list[tuple[str, str]] = []
    flying = [0, 0]  # now, most

    class Counting(Resolver):
        async def query(self, name: str, rdtype: str) -> DnsAnswer:
            asked.append((name, rdtype))
            flying[0] += 1
            flying[1] = max(flying)
            try:
                return await super().query(name, rdtype)
            finally:
                flying[0] -= 1

    resolver = Counting(parse_nameserver(lab.knot.nameserver), timeout=2.0)
    context = SiteContext(
        site=lab.context.site,
        resolver=resolver,
        network=Network(resolver),
        now=lab.context.now,
        timeout=2.0,
    )
    asyncio.run(spf.run(context))
    assert len(asked) == len(set(asked))
    assert asked.count((f"loop.{Z}.", "TXT")) == 1
    assert 1 < flying[1] <= MAX_IN_FLIGHT


def test_through_the_command_line(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_file = tmp_path / "site.toml"
    site_file.write_text(
        site_text([domain("good"), domain("fail"), domain("chain")], OUTBOUND), encoding="utf-8"
    )
    capsys.readouterr()
    status = main(
        [
            "audit",
            "--config",
            str(site_file),
            "--only",
            "spf",
            "--resolver",
            lab.knot.nameserver,
            "--format",
            "json",
        ]
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert status == 2  # fail.spf.test does not permit the outbound addresses
    report = json.loads(out)
    codes = {
        (result["subject"], finding["code"])
        for result in report["results"]
        for finding in result["findings"]
    }
    assert codes == {(domain("fail"), "SPF-OUTBOUND-NOT-PERMITTED")}
    assert {r["check"] for r in report["results"]} == {"spf"}


PERF_DOMAINS = 200


def test_two_hundred_domains_in_five_seconds(tmp_path: Path) -> None:
    """The issue's bound: the DNS part of spf, dkim and dmarc for 200 domains in 5 s, which
    only concurrent look-ups reach (sequentially: thousands of round trips)."""
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    key = base64.b64encode(raw).decode()
    zone = (
        '_spf TXT "v=spf1 ip4:192.0.2.0/24 include:_b.perf.test ~all"\n'
        '_b TXT "v=spf1 ip6:2001:db8::/32 a:relay.perf.test ~all"\n'
        "relay A 192.0.2.7\n"
        '_dmarc TXT "v=DMARC1; p=reject; rua=mailto:d@perf.test"\n'
    )
    for n in range(PERF_DOMAINS):
        zone += (
            f'd{n} TXT "v=spf1 mx include:_spf.perf.test -all"\n'
            f"d{n} MX 10 mx{n % 7}\nmx{n % 7} A 192.0.2.{n % 7 + 1}\n"
            f'_dmarc.d{n} TXT "v=DMARC1; p=quarantine; rua=mailto:r@reports.example"\n'
            f'sel._domainkey.d{n} TXT "v=DKIM1; k=ed25519; p={key}"\n'
        )
    zone = "\n".join(dict.fromkeys(zone.splitlines())) + "\n"  # the shared MX hosts once
    names = [f"d{n}.perf.test" for n in range(PERF_DOMAINS)]
    text = site_text(names, 'dkim_selectors = ["sel"]\n' + OUTBOUND)
    reports = '*._report._dmarc TXT "v=DMARC1"\n'
    with running_knot({"perf.test": zone, "reports.example": reports}, tmp_path) as knot:
        context = context_for(knot, text)

        async def all_three() -> list[list[CheckResult]]:
            return list(
                await asyncio.gather(spf.run(context), dkim.run(context), dmarc.run(context))
            )

        started = time.perf_counter()
        spf_results, dkim_results, dmarc_results = asyncio.run(all_three())
        elapsed = time.perf_counter() - started
    assert len(spf_results) == len(dkim_results) == len(dmarc_results) == PERF_DOMAINS
    assert "4 of 10 look-ups" in spf_results[0].detail
    assert [r.detail for r in dkim_results] == ["sel: ed25519"] * PERF_DOMAINS
    found = [f.message for r in (*spf_results, *dkim_results, *dmarc_results) for f in r.findings]
    assert not found, found[:3]
    assert elapsed < 5.0, f"{elapsed:.2f} s"
