"""The setup page in headless Chromium, as a person uses it: type, submit, read, download.

Chromium resolves ``autoconfig.example.edu`` to 127.0.0.1 (and nothing else anywhere), so the
page is asked for under its real host name, from the server a test starts on a free port.
Screenshots at phone and desktop widths go to ``test-artifacts/setup-page/``.
"""

from __future__ import annotations

import plistlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow  # starts mailwarden serve and chromium

CHROMIUM = Path("/usr/bin/chromium")
HOST = "autoconfig.example.edu"
ARTIFACTS = ROOT / "test-artifacts" / "setup-page"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND",
]
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (make test does, from "
            "packaging/debian-test.txt)",
            pytrace=False,
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def base(example_server: str) -> str:
    return f"http://{HOST}:{urlsplit(example_server).port}"


def _shot(page: Page, name: str) -> None:
    """The whole page, and what the first screen shows (a phone's full page is very tall)."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    page.screenshot(path=str(ARTIFACTS / f"{name}-screen.png"))


def test_alias_address_on_desktop(browser: Browser, base: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.goto(f"{base}/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    _shot(page, "form-desktop")
    field = page.get_by_label("Your e-mail address")
    field.fill("demo.user@example.edu")  # an alias of user@example.edu, login u0001
    field.press("Enter")
    expect(page.locator("#settings-heading")).to_have_text("Settings for demo.user@example.edu")
    logins = page.locator(".server dd.login")
    expect(logins.first).to_have_text("u0001")
    assert set(logins.all_inner_texts()) == {"u0001"}
    expect(page.locator('.server[data-protocol="IMAP"]').first).to_contain_text("993")
    expect(page.locator("figure.qr img")).to_have_attribute(
        "alt", "QR code with the address of this page"
    )
    _shot(page, "result-desktop")

    with (
        page.expect_response(lambda r: "/mobileconfig" in r.url) as answer,
        page.expect_download() as download,
    ):
        page.locator("#profile-link").click()
    response = answer.value
    assert response.status == 200
    assert response.headers["content-type"] == "application/x-apple-aspen-config"
    assert download.value.suggested_filename == "example.edu-mail.mobileconfig"
    profile = plistlib.loads(Path(download.value.path()).read_bytes())
    (account,) = profile["PayloadContent"]
    assert account["IncomingMailServerUsername"] == "u0001"
    assert account["EmailAddress"] == "demo.user@example.edu"
    context.close()


def test_phone_in_german_with_switch_and_keyboard(browser: Browser, base: str) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=IPHONE,
        locale="de-DE",
    )
    page = context.new_page()
    page.goto(f"{base}/")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    _shot(page, "form-phone-de")
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.get_by_label("Ihre E-Mail-Adresse").fill("max.mustermann@uni-example.de")
    page.get_by_role("button", name="Meine Einstellungen anzeigen").click()
    expect(page.locator(".server dd.login").first).to_have_text("mmuster")
    expect(page.locator("#client-ios")).to_have_attribute("open", "")
    expect(page.locator("h2").first).to_have_attribute("id", "apple-heading")  # one tap away
    _shot(page, "result-phone-de")
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#settings-heading")).to_have_text(
        "Settings for max.mustermann@uni-example.de"
    )
    _shot(page, "result-phone-en")
    context.close()


def test_invalid_and_unknown_addresses(browser: Browser, base: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    page = context.new_page()
    response = page.goto(f"{base}/?emailaddress=%3Cb%3Enot-an-address")
    assert response is not None
    assert response.status == 400
    expect(page.locator("#emailaddress-error")).to_contain_text("not a complete e-mail address")
    expect(page.locator("#emailaddress")).to_have_attribute("aria-invalid", "true")
    assert page.locator("b").filter(has_text="not-an-address").count() == 0  # escaped
    _shot(page, "invalid-phone")
    response = page.goto(f"{base}/?emailaddress=nobody.here%40example.edu")
    assert response is not None
    assert response.status == 200
    expect(page.locator(".server dd.login").first).to_have_text("nobody.here@example.edu")
    context.close()


WCAG_AA = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    "resultTypes": ["violations"],
}


@pytest.mark.parametrize(
    ("query", "width"),
    [
        ("", 1280),
        ("?emailaddress=demo.user%40example.edu&lang=en", 1280),
        ("?emailaddress=demo.user%40example.edu&lang=de", 390),
        ("?emailaddress=not-an-address", 390),
    ],
)
def test_axe_finds_no_wcag_aa_violations(
    browser: Browser, base: str, query: str, width: int
) -> None:
    """axe-core (WCAG 2.1 A and AA rules, contrast included) over every part of the page."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/{query}")
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    results = Axe().run(page, options=WCAG_AA)
    assert results.violations_count == 0, results.generate_report()
    context.close()


def test_axe_really_runs_under_our_csp(browser: Browser, base: str) -> None:
    """The check above is only worth something if axe runs on our page: break it, see it fail."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/")
    page.evaluate("document.querySelector('label').remove()")
    results = Axe().run(page, options=WCAG_AA)
    assert results.violations_count > 0
    context.close()
