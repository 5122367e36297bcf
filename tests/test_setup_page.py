"""The setup page: language choice, escaping, privacy, and the application's HTTP answers."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailwarden.address import AddressError, parse_address
from mailwarden.profiles import apple, setup_page
from mailwarden.profiles.subject import GENERIC, Subject
from mailwarden.site import Site, load_site
from mailwarden.site.model import DomainView
from tests.fixtures.inprocess import InProcessClient, inprocess_client

_QR = re.compile(r"data:image/svg\+xml[^\"]*")


def _domain(site: Site, name: str) -> DomainView:
    view = site.domain(name)
    assert view is not None
    return view


# -- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "explicit", "expected"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", None, "de"),
        ("en-US,en;q=0.9,de;q=0.8", None, "en"),
        ("fr-FR, de;q=0.5", None, "de"),
        ("fr, it", None, "en"),
        ("de;q=0.4, en;q=0.6", None, "en"),
        ("DE", None, "de"),
        ("", None, "en"),
        (None, None, "en"),
        ("de", "en", "en"),
        ("en", "de", "de"),
        ("de", "fr", "de"),
    ],
)
def test_choose_language(header: str | None, explicit: str | None, expected: str) -> None:
    assert setup_page.choose_language(header, explicit) == expected


@settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=2000), explicit=st.one_of(st.none(), st.text(max_size=10)))
def test_choose_language_never_fails(header: str, explicit: str | None) -> None:
    assert setup_page.choose_language(header, explicit) in setup_page.LANGUAGES


def test_suggested_client() -> None:
    assert setup_page.suggested_client("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0)") == "ios"
    assert setup_page.suggested_client("Mozilla/5.0 (Linux; Android 15; Pixel 9)") == "android"
    assert setup_page.suggested_client("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)") == "macos"
    assert setup_page.suggested_client("Mozilla/5.0 (Windows NT 10.0; Win64; x64)") is None


def _result_page(site: Site, address: str, subject: Subject, lang: setup_page.Lang) -> str:
    parsed = parse_address(address)
    result = setup_page.result_for(
        _domain(site, parsed.domain), subject, parsed, page_url="https://autoconfig.example.edu/"
    )
    return setup_page.render(site, setup_page.Page(lang=lang, result=result)).decode()


def test_rows_follow_login_rule_and_site_order(example_site: Site) -> None:
    rows = setup_page.setting_rows(
        _domain(example_site, "example.edu"), Subject("a@example.edu", "a", "u7")
    )
    assert [(r.protocol, r.port, r.main) for r in rows] == [
        ("IMAP", 993, True),
        ("IMAP", 143, False),
        ("POP3", 995, False),
        ("SMTP", 465, True),
        ("SMTP", 587, False),
    ]
    assert {r.login for r in rows} == {"u7"}
    physics = setup_page.setting_rows(
        _domain(example_site, "physics.example.org"), Subject("Fred@physics.example.org", "Fred")
    )
    assert {r.login for r in physics} == {"Fred"}
    assert [r.security for r in physics] == ["SSL/TLS", "STARTTLS"]


def test_generic_subject_shows_no_placeholder(example_site: Site) -> None:
    html = _result_page(example_site, "x@example.edu", GENERIC, "en")
    assert "%EMAIL" not in html
    assert "the user name ExampleUni gave you" in html


def test_every_client_has_steps_and_a_revocation_note(example_site: Site) -> None:
    cases: tuple[tuple[setup_page.Lang, str], ...] = (
        ("en", "Certificate check"),
        ("de", "Zertifikatsprüfung"),
    )
    for lang, word in cases:
        html = _result_page(example_site, "a@example.edu", Subject("a@example.edu", "a"), lang)
        for client in setup_page.CLIENTS:
            start = html.index(f'id="client-{client}"')
            section = html[start : html.index("</details>", start)]
            assert "<ol>" in section
            assert word in section, (lang, client)
        assert f'<html lang="{lang}">' in html


def test_values_are_escaped(example_site: Site) -> None:
    evil = '"><script>alert(1)</script>'
    page = setup_page.Page(lang="en", typed=evil, message="not_served", message_domain=evil)
    html = setup_page.render(example_site, page).decode()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "&#34;&gt;" in html


def test_csp_hash_matches_the_inline_style(example_site: Site) -> None:
    html = setup_page.render(example_site, setup_page.Page(lang="en")).decode()
    css = html[html.index("<style>") + 7 : html.index("</style>")]
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in setup_page.CONTENT_SECURITY_POLICY
    assert "<script" not in html  # the page works without JavaScript


# -- through the application -----------------------------------------------------------------


def test_form_and_headers(asgi_client: InProcessClient) -> None:
    r = asgi_client.get("/", headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-language"] == "de"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert '<html lang="de">' in r.text
    assert 'href="https://help.example.edu/mail"' in r.text  # support link from the site file
    head = asgi_client.head("/")
    assert head.status_code == 200
    assert head.content == b""
    assert asgi_client.post("/").status_code == 405


def test_result_for_alias(asgi_client: InProcessClient) -> None:
    r = asgi_client.get(
        "/",
        params={"emailaddress": "jane.doe@example.edu", "lang": "en"},
        headers={"Host": "autoconfig.example.edu"},
    )
    assert r.status_code == 200
    assert '<dd class="value login">jdoe42</dd>' in r.text
    assert 'href="/mobileconfig?emailaddress=jane.doe%40example.edu"' in r.text
    assert "data:image/svg+xml" in r.text


def _shape(html: str, *replacements: tuple[str, str]) -> str:
    html = _QR.sub("QR", html)
    for old, new in replacements:
        html = html.replace(old, new)
    return html


def test_unknown_address_page_has_the_same_shape(asgi_client: InProcessClient) -> None:
    """Default policy: nothing but the typed address (and the login it implies) differs."""

    def page(address: str) -> str:
        r = asgi_client.get("/", params={"emailaddress": address, "lang": "en"})
        assert r.status_code == 200
        return r.text

    known = _shape(
        page("jdoe@example.edu"),
        ("jdoe42", "jdoe@example.edu"),
        ("jdoe%40example.edu", "ADDRESS"),
        ("jdoe@example.edu", "ADDRESS"),
    )
    unknown = _shape(
        page("nosuch@example.edu"),
        ("nosuch%40example.edu", "ADDRESS"),
        ("nosuch@example.edu", "ADDRESS"),
    )
    assert known == unknown


def test_invalid_unserved_and_moved(asgi_client: InProcessClient) -> None:
    bad = asgi_client.get("/", params={"emailaddress": "<script>x</script>@example"})
    assert bad.status_code == 400
    assert "<script>x" not in bad.text
    assert 'aria-invalid="true"' in bad.text
    unserved = asgi_client.get("/", params={"emailaddress": "a@elsewhere.example"})
    assert unserved.status_code == 404
    assert "elsewhere.example" in unserved.text
    idn = asgi_client.get("/", params={"emailaddress": "a@bücher.example"})
    assert idn.status_code == 404
    assert "Für bücher.example" in idn.text or "for bücher.example" in idn.text
    moved = asgi_client.get("/", params={"emailaddress": "x@alumni.example.edu", "lang": "de"})
    assert moved.status_code == 302
    assert moved.headers["location"] == (
        "https://autoconfig.alumni-mail.example.net/"
        "?emailaddress=x%40alumni-mail.example.net&lang=de"
    )
    long = asgi_client.get("/?emailaddress=" + "a" * 5000)
    assert long.status_code == 414


def test_reject_policy_says_unknown(example_site_file: Path) -> None:
    text = example_site_file.read_text(encoding="utf-8")
    text = text.replace(
        'login = "directory"\n', 'login = "directory"\nunknown_address = "reject"\n'
    )
    example_site_file.write_text(text, encoding="utf-8")
    with inprocess_client(example_site_file) as client:
        unknown = client.get("/", params={"emailaddress": "nosuch@example.edu"})
        known = client.get("/", params={"emailaddress": "jdoe@example.edu"})
        profile = client.get("/mobileconfig", params={"emailaddress": "nosuch@example.edu"})
    assert unknown.status_code == 404
    assert "not known here" in unknown.text
    assert known.status_code == 200
    assert "jdoe42" in known.text
    assert profile.status_code == 404


def test_logo_and_organisation_from_the_site_file(example_site: Site) -> None:
    organisation = example_site.organisation.model_copy(
        update={"logo_url": "https://www.example.edu/logo.svg", "name": "Uni & Co"}
    )
    site = example_site.model_copy(update={"organisation": organisation})
    html = setup_page.render(site, setup_page.Page(lang="de")).decode()
    assert '<img src="https://www.example.edu/logo.svg" alt="">' in html
    assert "Uni &amp; Co" in html


_SITE = load_site(Path(__file__).resolve().parents[1] / "examples" / "site.toml")


@settings(max_examples=200, deadline=None)
@given(localpart=st.text(min_size=1, max_size=30))
def test_any_parseable_address_renders_page_and_profile(localpart: str) -> None:
    """Whatever the address parser lets through, both renderers take it (Unicode included)."""
    try:
        address = parse_address(f"{localpart}@example.edu")
    except AddressError:
        assume(False)
        return
    site = _SITE
    subject = Subject(str(address), address.localpart)
    domain = _domain(site, "example.edu")
    plistlib_bytes = apple.render(site, domain, subject, address)
    assert plistlib_bytes.startswith(b"<?xml")
    html = _result_page(site, str(address), subject, "en")
    assert "<script" not in html
