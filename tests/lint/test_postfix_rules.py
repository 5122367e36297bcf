"""Every Postfix rule on configurations that the real ``postconf -c DIR`` accepts first."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lint.tools import codes, lint, outcome, postconf, postconf_fatal

MASTER = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
{extra}pickup    unix  n       -       y       60      1       pickup
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
{relay}lmtp      unix  -       -       y       -       -       lmtp
"""

LOCAL = ("--local-address", "127.0.0.1", "--local-address", "192.0.2.25",
         "--local-address", "2001:db8::25", "--local-address", "::1")  # fmt: skip


def site(
    tmp_path: Path,
    main: str,
    *,
    extra: str = "",
    relay: str = "",
    hosts: str = "",
    names_in_interfaces: bool = False,
) -> list[str]:
    """Write main.cf/master.cf (+ hosts), check them with postconf; the lint's arguments.

    postconf resolves inet_interfaces with this machine's resolver and checks that the
    addresses are local; a configuration that names hosts of the test's hosts file is checked
    with ``-o inet_interfaces=all`` instead (the tests that expect postconf's own fatal error
    check for it separately).
    """
    directory = tmp_path / "postfix"
    directory.mkdir(parents=True)
    (directory / "main.cf").write_text(
        "myhostname = mx.example.test\ncompatibility_level = 3.6\n" + main, encoding="utf-8"
    )
    (directory / "master.cf").write_text(MASTER.format(extra=extra, relay=relay), "utf-8")
    # Postfix waits for a configuration file written this very second to settle; age them.
    for name in ("main.cf", "master.cf"):
        os.utime(directory / name, (time.time() - 60, time.time() - 60))
    override = ("-o", "inet_interfaces=all") if names_in_interfaces else ()
    postconf(directory, *override, "-n")
    postconf(directory, *override, "-M")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n" + hosts, encoding="utf-8")
    return ["postfix", str(directory), "--hosts", str(tmp_path / "hosts"), *LOCAL]


def finding(report: dict[str, Any], code: str) -> dict[str, Any]:
    found = [f for f in report["findings"] if f["code"] == code]
    assert len(found) == 1, codes(report)
    return dict(found[0])


def test_both_wildcards_on_one_port_are_fine_postfix_sets_v6only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = site(tmp_path, "inet_interfaces = all\ninet_protocols = all\n")
    status, report = lint(*args, capsys=capsys)
    assert (status, codes(report)) == (0, [])
    details = [p["detail"] for p in report["predictions"] if p["kind"] == "listener"]
    assert details == ["listens on 0.0.0.0:25", "listens on [::]:25"]
    assert outcome(report, "postfix", "mta") == "starts"


def test_specific_address_beside_the_wildcard_service_is_p1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = "192.0.2.25:smtp inet n - y - - smtpd\n"
    args = site(tmp_path, "inet_interfaces = all\ninet_protocols = all\n", extra=extra)
    status, report = lint(*args, capsys=capsys)
    assert status == 2
    item = finding(report, "P1")
    assert item["severity"] == "fatal"
    assert item["file"].endswith("master.cf")
    assert item["line"] == 3
    assert "fatal: bind 192.0.2.25 port 25: Address already in use" in item["message"]
    assert "inet_interfaces = " in item["fix"]
    assert outcome(report, "postfix", "mta") == "fatal at start-up"


def test_same_address_twice_is_p1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = "127.0.0.1:smtp inet n - y - - smtpd\n"
    args = site(tmp_path, "inet_interfaces = 127.0.0.1\n", extra=extra)
    status, report = lint(*args, capsys=capsys)
    assert status == 2
    assert [c for c, _, _ in codes(report)] == ["P1"]


def test_host_name_without_address_in_inet_interfaces_is_p2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = site(
        tmp_path, "inet_interfaces = mx-in.example.invalid, 127.0.0.1\n", names_in_interfaces=True
    )
    status, report = lint(*args, capsys=capsys)
    assert status == 2
    item = finding(report, "P2")
    assert (item["file"].endswith("main.cf"), item["line"]) == (True, 3)
    assert "host not found: mx-in.example.invalid" in item["message"]
    # Postfix itself agrees.
    stopped = postconf_fatal(tmp_path / "postfix", "-n")
    assert "host not found: mx-in.example.invalid" in stopped


def test_address_that_is_not_local_is_p3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = site(
        tmp_path,
        "inet_interfaces = $myhostname\n",
        hosts="198.51.100.7 mx.example.test\n2001:db8::25 mx.example.test\n",
        names_in_interfaces=True,
    )
    status, report = lint(*args, capsys=capsys)
    assert status == 2
    item = finding(report, "P3")
    assert "no local interface found for 198.51.100.7" in item["message"]
    assert outcome(report, "smtp", "listener") == "fatal at start-up"
    # The literal form, which this machine's postconf can check: it stops with our message.
    args = site(tmp_path / "literal", "inet_interfaces = 198.51.100.7\n", names_in_interfaces=True)
    status, report = lint(*args, capsys=capsys)
    assert [c for c, _, _ in codes(report)] == ["P3"]
    stopped = postconf_fatal(tmp_path / "literal" / "postfix", "-n")
    assert "no local interface found for 198.51.100.7" in stopped


def test_host_name_without_aaaa_in_inet_interfaces_is_p4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = site(
        tmp_path,
        "inet_interfaces = $myhostname, localhost\n",
        hosts="192.0.2.25 mx.example.test\n",
        names_in_interfaces=True,
    )
    status, report = lint(*args, capsys=capsys)
    assert status == 1
    assert [c for c, _, _ in codes(report)] == ["P4", "P4"]
    item = report["findings"][0]
    assert "no IPv6" in item["message"]
    assert item["subject"] == "inet_interfaces mx.example.test"


def test_host_name_in_smtp_bind_address_is_p5_also_through_a_master_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = "  -o smtp_bind_address=mx.example.test\n"
    args = site(tmp_path, "inet_interfaces = loopback-only\n", relay=relay)
    effective = postconf(tmp_path / "postfix", "-P", "relay/unix/smtp_bind_address")
    assert effective.strip() == "relay/unix/smtp_bind_address = mx.example.test"
    status, report = lint(*args, capsys=capsys)
    assert status == 2
    item = finding(report, "P5")
    assert (item["file"].endswith("master.cf"), item["line"]) == (True, 5)
    assert outcome(report, "relay", "client") == "delivery fails"
    assert outcome(report, "smtp", "client") == "binds"


def test_wrong_family_bind_address_is_p6_and_an_override_can_repair_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = "  -o smtp_bind_address6=2001:db8::25\n"
    args = site(tmp_path, "smtp_bind_address6 = 192.0.2.25\n", relay=relay)
    status, report = lint(*args, capsys=capsys)
    assert status == 2
    item = finding(report, "P6")
    assert (item["file"].endswith("main.cf"), item["line"]) == (True, 3)
    assert "smtp_bind_address = 192.0.2.25" in item["fix"]
    assert outcome(report, "smtp", "client") == "delivery fails"
    assert outcome(report, "relay", "client") == "binds"


def test_inet_protocols_missing_a_family_in_a_dual_stack_setup_is_p7(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = site(
        tmp_path,
        "inet_protocols = ipv4\nsmtp_bind_address = 192.0.2.25\n"
        "smtp_bind_address6 = 2001:db8::25\n",
    )
    status, report = lint(*args, capsys=capsys)
    assert status == 1
    item = finding(report, "P7")
    assert "IPv6" in item["message"]
    assert item["fix"] == "inet_protocols = all"
    # An IPv4-only site may say so.
    args = site(tmp_path / "v4", "inet_protocols = ipv4\nsmtp_bind_address = 192.0.2.25\n")
    status, report = lint(*args, capsys=capsys)
    assert (status, codes(report)) == (0, [])
