"""Every autoconfig document we render is valid: the draft's RELAX NG grammar plus the value
rules of protocols.md §7 that the grammar leaves open (it accepts any text as socketType).

Documents come from three places: the example site served by the real server (every served
name, generic and per-user, aliases, unknown and disabled users, an IDN domain), and random
valid sites from hypothesis rendered by the pure renderer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from mailwarden.address import AddressError, normalise_domain
from mailwarden.directory.embedded import UserStore, parse_users_csv
from mailwarden.profiles import thunderbird
from mailwarden.profiles.subject import Subject
from mailwarden.site import load_site
from mailwarden.site.model import DomainView, Site
from tests.fixtures.inprocess import InProcessClient, inprocess_client
from tests.fixtures.paths import EXAMPLES, shared_dir
from tests.fixtures.sites import sites, subjects

SOCKET_TYPES = {"SSL", "STARTTLS", "plain"}
AUTH_TOKENS = {
    "password-cleartext",
    "password-encrypted",
    "OAuth2",
    "NTLM",
    "GSSAPI",
    "TLS-client-cert",
    "client-IP-address",
    "none",
}
PLACEHOLDER_RE = re.compile(r"%EMAIL(?:ADDRESS|LOCALPART|DOMAIN)%")
IDN_DOMAIN = "bücher.example"
IDN_ASCII = "xn--bcher-kva.example"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@pytest.fixture(scope="module")
def relaxng() -> etree.RelaxNG:
    path = shared_dir() / "corpus" / "autoconfig-spec" / "autoconfig.rng"
    return etree.RelaxNG(etree.parse(str(path)))


def check_autoconfig(body: bytes, rng: etree.RelaxNG, *, generic: bool) -> etree._Element:
    """Assert ``body`` is a document every client accepts; return its root for more checks."""
    assert not body.startswith(b"\xef\xbb\xbf"), "UTF-8 without BOM (draft)"
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(body, _PARSER)
    if not rng.validate(root):
        raise AssertionError(f"RELAX NG: {rng.error_log}\n{body.decode()}")
    assert root.tag == "clientConfig"
    assert root.get("version") == "1.1"
    for element in root.iter():
        if isinstance(element.tag, str):
            assert element.prefix is None, "no namespace prefixes (TB's JXON, TB-A's parser)"
    providers = root.findall("emailProvider")
    assert len(providers) == 1, "exactly one emailProvider (§7 item 4)"
    provider = providers[0]
    provider_id = provider.get("id", "")
    assert provider_id == normalise_domain(provider_id), "emailProvider id is a host name"
    domains = [d.text or "" for d in provider.findall("domain")]
    assert domains, "at least one domain"
    for domain in domains:
        assert domain == normalise_domain(domain)
    assert (provider.findtext("displayName") or "").strip()
    servers = provider.findall("incomingServer") + provider.findall("outgoingServer")
    assert provider.findall("outgoingServer"), "outgoingServer always present (§7 item 3)"
    assert provider.findall("incomingServer")
    for server in servers:
        kind = server.get("type")
        assert kind in (("imap", "pop3") if server.tag == "incomingServer" else ("smtp",))
        hostname = server.findtext("hostname")
        assert hostname
        assert hostname == normalise_domain(hostname)
        port = server.findtext("port") or ""
        assert re.fullmatch(r"[1-9][0-9]{0,4}", port), f"port {port!r}"
        assert int(port) <= 65535
        socket_types = [e.text for e in server.findall("socketType")]
        assert len(socket_types) == 1
        assert socket_types[0] in SOCKET_TYPES, (
            f"exact socketType token (§7 item 2): {socket_types}"
        )
        auths = [e.text for e in server.findall("authentication")]
        assert auths
        assert all(a in AUTH_TOKENS for a in auths), f"auth tokens {auths!r}"
        usernames = server.findall("username")
        assert len(usernames) == 1, "username on every server (§7 item 3)"
        username = usernames[0].text or ""
        assert username, "non-empty username"
        assert username.strip() == username
        if generic:
            assert PLACEHOLDER_RE.search(username), f"generic username {username!r}"
        else:
            assert "%EMAIL" not in username, f"per-user username {username!r} unfilled"
        assert server.find("password") is None, "never a password"
    return root


# -- the example site through the application ------------------------------------------------


def _example_site(tmp: Path) -> Path:
    """examples/site.toml plus an IDN domain, with its directory in ``tmp``."""
    text = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    text = text.replace('path = "../var/demo-users.sqlite"', 'path = "users.sqlite"')
    assert 'path = "users.sqlite"' in text, "examples/site.toml changed its directory path"
    text += (
        f'\n[domains."{IDN_DOMAIN}"]\nservices = "institute"\ndisplay_name = "Bücher & <Co>"\n'
        'display_short_name = "Bücher"\nlogin = "address"\n'
    )
    (tmp / "site.toml").write_text(text, encoding="utf-8")
    store = UserStore(tmp / "users.sqlite")
    csv = (EXAMPLES / "users.csv").read_text(encoding="utf-8")
    store.import_records(parse_users_csv(csv, "users.csv"), source="users.csv")
    store.close()
    return tmp / "site.toml"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, InProcessClient]]:
    """The site's application answering in this process (tests/fixtures/inprocess.py)."""
    config = _example_site(tmp_path_factory.mktemp("conformance-autoconfig"))
    with inprocess_client(config) as client:
        yield load_site(config), client


def _users_by_domain() -> dict[str, dict[str, bool]]:
    """Domain → {address: enabled} for every address in examples/users.csv."""
    csv = (EXAMPLES / "users.csv").read_text(encoding="utf-8")
    result: dict[str, dict[str, bool]] = {}
    for record in parse_users_csv(csv, "users.csv"):
        for address in (record.address, *record.aliases):
            result.setdefault(address.rpartition("@")[2], {})[address] = record.enabled
    return result


def _unknown_policy(view: DomainView) -> str:
    """How the site answers an address the directory does not know (docs/site-reference.md):
    the domain's policy where the directory is asked, otherwise a per-user document."""
    services = view.services
    servers = (*services.imap, *services.pop3, *services.smtp)
    if view.config.login == "directory" or any(s.login == "directory" for s in servers):
        return view.config.unknown_address
    return "as-address"


def test_example_site_every_document_validates(
    example: tuple[Site, InProcessClient], relaxng: etree.RelaxNG
) -> None:
    site, client = example
    users = _users_by_domain()
    checked = 0
    for name in site.served_names():
        view = site.domain(name)
        assert view is not None
        moved = view.config.moved_to is not None
        for host in (f"autoconfig.{name}", name):
            for path in (
                "/mail/config-v1.1.xml",
                "/.well-known/autoconfig/mail/config-v1.1.xml",
            ):
                r = client.get(path, headers={"host": host})
                if moved:
                    assert r.status_code == 302
                    continue
                assert r.status_code == 200, (host, path, r.text)
                assert r.headers["content-type"] == "text/xml; charset=utf-8"
                check_autoconfig(r.content, relaxng, generic=True)
                checked += 1
        shown = IDN_DOMAIN if name == IDN_ASCII else name
        known = users.get(name, {})
        addresses = [
            *known,
            f"nobody.here@{shown}",  # unknown user
            f"gone@{shown}",  # disabled in users.csv for example.edu
            f"Mixed.Case@{shown.upper()}",
        ]
        for address in addresses:
            r = client.get(f"/mail/config-v1.1.xml?emailaddress={quote(address, safe='')}")
            policy = "known" if known.get(address.lower()) else _unknown_policy(view)
            if moved:
                assert r.status_code == 302
                continue
            if policy == "reject":
                assert r.status_code == 404, (address, r.text)
                continue
            assert r.status_code == 200, (address, r.text)
            assert r.headers["content-type"].startswith("text/xml")
            root = check_autoconfig(r.content, relaxng, generic=policy == "generic")
            ids = root.find("emailProvider").get("id")  # type: ignore[union-attr]
            assert ids == view.name
            checked += 1
    # 4 served names with documents × 4 generic URLs + their users: a floor, not an exact count
    assert checked >= 40, checked


def test_example_site_logins_reach_the_document(
    example: tuple[Site, InProcessClient], relaxng: etree.RelaxNG
) -> None:
    """The login name each rule yields is what the document carries (aliases, IDN)."""
    _site, client = example
    expected = {
        "user@example.edu": "u0001",
        "demo.user@example.edu": "u0001",
        "user@uni-example.de": "u0001",
        "jdoe@example.edu": "jdoe42",
        "gone@example.edu": "gone@example.edu",  # disabled: answered like an unknown address
        "nobody@example.edu": "nobody@example.edu",
        "Ann.Lee@physics.example.org": "Ann.Lee",
        f"anna@{IDN_DOMAIN}": f"anna@{IDN_ASCII}",
    }
    for address, login in expected.items():
        r = client.get("/mail/config-v1.1.xml", params={"emailaddress": address})
        root = check_autoconfig(r.content, relaxng, generic=False)
        names = {e.text for e in root.iter("username")}
        assert names == {login}, (address, names)


def test_content_type_is_xml_on_both_paths(example: tuple[Site, InProcessClient]) -> None:
    _site, client = example
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        r = client.get(path, params={"emailaddress": "x@example.edu"})
        assert r.headers["content-type"].split(";")[0] in ("text/xml", "application/xml")


# -- random valid sites -----------------------------------------------------------------------


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), site=sites())
def test_random_sites_render_valid_documents(
    relaxng: etree.RelaxNG, data: st.DataObject, site: Site
) -> None:
    name = data.draw(st.sampled_from(site.served_names()))
    view = site.domain(name)
    assert view is not None
    subject: Subject = data.draw(subjects(name))
    body = thunderbird.render(site, view, subject)
    root = check_autoconfig(body, relaxng, generic=subject.generic)
    provider = root.find("emailProvider")
    assert provider is not None
    services = view.services
    incoming = provider.findall("incomingServer")
    assert len(incoming) == len(services.imap) + len(services.pop3)
    preferred = services.incoming_first
    other = "pop3" if preferred == "imap" else "imap"
    assert incoming[0].get("type") == (preferred if services.servers(preferred) else other)
    outgoing = provider.findall("outgoingServer")
    assert [(s.findtext("hostname"), int(s.findtext("port") or 0)) for s in outgoing] == [
        (s.host, s.port_for("smtp")) for s in services.smtp
    ]
    for element, server in zip(outgoing, services.smtp, strict=True):
        assert [a.text for a in element.findall("authentication")] == list(server.auth)
    # Display names survive escaping exactly (minus the characters XML cannot carry).
    shown = view.config.display_name or site.organisation.name
    assert provider.findtext("displayName") == _xml_chars(shown)


def _xml_chars(value: str) -> str:
    """``value`` as an XML parser returns it: illegal characters gone, line ends normalised."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        c
        for c in value
        if c in "\t\n\r"
        or (0x20 <= ord(c) <= 0xD7FF and ord(c) != 0x7F)
        or 0xE000 <= ord(c) <= 0xFFFD
        or ord(c) >= 0x10000
    )


def test_checker_rejects_what_clients_reject(relaxng: etree.RelaxNG) -> None:
    """The checks above can fail: each broken variant of a good document is refused."""
    good = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1">'
        '<emailProvider id="example.org"><domain>example.org</domain>'
        "<displayName>Ex</displayName>"
        '<incomingServer type="imap"><hostname>imap.example.org</hostname><port>993</port>'
        "<socketType>SSL</socketType><authentication>password-cleartext</authentication>"
        "<username>%EMAILADDRESS%</username></incomingServer>"
        '<outgoingServer type="smtp"><hostname>smtp.example.org</hostname><port>465</port>'
        "<socketType>SSL</socketType><authentication>password-cleartext</authentication>"
        "<username>%EMAILADDRESS%</username></outgoingServer>"
        "</emailProvider></clientConfig>"
    )
    check_autoconfig(good.encode(), relaxng, generic=True)
    broken = [
        good.replace("<socketType>SSL</socketType>", "<socketType> SSL</socketType>", 1),
        good.replace("<socketType>SSL</socketType>", "<socketType>ssl</socketType>", 1),
        good.replace("<username>%EMAILADDRESS%</username></outgoingServer>", "</outgoingServer>"),
        good.replace('id="example.org"', 'id="Example Provider"'),
        good.replace("<port>993</port>", "<port>0</port>"),
        good[: good.index("<outgoingServer")] + "</emailProvider></clientConfig>",
        good.replace('version="1.1"', ""),
        good.replace("<clientConfig", "<c:clientConfig xmlns:c='urn:x'").replace(
            "</clientConfig>", "</c:clientConfig>"
        ),
    ]
    for variant in broken:
        with pytest.raises((AssertionError, AddressError)):
            check_autoconfig(variant.encode(), relaxng, generic=True)
