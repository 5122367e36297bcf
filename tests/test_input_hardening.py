"""Input hardening of the HTTP front: what an address may carry, URL decoding, the method check.

What an address may carry and how a URL is decoded decide what ends up inside the documents we
render, so these tests hold four promises, each against the application answering HTTP requests
(in this process, tests/fixtures/inprocess.py; the wire itself is tests/test_hostile_input.py's):

- a character XML 1.0 forbids (C0 controls but TAB/LF/CR, U+FFFE, U+FFFF, lone surrogates)
  never reaches a rendered document: the address is refused with 400;
- a query or path that is not UTF-8 is a 400, never U+FFFD accepted as part of an address;
- each URL component is percent-decoded exactly once;
- ``/healthz`` and ``/metrics`` answer GET and HEAD only (405 with ``Allow`` otherwise).

The last test lets hypothesis throw any text at every renderer: the answer is a 400 or a
well-formed document.
"""

from __future__ import annotations

import json
import plistlib
import string
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from xml.parsers import expat

import defusedxml.ElementTree as ET
import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mailwarden.address import Address, AddressError, parse_address
from mailwarden.profiles import apple, setup_page, xmltext
from mailwarden.profiles.subject import Subject
from mailwarden.server.http import BadRequest, path_tail, query_params
from mailwarden.site import load_site
from tests.fixtures.inprocess import InProcessClient, inprocess_client
from tests.fixtures.policy_site import write_policy_site

AUTOCONFIG = "/mail/config-v1.1.xml"
POX = "/autodiscover/autodiscover.xml"
JSON_QUERY = "/autodiscover/autodiscover.json"
JSON_V1 = "/autodiscover/autodiscover.json/v1.0/"
NS_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
NS_2006A = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"

FORBIDDEN = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\ufffe", "\uffff"]
"""Characters XML 1.0 cannot carry that are still valid UTF-8 (a surrogate is not)."""
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


def forbidden_in(text: str) -> list[str]:
    """The characters of ``text`` no XML 1.0 document may contain."""
    return [
        c
        for c in text
        if (ord(c) < 0x20 and c not in "\t\n\r")
        or 0xD800 <= ord(c) <= 0xDFFF
        or c in "\ufffe\uffff"
    ]


def encoded(text: str, safe: str = "") -> str:
    """``text`` percent-encoded as UTF-8; a lone surrogate becomes invalid UTF-8 on the wire."""
    return quote(text.encode("utf-8", "surrogatepass"), safe=safe)


def request_body(email: str) -> bytes:
    """A POX request for ``email`` (markup escaped; a lone surrogate sent as invalid UTF-8)."""
    escaped = email.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{NS_REQUEST}"><Request>'
        f"<EMailAddress>{escaped}</EMailAddress>"
        f"<AcceptableResponseSchema>{NS_2006A}</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode("utf-8", "surrogatepass")


def well_formed_xml(body: bytes) -> None:
    """Parse with the project's DTD-free parsing (defusedxml, as for POX requests)."""
    ET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def well_formed_plist(body: bytes) -> dict[str, object]:
    """A mobileconfig carries a DOCTYPE (plistlib writes one), so defusedxml's DTD refusal does
    not apply: expat, which never fetches it, judges well-formedness, and plistlib the rest."""
    expat.ParserCreate().Parse(body, True)
    profile = plistlib.loads(body)
    assert isinstance(profile, dict)
    return profile


@pytest.fixture(scope="module")
def site_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy_site(tmp_path_factory.mktemp("hardening"))


@pytest.fixture(scope="module")
def client(site_file: Path) -> Iterator[InProcessClient]:
    with inprocess_client(site_file) as c:
        yield c


def get(client: httpx.Client, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` exactly as written: no client-side re-encoding of the URL (checked)."""
    r = client.get(target, headers={"host": "x"})
    assert r.request.url.raw_path == target.encode("ascii"), "the client changed the target"
    return r.status_code, dict(r.headers), r.content


# -- the address parser ---------------------------------------------------------------------------


@pytest.mark.parametrize("char", FORBIDDEN + SURROGATES + ["\x7f", "\x80", "\x85", "\x9f"])
@pytest.mark.parametrize("where", ["local", "local-utf8", "domain"])
def test_addresses_with_characters_xml_forbids_are_refused(char: str, where: str) -> None:
    text = {
        "local": f"a{char}b@plain.example",
        "local-utf8": f"ü{char}@plain.example",
        "domain": f"a@pl{char}ain.example",
    }[where]
    with pytest.raises(AddressError):  # only AddressError: a surrogate once raised UnicodeError
        parse_address(text)


@pytest.mark.parametrize(
    "text", ["müller@bücher.example", "\u00e9l\u00e8ve@plain.example", "a\ufffdb@plain.example"]
)
def test_legitimate_non_ascii_addresses_still_parse(text: str) -> None:
    assert str(parse_address(text)).startswith(text.partition("@")[0])


# -- query and path decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"emailaddress=%ff@plain.example",
        b"emailaddress=a%C3@plain.example",
        b"emailaddress=%ED%A0%80@plain.example",  # an encoded surrogate
        b"emailaddress=\xe9@plain.example",  # Latin-1 sent raw
        b"emailaddress=ok@plain.example&lang=%ff",
        b"%ff=1",
    ],
)
def test_query_that_is_not_utf8_is_refused(raw: bytes) -> None:
    for _ in range(2):  # and again from the cache's point of view: failures are not cached
        with pytest.raises(BadRequest):
            query_params({"query_string": raw})


def test_query_is_decoded_once_and_raw_utf8_equals_its_escape() -> None:
    assert query_params({"query_string": b"emailaddress=user%2540plain.example"}) == {
        "emailaddress": "user%40plain.example"
    }
    raw = query_params({"query_string": "emailaddress=müller@plain.example".encode()})
    escaped = query_params({"query_string": b"emailaddress=m%C3%BCller%40plain.example"})
    assert raw == escaped == {"emailaddress": "müller@plain.example"}
    assert query_params({"query_string": b"a=b+c%2Bd&A=second&flag"}) == {"a": "b c+d", "flag": ""}


@pytest.mark.parametrize(
    ("raw_path", "tail"),
    [
        (b"/autodiscover/autodiscover.json/v1.0/user@plain.example", "user@plain.example"),
        (b"/autodiscover/autodiscover.json/v1.0/user%40plain.example", "user@plain.example"),
        (b"/autodiscover/autodiscover.json/v1.0/user%2540plain.example", "user%40plain.example"),
        (b"/AutoDiscover/AutoDiscover.json/V1.0/a/b@plain.example", "a/b@plain.example"),
        (b"/autodiscover/autodiscover%2Ejson/v1.0/m%C3%BCller@x.example", "müller@x.example"),
    ],
)
def test_path_tail_is_decoded_once(raw_path: bytes, tail: str) -> None:
    assert path_tail({"raw_path": raw_path, "path": "ignored"}, JSON_V1) == tail


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/autodiscover/autodiscover.json/v1.0/%ff@plain.example",
        b"/autodiscover/autodiscover.json/v1.0/%ED%A0%80@plain.example",
        b"/autodiscover%2Fautodiscover.json/v1.0/a@plain.example",
    ],
)
def test_path_tail_refuses_what_it_cannot_decode(raw_path: bytes) -> None:
    with pytest.raises(BadRequest):
        path_tail({"raw_path": raw_path, "path": "ignored"}, JSON_V1)


# -- renderers given values nobody checked ---------------------------------------------------------


def test_mobileconfig_drops_characters_xml_forbids_from_directory_values(site_file: Path) -> None:
    """Defence in depth behind the address parser: a directory login with U+FFFE or a C0
    control (plistlib wrote the first raw and raised on the second) still gives a valid file."""
    site = load_site(site_file)
    domain = site.domain("dir.example")  # login rule "directory": the login is written
    assert domain is not None
    address = Address("known", "dir.example")
    subject = Subject(
        "known@dir.example", "known", login="lo\ufffegin\x01\uffff\x1f", display_name="\x00"
    )
    profile = well_formed_plist(apple.render(site, domain, subject, address))
    accounts = profile["PayloadContent"]
    assert isinstance(accounts, list)
    assert accounts[0]["IncomingMailServerUsername"] == "login"


def test_setup_page_drops_characters_xml_forbids_from_the_echo(site_file: Path) -> None:
    site = load_site(site_file)
    typed = "a\ufffe\x01b\ud800"
    page = setup_page.Page(lang="en", path_query={"emailaddress": typed}, typed=typed)
    html = setup_page.render(site, page).decode("utf-8")
    assert forbidden_in(html) == []
    assert 'value="ab"' in html


def test_clean_keeps_what_xml_allows() -> None:
    allowed = "tab\tlf\ncr\r é \u2028 \ufffd \U0001f600 <&>"
    assert xmltext.clean(allowed) == allowed
    assert xmltext.clean("".join(FORBIDDEN + SURROGATES) + "x") == "x"


# -- against the application ----------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\ufffe", "\uffff", "\x01", "\x1f"])
def test_every_endpoint_refuses_an_address_xml_cannot_carry(
    client: InProcessClient, char: str
) -> None:
    address = encoded(f"a{char}b@plain.example")
    for target in (
        f"{AUTOCONFIG}?emailaddress={address}",
        f"/mobileconfig?emailaddress={address}",
        f"/?emailaddress={address}",
        f"{JSON_QUERY}?Email={address}&Protocol=AutodiscoverV1",
        f"{JSON_V1}{address}?Protocol=AutodiscoverV1",
    ):
        status, _, body = get(client, target)
        assert status == 400, (target, status, body[:200])
        assert forbidden_in(body.decode("utf-8")) == [], target
    # POX: XML itself cannot carry the character, neither raw nor as a reference
    for body in (
        request_body(f"a{char}b@plain.example"),
        request_body(f"a&#x{ord(char):x};b@plain.example").replace(b"&amp;#", b"&#"),
    ):
        r = client.post(POX, content=body)
        assert r.status_code == 200
        well_formed_xml(r.content)
        assert "<ErrorCode>600</ErrorCode>" in r.text


def test_mobileconfig_for_a_valid_unicode_address_is_well_formed(client: InProcessClient) -> None:
    status, _, body = get(client, "/mobileconfig?emailaddress=" + encoded("élève@plain.example"))
    assert status == 200
    assert well_formed_plist(body)["PayloadContent"][0]["EmailAddress"] == "élève@plain.example"  # type: ignore[index]


@pytest.mark.parametrize("bad", ["%FF", "%C3", "%ED%A0%80", "%EF%BF"])
def test_invalid_utf8_is_400_on_every_endpoint(client: InProcessClient, bad: str) -> None:
    for target in (
        f"{AUTOCONFIG}?emailaddress=a{bad}@plain.example",
        f"/mobileconfig?emailaddress=a{bad}@plain.example",
        f"/?emailaddress=a{bad}@plain.example",
        f"{JSON_QUERY}?Email=a{bad}@plain.example&Protocol=AutodiscoverV1",
        f"{JSON_V1}a{bad}@plain.example?Protocol=AutodiscoverV1",
        f"{AUTOCONFIG}?emailaddress=known@plain.example&lang={bad}",
    ):
        status, _, body = get(client, target)
        assert status == 400, (target, status, body[:300])
        assert "\ufffd" not in body.decode("utf-8")


def test_json_v1_path_is_decoded_once(client: InProcessClient) -> None:
    ok = f"{JSON_V1}known%40plain.example?Protocol=AutodiscoverV1"
    status, _, body = get(client, ok)
    assert status == 200, body
    assert json.loads(body)["Url"].endswith("/autodiscover/autodiscover.xml")
    status, _, body = get(client, ok.replace("%40", "@"))
    assert status == 200
    # decoded once this is "known%40plain.example": no @, no address
    status, _, body = get(client, ok.replace("%40", "%2540"))
    assert status == 400, body
    assert json.loads(body)["ErrorCode"] == "InvalidUser"


def test_query_is_decoded_once_by_the_endpoint(client: InProcessClient) -> None:
    status, _, body = get(client, f"{AUTOCONFIG}?emailaddress=known%2540plain.example")
    assert status == 400, body
    status, _, body = get(client, f"{AUTOCONFIG}?emailaddress=known%40plain.example")
    assert status == 200
    well_formed_xml(body)


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
@pytest.mark.parametrize(
    "method", ["PUT", "DELETE", "TRACE", "CONNECT", "POST", "PATCH", "OPTIONS"]
)
def test_health_and_metrics_answer_get_and_head_only(
    client: InProcessClient, path: str, method: str
) -> None:
    body = b"x" if method in ("PUT", "POST", "PATCH") else b""
    r = client.request(
        method, path, headers={"host": "x", "content-length": str(len(body))}, content=body
    )
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_health_and_metrics_get_and_head(client: InProcessClient, path: str) -> None:
    got = client.get(path, headers={"host": "x"})
    assert got.status_code == 200
    assert got.content
    head = client.head(path, headers={"host": "x"})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


# -- hypothesis: any text as an address, at every renderer ---------------------------------------

_SPECIAL = st.sampled_from(
    FORBIDDEN
    + SURROGATES
    + ["\t", "\n", "\r", "\x7f", "\x85", "\u2028", "\ufffd", "%", "+", "&"]
    + ["<", ">", '"', "'", "@", ".", " ", "é", "ü", "\U0001f600"]
)
_CHARS = st.one_of(st.characters(codec=None, categories=None), _SPECIAL)  # surrogates included
_TOKENS = st.sampled_from(["%25", "%40", "%2540", "&#xfffe;", ".."])  # decoded twice, these change
_TEXT = st.lists(st.one_of(_CHARS, _TOKENS), max_size=30).map("".join)
_MAILBOX = st.text(
    st.one_of(
        st.sampled_from(string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-.éüß漢"),
        st.characters(min_codepoint=0xA0),  # what RFC 6532 adds: anything non-ASCII
        _SPECIAL,
    ),
    min_size=1,
    max_size=20,
)
_ADDRESS_TEXT = st.one_of(
    _MAILBOX.map(lambda local: f"{local}@plain.example"),  # mostly valid: 200s to parse
    _TEXT.map(lambda local: f"{local}@plain.example"),  # echoed into documents when valid
    _TEXT.map(lambda local: f"{local}@dir.example"),
    _TEXT,
)


def _check_answers(client: httpx.Client, text: str) -> None:
    query = encoded(text)
    r = client.get(f"{AUTOCONFIG}?emailaddress={query}")
    assert r.status_code in (200, 302, 400, 404), r.text
    if r.status_code == 200:
        well_formed_xml(r.content)
        assert forbidden_in(r.content.decode("utf-8")) == []

    r = client.post(POX, content=request_body(text))
    assert r.status_code == 200
    well_formed_xml(r.content)

    for url in (
        f"{JSON_QUERY}?Email={query}&Protocol=AutodiscoverV1",
        f"{JSON_V1}{encoded(text, safe='@')}?Protocol=AutodiscoverV1",
    ):
        r = client.get(url)
        assert r.status_code in (200, 400, 404), r.text
        if r.headers["content-type"].startswith("application/json"):
            json.loads(r.content)
        else:
            assert r.status_code in (400, 404)

    r = client.get(f"/mobileconfig?emailaddress={query}")
    assert r.status_code in (200, 302, 400, 404), r.text
    event(f"mobileconfig {r.status_code}")  # --hypothesis-show-statistics: how many were 200
    if r.status_code == 200:
        well_formed_plist(r.content)

    r = client.get(f"/?emailaddress={query}")
    assert r.status_code in (200, 302, 400, 404), r.text
    assert forbidden_in(r.content.decode("utf-8")) == []


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(_ADDRESS_TEXT)
@example("a\ufffe@plain.example")
@example("a\uffff@plain.example")
@example("a\ud800@plain.example")
@example("a\x01@plain.example")
@example("user%40plain.example")
@example("élève@plain.example")
def test_any_address_gives_400_or_a_well_formed_document(client: httpx.Client, text: str) -> None:
    _check_answers(client, text)


def test_no_traceback_after_all_that(client: InProcessClient) -> None:
    assert "Traceback" not in client.log_text()
