"""Every endpoint, answered by the application in this process (``asgi_client``, ``policy_app``:
see tests/fixtures/inprocess.py); what needs the real server (``mailwarden serve``, uvicorn, 2
workers, real sockets) — its start-up output and the metrics summed over workers — is marked
slow and runs against it.

Two sites: the bundled example and a site built to separate the rules
(``tests/fixtures/policy_site.py``): one domain per login rule and unknown-address policy, an
SMTP order in which Outlook 2007 must get a different server, and a service set without
implicit-TLS SMTP. Expected values come from protocols.md §1–§3 and §7.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import defusedxml.ElementTree as ET
import httpx
import pytest

from mailwarden.server.metrics import FLUSH_INTERVAL
from tests.fixtures.inprocess import InProcessClient, inprocess_client
from tests.fixtures.policy_site import write_policy_site
from tests.fixtures.server import running_server, server_log
from tests.fixtures.wait import wait_until

NS_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
NS_2006 = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
NS_2006A = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILESYNC_REQUEST = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
)
MOBILESYNC_RESPONSE = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)
OUTLOOK_2007 = "Microsoft Office/12.0 (Windows NT 6.1; Microsoft Office Outlook 12.0.6739; Pro)"
OUTLOOK_2016 = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)"


def pox_request(
    email: str | None,
    *,
    schema: str = NS_2006A,
    namespace: str = NS_REQUEST,
    legacy_dn: str | None = None,
) -> bytes:
    parts = [f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{namespace}"><Request>']
    if email is not None:
        parts.append(f"<EMailAddress>{email}</EMailAddress>")
    if legacy_dn is not None:
        parts.append(f"<LegacyDN>{legacy_dn}</LegacyDN>")
    parts.append(f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema>")
    parts.append("</Request></Autodiscover>")
    return "".join(parts).encode()


def pox(
    client: httpx.Client,
    body: bytes,
    *,
    path: str = "/autodiscover/autodiscover.xml",
    user_agent: str | None = None,
) -> httpx.Response:
    headers = {"content-type": "text/xml; charset=utf-8"}
    if user_agent is not None:
        headers["user-agent"] = user_agent
    return client.post(path, content=body, headers=headers)


def error_code(response: httpx.Response) -> int:
    assert response.status_code == 200  # §2.8: POX errors travel in a 200
    root = ET.fromstring(response.content)
    assert root.tag == f"{{{NS_2006}}}Autodiscover"
    error = root.find(f"{{{NS_2006}}}Response/{{{NS_2006}}}Error")  # §2.7: not in 2006a
    assert error is not None, response.text
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d+", error.get("Time", ""))
    return int(error.findtext(f"{{{NS_2006}}}ErrorCode", ""))


def protocols(response: httpx.Response) -> dict[str, dict[str, str]]:
    """POX settings as {TYPE: {element: text}} (first Protocol of each type)."""
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(response.content)
    account = root.find(f"{{{NS_2006A}}}Response/{{{NS_2006A}}}Account")
    assert account is not None, response.text
    assert account.findtext(f"{{{NS_2006A}}}Action") == "settings"
    found: dict[str, dict[str, str]] = {}
    for proto in account.findall(f"{{{NS_2006A}}}Protocol"):
        values = {child.tag.rpartition("}")[2]: child.text or "" for child in proto}
        found.setdefault(values["Type"], values)
    return found


def usernames(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    root = ET.fromstring(response.content)
    return [u.text or "" for u in root.iter("username")]


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    site = write_policy_site(tmp_path_factory.mktemp("policy-site"))
    with running_server(site, workers=2) as base:
        yield base


@pytest.fixture(scope="module")
def policy_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessClient]:
    with inprocess_client(write_policy_site(tmp_path_factory.mktemp("policy-app"))) as client:
        yield client


def fresh_connections(base: str) -> httpx.Client:
    """A client of the real server at ``base`` that opens a new connection for every request,
    so that requests spread over the workers."""
    return httpx.Client(base_url=base, limits=httpx.Limits(max_keepalive_connections=0))


# -- Thunderbird autoconfig ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"]
)
def test_autoconfig_both_paths_url_encoded_address(asgi_client: InProcessClient, path: str) -> None:
    r = asgi_client.get(f"{path}?emailaddress=jane.doe%40example.edu")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/xml; charset=utf-8"
    assert not r.content.startswith(b"\xef\xbb\xbf")  # no BOM
    root = ET.fromstring(r.content)
    assert root.tag == "clientConfig"
    assert root.get("version") == "1.1"
    providers = root.findall("emailProvider")
    assert len(providers) == 1
    assert providers[0].get("id") == "example.edu"
    assert usernames(r) == ["jdoe42"] * 5  # alias → account login, on every server
    assert root.find("emailProvider/outgoingServer") is not None
    assert b"<password" not in r.content
    socket_types = [s.text for s in root.iter("socketType")]
    assert socket_types == ["SSL", "STARTTLS", "SSL", "SSL", "STARTTLS"]
    assert [p.text for p in root.iter("port")] == ["993", "143", "995", "465", "587"]


def test_autoconfig_unquoted_and_mixed_case_address(asgi_client: InProcessClient) -> None:
    a = asgi_client.get("/mail/config-v1.1.xml?emailaddress=Jane.Doe@EXAMPLE.edu")
    assert usernames(a) == ["jdoe42"] * 5


def test_autoconfig_alias_domain_falls_back_to_canonical(asgi_client: InProcessClient) -> None:
    # user@mail.example.edu is not listed: the alias domain maps to user@example.edu
    r = asgi_client.get("/mail/config-v1.1.xml?emailaddress=user%40mail.example.edu")
    assert usernames(r) == ["u0001"] * 5


def test_autoconfig_localpart_rule(asgi_client: InProcessClient) -> None:
    r = asgi_client.get("/mail/config-v1.1.xml?emailaddress=Ann.Smith%40physics.example.org")
    assert usernames(r) == ["Ann.Smith", "Ann.Smith"]


@pytest.mark.parametrize(
    "host",
    [
        "autoconfig.example.edu",
        "example.edu",
        "autoconfig.example.edu:8080",
        "EXAMPLE.EDU:443",
        "autoconfig.example.edu.",
        "autoconfig.uni-example.de",
    ],
)
def test_generic_document_from_host(asgi_client: InProcessClient, host: str) -> None:
    r = asgi_client.get("/mail/config-v1.1.xml", headers={"host": host})
    assert usernames(r) == ["%EMAILADDRESS%"] * 5
    assert ET.fromstring(r.content).find("emailProvider").get("id") == "example.edu"  # type: ignore[union-attr]


def test_generic_document_localpart_placeholder(asgi_client: InProcessClient) -> None:
    r = asgi_client.get(
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        headers={"host": "physics.example.org"},
    )
    assert usernames(r) == ["%EMAILLOCALPART%", "%EMAILLOCALPART%"]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("/mail/config-v1.1.xml", "autoconfig.unknown.example"),
        ("/mail/config-v1.1.xml", "127.0.0.1"),
        ("/mail/config-v1.1.xml?emailaddress=a%40unknown.example", "autoconfig.example.edu"),
    ],
)
def test_unknown_domain_is_404_short_text(
    asgi_client: InProcessClient, url: str, host: str
) -> None:
    r = asgi_client.get(f"{url}", headers={"host": host})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "unknown domain\n"


def test_autoconfig_bad_address_is_400(asgi_client: InProcessClient) -> None:
    r = asgi_client.get("/mail/config-v1.1.xml?emailaddress=not-an-address")
    assert r.status_code == 400
    assert r.text.startswith("invalid emailaddress")


def test_autoconfig_moved_domain_redirects(asgi_client: InProcessClient) -> None:
    r = asgi_client.get("/mail/config-v1.1.xml?emailaddress=x%40alumni.example.edu")
    assert r.status_code == 302
    assert r.headers["location"] == (
        "https://autoconfig.alumni-mail.example.net/mail/config-v1.1.xml"
        "?emailaddress=x%40alumni-mail.example.net"
    )


def test_autoconfig_methods(asgi_client: InProcessClient) -> None:
    url = "/mail/config-v1.1.xml?emailaddress=a%40example.edu"
    head = asgi_client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(asgi_client.get(url).content)
    post = asgi_client.post(url, content=b"x")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"


# -- Outlook POX -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/autodiscover/autodiscover.xml",
        "/Autodiscover/Autodiscover.xml",
        "/AutoDiscover/AutoDiscover.xml",
        "/AUTODISCOVER/AUTODISCOVER.XML",
        "/autodiscover/Autodiscover.xml",
    ],
)
def test_pox_path_any_capitalisation(asgi_client: InProcessClient, path: str) -> None:
    r = pox(asgi_client, pox_request("jane.doe@example.edu"), path=path)
    settings = protocols(r)
    assert settings["IMAP"]["LoginName"] == "jdoe42"


def test_pox_settings_follow_protocols_md(asgi_client: InProcessClient) -> None:
    r = pox(asgi_client, pox_request("Demo.User@Example.EDU"))
    root = ET.fromstring(r.content)
    assert root.tag == f"{{{NS_2006}}}Autodiscover"
    assert (
        root.find(f"{{{NS_2006A}}}Response/{{{NS_2006A}}}User/{{{NS_2006A}}}DisplayName")
        is not None
    )
    settings = protocols(r)
    assert set(settings) == {"IMAP", "POP3", "SMTP"}
    for values in settings.values():
        assert values["LoginName"] == "u0001"
        assert values["SPA"] == "off"
        assert values["DomainRequired"] == "off"
        assert values["AuthRequired"] == "on"
        if values["Port"] in ("993", "995", "465"):  # §7.11: never Encryption TLS there
            assert (values["SSL"], values["Encryption"]) == ("on", "SSL")
    assert settings["SMTP"]["Port"] == "465"
    assert settings["SMTP"]["UsePOPAuth"] == "off"


def test_pox_https_namespaces_tolerated(asgi_client: InProcessClient) -> None:
    body = pox_request(
        "jane.doe@example.edu",
        namespace=NS_REQUEST.replace("http://", "https://"),
        schema="  " + NS_2006A.replace("http://", "https://").upper() + "\n",
    )
    assert protocols(pox(asgi_client, body))["IMAP"]["LoginName"] == "jdoe42"


def test_pox_legacy_dn_only_is_an_error(asgi_client: InProcessClient) -> None:
    body = pox_request(None, legacy_dn="/o=Example/ou=Exchange/cn=Recipients/cn=jdoe")
    assert error_code(pox(asgi_client, body)) == 600


def test_pox_malformed_xml_is_600(asgi_client: InProcessClient) -> None:
    for body in (b"", b"<Autodiscover", b"not xml at all", b"<a><b></a>", b"\xff\xfe<x/>"):
        assert error_code(pox(asgi_client, body)) == 600, body


def test_pox_wrong_root_and_missing_request_are_600(asgi_client: InProcessClient) -> None:
    assert error_code(pox(asgi_client, b"<Other/>")) == 600
    assert error_code(pox(asgi_client, f'<Autodiscover xmlns="{NS_REQUEST}"/>'.encode())) == 600


def test_pox_mobilesync_schema_is_601(asgi_client: InProcessClient) -> None:
    body = pox_request(
        "jane.doe@example.edu", namespace=MOBILESYNC_REQUEST, schema=MOBILESYNC_RESPONSE
    )
    assert error_code(pox(asgi_client, body)) == 601


def test_pox_bad_address_and_unknown_domain(asgi_client: InProcessClient) -> None:
    assert error_code(pox(asgi_client, pox_request("no-at-sign"))) == 600
    assert error_code(pox(asgi_client, pox_request("x@unknown.example"))) == 500


def test_pox_moved_domain_redirect_addr(asgi_client: InProcessClient) -> None:
    r = pox(asgi_client, pox_request("Fred@alumni.example.edu"))
    assert r.status_code == 200
    root = ET.fromstring(r.content)
    account = root.find(f"{{{NS_2006A}}}Response/{{{NS_2006A}}}Account")
    assert account is not None
    assert account.findtext(f"{{{NS_2006A}}}Action") == "redirectAddr"
    assert account.findtext(f"{{{NS_2006A}}}RedirectAddr") == "Fred@alumni-mail.example.net"


def test_pox_get_over_http_redirects_to_https(asgi_client: InProcessClient) -> None:
    r = asgi_client.get("/Autodiscover/Autodiscover.xml")
    assert r.status_code == 302
    assert r.headers["location"] == "https://autodiscover.example.edu/autodiscover/autodiscover.xml"


def test_pox_get_over_https_is_an_error_document(asgi_client: InProcessClient) -> None:
    # nginx terminates TLS and says so; the server trusts 127.0.0.1 as its proxy
    r = asgi_client.get("/autodiscover/autodiscover.xml", headers={"x-forwarded-proto": "https"})
    assert error_code(r) == 600


def test_pox_get_probe_uses_autodiscover_host(policy_app: InProcessClient) -> None:
    r = policy_app.get(
        "/autodiscover/autodiscover.xml",
        headers={"host": "autodiscover.dir.example"},
    )
    assert r.status_code == 302
    assert r.headers["location"] == "https://autodiscover.dir.example/autodiscover/autodiscover.xml"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_pox_other_methods_are_405(asgi_client: InProcessClient, method: str) -> None:
    r = asgi_client.request(method, "/autodiscover/autodiscover.xml")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST, GET"


def test_pox_outlook_2007_gets_implicit_tls_smtp(policy_app: InProcessClient) -> None:
    body = pox_request("named@dir.example")
    modern = protocols(pox(policy_app, body, user_agent=OUTLOOK_2016))
    assert (modern["SMTP"]["Port"], modern["SMTP"]["Encryption"]) == ("587", "TLS")
    old = protocols(pox(policy_app, body, user_agent=OUTLOOK_2007))
    assert (old["SMTP"]["Port"], old["SMTP"]["SSL"], old["SMTP"]["Encryption"]) == (
        "465",
        "on",
        "SSL",
    )
    assert old["IMAP"]["Port"] == "993"
    assert old["SMTP"]["LoginName"] == "n0042"


@pytest.mark.slow
def test_serve_notes_in_one_line_when_outlook_2007_gets_no_encrypted_settings(
    policy_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = server_log(policy_server).read_text()
    (note,) = [line for line in log.splitlines() if "Outlook 2007" in line]  # one line
    assert note.startswith("note: ")
    assert "starttls-only SMTP" in note
    assert "starttls-only IMAP" in note
    assert "starttls-only POP3" not in note  # the set offers no POP3
    assert "full " not in note


@pytest.mark.slow
def test_serve_does_not_note_a_set_with_implicit_smtp(
    example_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = server_log(example_server).read_text()
    (note,) = [line for line in log.splitlines() if "Outlook 2007" in line]
    assert "institute SMTP" in note  # STARTTLS-only SMTP: noted
    assert "campus" not in note  # has 465: nothing to note


def test_pox_autodiscover_off_is_601(policy_app: InProcessClient) -> None:
    assert error_code(pox(policy_app, pox_request("x@noad.example"))) == 601


# -- Autodiscover v2 JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/autodiscover/autodiscover.json?Email=jane.doe%40example.edu&Protocol={p}",
        "/autodiscover/autodiscover.json?Email=jane.doe%40example.edu&Protocol={p}&RedirectCount=1",
        "/autodiscover/autodiscover.json/v1.0/jane.doe@example.edu?Protocol={p}",
        "/autodiscover/autodiscover.json/v1.0/jane.doe%40example.edu?Protocol={p}",
        "/Autodiscover/Autodiscover.json/v1.0/jane.doe@example.edu?protocol={p}",
    ],
)
@pytest.mark.parametrize("protocol", ["AutodiscoverV1", "autodiscoverv1", "AUTODISCOVERV1"])
def test_json_both_forms(asgi_client: InProcessClient, url: str, protocol: str) -> None:
    r = asgi_client.get(url.format(p=protocol))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.json() == {
        "Protocol": protocol,  # echoed in the client's spelling, as O365 does
        "Url": "https://autodiscover.example.edu/autodiscover/autodiscover.xml",
    }


@pytest.mark.parametrize("protocol", ["ActiveSync", "Ews", "Rest", ""])
def test_json_invalid_protocol_is_400_in_exchange_form(
    asgi_client: InProcessClient, protocol: str
) -> None:
    r = asgi_client.get(
        "/autodiscover/autodiscover.json",
        params={"Email": "jane.doe@example.edu", "Protocol": protocol},
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.json() == {
        "ErrorCode": "InvalidProtocol",
        "ErrorMessage": f"The given protocol value '{protocol}' is invalid. "
        "Supported values are 'AutodiscoverV1'",
    }


def test_json_default_public_host_is_autodiscover_domain(policy_app: InProcessClient) -> None:
    r = policy_app.get(
        "/autodiscover/autodiscover.json/v1.0/x@dir-alias.example?Protocol=AutodiscoverV1"
    )
    assert r.json()["Url"] == "https://autodiscover.dir.example/autodiscover/autodiscover.xml"


def test_json_unknown_domain_and_bad_address(asgi_client: InProcessClient) -> None:
    r = asgi_client.get(
        "/autodiscover/autodiscover.json?Email=a%40unknown.example&Protocol=AutodiscoverV1"
    )
    assert r.status_code == 404
    assert r.json()["ErrorCode"] == "NotFound"
    r = asgi_client.get("/autodiscover/autodiscover.json?Email=bad&Protocol=AutodiscoverV1")
    assert r.status_code == 400
    assert r.json()["ErrorCode"] == "InvalidUser"
    r = asgi_client.post("/autodiscover/autodiscover.json?Protocol=AutodiscoverV1")
    assert r.status_code == 405


# -- unknown addresses -----------------------------------------------------------------------------


def _autoconfig(client: httpx.Client, address: str) -> httpx.Response:
    return client.get("/mail/config-v1.1.xml", params={"emailaddress": address})


def test_unknown_address_answers_exactly_like_a_known_one(policy_app: InProcessClient) -> None:
    """§7 item 18: the default policy must not tell which addresses exist. A known account
    whose login is its address and an unknown address get the same bytes and headers."""
    for domain in ("dir.example", "plain.example"):
        known = f"known@{domain}"
        for other in (f"nobody@{domain}", f"gone@{domain}"):  # unknown, disabled
            for pair in (
                (_autoconfig(policy_app, known), _autoconfig(policy_app, other)),
                (
                    pox(policy_app, pox_request(known)),
                    pox(policy_app, pox_request(other)),
                ),
            ):
                a, b = pair
                assert a.status_code == b.status_code == 200
                assert a.content.replace(known.encode(), other.encode()) == b.content
                strip = {"date", "content-length"}
                assert {k: v for k, v in a.headers.items() if k not in strip} == {
                    k: v for k, v in b.headers.items() if k not in strip
                }


def test_address_rule_ignores_the_directory(policy_app: InProcessClient) -> None:
    assert usernames(_autoconfig(policy_app, "known@plain.example")) == ["known@plain.example"] * 5


def test_known_and_disabled_accounts_on_directory_domain(policy_app: InProcessClient) -> None:
    assert usernames(_autoconfig(policy_app, "named.alias@dir-alias.example")) == ["n0042"] * 5
    assert usernames(_autoconfig(policy_app, "gone@dir.example")) == ["gone@dir.example"] * 5


def test_reject_policy(policy_app: InProcessClient) -> None:
    assert usernames(_autoconfig(policy_app, "member@reject.example")) == ["m1"] * 5
    r = _autoconfig(policy_app, "nobody@reject.example")
    assert r.status_code == 404
    assert r.text == "unknown address\n"
    assert error_code(pox(policy_app, pox_request("nobody@reject.example"))) == 500
    assert (
        protocols(pox(policy_app, pox_request("member@reject.example")))["IMAP"]["LoginName"]
        == "m1"
    )


def test_generic_policy(policy_app: InProcessClient) -> None:
    assert usernames(_autoconfig(policy_app, "member@generic.example")) == ["g1"] * 5
    unknown = _autoconfig(policy_app, "nobody@generic.example")
    generic = policy_app.get(
        "/mail/config-v1.1.xml", headers={"host": "autoconfig.generic.example"}
    )
    assert unknown.content == generic.content
    assert usernames(unknown) == ["%EMAILADDRESS%"] * 5
    # POX has no placeholders: the typed address is the login
    settings = protocols(pox(policy_app, pox_request("nobody@generic.example")))
    assert settings["IMAP"]["LoginName"] == "nobody@generic.example"


# -- healthz and metrics ------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(\w+)(\{[^}]*\})? ([0-9.e+-]+)$")


def scrape(client: httpx.Client) -> dict[str, float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def settled_scrape(client: httpx.Client) -> dict[str, float]:
    """A scrape once the counts of earlier requests (other tests') have all been written:
    two scrapes more than FLUSH_INTERVAL apart, on fresh connections, agree."""

    def counts() -> dict[str, float]:  # scrapes count themselves: leave those out
        return {k: v for k, v in scrape(client).items() if 'endpoint="metrics"' not in k}

    deadline = time.monotonic() + 10
    last = counts()
    while True:
        time.sleep(FLUSH_INTERVAL * 1.5)  # "settled" means: unchanged over a flush interval
        now = counts()
        if now == last:
            return now
        changed = {k: (last.get(k), v) for k, v in now.items() if last.get(k) != v}
        assert time.monotonic() < deadline, f"the workers' counts never settled: {changed}"
        last = now


def test_healthz(asgi_client: InProcessClient) -> None:
    r = asgi_client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")


@pytest.mark.slow
def test_metrics_count_across_two_workers(policy_server: str) -> None:
    """Fresh connections spread over both workers; every scrape, whichever worker answers,
    must show the sum of all of them (a worker writes its counts within FLUSH_INTERVAL)."""
    ok = 'mailwarden_http_requests_total{endpoint="autoconfig",status="200"}'
    not_found = 'mailwarden_http_requests_total{endpoint="autoconfig",status="404"}'
    pox_ok = 'mailwarden_http_requests_total{endpoint="autodiscover-xml",status="200"}'
    json_bad = 'mailwarden_http_requests_total{endpoint="autodiscover-json",status="400"}'
    unknown = "mailwarden_unknown_addresses_total"
    lookups = "mailwarden_directory_lookup_seconds_count"
    with fresh_connections(policy_server) as server:
        before = settled_scrape(server)
        for i in range(20):
            _autoconfig(server, f"nobody{i}@dir.example")  # unknown: lookup + counter
            _autoconfig(server, "named@dir.example")  # known: lookup only
        for _ in range(5):
            _autoconfig(server, "x@unknown-domain.example")  # 404, no lookup
            pox(server, pox_request("named@dir.example"))
            server.get("/autodiscover/autodiscover.json?Email=a%40dir.example")
        expected = {ok: 40, not_found: 5, pox_ok: 5, json_bad: 5, unknown: 20, lookups: 45}

        def deltas() -> tuple[dict[str, float], dict[str, float]]:
            after = scrape(server)
            return after, {name: after.get(name, 0) - before.get(name, 0) for name in expected}

        def all_arrived() -> bool:
            seen = deltas()[1]
            assert all(seen[name] <= expected[name] for name in expected), seen
            return seen == expected

        # Each worker writes its counts at most FLUSH_INTERVAL after a request: wait until every
        # count has arrived (a loaded machine may take longer), then every scrape must agree.
        wait_until(
            all_arrived, 10, interval=FLUSH_INTERVAL, what="the workers' counts reaching /metrics"
        )
        for _ in range(6):
            after, seen = deltas()
            assert seen == expected
            assert after['mailwarden_directory_lookup_seconds_bucket{le="+Inf"}'] == after[lookups]


@pytest.mark.slow
def test_metrics_with_one_worker(tmp_path: Path) -> None:
    site = write_policy_site(tmp_path)
    with running_server(site, workers=1) as base, fresh_connections(base) as server:
        _autoconfig(server, "nobody@dir.example")
        samples = scrape(server)
    assert samples['mailwarden_http_requests_total{endpoint="autoconfig",status="200"}'] == 1
    assert samples["mailwarden_unknown_addresses_total"] == 1
    assert samples["mailwarden_directory_lookup_seconds_count"] == 1


@pytest.mark.slow
def test_missing_embedded_directory_fails_soft_and_loud(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A mistyped directory path: users still get settings (generic, per on_outage), the
    operator gets a start-up warning, an error log line and a metric, and no empty database
    is created behind their back."""
    site = write_policy_site(tmp_path)
    text = site.read_text(encoding="utf-8")
    site.write_text(text + '\n[directory]\npath = "missing/users.sqlite"\n', encoding="utf-8")
    with running_server(site, workers=1) as base, fresh_connections(base) as server:
        r = _autoconfig(server, "named@dir.example")
        samples = scrape(server)
        log = server_log(base).read_text()
    assert usernames(r) == ["%EMAILADDRESS%"] * 5
    assert samples["mailwarden_directory_errors_total"] >= 1
    assert f"the embedded directory {tmp_path}/missing/users.sqlite does not exist" in log
    assert "embedded directory does not exist yet" in log
    assert not (tmp_path / "missing").exists()


def test_idn_domain_in_any_form_is_the_same_domain(policy_app: InProcessClient) -> None:
    forms = [
        "anna@bücher.example",
        "ANNA@BÜCHER.EXAMPLE",
        "anna@xn--bcher-kva.example",
        "Anna@XN--BCHER-KVA.Example",
    ]
    documents = {_autoconfig(policy_app, form).content for form in forms}
    assert len(documents) == 1
    only = _autoconfig(policy_app, forms[0])
    assert usernames(only) == ["anna7"] * 5
    assert ET.fromstring(only.content).find("emailProvider").get("id") == (  # type: ignore[union-attr]
        "xn--bcher-kva.example"
    )
    for form in forms:
        assert protocols(pox(policy_app, pox_request(form)))["SMTP"]["LoginName"] == "anna7"
    generic = policy_app.get(
        "/mail/config-v1.1.xml",
        headers={"host": "autoconfig.XN--BCHER-KVA.example"},
    )
    assert usernames(generic) == ["%EMAILADDRESS%"] * 5
