"""Signals from untrusted protocol values: property tests for the parsers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailwarden.guard.signals import browser_ip, network_of, recipient_domain, subject_fingerprint


def test_subject_fingerprint_ignores_prefixes_case_and_numbers() -> None:
    a = subject_fingerprint("Your invoice 4711 is ready")
    assert a == subject_fingerprint("RE: Fwd: your INVOICE 4712  is ready")
    assert a != subject_fingerprint("Your parcel is waiting")
    assert len(a) == 16


def test_network_granularity() -> None:
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert network_of("::ffff:192.0.2.1") == "192.0.2.0/24"
    assert network_of("IPv6:2001:db8::1") == "2001:db8::/48"
    assert network_of("unknown") == ""


def test_browser_ip_only_from_the_configured_webmail_host() -> None:
    header = "from [203.0.113.9] (helo=x) by webmail.example.edu with HTTP; Mon, 1 Jan 2024"
    assert browser_ip(header, "webmail.example.edu") == "203.0.113.9"
    assert browser_ip(header, "other.example.edu") == ""
    forged = "from [198.51.100.1] by mx.evil.example with SMTP"
    assert browser_ip(forged, "webmail.example.edu") == ""
    v6 = "from 2001:db8::7 by webmail.example.edu with HTTPS"
    assert browser_ip(v6, "webmail.example.edu") == "2001:db8::7"
    # Roundcube behind a proxy: folded header, the browser first, the proxy after "via"
    folded = (
        "from 198.51.100.9 ([198.51.100.9])\r\n\tvia [10.0.0.5]\r\n\tby webmail.example.edu "
        "(Roundcube) with HTTP/1.1 (POST); Mon, 01 Jan 2024 10:00:00 +0100"
    )
    assert browser_ip(folded, "webmail.example.edu") == "198.51.100.9"


def test_recipient_domain() -> None:
    assert recipient_domain("<A@B.Example.>") == "b.example"
    assert recipient_domain("no-at-sign") == ""


@given(st.text(max_size=3000))
def test_fingerprint_is_total_and_stable(text: str) -> None:
    assert subject_fingerprint(text) == subject_fingerprint(text)
    assert len(subject_fingerprint(text)) == 16


@given(st.text(max_size=200))
def test_network_of_never_raises(text: str) -> None:
    result = network_of(text)
    assert result == "" or "/" in result


@given(st.text(max_size=5000), st.sampled_from(["webmail.example.edu", ""]))
def test_browser_ip_never_raises_and_returns_an_ip_or_nothing(text: str, host: str) -> None:
    result = browser_ip(text, host)
    assert result == "" or network_of(result) != ""


@given(st.ip_addresses())
def test_every_ip_has_a_network(ip: object) -> None:
    assert network_of(str(ip)).endswith(("/24", "/48"))


@given(st.text(max_size=2000))
def test_recipient_domain_is_bounded(text: str) -> None:
    assert len(recipient_domain(text)) <= 253
