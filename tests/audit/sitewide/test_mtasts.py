"""``mta-sts`` against real servers: Knot DNS publishing the TXT and MX records, nginx serving
each domain's policy over HTTPS with a test-CA certificate for ``mta-sts.DOMAIN``. One served
domain per case (good and broken), all audited in one run; then the parsers' properties."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import mtasts
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.dnstxt import tag_list, txt_text
from mailwarden.audit.sitewide.stspolicy import (
    MAX_AGE_LIMIT,
    is_sts_record,
    mx_matches,
    parse_policy,
    parse_sts_record,
    valid_mx_pattern,
)
from mailwarden.discovery.net import ConnectTo, Network
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.fixtures.knot import running_knot
from tests.fixtures.nginx import Vhost, running_nginx
from tests.fixtures.tls_ca import TestCA

pytestmark = pytest.mark.slow  # starts knotd and nginx

Z = "example.test"
BROKEN = "broken.test"  # a zone knotd cannot load: SERVFAIL for every name in it
TXT = '"v=STSv1; id=20240101T000000;"'


def policy(
    mode: str = "enforce", mx: tuple[str, ...] = (f"mx1.{Z}",), max_age: str = "604800"
) -> bytes:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return ("\r\n".join(lines) + "\r\n").encode()


# label → (zone lines under LABEL.example.test, nginx Vhost keyword arguments or None)
CASES: dict[str, tuple[str, dict[str, object] | None]] = {
    "good": (
        f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n@ MX 20 a.mx.{Z}.\n",
        {"body": policy(mx=(f"mx1.{Z}", f"*.mx.{Z}"))},
    ),
    "lf": (  # LF line ends, as most published policies have
        f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n",
        {"body": policy().replace(b"\r\n", b"\n")},
    ),
    "uncovered": (
        f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n@ MX 20 mx2.{Z}.\n@ MX 30 a.b.mx.{Z}.\n",
        {"body": policy(mx=(f"mx1.{Z}", f"*.mx.{Z}"))},
    ),
    "testing": (
        f"_mta-sts TXT {TXT}\n@ MX 10 mx2.{Z}.\n",
        {"body": policy(mode="testing")},
    ),
    "none": (f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n", {"body": policy(mode="none", mx=())}),
    "short": (f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n", {"body": policy(max_age="3600")}),
    "invalid": (
        f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n",
        {"body": b"version: STSv2\nmode: enforce\nmx: mx1.example.test\nmax_age: 99999999999\n"},
    ),
    "twice": (
        f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n",
        {"body": policy() + b"mode: testing\n"},
    ),
    "notxt": (f"@ MX 10 mx1.{Z}.\n", {"body": policy()}),
    "notfound": (f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n", {}),
    "nohost": (f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n", None),
    "redirect": (
        f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n",
        {"redirect": f"https://mta-sts.good.{Z}:{{https_port}}/"},
    ),
    "badcert": (f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n", {"body": policy(), "cert": "wrong"}),
    "html": (
        f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n",
        {"body": policy(), "content_type": "text/html"},
    ),
    "big": (f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n", {"body_bytes": 70_000}),
    "hang": (f"_mta-sts TXT {TXT}\n@ MX 10 mx1.{Z}.\n", {"hang": True}),
    "txtbad": (
        '_mta-sts TXT "v=STSv1; id=not-an-id!"\n@ MX 10 mx1.' + Z + ".\n",
        {"body": policy()},
    ),
    "txtmulti": (
        f'_mta-sts TXT {TXT}\n_mta-sts TXT "v=STSv1; id=2"\n@ MX 10 mx1.{Z}.\n',
        {"body": policy()},
    ),
    "absent": (f"@ MX 10 mx1.{Z}.\n", None),
    "wildcardweb": (f"@ MX 10 mx1.{Z}.\n", {"content_type": "text/html"}),  # a web page
}

EXPECTED: dict[str, dict[str, Severity]] = {
    "good": {},
    "lf": {},
    "uncovered": {"MTA-STS-MX-UNCOVERED": Severity.ERROR},
    "testing": {"MTA-STS-MX-UNCOVERED": Severity.WARNING, "MTA-STS-MODE-TESTING": Severity.INFO},
    "none": {"MTA-STS-MODE-NONE": Severity.WARNING},
    "short": {"MTA-STS-MAX-AGE-SHORT": Severity.WARNING},
    "invalid": {"MTA-STS-POLICY-INVALID": Severity.ERROR},
    "twice": {"MTA-STS-POLICY-SYNTAX": Severity.WARNING},
    "notxt": {"MTA-STS-TXT-MISSING": Severity.WARNING},
    "notfound": {"MTA-STS-POLICY-UNREACHABLE": Severity.ERROR},
    "nohost": {"MTA-STS-POLICY-UNREACHABLE": Severity.ERROR},
    "redirect": {"MTA-STS-POLICY-REDIRECT": Severity.ERROR},
    "badcert": {"MTA-STS-POLICY-TLS": Severity.ERROR},
    "html": {"MTA-STS-POLICY-CONTENT-TYPE": Severity.WARNING},
    "big": {"MTA-STS-POLICY-TOO-LARGE": Severity.ERROR},
    "hang": {"MTA-STS-POLICY-UNREACHABLE": Severity.UNKNOWN},
    "txtbad": {"MTA-STS-TXT-INVALID": Severity.ERROR},
    "txtmulti": {"MTA-STS-TXT-MULTIPLE": Severity.ERROR},
    "absent": {"MTA-STS-NONE": Severity.INFO},
    "wildcardweb": {"MTA-STS-NONE": Severity.INFO},
}


def site_text(domains: list[str], extra: str = "") -> str:
    """A minimal site file serving ``domains`` (the MX scan off)."""
    blocks = "".join(f'[domains."{d}"]\nservices = "campus"\n\n' for d in domains)
    return f"""\
primary_domain = "{domains[0]}"

[organisation]
name = "Sitewide Test University"
short_name = "STU"

[server]
public_host = "autodiscover.{Z}"

[[services.campus.imap]]
host = "imap.{Z}"
port = 993
tls = "implicit"

[[services.campus.smtp]]
host = "smtp.{Z}"
port = 587
tls = "starttls"

{blocks}[audit]
mx = false
{extra}"""


def domain(label: str) -> str:
    return f"{label}.{Z}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CheckResult]]:
    tmp = tmp_path_factory.mktemp("mtasts")
    ca = TestCA(tmp / "ca")
    hosts = [f"mta-sts.{domain(label)}" for label in CASES]
    cert = ca.issue(hosts[0], *hosts[1:])
    wrong = ca.issue(f"wrong.{Z}")
    vhosts = []
    for label, (_, spec) in CASES.items():
        if spec is None:
            continue
        options = dict(spec)
        chosen = wrong if options.pop("cert", None) == "wrong" else cert
        vhosts.append(Vhost((f"mta-sts.{domain(label)}",), chosen, http=False, **options))  # type: ignore[arg-type]
    zone = ""
    for label, (records, spec) in CASES.items():
        zone += f"$ORIGIN {domain(label)}.\n{records}"
        if spec is not None:
            zone += "mta-sts A 127.0.0.1\n"
    with (
        running_nginx(vhosts, tmp) as nginx,
        running_knot({Z: f"$ORIGIN {Z}.\n" + zone}, tmp, servfail=[BROKEN]) as knot,
    ):
        resolver = Resolver(parse_nameserver(knot.nameserver), timeout=2.0)
        network = Network(
            resolver,
            [ConnectTo(None, 443, None, nginx.https_port)],
            connect_timeout=2.0,
            ca_file=ca.root,
        )
        site = parse_site(site_text([*(domain(label) for label in CASES), BROKEN]))
        context = SiteContext(
            site=site,
            resolver=resolver,
            network=network,
            now=datetime.datetime.now(datetime.UTC),
            timeout=2.0,
            ca_file=ca.root,
        )
        found = asyncio.run(mtasts.run(context))
        yield {result.subject: result for result in found}


@pytest.mark.parametrize("label", list(CASES))
def test_each_case_gets_its_findings(results: dict[str, CheckResult], label: str) -> None:
    result = results[domain(label)]
    assert result.check == "mta-sts"
    got = {f.code: f.severity for f in result.findings}
    assert got == EXPECTED[label], [f.message for f in result.findings]
    for finding in result.findings:
        assert finding.code in mtasts.CODES
        assert finding.message


def test_good_domain_detail(results: dict[str, CheckResult]) -> None:
    detail = results[domain("good")].detail
    assert "mode enforce" in detail, detail
    assert "2 of 2 MX covered" in detail, detail


def test_uncovered_names_the_hosts(results: dict[str, CheckResult]) -> None:
    (finding,) = results[domain("uncovered")].findings
    assert f"mx2.{Z}" in finding.message
    assert f"a.b.mx.{Z}" in finding.message
    assert f"mx1.{Z}," not in finding.message.split(" not covered")[0]


def test_servfail_is_unknown(results: dict[str, CheckResult]) -> None:
    codes = {(f.code, f.severity) for f in results[BROKEN].findings}
    assert ("MTA-STS-DNS", Severity.UNKNOWN) in codes


# --- the parsers ---------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_host = st.lists(_label, min_size=2, max_size=4).map(".".join)
_pattern = st.one_of(_host, _host.map(lambda h: "*." + h))


@given(
    mode=st.sampled_from(["enforce", "testing", "none"]),
    mx=st.lists(_pattern, min_size=1, max_size=5),
    max_age=st.integers(0, MAX_AGE_LIMIT),
    newline=st.sampled_from(["\r\n", "\n"]),
    extension=st.booleans(),
)
def test_valid_policies_read_back(
    mode: str, mx: list[str], max_age: int, newline: str, extension: bool
) -> None:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx)]
    lines += [f"max_age: {max_age}"] + (["x-ext: anything at all"] if extension else [])
    parsed = parse_policy(newline.join(lines).encode())
    assert parsed.valid, parsed.errors
    assert (parsed.version, parsed.mode, parsed.max_age, parsed.mx) == (
        "STSv1",
        mode,
        max_age,
        tuple(mx),
    )


@given(st.binary(max_size=2000))
@example(b"version: STSv1\nmode: enforce\nmax_age: 1\n")
@example(b"\xff\xfe")
@example(b"mx: " + b"a" * 70_000)
def test_any_body_is_judged_not_raised(body: bytes) -> None:
    parsed = parse_policy(body)
    assert parsed.valid == (not parsed.errors)
    if parsed.valid:
        assert parsed.version == "STSv1"
        assert parsed.mode in ("enforce", "testing", "none")
        assert parsed.max_age is not None
        assert 0 <= parsed.max_age <= MAX_AGE_LIMIT


@given(st.text(max_size=300))
@example("v=STSv1; id=;")
@example("v=STSv1;id=abc;;")
def test_any_txt_is_judged_not_raised(text: str) -> None:
    record = parse_sts_record(text)
    assert record.valid == (not record.problems)
    if record.valid:
        assert record.id is not None
        assert 1 <= len(record.id) <= 32
        assert record.id.isalnum()
        assert is_sts_record(text)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=32))
def test_valid_txt_records_read_back(record_id: str) -> None:
    for text in (
        f"v=STSv1; id={record_id};",
        f"v=STSv1;id={record_id}",
        f"v=STSv1; id={record_id}; ext=1",
    ):
        assert parse_sts_record(text).id == record_id


@given(_host, _label)
def test_wildcard_covers_exactly_one_label(host: str, label: str) -> None:
    assert mx_matches("*." + host, f"{label}.{host}")
    assert mx_matches("*." + host, f"{label}.{host}.".upper())
    assert not mx_matches("*." + host, host)
    assert not mx_matches("*." + host, f"{label}.{label}.{host}")
    assert mx_matches(host, host + ".")
    assert not mx_matches(host, f"{label}.{host}")
    assert valid_mx_pattern("*." + host)
    assert not valid_mx_pattern("*")


@given(st.lists(st.text(alphabet=st.characters(codec="ascii"), max_size=40), max_size=4))
def test_txt_strings_join_back(strings: list[str]) -> None:
    def quoted(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    assert txt_text(" ".join(quoted(s) for s in strings)) == "".join(strings)


@given(st.text(max_size=500))
def test_tag_lists_never_raise(text: str) -> None:
    pairs = tag_list(text)
    assert pairs is None or all("=" not in key for key, _ in pairs)


def test_txt_decimal_escapes() -> None:
    assert txt_text('"a\\059b" "c"') == "a;bc"
    assert len(txt_text('"' + "x" * 10_000 + '"')) == 4096
