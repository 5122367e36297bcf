"""``dkim`` against a real Knot DNS serving key records made by the test (RSA of several sizes,
PKCS#1 and SPKI, Ed25519, revoked, broken), then the key-record parser's properties."""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import dkim
from mailwarden.audit.sitewide.authrecords import RecordSyntaxError, render_tags
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.dkim import DkimKey, judge_key, key_bits, parse_dkim_key
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.audit.sitewide.test_mtasts import site_text
from tests.fixtures.knot import running_knot

pytestmark = pytest.mark.slow  # starts knotd

Z = "dkim.test"
BROKEN = "broken.test"
E, W, U, N = Severity.ERROR, Severity.WARNING, Severity.UNKNOWN, Severity.INFO


def rsa_key(bits: int, fmt: PublicFormat = PublicFormat.SubjectPublicKeyInfo) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return base64.b64encode(key.public_bytes(Encoding.DER, fmt)).decode()


def short_rsa_key() -> str:
    """A 512-bit public key (the library no longer makes such private keys)."""
    key = rsa.RSAPublicNumbers(65537, (1 << 511) | 0x1D).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def ed_key(fmt: PublicFormat = PublicFormat.Raw) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    encoding = Encoding.Raw if fmt is PublicFormat.Raw else Encoding.DER
    return base64.b64encode(key.public_bytes(encoding, fmt)).decode()


def txt(owner: str, text: str) -> str:
    """A TXT line, split into 255-character strings as a zone file must."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return f"{owner} TXT " + " ".join(f'"{c}"' for c in chunks) + "\n"


RSA2048 = rsa_key(2048)
RSA1024 = rsa_key(1024)

# label → (TXT records at SELECTOR._domainkey (selector → texts), expected findings)
CASES: dict[str, tuple[dict[str, list[str]], dict[str, Severity]]] = {
    "good": ({"s1": [f"v=DKIM1; k=rsa; p={RSA2048}"]}, {}),
    "nov": ({"s1": [f"p={RSA2048}"]}, {}),
    "pkcs1": ({"s1": [f"v=DKIM1; p={rsa_key(2048, PublicFormat.PKCS1)}"]}, {}),
    "both": ({"ed": [f"v=DKIM1; k=ed25519; p={ed_key()}"], "rsa": [f"p={RSA2048}"]}, {}),
    "spaced": ({"s1": [f"v=DKIM1; h=sha256; p={RSA2048[:100]} {RSA2048[100:]}"]}, {}),
    "weak": ({"s1": [f"v=DKIM1; p={RSA1024}"]}, {"DKIM-KEY-WEAK": W}),
    "short": ({"s1": [f"v=DKIM1; p={short_rsa_key()}"]}, {"DKIM-KEY-TOO-SHORT": E}),
    "revoked": ({"s1": ["v=DKIM1; k=rsa; p="]}, {"DKIM-REVOKED": E}),
    "none": ({}, {"DKIM-NONE": E}),
    "testing": ({"s1": [f"v=DKIM1; t=y; p={RSA2048}"]}, {"DKIM-TESTING": W}),
    "sha1": ({"s1": [f"v=DKIM1; h=sha1; p={RSA2048}"]}, {"DKIM-SHA1": E}),
    "nop": ({"s1": ["v=DKIM1; k=rsa"]}, {"DKIM-SYNTAX": E}),
    "vlate": ({"s1": [f"k=rsa; v=DKIM1; p={RSA2048}"]}, {"DKIM-SYNTAX": E}),
    "twice": ({"s1": [f"v=DKIM1; p={RSA2048}; p={RSA2048}"]}, {"DKIM-SYNTAX": E}),
    "truncated": ({"s1": [f"v=DKIM1; p={RSA2048[:200]}"]}, {"DKIM-KEY-INVALID": E}),
    "notb64": ({"s1": ["v=DKIM1; p=not*base64"]}, {"DKIM-KEY-INVALID": E}),
    "edspki": (
        {"s1": [f"v=DKIM1; k=ed25519; p={ed_key(PublicFormat.SubjectPublicKeyInfo)}"]},
        {"DKIM-KEY-INVALID": E},
    ),
    "edasrsa": (
        {"s1": [f"v=DKIM1; p={ed_key(PublicFormat.SubjectPublicKeyInfo)}"]},
        {"DKIM-KEY-INVALID": E},
    ),
    "ktype": ({"s1": [f"v=DKIM1; k=dsa; p={RSA2048}"]}, {"DKIM-KEY-TYPE": E}),
    "service": ({"s1": [f"v=DKIM1; s=tlsrpt; p={RSA2048}"]}, {"DKIM-NOT-EMAIL": E}),
    "multi": (
        {"s1": [f"v=DKIM1; p={RSA2048}", f"v=DKIM1; p={rsa_key(2048)}"]},
        {"DKIM-MULTIPLE": W},
    ),
    "unconfigured": ({}, {"DKIM-NOT-CONFIGURED": N}),
}

SELECTORS = {"both": ["ed", "rsa"], "unconfigured": []}


def domain(label: str) -> str:
    return f"{label}.{Z}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CheckResult]]:
    tmp = tmp_path_factory.mktemp("dkim")
    zone = f'$ORIGIN {Z}.\n@ TXT "zone"\n'
    for label, (records, _) in CASES.items():
        for selector, texts in records.items():
            for text in texts:
                zone += txt(f"{selector}._domainkey.{label}", text)
    extra = 'dkim_selectors = ["s1"]\n\n' + "".join(
        f'[audit.domains."{domain(label)}"]\ndkim_selectors = {selectors}\n\n'
        for label, selectors in SELECTORS.items()
    )
    text = site_text([*(domain(label) for label in CASES), BROKEN], extra)
    with running_knot({Z: zone}, tmp, servfail=[BROKEN]) as knot:
        resolver = Resolver(parse_nameserver(knot.nameserver), timeout=2.0)
        context = SiteContext(
            site=parse_site(text),
            resolver=resolver,
            network=Network(resolver),
            now=datetime.datetime.now(datetime.UTC),
            timeout=2.0,
        )
        yield {r.subject: r for r in asyncio.run(dkim.run(context))}


@pytest.mark.parametrize("label", list(CASES))
def test_each_case_gets_its_findings(results: dict[str, CheckResult], label: str) -> None:
    result = results[domain(label)]
    got = {f.code: f.severity for f in result.findings}
    assert got == CASES[label][1], [f.message for f in result.findings]
    assert all(f.code in dkim.CODES for f in result.findings)


def test_details_name_type_and_size(results: dict[str, CheckResult]) -> None:
    assert results[domain("good")].detail == "s1: rsa 2048"
    assert results[domain("both")].detail == "ed: ed25519; rsa: rsa 2048"
    assert results[domain("weak")].detail == "s1: rsa 1024"
    assert "not checked" in results[domain("unconfigured")].detail


def test_findings_are_about_the_selector_name(results: dict[str, CheckResult]) -> None:
    (finding,) = results[domain("revoked")].findings
    assert finding.subject == f"s1._domainkey.{domain('revoked')}"


def test_servfail_is_unknown(results: dict[str, CheckResult]) -> None:
    (finding,) = results[BROKEN].findings
    assert (finding.code, finding.severity) == ("DKIM-LOOKUP-FAILED", Severity.UNKNOWN)


# --- the parser ------------------------------------------------------------------------------


def test_key_bits_of_real_keys() -> None:
    assert key_bits(DkimKey(RSA2048)) == 2048
    assert key_bits(DkimKey(ed_key(), key_type="ed25519")) == 256
    with pytest.raises(RecordSyntaxError):
        key_bits(DkimKey(ed_key(PublicFormat.SubjectPublicKeyInfo)))


_b64 = st.from_regex(r"[A-Za-z0-9+/]{0,40}={0,2}", fullmatch=True)
_value = st.from_regex(r"[\x21-\x3a\x3c-\x7e]{0,20}", fullmatch=True)


@given(
    st.booleans(),
    st.dictionaries(st.sampled_from(["k", "h", "t", "s", "n", "x1"]), _value, max_size=6),
    _b64,
)
@example(True, {"k": "ed25519"}, "AAAA")
@example(False, {"k": "rsa", "h": "sha1:sha256"}, "")
def test_any_key_record_is_judged_not_raised(version: bool, tags: dict[str, str], key: str) -> None:
    head: tuple[tuple[str, str], ...] = (("v", "DKIM1"),) if version else ()
    pairs = (*head, *tags.items(), ("p", key))
    text = render_tags(pairs)
    record = parse_dkim_key(text)
    assert record.public_key == key
    findings, description = judge_key("s._domainkey.example.org", text)
    assert description
    assert all(f.code in dkim.CODES for f in findings)


@given(st.text(max_size=300))
@example("v=DKIM1; p=MIIB")
@example("v=DKIM1; k=ed25519; p=" + "A" * 43 + "=")
@example("p=" + base64.b64encode(b"\x30\x82" + b"\x00" * 40).decode())
def test_any_text_is_judged_not_raised(text: str) -> None:
    findings, _ = judge_key("s._domainkey.example.org", text)
    assert all(f.code in dkim.CODES for f in findings)
    try:
        parse_dkim_key(text)
    except RecordSyntaxError:
        assert [f.code for f in findings] == ["DKIM-SYNTAX"]
