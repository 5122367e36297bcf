"""``ptr`` against real servers: Knot DNS serving in-addr.arpa and ip6.arpa zones with good,
missing, mismatched, multiple and generic PTRs and the forward names; Postfix's smtp-sink as
the MTA whose greeting is read (its name set with -h), and a small SMTP greeter in the test for
what smtp-sink never sends (multi-line greetings, refusals, overlong lines, silence); once
through ``mailwarden audit --only ptr``; then the properties of the pure parts."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide import reverse
from mailwarden.audit.sitewide.base import SiteContext
from mailwarden.audit.sitewide.reverse import banner_name, generic_reason
from mailwarden.cli import main
from mailwarden.discovery.mailcaps import ProtocolError
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver, parse_nameserver
from mailwarden.findings import Severity
from mailwarden.site.load import parse_site
from tests.audit.sitewide.test_mtasts import site_text
from tests.fixtures.knot import KnotServer, running_knot
from tests.fixtures.net import wait_for_port

pytestmark = pytest.mark.slow  # starts knotd and smtp-sink

SMTP_SINK = Path("/usr/sbin/smtp-sink")
F = "example.test"
BROKEN = "broken.test"


def v6(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer.removesuffix(".8.b.d.0.1.0.0.2.ip6.arpa")


REVERSE4 = f"""\
10 PTR mail.{F}.
12 PTR mail.mismatch.{F}.
13 PTR 192-0-2-13.dsl.isp.{F}.
14 PTR a.multi.{F}.
14 PTR b.multi.{F}.
15 PTR mail15.{F}.
16 PTR mail16.{F}.
17 PTR pool17.{F}.
18 PTR mx.{BROKEN}.
19 PTR mail19.{F}.
"""

REVERSE6 = f"""\
{v6("2001:db8::10")} PTR mail6.{F}.
{v6("2001:db8::11")} PTR mail6x.{F}.
"""

LOOPBACK = f"""\
1 PTR mx1.{F}.
2 PTR mx2.{F}.
3 PTR mx3.{F}.
4 PTR mx4.{F}.
5 PTR mx5.{F}.
6 PTR mx6.{F}.
7 PTR mx7.{F}.
"""

FORWARD = f"""\
$ORIGIN {F}.
mail A 192.0.2.10
mail.mismatch A 192.0.2.99
192-0-2-13.dsl.isp A 192.0.2.13
a.multi A 192.0.2.14
b.multi A 192.0.2.14
mail15 A 192.0.2.15
other15 A 192.0.2.15
mail16 A 192.0.2.16
mail17 A 192.0.2.17
pool17 A 192.0.2.17
mail19 A 192.0.2.19
helo19 A 192.0.2.99
mail6 AAAA 2001:db8::10
mail6x A 192.0.2.11
""" + "".join(f"mx{n} A 127.0.0.{n}\n" for n in range(1, 8))

# address -> (helo, expected codes)
CASES: dict[str, tuple[str | None, list[tuple[str, Severity]]]] = {
    "192.0.2.10": (f"mail.{F}", []),
    "192.0.2.11": (None, [("PTR-NONE", Severity.ERROR)]),
    "192.0.2.12": (None, [("PTR-FORWARD-MISMATCH", Severity.ERROR)]),
    "192.0.2.13": (None, [("PTR-GENERIC", Severity.WARNING)]),
    "192.0.2.14": (None, [("PTR-MULTIPLE", Severity.WARNING)]),
    "192.0.2.15": (f"other15.{F}", [("PTR-HELO-MISMATCH", Severity.WARNING)]),
    "192.0.2.16": (f"nowhere.{F}", [("PTR-HELO-FORWARD", Severity.ERROR)]),
    "192.0.2.17": (
        f"mail17.{F}",
        [("PTR-GENERIC", Severity.WARNING), ("PTR-HELO-MISMATCH", Severity.WARNING)],
    ),
    "192.0.2.18": (None, [("PTR-DNS", Severity.UNKNOWN)]),
    "192.0.2.19": (f"helo19.{F}", [("PTR-HELO-FORWARD", Severity.ERROR)]),
    "2001:db8::10": (f"mail6.{F}", []),
    "2001:db8::11": (None, [("PTR-FORWARD-MISMATCH", Severity.ERROR)]),
}


@dataclass
class Greeter:
    """A TCP server that sends ``greeting`` (or nothing), then answers QUIT with 221."""

    address: str
    greeting: bytes | None
    port: int = 0
    heard: list[bytes] = field(default_factory=list)


@contextmanager
def greeter(address: str, greeting: bytes | None) -> Iterator[Greeter]:
    server = Greeter(address, greeting)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, 0))
    listener.listen(8)
    listener.settimeout(0.1)
    server.port = int(listener.getsockname()[1])
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)
            if server.greeting is None:
                continue  # silence: the client has to give up
            conn.settimeout(3.0)
            try:
                conn.sendall(server.greeting)
                line = conn.recv(512)
                server.heard.append(line)
                if line.upper().startswith(b"QUIT"):
                    conn.sendall(b"221 2.0.0 Bye\r\n")
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def free_port_on(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_sink(address: str, name: str) -> Iterator[int]:
    """Postfix's smtp-sink on ``address``:free port, greeting as ``name``."""
    if not SMTP_SINK.exists():
        pytest.fail("smtp-sink missing: install postfix (packaging/debian-test.txt)", pytrace=False)
    port = free_port_on(address)
    proc = subprocess.Popen(
        [str(SMTP_SINK), "-u", "nobody", "-h", name, f"{address}:{port}", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, host=address, alive=lambda: proc.poll() is None)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Lab:
    knot: KnotServer
    tmp: Path
    banner: dict[str, tuple[str | None, int]]
    greeters: dict[str, Greeter]
    results: dict[str, CheckResult]


def outbound(address: str, helo: str | None, port: int | None = None) -> str:
    text = f'\n[[audit.outbound]]\naddress = "{address}"\n'
    if helo:
        text += f'helo = "{helo}"\n'
    if port:
        text += f"banner_port = {port}\n"
    return text


def run_check(knot: KnotServer, extra: str, timeout: float = 1.0) -> dict[str, CheckResult]:
    resolver = Resolver(parse_nameserver(knot.nameserver), timeout=2.0)
    context = SiteContext(
        site=parse_site(site_text([F], extra)),
        resolver=resolver,
        network=Network(resolver, connect_timeout=timeout),
        now=datetime.datetime.now(datetime.UTC),
        timeout=timeout,
    )
    return {r.subject: r for r in asyncio.run(reverse.run(context))}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("ptr")
    zones = {
        "2.0.192.in-addr.arpa": REVERSE4,
        "8.b.d.0.1.0.0.2.ip6.arpa": REVERSE6,
        "0.0.127.in-addr.arpa": LOOPBACK,
        F: FORWARD,
    }
    with ExitStack() as stack:
        knot = stack.enter_context(running_knot(zones, tmp, servfail=[BROKEN]))
        good = stack.enter_context(smtp_sink("127.0.0.1", f"mx1.{F}"))
        wrong = stack.enter_context(smtp_sink("127.0.0.2", "localhost.localdomain"))
        greeters = {
            "127.0.0.3": stack.enter_context(
                greeter(
                    "127.0.0.3", f"220-mx3.{F} ESMTP\r\n220-more text\r\n220 ready\r\n".encode()
                )
            ),
            "127.0.0.4": stack.enter_context(
                greeter("127.0.0.4", b"554 5.7.1 no service for you\r\n")
            ),
            "127.0.0.5": stack.enter_context(greeter("127.0.0.5", b"220 " + b"x" * 600 + b"\r\n")),
            "127.0.0.6": stack.enter_context(greeter("127.0.0.6", None)),
        }
        banner: dict[str, tuple[str | None, int]] = {
            "127.0.0.1": (f"mx1.{F}", good),
            "127.0.0.2": (f"mx2.{F}", wrong),
            "127.0.0.7": (None, free_port_on("127.0.0.7")),  # nothing listens
            **{a: (None, g.port) for a, g in greeters.items()},
        }
        extra = "".join(outbound(a, helo) for a, (helo, _) in CASES.items())
        extra += "".join(outbound(a, helo, port) for a, (helo, port) in banner.items())
        results = run_check(knot, extra)
        yield Lab(knot, tmp, banner, greeters, results)


def codes(result: CheckResult) -> list[tuple[str, Severity]]:
    return sorted((f.code, f.severity) for f in result.findings)


@pytest.mark.parametrize("address", list(CASES))
def test_each_case_gets_its_findings(lab: Lab, address: str) -> None:
    result = lab.results[address]
    assert codes(result) == sorted(CASES[address][1]), [f.message for f in result.findings]
    assert all(f.code in reverse.CODES for f in result.findings)


def test_a_good_address_says_so(lab: Lab) -> None:
    assert lab.results["192.0.2.10"].detail == f"PTR mail.{F} (forward-confirmed)"
    assert lab.results["2001:db8::10"].detail == f"PTR mail6.{F} (forward-confirmed)"


def test_messages_name_what_was_found(lab: Lab) -> None:
    (mismatch,) = lab.results["192.0.2.12"].findings
    assert f"mail.mismatch.{F}" in mismatch.message
    assert "192.0.2.99" in mismatch.message
    (generic,) = lab.results["192.0.2.13"].findings
    assert "address's digits" in generic.message
    generic17 = [f for f in lab.results["192.0.2.17"].findings if f.code == "PTR-GENERIC"]
    assert "'pool'" in generic17[0].message
    (multiple,) = lab.results["192.0.2.14"].findings
    assert f"a.multi.{F}" in multiple.message
    assert f"b.multi.{F}" in multiple.message


def test_the_banner_of_a_real_postfix_matches(lab: Lab) -> None:
    result = lab.results["127.0.0.1"]
    assert result.findings == ()
    assert f"greeting mx1.{F}" in result.detail


def test_a_wrong_banner_name_is_a_warning(lab: Lab) -> None:
    (finding,) = lab.results["127.0.0.2"].findings
    assert (finding.code, finding.severity) == ("PTR-BANNER-MISMATCH", Severity.WARNING)
    assert "localhost.localdomain" in finding.message
    assert f"mx2.{F}" in finding.message


def test_a_multi_line_greeting_is_read_and_quit_is_said(lab: Lab) -> None:
    assert lab.results["127.0.0.3"].findings == ()
    assert lab.greeters["127.0.0.3"].heard == [b"QUIT\r\n"]


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.4", "does not accept this host"),
        ("127.0.0.5", "longer than 512"),
        ("127.0.0.6", "no complete greeting within 1 s"),
        ("127.0.0.7", "127.0.0.7"),
    ],
)
def test_an_unreadable_banner_is_unknown(lab: Lab, address: str, words: str) -> None:
    (finding,) = lab.results[address].findings
    assert (finding.code, finding.severity) == ("PTR-BANNER-UNKNOWN", Severity.UNKNOWN)
    assert words in finding.message


def test_no_outbound_is_one_note(lab: Lab) -> None:
    (result,) = run_check(lab.knot, "").values()
    (finding,) = result.findings
    assert (finding.code, finding.severity) == ("PTR-NO-OUTBOUND", Severity.INFO)


def test_through_the_command_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    site_file = lab.tmp / "site.toml"
    helo, port = lab.banner["127.0.0.2"]
    extra = outbound("192.0.2.10", f"mail.{F}") + outbound("127.0.0.2", helo, port)
    site_file.write_text(site_text([F], extra), "utf-8")
    capsys.readouterr()
    status = main(
        [
            "audit",
            "--config",
            str(site_file),
            "--only",
            "ptr",
            "--resolver",
            lab.knot.nameserver,
            "--format",
            "json",
        ]
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert status == 1
    report = json.loads(out)
    assert {r["check"] for r in report["results"]} == {"ptr"}
    found = {(r["subject"], f["code"]) for r in report["results"] for f in r["findings"]}
    assert found == {("127.0.0.2", "PTR-BANNER-MISMATCH")}


# --- the pure parts ------------------------------------------------------------------------


@given(st.ip_addresses(v=4))
def test_ptr_names_made_of_the_address_are_generic(address: ipaddress.IPv4Address) -> None:
    a, b, c, d = str(address).split(".")
    for name in (
        f"{a}-{b}-{c}-{d}.static.isp.example",
        f"host{d}.{c}.{b}.{a}.isp.example",
        f"c-{a}.{b}.{c}.{d}.cust.isp.example",
        f"ip{int(a):03d}{int(b):03d}{int(c):03d}{int(d):03d}.isp.example",
    ):
        assert generic_reason(name, str(address)) == "it contains the address's digits", name


@given(st.ip_addresses(v=6))
def test_ipv6_ptr_names_made_of_the_address_are_generic(address: ipaddress.IPv6Address) -> None:
    name = f"ip-{address.exploded.replace(':', '')}.isp.example"
    assert generic_reason(name, str(address)) is not None


@pytest.mark.parametrize(
    "name",
    [
        "mail.example.org",
        "smtp-out2.mail.example.edu",
        "mx01.cable-company.example",
        "mailout.dsl-provider.example",  # the provider's own domain says nothing
        "192.example.org",
    ],
)
def test_mail_server_names_are_not_generic(name: str) -> None:
    assert generic_reason(name, "192.0.2.25") is None


@pytest.mark.parametrize(
    "name",
    [
        "dynamic-25.isp.example",
        "pool-a.b.isp.example",
        "dhcp.host.isp.example",
        "x.dsl.isp.example",
    ],
)
def test_access_line_words_are_generic(name: str) -> None:
    assert generic_reason(name, "192.0.2.25") is not None


@given(st.text(max_size=80), st.ip_addresses().map(str))
def test_any_name_is_judged_not_raised(name: str, address: str) -> None:
    reason = generic_reason(name, address)
    assert reason is None or reason.startswith("it contains")


@given(st.lists(st.binary(max_size=600), min_size=1, max_size=5))
@example([b"220-mx.example.org ESMTP\r\n", b"220 ready\r\n"])
@example([b"220\r\n"])
def test_any_greeting_is_read_or_refused(lines: list[bytes]) -> None:
    try:
        code, name = banner_name(lines)
    except ProtocolError:
        return
    assert 0 <= code <= 999
    assert len(name) <= 256


def test_the_greeting_name_is_the_first_word() -> None:
    assert banner_name([b"220-MX.Example.ORG ESMTP Postfix\r\n", b"220 hi\r\n"]) == (
        220,
        "mx.example.org.",
    )
    assert banner_name([b"220 [192.0.2.25] ready\r\n"]) == (220, "[192.0.2.25]")
    assert banner_name([b"220\r\n"]) == (220, "")
