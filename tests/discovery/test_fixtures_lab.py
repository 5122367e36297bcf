"""The discovery test servers work: real Knot DNS, real nginx in front of ``mailwarden serve``."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import httpx
import pytest

from tests.fixtures.knot import InvalidZoneError, check_zone, running_knot, silent_dns
from tests.fixtures.nginx import (
    NOT_CONFIG_BODY,
    Hit,
    NginxConfigError,
    NginxServer,
    Vhost,
    running_nginx,
)
from tests.fixtures.tls_ca import TestCA

pytestmark = pytest.mark.slow  # starts knotd and nginx

ORG_RECORDS = """\
autoconfig.example.org.           3600 IN CNAME autoconfig.mail.example.net.
autodiscover.example.org.         3600 IN A     192.0.2.44
autodiscover.example.org.         3600 IN AAAA  2001:db8::44
_autodiscover._tcp.example.org.   3600 IN SRV   0 0 443 autodiscover.mail.example.net.
_imaps._tcp.example.org.          3600 IN SRV   0 1 993 imap.example.org.
_submissions._tcp.example.org.    3600 IN SRV   0 1 465 smtp.example.org.
_pop3._tcp.example.org.           3600 IN SRV   0 0 0 .
"""

MULTI_DOMAIN = (
    ORG_RECORDS
    + """\
autoconfig.example.edu.           3600 IN CNAME autoconfig.mail.example.net.
_autodiscover._tcp.example.edu.   3600 IN SRV   0 0 443 autodiscover.mail.example.net.
$ORIGIN uni-example.de.
autoconfig                        3600 IN CNAME autoconfig.mail.example.net.
_imaps._tcp                       3600 IN SRV   0 1 993 imap.example.edu.
"""
)

FULL_ZONE = """\
$ORIGIN example.edu.
$TTL 300
@           SOA   ns1 hostmaster 2026120401 3600 600 86400 300
@           NS    ns1
ns1         A     127.0.0.1
imap        A     192.0.2.143
autoconfig  CNAME imap
"""


def _resolver(nameserver: str, timeout: float = 2.0) -> dns.resolver.Resolver:
    host, port = nameserver.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)
    resolver.lifetime = timeout
    return resolver


# --- Knot ------------------------------------------------------------------------------------


def test_knot_answers_srv_cname_and_a_from_zone_text(tmp_path: Path) -> None:
    zones = {"example.org": ORG_RECORDS, "example.edu": FULL_ZONE}
    with running_knot(zones, tmp_path, signed=["example.edu"]) as knot:
        assert knot.nameserver == f"127.0.0.1:{knot.port}"
        resolver = _resolver(knot.nameserver)
        srv = resolver.resolve("_imaps._tcp.example.org", "SRV")
        assert [(r.priority, r.weight, r.port, r.target.to_text()) for r in srv] == [
            (0, 1, 993, "imap.example.org.")
        ]
        cname = resolver.resolve("autoconfig.example.org", "CNAME")
        assert [r.target.to_text() for r in cname] == ["autoconfig.mail.example.net."]
        aaaa = resolver.resolve("autodiscover.example.org", "AAAA")
        assert [r.address for r in aaaa] == ["2001:db8::44"]
        # an A through a CNAME inside a complete zone, signed by knotd
        answer = resolver.resolve("autoconfig.example.edu", "A")
        assert [r.address for r in answer] == ["192.0.2.143"]
        assert answer.canonical_name.to_text() == "imap.example.edu."
        signed = knot.query("imap.example.edu", "A", dnssec=True)
        assert {rrset.rdtype for rrset in signed.answer} == {
            dns.rdatatype.A,
            dns.rdatatype.RRSIG,
        }
        unsigned = knot.query("autoconfig.example.org", "CNAME", dnssec=True)
        assert {rrset.rdtype for rrset in unsigned.answer} == {dns.rdatatype.CNAME}


def test_knot_reload_serves_the_changed_zone(tmp_path: Path) -> None:
    with running_knot({"example.org": ORG_RECORDS}, tmp_path) as knot:
        assert knot.query("autoconfig.example.org", "A").answer[0].rdtype == dns.rdatatype.CNAME
        knot.reload("example.org", "autoconfig.example.org. 60 IN A 192.0.2.80\n")
        response = knot.query("autoconfig.example.org", "A")
        assert [r.address for r in response.answer[0]] == ["192.0.2.80"]
        assert knot.query("_imaps._tcp.example.org", "SRV").answer == []
        with pytest.raises(InvalidZoneError, match="CNAME and other data"):
            knot.reload(
                "example.org",
                "www.example.org. IN CNAME a.example.net.\nwww.example.org. IN A 192.0.2.1\n",
            )


def test_knot_misbehaves_on_request(tmp_path: Path) -> None:
    with running_knot({"example.org": ORG_RECORDS}, tmp_path, servfail=["broken.test"]) as knot:
        assert knot.query("autoconfig.broken.test", "CNAME").rcode() == dns.rcode.SERVFAIL
        assert knot.query("broken.test", "SOA").rcode() == dns.rcode.SERVFAIL
        assert knot.query("autoconfig.example.com", "A").rcode() == dns.rcode.REFUSED
        assert knot.query("nothing.example.org", "A").rcode() == dns.rcode.NXDOMAIN
        with pytest.raises(dns.resolver.NoNameservers):
            _resolver(knot.nameserver).resolve("autoconfig.broken.test", "A")


def test_invalid_zone_fails_with_named_checkzone_output(tmp_path: Path) -> None:
    bad_srv = "_imaps._tcp.example.org. 3600 IN SRV 0 1 imap.example.org.\n"
    with (
        pytest.raises(InvalidZoneError, match=r"records\.zone:1: .*not a valid number") as failure,
        running_knot({"example.org": bad_srv}, tmp_path),
    ):
        pytest.fail("knotd started with an invalid zone")
    assert "zone example.org. rejected by named-checkzone" in str(failure.value)
    clash = ORG_RECORDS + "autoconfig.example.org. 3600 IN A 192.0.2.1\n"
    with (
        pytest.raises(InvalidZoneError, match="CNAME and other data"),
        running_knot({"example.org": clash}, tmp_path),
    ):
        pytest.fail("knotd started with an invalid zone")


def test_check_zone_accepts_multi_domain_records_under_the_root() -> None:
    accepted, output = check_zone(".", MULTI_DOMAIN)
    assert accepted, output
    assert output.endswith("OK")


def test_check_zone_rejects_cname_and_other_data_across_domains() -> None:
    clash = MULTI_DOMAIN + '$ORIGIN example.edu.\nautoconfig 300 IN TXT "also here"\n'
    accepted, output = check_zone(".", clash)
    assert not accepted
    assert "autoconfig.example.edu: CNAME and other data" in output


def test_check_zone_refuses_to_ignore_out_of_zone_records() -> None:
    accepted, output = check_zone("example.org", MULTI_DOMAIN)
    assert not accepted
    assert "ignoring out-of-zone data (autoconfig.example.edu)" in output
    accepted, output = check_zone("example.org", ORG_RECORDS)
    assert accepted, output


def test_check_zone_enforces_host_name_rules() -> None:
    accepted, output = check_zone(".", "mail_host.example.org. 300 IN A 192.0.2.1\n")
    assert not accepted
    assert "bad owner name (check-names)" in output


def test_check_zone_takes_complete_zones_as_they_are() -> None:
    accepted, output = check_zone("example.edu", FULL_ZONE)
    assert accepted, output
    assert "loaded serial 2026120401" in output


# --- silent DNS ------------------------------------------------------------------------------


def test_silent_dns_makes_queries_time_out() -> None:
    with silent_dns() as nameserver:
        host, port = nameserver.rsplit(":", 1)
        query = dns.message.make_query("autoconfig.example.org", "CNAME")
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(query, host, port=int(port), timeout=0.3)
        with pytest.raises(dns.exception.Timeout):
            dns.query.tcp(query, host, port=int(port), timeout=0.3)
        with pytest.raises(dns.resolver.LifetimeTimeout):
            _resolver(nameserver, timeout=0.5).resolve("autoconfig.example.org", "CNAME")


# --- nginx -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def front(
    example_server: str, ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxServer]:
    """nginx in front of the example site, with one host of every kind a probe meets."""

    def tls(name: str) -> Vhost:
        return Vhost((name,), ca.issue(name))

    vhosts = [
        Vhost(("autoconfig.example.edu",), ca.issue("autoconfig.example.edu"), example_server),
        Vhost(
            ("autodiscover.example.edu",),
            ca.issue("autodiscover.example.edu"),
            redirect="https://autodiscover.example.edu:{https_port}/",
        ),
        Vhost(
            ("downgrade.example.edu",),
            ca.issue("downgrade.example.edu"),
            redirect="http://autoconfig.example.edu:{http_port}/",
        ),
        Vhost(
            ("moved.example.edu",),
            redirect="https://autoconfig.example.edu/mail/config-v1.1.xml",
            tls=False,
        ),
        Vhost(("big.example.edu",), ca.issue("big.example.edu"), body_bytes=200_000),
        Vhost(
            ("page.example.edu",),
            ca.issue("page.example.edu"),
            content_type="text/html; charset=utf-8",
        ),
        tls("empty.example.edu"),
        Vhost(("slow.example.edu",), ca.issue("slow.example.edu"), hang=True),
        Vhost(("plain.example.edu",), upstream=example_server),
    ]
    with running_nginx(vhosts, tmp_path_factory.mktemp("front")) as server:
        yield server


CONFIG_PATH = "/mail/config-v1.1.xml?emailaddress=a@example.edu"


def test_nginx_proxies_autoconfig_over_https_by_sni(front: NginxServer, ca: TestCA) -> None:
    response = front.request("GET", "autoconfig.example.edu", CONFIG_PATH, ca=ca.root)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(("application/xml", "text/xml"))
    assert "<clientConfig" in response.text
    assert "imap.example.edu" in response.text
    assert front.hits()[-1] == Hit(
        "https", "autoconfig.example.edu", "autoconfig.example.edu", "GET", CONFIG_PATH, 200
    )
    # the same through the plain port
    plain = front.request("GET", "plain.example.edu", CONFIG_PATH, tls=False)
    assert plain.status_code == 200
    assert "imap.example.edu" in plain.text


def test_nginx_serves_only_the_names_it_has_certificates_for(
    front: NginxServer, ca: TestCA
) -> None:
    with pytest.raises(httpx.ConnectError):
        front.request("GET", "unknown.example.edu", CONFIG_PATH, ca=ca.root)
    assert front.request("GET", "unknown.example.edu", "/", tls=False).status_code == 421
    # a host without certificate is on the HTTP port only
    with pytest.raises(httpx.ConnectError):
        front.request("GET", "plain.example.edu", CONFIG_PATH, ca=ca.root)
    # the client trusts only the test root
    context = ssl.create_default_context()
    with (
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        httpx.Client(verify=context) as client,
    ):
        client.get(
            f"https://127.0.0.1:{front.https_port}/",
            headers={"Host": "autoconfig.example.edu"},
            extensions={"sni_hostname": "autoconfig.example.edu"},
        )


def test_nginx_redirects_in_a_loop_and_to_plain_http(front: NginxServer, ca: TestCA) -> None:
    path = "/autodiscover/autodiscover.xml?x=1"
    loop = front.request("POST", "autodiscover.example.edu", path, ca=ca.root, content=b"<a/>")
    assert loop.status_code == 302
    assert loop.headers["location"] == front.url("autodiscover.example.edu", path)
    down = front.request("GET", "downgrade.example.edu", path, ca=ca.root)
    assert down.status_code == 302
    assert down.headers["location"] == front.url("autoconfig.example.edu", path, tls=False)
    fixed = front.request("GET", "moved.example.edu", "/anything", tls=False)
    assert fixed.status_code == 302
    assert fixed.headers["location"] == "https://autoconfig.example.edu/mail/config-v1.1.xml"


def test_nginx_static_answers(front: NginxServer, ca: TestCA) -> None:
    big = front.request("GET", "big.example.edu", CONFIG_PATH, ca=ca.root)
    assert big.status_code == 200
    assert len(big.content) == 200_000
    assert big.headers["content-length"] == "200000"
    assert big.headers["content-type"] == "application/xml"
    assert big.content.startswith(b"<?xml")
    assert big.content.endswith(b"</clientConfig>\n")
    posted = front.request(
        "POST", "big.example.edu", "/autodiscover/autodiscover.xml", ca=ca.root, content=b"<a/>"
    )
    assert posted.status_code == 200
    assert len(posted.content) == 200_000
    assert front.hits()[-1].method == "POST"
    page = front.request("GET", "page.example.edu", CONFIG_PATH, ca=ca.root)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == NOT_CONFIG_BODY
    assert front.request("GET", "empty.example.edu", CONFIG_PATH, ca=ca.root).status_code == 404
    too_big = front.request("POST", "empty.example.edu", "/", ca=ca.root, content=b"x" * 20_000)
    assert too_big.status_code == 413


def test_nginx_hang_host_completes_tls_and_never_answers(front: NginxServer, ca: TestCA) -> None:
    with pytest.raises(httpx.ReadTimeout):
        front.request("GET", "slow.example.edu", CONFIG_PATH, ca=ca.root, timeout=0.5)


def test_nginx_config_errors_carry_nginx_output(tmp_path: Path, ca: TestCA) -> None:
    broken = ca.issue("broken.example.edu")
    missing = type(broken)(
        chain=tmp_path / "absent.pem", key=broken.key, leaf=tmp_path / "absent.pem"
    )
    with (
        pytest.raises(NginxConfigError, match=r"absent\.pem"),
        running_nginx([Vhost(("broken.example.edu",), missing)], tmp_path),
    ):
        pytest.fail("nginx started with a missing certificate")
    with pytest.raises(ValueError, match="choose one of"):
        Vhost(("x.example.edu",), redirect="https://a.example/", body_bytes=10)


def test_zone_knotd_refuses_fails_fast_with_its_log(tmp_path: Path) -> None:
    # named-checkzone accepts names below a DNAME (occluded data), knotd's loader does not
    occluded = (
        "x.example.org. 300 IN DNAME example.net.\nautoconfig.x.example.org. 300 IN A 192.0.2.1\n"
    )
    accepted, _ = check_zone("example.org", occluded)
    with (
        pytest.raises(InvalidZoneError, match=r"rejected by knotd:\nerror: ") as failure,
        running_knot({"example.org": occluded}, tmp_path),
    ):
        pass
    assert accepted
    assert "x.example.org., child record exists under DNAME" in str(failure.value)


def test_servfail_zone_recovers_after_reload(tmp_path: Path) -> None:
    with running_knot({}, tmp_path, servfail=["broken.test"]) as knot:
        assert knot.query("autoconfig.broken.test", "A").rcode() == dns.rcode.SERVFAIL
        knot.reload("broken.test", "autoconfig.broken.test. 60 IN A 192.0.2.9\n")
        answer = knot.query("autoconfig.broken.test", "A")
        assert answer.rcode() == dns.rcode.NOERROR
        assert [r.address for r in answer.answer[0]] == ["192.0.2.9"]
