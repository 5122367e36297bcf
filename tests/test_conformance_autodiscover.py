"""Autodiscover POX responses against Microsoft's official schema, the community schemas, and
the §2.3/§2.4/§2.7 rules of protocols.md that no schema states.

* Error documents (every code the server emits, and every code the renderer knows) validate
  against the official MS-ASCMD ``AutodiscoverResponse.xsd``. That copy lacks the
  ``xs:import`` of the mobilesync namespace (corpus/README.md), so the import is added to the
  parsed schema in memory; shared/ stays untouched. They also validate against the community
  error schema, which is stricter about ``Time``/``Id``.
* Settings responses validate against the community response schema once the elements it does
  not know (``LoginName``, ``Encryption``, ``UsePOPAuth``, ``SMTPLast``; corpus/README.md) are
  taken out; everything else (namespaces, envelope, element order) is checked as sent.
* redirectAddr responses validate against the community redirect schema with ``RedirectUrl``
  made optional in memory (that schema was written for ``redirectUrl`` answers; its author
  already relaxed ``RedirectAddr`` the same way).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from mailwarden.directory.embedded import UserStore, parse_users_csv
from mailwarden.profiles import outlook
from mailwarden.profiles.subject import Subject
from mailwarden.site import load_site
from mailwarden.site.model import Site
from tests.fixtures.inprocess import InProcessClient, inprocess_client
from tests.fixtures.paths import EXAMPLES, shared_dir
from tests.fixtures.sites import sites, subjects

XS = "http://www.w3.org/2001/XMLSchema"
NS_2006 = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
NS_2006A = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
NS_MOBILESYNC = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
NS_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
UNKNOWN_TO_COMMUNITY_XSD = ("LoginName", "Encryption", "UsePOPAuth", "SMTPLast", "TTL")
# protocols.md §8: the order of protocol-pox.md, Encryption after SSL as Stalwart does.
PROTOCOL_ORDER = (
    "Type",
    "Server",
    "Port",
    "LoginName",
    "DomainRequired",
    "DomainName",
    "SPA",
    "AuthPackage",
    "CertPrincipalName",
    "SSL",
    "Encryption",
    "AuthRequired",
    "UsePOPAuth",
    "SMTPLast",
)
IMPLICIT_PORTS = {"993", "995", "465"}
PLACEHOLDER_RE = re.compile(r"%EMAIL(?:ADDRESS|LOCALPART|DOMAIN)%")

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


# -- schemas ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> Path:
    return shared_dir() / "corpus" / "autodiscover"


@pytest.fixture(scope="module")
def official_schema(corpus: Path) -> etree.XMLSchema:
    """MS-ASCMD AutodiscoverResponse.xsd with the import its published form has (§6.4)."""
    folder = corpus / "official-ms-ascmd"
    doc = etree.parse(str(folder / "AutodiscoverResponse.xsd"))
    root = doc.getroot()
    assert not root.findall(_q(XS, "import")), "the corpus copy gained its import: drop this fix"
    root.insert(
        0,
        etree.Element(
            _q(XS, "import"),
            namespace=NS_MOBILESYNC,
            schemaLocation=(folder / "AutodiscoverMobileSync.xsd").as_uri(),
        ),
    )
    return etree.XMLSchema(doc)


@pytest.fixture(scope="module")
def community_error_schema(corpus: Path) -> etree.XMLSchema:
    path = corpus / "community-wdes" / "xsd" / "autodiscover" / "AutodiscoverResponseError.xsd"
    return etree.XMLSchema(etree.parse(str(path)))


@pytest.fixture(scope="module")
def community_settings_schema(corpus: Path) -> etree.XMLSchema:
    path = corpus / "community-wdes" / "xsd" / "autodiscover" / "AutodiscoverResponse.xsd"
    return etree.XMLSchema(etree.parse(str(path)))


@pytest.fixture(scope="module")
def community_redirect_schema(corpus: Path) -> etree.XMLSchema:
    """The 2006a ``Response`` of the community redirect schema, ``RedirectUrl`` optional."""
    path = corpus / "community-wdes" / "xsd" / "autodiscover" / "AutodiscoverResponseRedirect.xsd"
    doc = etree.parse(str(path))
    urls = doc.getroot().findall(f".//{_q(XS, 'element')}[@name='RedirectUrl']")
    assert len(urls) == 1
    urls[0].set("minOccurs", "0")
    return etree.XMLSchema(doc)


def _validate(schema: etree.XMLSchema, tree: etree._Element, body: bytes) -> None:
    if not schema.validate(tree):
        raise AssertionError(f"{schema.error_log}\n{body.decode(errors='replace')}")


# -- checks -----------------------------------------------------------------------------------


def _envelope(body: bytes, response_ns: str) -> tuple[etree._Element, etree._Element]:
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = etree.fromstring(body, _PARSER)
    for element in root.iter():
        if isinstance(element.tag, str):
            assert element.prefix is None, "no prefixes: Thunderbird's parser is nodeName-based"
    assert root.tag == _q(NS_2006, "Autodiscover"), "http:// namespaces (§7 item 8)"
    children = list(root)
    assert len(children) == 1
    assert children[0].tag == _q(response_ns, "Response")
    return root, children[0]


def check_error(
    body: bytes,
    official: etree.XMLSchema,
    community: etree.XMLSchema,
    code: int | None = None,
) -> int:
    """Assert an error document is right (§2.7); return its code."""
    root, response = _envelope(body, NS_2006)  # the error Response stays in .../2006
    _validate(official, root, body)
    _validate(community, root, body)
    error = response.find(_q(NS_2006, "Error"))
    assert error is not None, "Error is a child of Response (§7 item 9)"
    assert re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?", error.get("Time", ""))
    value = int(error.findtext(_q(NS_2006, "ErrorCode")) or 0)
    assert value in {500, 501, 600, 601, 602, 603}
    assert (error.findtext(_q(NS_2006, "Message")) or "").strip()
    if code is not None:
        assert value == code, body
    return value


def check_settings(
    body: bytes, schema: etree.XMLSchema, *, outlook_2007: bool = False
) -> list[dict[str, str]]:
    """Assert a settings response follows §2.3/§2.4; return its Protocol elements as dicts."""
    root, response = _envelope(body, NS_2006A)
    stripped = copy.deepcopy(root)
    for element in list(stripped.iter()):
        if etree.QName(element).localname in UNKNOWN_TO_COMMUNITY_XSD:
            parent = element.getparent()
            assert parent is not None
            parent.remove(element)
    _validate(schema, stripped, body)
    user = response.find(_q(NS_2006A, "User"))
    assert user is not None, "MS-OXDSCLI §3.2.5: a settings response MUST contain User"
    assert (user.findtext(_q(NS_2006A, "DisplayName")) or "").strip()
    account = response.find(_q(NS_2006A, "Account"))
    assert account is not None
    assert account.findtext(_q(NS_2006A, "AccountType")) == "email"
    assert account.findtext(_q(NS_2006A, "Action")) == "settings"
    protocols = []
    for element in account.findall(_q(NS_2006A, "Protocol")):
        names = [etree.QName(c).localname for c in element]
        assert names == [n for n in PROTOCOL_ORDER if n in names], names
        values = {etree.QName(c).localname: c.text or "" for c in element}
        kind = values["Type"]
        assert kind in ("IMAP", "POP3", "SMTP")
        assert values["Server"]
        assert re.fullmatch(r"[1-9]\d{0,4}", values["Port"])
        assert values["LoginName"], "User/LoginName present (§2.4)"
        assert not PLACEHOLDER_RE.search(values["LoginName"]), "POX has no placeholders"
        assert values["DomainRequired"] == "off"
        assert values["SPA"] in ("on", "off")
        assert values["SSL"] in ("on", "off")
        assert values["AuthRequired"] in ("on", "off")
        encryption = values["Encryption"]
        assert encryption in ("None", "SSL", "TLS")
        if values["Port"] in IMPLICIT_PORTS:
            assert encryption != "TLS", "never Encryption TLS on 993/995/465 (§7 item 11)"
        if encryption == "SSL":
            assert values["SSL"] == "on"
        if encryption == "None":
            assert values["SSL"] == "off"
        if encryption == "TLS":
            # Outlook 2007 reads only SSL and would try implicit TLS on a STARTTLS port.
            assert values["SSL"] == ("off" if outlook_2007 else "on")
        if kind == "SMTP":
            assert values["UsePOPAuth"] == "off"
            assert values["SMTPLast"] == "off"
        protocols.append(values)
    assert any(p["Type"] == "SMTP" for p in protocols), "always an SMTP Protocol (§2.9)"
    assert any(p["Type"] in ("IMAP", "POP3") for p in protocols)
    return protocols


def check_redirect(body: bytes, schema: etree.XMLSchema, new_address: str) -> None:
    _root, response = _envelope(body, NS_2006A)
    _validate(schema, etree.ElementTree(copy.deepcopy(response)).getroot(), body)
    account = response.find(_q(NS_2006A, "Account"))
    assert account is not None
    assert account.findtext(_q(NS_2006A, "AccountType")) == "email"
    assert account.findtext(_q(NS_2006A, "Action")) == "redirectAddr"
    assert account.findtext(_q(NS_2006A, "RedirectAddr")) == new_address
    assert account.find(_q(NS_2006A, "Protocol")) is None
    assert account.find(_q(NS_2006A, "RedirectUrl")) is None, "redirect with 302 (§7 item 12)"


# -- the example site through the application ------------------------------------------------


EXTRA_DOMAINS = """
[domains."bücher.example"]
services = "institute"
display_name = "Bücher & <Co>"
login = "address"

[domains."no-outlook.example"]
services = "campus"
autodiscover = false

[domains."strict.example"]
services = "campus"
login = "directory"
unknown_address = "reject"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, InProcessClient]]:
    """The site's application answering in this process (tests/fixtures/inprocess.py)."""
    tmp = tmp_path_factory.mktemp("conformance-autodiscover")
    text = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    text = text.replace('path = "../var/demo-users.sqlite"', 'path = "users.sqlite"')
    assert 'path = "users.sqlite"' in text, "examples/site.toml changed its directory path"
    (tmp / "site.toml").write_text(text + EXTRA_DOMAINS, encoding="utf-8")
    store = UserStore(tmp / "users.sqlite")
    csv = (EXAMPLES / "users.csv").read_text(encoding="utf-8")
    store.import_records(parse_users_csv(csv, "users.csv"), source="users.csv")
    store.close()
    with inprocess_client(tmp / "site.toml") as client:
        yield load_site(tmp / "site.toml"), client


def request_body(email: str, schema: str | None = None) -> bytes:
    schema = schema or "http://" + NS_2006A.removeprefix("http://")
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{NS_REQUEST}"><Request>'
        f"<EMailAddress>{email}</EMailAddress>"
        f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


POX = "/autodiscover/autodiscover.xml"

ERROR_CASES: list[tuple[str, bytes, int]] = [
    ("malformed XML", b"<Autodiscover><Request>", 600),
    ("not XML at all", b"hello", 600),
    (
        "DTD with an entity (XXE)",
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>",
        600,
    ),
    ("wrong root element", b"<Discover><Request/></Discover>", 600),
    ("no Request", f'<Autodiscover xmlns="{NS_REQUEST}"/>'.encode(), 600),
    (
        "no EMailAddress",
        request_body("").replace(b"<EMailAddress></EMailAddress>", b""),
        600,
    ),
    ("invalid address", request_body("not an address"), 600),
    ("mobilesync schema", request_body("user@example.edu", NS_MOBILESYNC), 601),
    ("unknown schema", request_body("user@example.edu", "urn:nothing"), 601),
    ("Outlook autodiscover off for the domain", request_body("a@no-outlook.example"), 601),
    ("unknown domain", request_body("someone@not-served.example"), 500),
    ("unknown user, policy reject", request_body("nobody@strict.example"), 500),
]


@pytest.mark.parametrize(
    ("case", "body", "code"), ERROR_CASES, ids=[case for case, _b, _c in ERROR_CASES]
)
def test_server_error_documents_validate(
    server: tuple[Site, InProcessClient],
    official_schema: etree.XMLSchema,
    community_error_schema: etree.XMLSchema,
    case: str,
    body: bytes,
    code: int,
) -> None:
    _site, client = server
    r = client.post(POX, content=body, headers={"content-type": "text/xml"})
    assert r.status_code == 200, "POX errors are HTTP 200 with an Error body (§2.8)"
    assert r.headers["content-type"].startswith("text/xml")
    check_error(r.content, official_schema, community_error_schema, code)


def test_get_is_redirected_or_answered_with_an_error(
    server: tuple[Site, InProcessClient],
    official_schema: etree.XMLSchema,
    community_error_schema: etree.XMLSchema,
) -> None:
    """§2.8: GET over plain HTTP is Outlook's redirect probe (302 to HTTPS); over HTTPS (here
    behind a trusted proxy) there is nothing to answer but a 600 error document."""
    _site, client = server
    headers = {"host": "autodiscover.example.edu"}
    r = client.get(POX, headers=headers)
    assert r.status_code == 302
    assert r.headers["location"].startswith("https://")
    r = client.get(POX, headers={**headers, "x-forwarded-proto": "https"})
    assert r.status_code == 200
    check_error(r.content, official_schema, community_error_schema, 600)


def test_every_error_code_renders_valid(
    official_schema: etree.XMLSchema, community_error_schema: etree.XMLSchema
) -> None:
    for code in outlook.ErrorCode:
        body = outlook.render_error(code, time_of_day="23:59:59.999999", server_id=4294967295)
        assert check_error(body, official_schema, community_error_schema) == code


def test_official_schema_catches_error_under_account(
    official_schema: etree.XMLSchema, community_error_schema: etree.XMLSchema
) -> None:
    """The learn.microsoft.com element pages put Error under Account; the XSD refuses it."""
    good = outlook.render_error(
        outlook.ErrorCode.INVALID_REQUEST, time_of_day="01:02:03.5", server_id=1
    )
    check_error(good, official_schema, community_error_schema)
    wrong = good.replace(b"<Response><Error", b"<Response><Account><Error").replace(
        b"</Error></Response>", b"</Error></Account></Response>"
    )
    with pytest.raises(AssertionError):
        check_error(wrong, official_schema, community_error_schema)
    in_2006a = good.replace(b"<Response>", f'<Response xmlns="{NS_2006A}">'.encode())
    with pytest.raises(AssertionError):
        check_error(in_2006a, official_schema, community_error_schema)


SETTINGS_ADDRESSES = {
    "user@example.edu": "u0001",
    "demo.user@example.edu": "u0001",  # alias address
    "user@uni-example.de": "u0001",  # alias domain
    "nobody@example.edu": "nobody@example.edu",  # unknown: answered like a known address
    "gone@example.edu": "gone@example.edu",  # disabled
    "Ann@physics.example.org": "Ann",
    "anna@bücher.example": "anna@xn--bcher-kva.example",
}


def test_server_settings_documents(
    server: tuple[Site, InProcessClient], community_settings_schema: etree.XMLSchema
) -> None:
    _site, client = server
    for address, login in SETTINGS_ADDRESSES.items():
        r = client.post(POX, content=request_body(address))
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/xml; charset=utf-8"
        protocols = check_settings(r.content, community_settings_schema)
        assert {p["LoginName"] for p in protocols} == {login}, address
    # Outlook 2007 gets the implicit-TLS submission server of the campus set.
    r = client.post(
        POX,
        content=request_body("user@example.edu"),
        headers={"user-agent": "Microsoft Office/12.0 (Windows NT 6.1; Microsoft Outlook)"},
    )
    protocols = check_settings(r.content, community_settings_schema, outlook_2007=True)
    smtp = [p for p in protocols if p["Type"] == "SMTP"]
    assert [(p["Port"], p["Encryption"], p["SSL"]) for p in smtp] == [("465", "SSL", "on")]


def test_server_redirect_addr(
    server: tuple[Site, InProcessClient], community_redirect_schema: etree.XMLSchema
) -> None:
    _site, client = server
    r = client.post(POX, content=request_body("old.friend@alumni.example.edu"))
    assert r.status_code == 200
    check_redirect(r.content, community_redirect_schema, "old.friend@alumni-mail.example.net")


def test_community_schema_catches_misplaced_elements(
    community_settings_schema: etree.XMLSchema, community_redirect_schema: etree.XMLSchema
) -> None:
    site = Site.model_validate(
        {
            "organisation": {"name": "Ex", "short_name": "Ex"},
            "primary_domain": "example.org",
            "services": {
                "s": {"imap": [{"host": "imap.example.org"}], "smtp": [{"host": "s.x.org"}]}
            },
            "domains": {"example.org": {"services": "s"}},
        }
    )
    view = site.domain("example.org")
    assert view is not None
    good = outlook.render_settings(view, Subject("a@example.org", "a"))
    check_settings(good, community_settings_schema)
    swapped = good.replace(
        b"<Server>imap.example.org</Server><Port>993</Port>",
        b"<Port>993</Port><Server>imap.example.org</Server>",
    )
    assert swapped != good
    with pytest.raises(AssertionError):
        check_settings(swapped, community_settings_schema)
    https_ns = good.replace(b'xmlns="http://schemas', b'xmlns="https://schemas')
    with pytest.raises(AssertionError):
        check_settings(https_ns, community_settings_schema)
    starttls_on_993 = good.replace(
        b"<Encryption>SSL</Encryption>", b"<Encryption>TLS</Encryption>", 1
    )
    with pytest.raises(AssertionError):
        check_settings(starttls_on_993, community_settings_schema)
    redirect = outlook.render_redirect_addr("b@example.net")
    check_redirect(redirect, community_redirect_schema, "b@example.net")
    with pytest.raises(AssertionError):
        check_redirect(
            redirect.replace(b"<Action>redirectAddr</Action>", b""),
            community_redirect_schema,
            "b@example.net",
        )


# -- random valid sites -----------------------------------------------------------------------


@settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), site=sites(), outlook_2007=st.booleans())
def test_random_sites_render_valid_settings(
    community_settings_schema: etree.XMLSchema,
    data: st.DataObject,
    site: Site,
    outlook_2007: bool,
) -> None:
    name = data.draw(st.sampled_from(site.served_names()))
    view = site.domain(name)
    assert view is not None
    subject: Subject = data.draw(subjects(name))
    if subject.generic:  # what the server does: POX has no placeholders
        subject = Subject(address=f"someone@{name}", localpart="someone")
    body = outlook.render_settings(view, subject, outlook_2007=outlook_2007)
    protocols = check_settings(body, community_settings_schema, outlook_2007=outlook_2007)
    services = view.services
    for kind in ("imap", "pop3", "smtp"):
        chosen = outlook.choose(services.servers(kind), implicit_only_client=outlook_2007)
        mine = [p for p in protocols if p["Type"] == kind.upper()]
        if chosen is None:
            assert not mine
            continue
        assert len(mine) == 1
        assert mine[0]["Server"] == chosen.host
        assert mine[0]["Port"] == str(chosen.port_for(kind))
        expected = {"implicit": "SSL", "starttls": "TLS", "none": "None"}[chosen.tls]
        assert mine[0]["Encryption"] == expected
        assert mine[0]["SPA"] == (
            "on" if chosen.auth[0] in ("password-encrypted", "NTLM") else "off"
        )
        assert mine[0]["AuthRequired"] == ("off" if chosen.auth == ("none",) else "on")
