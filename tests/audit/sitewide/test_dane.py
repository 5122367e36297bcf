"""``dane`` against real DNS: Knot signing one zone and not another, a real validating Unbound
(the AD bit), TLSA records computed with openssl from certificates a test CA issued, and the
chains those certificates make as the scanner would have recorded them on port 25."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult, Endpoint, Observation
from mailwarden.audit.sitewide import dane
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.tlsa import Tlsa, matches, parse_tlsa
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.audit.sitewide.test_mtasts import site_text
from tests.fixtures.knot import running_knot
from tests.fixtures.tls_ca import ServerCert, TestCA
from tests.fixtures.unbound import running_unbound, trust_anchors

pytestmark = pytest.mark.slow  # starts knotd and unbound

S = "signed.test"
P = "plain.test"
BROKEN = "broken.test"


def openssl_tlsa(pem: Path, selector: int, mtype: int) -> str:
    """The association data of a TLSA record, computed by openssl (not by the code under test)."""
    if selector == 0:
        data = subprocess.run(
            ["openssl", "x509", "-in", str(pem), "-outform", "DER"], capture_output=True, check=True
        ).stdout
    else:
        key = subprocess.run(
            ["openssl", "x509", "-in", str(pem), "-pubkey", "-noout"],
            capture_output=True,
            check=True,
        ).stdout
        data = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "DER"],
            input=key,
            capture_output=True,
            check=True,
        ).stdout
    if mtype == 0:
        return data.hex()
    digest = {1: "-sha256", 2: "-sha512"}[mtype]
    out = subprocess.run(
        ["openssl", "dgst", digest, "-hex"], input=data, capture_output=True, check=True
    ).stdout.decode()
    return out.split()[-1]


def der_chain(cert: ServerCert) -> tuple[bytes, ...]:
    pems = x509.load_pem_x509_certificates(cert.chain.read_bytes())
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in pems)


def observation(
    host: str, address: str, chain: tuple[bytes, ...], error: str | None = None
) -> Observation:
    endpoint = Endpoint(host, address, 25, "smtp", "starttls", names=(host,))
    return Observation(endpoint, error=error, error_kind="connect" if error else None, chain=chain)


EXPECTED: dict[str, dict[str, Severity]] = {
    f"mx.good.{S}": {},
    f"mx.single.{S}": {"DANE-ROLLOVER": Severity.INFO},
    f"mx.ta.{S}": {},
    f"mx.full.{S}": {"DANE-ROLLOVER": Severity.INFO},  # two records, one certificate
    f"mx.mismatch.{S}": {"DANE-MISMATCH": Severity.ERROR},
    f"mx.dual.{S}": {"DANE-MISMATCH": Severity.ERROR},
    f"mx.pkix.{S}": {"DANE-USAGE": Severity.WARNING},
    f"mx.odd.{S}": {"DANE-INVALID": Severity.WARNING},
    f"mx.notscanned.{S}": {"DANE-NOT-SCANNED": Severity.UNKNOWN},
    f"mx.failed.{S}": {"DANE-NOT-SCANNED": Severity.UNKNOWN},
    f"mx.notlsa.{S}": {"DANE-NONE": Severity.INFO},
    f"mx.shared.{S}": {"DANE-MX-UNSIGNED": Severity.WARNING},
    f"mx.plain.{P}": {"DANE-UNSIGNED": Severity.WARNING},
    f"mx.plainbad.{P}": {"DANE-UNSIGNED": Severity.WARNING, "DANE-MISMATCH": Severity.WARNING},
    f"mx.plainnone.{P}": {},
    BROKEN: {"DANE-DNS": Severity.UNKNOWN},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CheckResult]]:
    tmp = tmp_path_factory.mktemp("dane")
    ca = TestCA(tmp / "ca")
    certs = {host: ca.issue(host) for host in EXPECTED if host.startswith("mx.")}
    other = ca.issue(f"other.{S}")  # a key no MX uses: the "next key", or a stale record
    chains = {host: der_chain(cert) for host, cert in certs.items()}

    def tlsa(host: str, usage: int, selector: int, mtype: int, pem: Path | None = None) -> str:
        data = openssl_tlsa(pem or certs[host].leaf, selector, mtype)
        return f"_25._tcp.{host}. TLSA {usage} {selector} {mtype} {data}\n"

    def mx(domain: str) -> str:
        return f"{domain}. MX 10 mx.{domain}.\nmx.{domain}. A 192.0.2.25\n"

    signed = "".join(
        mx(f"{label}.{S}")
        for label in [
            "good",
            "single",
            "ta",
            "full",
            "mismatch",
            "dual",
            "pkix",
            "odd",
            "notscanned",
            "failed",
            "notlsa",
        ]
    )
    signed += tlsa(f"mx.good.{S}", 3, 1, 1) + tlsa(f"mx.good.{S}", 3, 1, 1, other.leaf)
    signed += tlsa(f"mx.single.{S}", 3, 1, 1)
    signed += tlsa(f"mx.ta.{S}", 3, 1, 1) + tlsa(f"mx.ta.{S}", 2, 0, 1, ca.intermediate)
    signed += tlsa(f"mx.full.{S}", 3, 0, 0) + tlsa(f"mx.full.{S}", 3, 1, 2)
    signed += tlsa(f"mx.mismatch.{S}", 3, 1, 1, other.leaf)
    signed += tlsa(f"mx.dual.{S}", 3, 1, 1)
    signed += tlsa(f"mx.pkix.{S}", 1, 1, 1)
    signed += tlsa(f"mx.odd.{S}", 3, 1, 1) + tlsa(f"mx.odd.{S}", 3, 1, 1, other.leaf)
    signed += f"_25._tcp.mx.odd.{S}. TLSA 3 5 1 {openssl_tlsa(certs[f'mx.odd.{S}'].leaf, 1, 1)}\n"
    signed += tlsa(f"mx.notscanned.{S}", 3, 1, 1) + tlsa(f"mx.failed.{S}", 3, 1, 1)
    signed += tlsa(f"mx.shared.{S}", 3, 1, 1) + tlsa(f"mx.shared.{S}", 3, 1, 1, other.leaf)
    plain = mx(f"plain.{P}") + mx(f"plainbad.{P}") + mx(f"plainnone.{P}")
    plain += f"shared.{P}. MX 10 mx.shared.{S}.\n"
    plain += tlsa(f"mx.plain.{P}", 3, 1, 1) + tlsa(f"mx.plain.{P}", 3, 1, 1, other.leaf)
    plain += tlsa(f"mx.plainbad.{P}", 3, 1, 1, other.leaf)
    zones = {S: f"$ORIGIN {S}.\n" + signed, P: f"$ORIGIN {P}.\n" + plain}
    observations = [
        observation(host, "192.0.2.25", chain)
        for host, chain in chains.items()
        if host not in (f"mx.notscanned.{S}", f"mx.failed.{S}")
    ]
    # the IPv6 address of mx.dual sends another certificate: the TLSA records do not name it
    observations.append(observation(f"mx.dual.{S}", "2001:db8::25", der_chain(other)))
    observations.append(observation(f"mx.failed.{S}", "192.0.2.26", (), "connection refused"))
    domains = [
        *(f"{h.split('.', 2)[1]}.{S}" for h in EXPECTED if h.endswith(S) and "shared" not in h),
        *(f"{h.split('.', 2)[1]}.{P}" for h in EXPECTED if h.endswith(P)),
        f"shared.{P}",
        BROKEN,
    ]
    with (
        running_knot(zones, tmp, signed=[S], servfail=[BROKEN]) as knot,
        running_unbound(knot, [S, P, BROKEN], tmp, signed=[S]) as unbound,
    ):
        resolver = Resolver(parse_nameserver(unbound.nameserver), timeout=3.0)
        context = SiteContext(
            site=parse_site(site_text(domains)),
            resolver=resolver,
            network=Network(resolver, connect_timeout=2.0),
            now=datetime.datetime.now(datetime.UTC),
            timeout=3.0,
            observations=tuple(observations),
        )
        found = asyncio.run(dane.run(context))
        yield {result.subject: result for result in found}


@pytest.mark.parametrize("subject", list(EXPECTED))
def test_each_mx_gets_its_findings(results: dict[str, CheckResult], subject: str) -> None:
    result = results[subject]
    assert result.check == "dane"
    got = {f.code: f.severity for f in result.findings}
    assert got == EXPECTED[subject], [f.message for f in result.findings]
    assert all(f.code in dane.CODES for f in result.findings)


def test_one_result_per_mx_host(results: dict[str, CheckResult]) -> None:
    assert sorted(results) == sorted(EXPECTED)


def test_mismatch_names_the_address(results: dict[str, CheckResult]) -> None:
    (finding,) = list(results[f"mx.dual.{S}"].findings)
    assert "2001:db8::25" in finding.message
    assert "192.0.2.25" not in finding.message


def test_unsigned_no_tlsa_says_why(results: dict[str, CheckResult]) -> None:
    assert "not signed" in results[f"mx.plainnone.{P}"].detail


def test_good_detail_names_the_matching_record(results: dict[str, CheckResult]) -> None:
    assert "3 1 1" in results[f"mx.good.{S}"].detail


def test_bogus_dnssec_is_unknown(tmp_path: Path) -> None:
    """A trust anchor matching no key of the zone (as a stale DS): Unbound answers SERVFAIL."""
    zone = {S: f"$ORIGIN {S}.\nd.{S}. MX 10 mx.d.{S}.\n_25._tcp.mx.d.{S}. TLSA 3 1 1 {'ab' * 32}\n"}
    with running_knot(zone, tmp_path / "other", signed=[S]) as other:
        foreign = trust_anchors(other, [S])
    with (
        running_knot(zone, tmp_path, signed=[S]) as knot,
        running_unbound(knot, [S], tmp_path, signed=[S], anchors=foreign) as unbound,
    ):
        resolver = Resolver(parse_nameserver(unbound.nameserver), timeout=3.0)
        context = SiteContext(
            site=parse_site(site_text([f"d.{S}"])),
            resolver=resolver,
            network=Network(resolver),
            now=datetime.datetime.now(datetime.UTC),
            timeout=3.0,
        )
        (result,) = asyncio.run(dane.run(context))
    assert [(f.code, f.severity) for f in result.findings] == [("DANE-DNS", Severity.UNKNOWN)]
    assert "DNSSEC" in result.findings[0].message


# --- the TLSA parser -----------------------------------------------------------------------


@given(st.text(max_size=200))
@example("3 1 1 " + "zz" * 32)
@example("999 1 1 00")
@example("3 1 1")
def test_any_record_is_read_or_refused(text: str) -> None:
    parsed = parse_tlsa(text)
    if isinstance(parsed, Tlsa):
        assert matches(parsed, (b"not a certificate", b"\x30\x00")) == () or parsed.mtype == 0


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=80),
)
def test_records_read_back(usage: int, selector: int, mtype: int, data: bytes) -> None:
    parsed = parse_tlsa(f"{usage} {selector} {mtype} {data.hex()}")
    wrong_size = {1: 32, 2: 64}.get(mtype, len(data)) != len(data)
    assert isinstance(parsed, str) == wrong_size
    if isinstance(parsed, Tlsa):
        assert (parsed.usage, parsed.selector, parsed.mtype, parsed.data) == (
            usage,
            selector,
            mtype,
            data,
        )
