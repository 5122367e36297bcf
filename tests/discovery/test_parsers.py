"""The probe's readers of untrusted input: Autodiscover answers, and the operator's --resolver and
--connect-to values. Whatever they are given, they return a value or raise their own error."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.discovery.net import ConnectTo, parse_connect_to
from mailwarden.discovery.pox import (
    MAX_VALUE,
    PoxAnswer,
    PoxResponseError,
    parse_response,
    request_body,
)
from mailwarden.discovery.resolver import NameServer, parse_nameserver
from mailwarden.errors import InputError
from mailwarden.profiles import outlook
from mailwarden.profiles.subject import Subject
from mailwarden.site.model import Site

NS = 'xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"'


def settings_xml(protocols: str, action: str = "settings") -> bytes:
    return (
        f"<Autodiscover {NS}><Response><Account><Action>{action}</Action>{protocols}"
        "</Account></Response></Autodiscover>"
    ).encode()


@given(st.binary(max_size=2048))
@example(b"<!DOCTYPE x [<!ENTITY a 'b'>]><Autodiscover>&a;</Autodiscover>")
@example(b"<Autodiscover><Response><Account><Action>redirectAddr</Action></Account></Response>")
def test_any_bytes_give_an_answer_or_a_reason(data: bytes) -> None:
    try:
        answer = parse_response(data)
    except PoxResponseError as exc:
        error = str(exc)
        assert error
        return
    assert isinstance(answer, PoxAnswer)


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=5000))
def test_values_are_bounded(value: str) -> None:
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = "".join(c for c in escaped if c.isprintable())
    body = settings_xml(f"<Protocol><Type>IMAP</Type><Server>{escaped}</Server></Protocol>")
    answer = parse_response(body)
    (protocol,) = answer.protocols
    assert protocol.server is None or len(protocol.server) <= MAX_VALUE


def test_a_dtd_is_refused_before_expansion() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx">'
        b'<!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">]><Autodiscover>&y;</Autodiscover>'
    )
    with pytest.raises(PoxResponseError, match="DTD"):
        parse_response(bomb)


def test_our_servers_answer_reads_back(example_site: Site) -> None:
    """The server's own renderer and the probe's reader agree on every field the probe uses."""
    domain = example_site.domain("example.edu")
    assert domain is not None
    subject = Subject("jane@example.edu", "jane", "jd42", "Jane")
    answer = parse_response(outlook.render_settings(domain, subject))
    assert answer.action == "settings"
    kinds = [p.type for p in answer.protocols]
    assert kinds == ["IMAP", "POP3", "SMTP"]
    imap = answer.protocols[0]
    first = domain.services.imap[0]
    assert (imap.server, imap.port, imap.login_name) == (first.host, first.port, "jd42")
    assert imap.spa is False
    assert (imap.encryption or "").upper() == ("SSL" if first.tls == "implicit" else "TLS")


def test_the_error_form_and_redirects() -> None:
    error = parse_response(
        outlook.render_error(outlook.ErrorCode.INVALID_REQUEST, time_of_day="1:2:3", server_id=1)
    )
    assert (error.action, error.error_code) == ("error", "600")
    redirect = parse_response(outlook.render_redirect_addr("new@example.org"))
    assert (redirect.action, redirect.redirect) == ("redirectAddr", "new@example.org")
    with pytest.raises(PoxResponseError, match="RedirectUrl"):
        parse_response(settings_xml("", action="redirectUrl"))
    with pytest.raises(PoxResponseError, match="Protocol"):
        parse_response(settings_xml(""))


def test_the_request_escapes_the_address() -> None:
    body = request_body('a<b>&"c"@example.org')
    assert b"<b>" not in body
    assert b"a&lt;b&gt;&amp;" in body


@given(st.text(max_size=200))
@example("[::1]:5353")
@example("127.0.0.1:99999")
@example("[::1")
def test_resolver_values(text: str) -> None:
    try:
        server = parse_nameserver(text)
    except InputError as exc:
        error = exc.message
        assert "--resolver" in error
        return
    assert isinstance(server, NameServer)
    assert 0 < server.port < 65536


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("127.0.0.1", NameServer("127.0.0.1", 53)),
        ("127.0.0.1:5353", NameServer("127.0.0.1", 5353)),
        ("::1", NameServer("::1", 53)),
        ("[2001:db8::53]:5300", NameServer("2001:db8::53", 5300)),
    ],
)
def test_resolver_forms(text: str, wanted: NameServer) -> None:
    assert parse_nameserver(text) == wanted


@given(st.text(max_size=200))
@example("::")
@example(":443:[::1]:8443")
def test_connect_to_values(text: str) -> None:
    try:
        rule = parse_connect_to(text)
    except InputError as exc:
        error = exc.message
        assert "--connect-to" in error
        return
    assert isinstance(rule, ConnectTo)


def test_connect_to_rules() -> None:
    rule = parse_connect_to("Autoconfig.Example.org:443:[2001:db8::10]:8443")
    assert rule == ConnectTo("autoconfig.example.org", 443, "2001:db8::10", 8443)
    assert rule.matches("autoconfig.example.org.", 443)
    assert not rule.matches("autoconfig.example.org", 80)
    keep_host = parse_connect_to(":993::10993")
    assert keep_host == ConnectTo(None, 993, None, 10993)
    assert keep_host.matches("imap.example.org", 993)
    with pytest.raises(InputError, match="port"):
        parse_connect_to("a:443:b:70000")
