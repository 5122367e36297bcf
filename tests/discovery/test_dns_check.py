"""``dns check`` against a real authoritative server (Knot DNS), and the ``dns`` command line.

The zone Knot serves is the output of ``dns records`` plus the addresses of the site's mail
server hosts (which the site file does not know): that must give no finding at all. Each broken
variant changes one thing and must give exactly the expected finding.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwarden.cli import main
from mailwarden.discovery.check import CODES, CheckReport, check_published
from mailwarden.discovery.records import render_zone, wanted_records
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site import Site, load_site
from tests.fixtures.knot import KnotServer, running_knot, silent_dns
from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow  # starts knotd

SITE_TOML = """\
primary_domain = "example.org"

[organisation]
name = "Example Org"
short_name = "Example"

[server]
public_host = "autoconfig.example.org"
public_addresses = ["192.0.2.10", "2001:db8::10"]

[[services.main.imap]]
host = "imap1.example.org"
tls = "implicit"

[[services.main.imap]]
host = "imap2.example.org"
tls = "implicit"

[[services.main.imap]]
host = "imap1.example.org"
tls = "starttls"

[[services.main.smtp]]
host = "smtp.example.org"
tls = "implicit"

[[services.main.smtp]]
host = "smtp.example.org"
tls = "starttls"

[services.hosted]
incoming_first = "pop3"

[[services.hosted.pop3]]
host = "pop.example.net"
tls = "implicit"

[[services.hosted.imap]]
host = "imap.example.net"
tls = "starttls"

[[services.hosted.smtp]]
host = "smtp.example.net"
tls = "starttls"

[domains."example.org"]
services = "main"
aliases = ["example.com"]

[domains."bücher.example"]
services = "hosted"

[domains."old.example.org"]
services = "main"
moved_to = "new.example"

[domains."quiet.example.org"]
services = "main"
autodiscover = false
"""

BUECHER = "xn--bcher-kva.example"


def server_hosts(site: Site) -> list[str]:
    """Every mail server host of the service sets the site's domains use, in the site's order."""
    hosts: dict[str, None] = {}
    for domain in site.domains.values():
        services = site.services[domain.services]
        for kind in ("imap", "pop3", "smtp"):
            for server in services.servers(kind):
                hosts.setdefault(server.host + ".")
    return list(hosts)


def published(site: Site, *, host_address: str | None = None) -> str:
    """What a careful operator publishes: ``dns records`` plus the servers' own addresses."""
    lines = [render_zone(wanted_records(site))]
    if host_address is not None:
        lines.append(f"{site.server.public_host}. 300 IN A {host_address}")
    for index, host in enumerate(server_hosts(site)):
        lines.append(f"{host} 300 IN A 192.0.2.{50 + index}")
        lines.append(f"{host} 300 IN AAAA 2001:db8::{50 + index:x}")
    return "\n".join(lines) + "\n"


def without(text: str, name: str, rtype: str | None = None) -> str:
    """``text`` minus the records of ``name`` (of type ``rtype``, or all)."""
    kept = []
    for line in text.splitlines():
        fields = line.split(";", 1)[0].split()
        if fields and fields[0] == name and (rtype is None or fields[3] == rtype):
            continue
        kept.append(line)
    assert len(kept) < len(text.splitlines()), f"no record of {name} {rtype or ''} to remove"
    return "\n".join(kept) + "\n"


def check(site: Site, nameserver: str, timeout: float = 2.0) -> CheckReport:
    resolver = Resolver(parse_nameserver(nameserver), timeout=timeout)
    return asyncio.run(check_published(site, resolver))


def found(report: CheckReport) -> list[tuple[str, str, Severity]]:
    return sorted((f.code, f.subject, f.severity) for f in report.findings)


@pytest.fixture(scope="module")
def site_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dns-site") / "site.toml"
    path.write_text(SITE_TOML, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def site(site_file: Path) -> Site:
    return load_site(site_file)


@pytest.fixture(scope="module")
def knot(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """One knotd for the module, serving the root zone; each test loads its own contents."""
    with running_knot({".": published(site)}, tmp_path_factory.mktemp("knot")) as server:
        yield server


@pytest.fixture
def good(site: Site, knot: KnotServer) -> str:
    text = published(site)
    knot.reload(".", text)
    return text


def test_published_records_give_no_finding(site: Site, knot: KnotServer, good: str) -> None:
    report = check(site, knot.nameserver)
    assert report.findings == ()
    assert report.exit_status == 0
    assert report.resolver == f"resolver {knot.nameserver}"
    # every wanted name and type was asked and answered, plus the SRV targets' addresses
    wanted = {
        (r.name, r.rtype) for b in wanted_records(site) for r in b.records if r.rtype != "AAAA"
    }
    assert report.answers_checked >= len(wanted) + 2 * len(server_hosts(site))


def test_example_site_published_with_its_host_address(example_site: Site, tmp_path: Path) -> None:
    """The example site's public host is a name it cannot give addresses to: the operator
    adds them, and then nothing is missing (the moved domain included)."""
    text = published(example_site, host_address="192.0.2.10")
    with running_knot({".": text}, tmp_path) as server:
        assert check(example_site, server.nameserver).findings == ()
        # without the host's address, that is the one error, named once
        server.reload(".", without(text, "autodiscover.example.edu.", "A"))
        report = check(example_site, server.nameserver)
    assert found(report) == [("DNS-MISSING", "autodiscover.example.edu.", Severity.ERROR)]
    assert report.exit_status == 2


VARIANTS: dict[str, tuple[Callable[[str], str], list[tuple[str, str, Severity]]]] = {
    "missing _autodiscover._tcp": (
        lambda t: without(t, "_autodiscover._tcp.example.com."),
        [("DNS-MISSING", "_autodiscover._tcp.example.com.", Severity.WARNING)],
    ),
    "SRV target is a CNAME": (
        lambda t: (
            without(without(t, "imap2.example.org.", "A"), "imap2.example.org.", "AAAA")
            + "imap2.example.org. 300 IN CNAME imap1.example.org.\n"
        ),
        [("DNS-SRV-TARGET-CNAME", "imap2.example.org.", Severity.WARNING)],
    ),
    "SRV target without address": (
        lambda t: without(t, "smtp.example.net."),
        [("DNS-SRV-TARGET-NO-ADDRESS", "smtp.example.net.", Severity.ERROR)],
    ),
    "autoconfig elsewhere": (
        lambda t: (
            without(t, "autoconfig.example.com.")
            + "autoconfig.example.com. 300 IN CNAME www.example.com.\n"
            + "www.example.com. 300 IN A 198.51.100.80\n"
        ),
        [("DNS-AUTOCONFIG-ELSEWHERE", "autoconfig.example.com.", Severity.ERROR)],
    ),
    "two _autodiscover._tcp targets": (
        lambda t: (
            t
            + "_autodiscover._tcp.example.org. 300 IN SRV 0 0 443 ad.other.example.\n"
            + "ad.other.example. 300 IN A 198.51.100.9\n"
        ),
        [("DNS-CONFLICT", "_autodiscover._tcp.example.org.", Severity.ERROR)],
    ),
    "autoconfig name is an alias of nothing": (
        lambda t: (
            without(t, "autoconfig.example.com.")
            + "autoconfig.example.com. 300 IN CNAME gone.example.com.\n"
        ),
        [("DNS-MISSING", "autoconfig.example.com.", Severity.ERROR)],
    ),
    "missing autoconfig name": (
        lambda t: without(t, f"autoconfig.{BUECHER}."),
        [("DNS-MISSING", f"autoconfig.{BUECHER}.", Severity.ERROR)],
    ),
    "extra address beside the host's": (
        lambda t: t + "autodiscover.example.com. 300 IN A 198.51.100.1\n",
        [("DNS-CONFLICT", "autodiscover.example.com.", Severity.ERROR)],
    ),
    "autoconfig name without AAAA": (
        lambda t: without(t, "autoconfig.quiet.example.org.", "AAAA"),
        [("DNS-DIFFERENT", "autoconfig.quiet.example.org.", Severity.WARNING)],
    ),
    "CNAME instead of addresses (works)": (
        lambda t: (
            without(t, "autodiscover.example.org.")
            + "autodiscover.example.org. 300 IN CNAME autoconfig.example.org.\n"
        ),
        [("DNS-DIFFERENT", "autodiscover.example.org.", Severity.INFO)],
    ),
    "public host lacks its IPv6 address": (
        lambda t: without(t, "autoconfig.example.org.", "AAAA"),
        [("DNS-MISSING", "autoconfig.example.org.", Severity.WARNING)],
    ),
    "not offered, but published": (
        lambda t: (
            without(t, f"_pop3._tcp.{BUECHER}.")
            + f"_pop3._tcp.{BUECHER}. 300 IN SRV 0 0 110 pop.example.net.\n"
        ),
        [("DNS-NOT-OFFERED-PUBLISHED", f"_pop3._tcp.{BUECHER}.", Severity.WARNING)],
    ),
    "moved domain keeps an SRV record": (
        lambda t: t + "_imaps._tcp.old.example.org. 300 IN SRV 0 0 993 imap1.example.org.\n",
        [("DNS-MOVED-SRV", "_imaps._tcp.old.example.org.", Severity.WARNING)],
    ),
    "another priority": (
        lambda t: (
            without(t, "_imap._tcp.example.org.")
            + "_imap._tcp.example.org. 300 IN SRV 5 0 143 imap1.example.org.\n"
        ),
        [("DNS-DIFFERENT", "_imap._tcp.example.org.", Severity.WARNING)],
    ),
    "another target for a mail SRV": (
        lambda t: (
            without(t, "_submission._tcp.quiet.example.org.")
            + "_submission._tcp.quiet.example.org. 300 IN SRV 10 0 587 smtp.example.net.\n"
        ),
        [("DNS-DIFFERENT", "_submission._tcp.quiet.example.org.", Severity.WARNING)],
    ),
    "'not available' for an offered service": (
        lambda t: (
            without(t, f"_pop3s._tcp.{BUECHER}.") + f"_pop3s._tcp.{BUECHER}. 300 IN SRV 0 0 0 .\n"
        ),
        [("DNS-DIFFERENT", f"_pop3s._tcp.{BUECHER}.", Severity.WARNING)],
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_broken_variant_gives_its_finding(
    variant: str, site: Site, knot: KnotServer, good: str
) -> None:
    change, expected = VARIANTS[variant]
    text = change(good)
    assert text != good
    knot.reload(".", text)
    report = check(site, knot.nameserver)
    assert found(report) == expected
    documented = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}  # docs/discovery.md
    assert report.exit_status == max(documented[s] for _, _, s in expected)
    if "alias of nothing" in variant:
        assert "alias of gone.example.com., which does not exist" in report.findings[0].message
    for finding in report.findings:
        assert finding.code in CODES
        assert finding.message
        assert finding.fix


def test_servfail_is_unavailable_not_missing(site: Site, tmp_path: Path) -> None:
    """A zone the server cannot load: every name in it is 'cannot tell', nothing else."""
    with running_knot({".": published(site)}, tmp_path, servfail=[BUECHER]) as server:
        report = check(site, server.nameserver)
    assert report.findings
    assert {f.code for f in report.findings} == {"DNS-UNAVAILABLE"}
    assert {f.severity for f in report.findings} == {Severity.WARNING}
    assert all(f.subject.endswith(f"{BUECHER}.") for f in report.findings)
    assert report.exit_status == 1
    assert report.answers_checked > 0


def test_silent_resolver_is_one_unavailable_finding_in_bounded_time(site: Site) -> None:
    with silent_dns() as nameserver:
        started = time.monotonic()
        report = check(site, nameserver, timeout=0.3)
        elapsed = time.monotonic() - started
    assert [(f.code, f.severity) for f in report.findings] == [
        ("DNS-UNAVAILABLE", Severity.WARNING)
    ]
    assert "none of" in report.findings[0].message
    assert report.answers_checked == 0
    assert report.exit_status == 1
    # dozens of queries, all at once: far less than one timeout each
    assert elapsed < 3.0, elapsed


# -- the command line ---------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_records_config_before_or_after_the_action(
    site_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = run_cli(["dns", "--config", str(site_file), "records"], capsys)
    after = run_cli(["dns", "records", "-c", str(site_file)], capsys)
    assert before == after
    status, out, err = before
    assert status == 0
    assert err == ""
    assert out == render_zone(wanted_records(load_site(site_file)))


def test_records_json_and_ttl(site_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(
        ["dns", "records", "-c", str(site_file), "--format", "json", "--ttl", "300"], capsys
    )
    assert status == 0
    data = json.loads(out)
    assert data["ttl"] == 300
    assert data["public_host"] == "autoconfig.example.org."
    assert data["domains"][0]["domain"] == "example.org"
    assert {r["ttl"] for d in data["domains"] for r in d["records"]} == {300}


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--ttl", "soon"], r"--ttl 'soon': expected a whole number"),
        (["--ttl", "-5"], r"--ttl -5: a TTL is 0 to 2147483647"),
    ],
)
def test_records_bad_ttl(
    args: list[str], pattern: str, site_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(["dns", "records", "-c", str(site_file), *args], capsys)
    assert status == 2
    assert out == ""
    assert re.fullmatch(rf"mailwarden: error \[INPUT-INVALID\]: {pattern}.*\n", err), err


def test_missing_config_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(["dns", "check"], capsys)
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("mailwarden: error [INPUT-INVALID]: dns check: --config FILE is required")


def test_check_config_before_or_after_the_action(
    site_file: Path, knot: KnotServer, good: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--resolver", knot.nameserver, "--format", "json"]
    for args in (
        ["dns", "-c", str(site_file), "check", *common],
        ["dns", "check", "--config", str(site_file), *common],
    ):
        status, out, err = run_cli(args, capsys)
        assert (status, err) == (0, ""), err
        data = json.loads(out)
        assert data["findings"] == []
        assert data["exit_status"] == 0
        assert data["resolver"] == f"resolver {knot.nameserver}"
        assert data["answers_checked"] > 0


def test_check_text_output(
    site_file: Path, knot: KnotServer, good: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(
        ["dns", "check", "-c", str(site_file), "--resolver", knot.nameserver], capsys
    )
    assert status == 0
    assert "every record the site needs is published" in out
    knot.reload(".", without(good, "smtp.example.net."))
    status, out, _ = run_cli(
        ["dns", "check", "-c", str(site_file), "--resolver", knot.nameserver], capsys
    )
    assert status == 2
    assert "DNS-SRV-TARGET-NO-ADDRESS" in out
    assert "1 error, 0 warnings, 0 notes; exit status 2" in out


def test_check_as_a_process_errors_and_warnings(
    site_file: Path, knot: KnotServer, good: str
) -> None:
    """The installed entry point: exit status and codes, and nothing on stderr."""
    knot.reload(".", without(good, f"autoconfig.{BUECHER}."))
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mailwarden", "dns", "check", "-c", str(site_file)),
            *("--resolver", knot.nameserver, "--format", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == ""
    codes = [(f["code"], f["subject"]) for f in json.loads(done.stdout)["findings"]]
    assert codes == [("DNS-MISSING", f"autoconfig.{BUECHER}.")]


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("dns.example.org", r"--resolver 'dns.example.org': 'dns.example.org' is not an IP"),
        ("127.0.0.1:99999", r"--resolver '127.0.0.1:99999': '99999' is not a port number"),
    ],
)
def test_check_bad_resolver(
    value: str, pattern: str, site_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(["dns", "check", "-c", str(site_file), "--resolver", value], capsys)
    assert status == 2
    assert out == ""
    assert re.fullmatch(rf"mailwarden: error \[INPUT-INVALID\]: {pattern}.*\n", err), err


@pytest.mark.parametrize("value", ["0", "-1", "61", "forever"])
def test_check_bad_timeout(value: str, site_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(["dns", "check", "-c", str(site_file), "--timeout", value], capsys)
    assert status == 2
    assert err.startswith(f"mailwarden: error [INPUT-INVALID]: --timeout {value!r}")


def test_check_silent_resolver_from_the_command_line(
    site_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with silent_dns() as nameserver:
        status, out, err = run_cli(
            [
                *("dns", "check", "-c", str(site_file), "--resolver", nameserver),
                *("--timeout", "0.3", "--format", "json"),
            ],
            capsys,
        )
    assert (status, err) == (1, "")
    findings = json.loads(out)["findings"]
    assert [f["code"] for f in findings] == ["DNS-UNAVAILABLE"]


def test_every_code_is_documented() -> None:
    assert set(CODES) == {
        "DNS-MISSING",
        "DNS-DIFFERENT",
        "DNS-CONFLICT",
        "DNS-SRV-TARGET-CNAME",
        "DNS-SRV-TARGET-NO-ADDRESS",
        "DNS-AUTOCONFIG-ELSEWHERE",
        "DNS-UNAVAILABLE",
        "DNS-NOT-OFFERED-PUBLISHED",
        "DNS-MOVED-SRV",
    }
    assert all(len(text) > 80 for text in CODES.values())
