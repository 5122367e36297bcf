"""The operator console in headless Chromium, against a real mail system: Postfix with Dovecot
SASL and the guard (SQLite store, LDAP lock in a real slapd), smtp-sink as the Internet and the
postmaster's inbox. A helpdesk person and an admin log in (local accounts, LDAP bind, SSO
proxy header), unlock a phished account and see its mail flow again, release held mail, are
refused what their role or a forged form may not do; a session runs out; axe checks every page.

Screenshots go to ``test-artifacts/console/``; with ``MAILWARDEN_UPDATE_DOCS_IMG=1`` the ones
the documentation shows are written to ``docs/img/`` as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from mailwarden.audit.report.html import render_html
from tests.audit.sample_report import sample_report
from tests.browser.test_setup_page_browser import CHROMIUM, WCAG_AA
from tests.console.helpers import Console, add_user, running_console
from tests.fixtures.guard_server import (
    BURST_CLASSES,
    guard_cli,
    running_guard,
    write_site,
)
from tests.fixtures.net import free_port
from tests.fixtures.paths import EXAMPLES, ROOT
from tests.fixtures.postfix_lab import MailLab, running_mail_lab
from tests.fixtures.slapd import (
    BASE_DN,
    PEOPLE_DN,
    ROOT_DN,
    ROOT_PASSWORD,
    SERVICE_DN,
    Slapd,
    running_slapd,
)
from tests.fixtures.wait import wait_until

ARTIFACTS = ROOT / "test-artifacts" / "console"
DOCS_IMG = ROOT / "docs" / "img"
USERS = ["zz0001", "zz0002", "zz0003", "zz0004", "zz0005"]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
]
HELPDESK_GROUP = f"cn=mail-helpdesk,ou=services,{BASE_DN}"
ADMIN_GROUP = f"cn=mail-admins,ou=services,{BASE_DN}"


@dataclass
class World:
    lab: MailLab
    slapd: Slapd
    site: Path
    local: Console
    ldap: Console
    proxy: Console


def guard_toml(slapd: Slapd, secret: Path, sink_port: int) -> str:
    return f"""
[guard]
store = "sqlite"
state_path = "guard-state.sqlite"
message_stage = "milter"
local_domains = ["example.com"]
{BURST_CLASSES}
[guard.lock]
method = "ldap"
ldap_uri = "{slapd.url}"
bind_dn = "{ROOT_DN}"
bind_password_file = "{secret}"
user_dn_template = "uid={{user}},{PEOPLE_DN}"
attribute = "mailEnabled"
locked_value = "FALSE"
unlocked_value = "TRUE"

[guard.alerts]
mail_to = ["postmaster@example.com"]
mail_from = "guard@example.com"
smtp_host = "127.0.0.1"
smtp_port = {sink_port}
"""


def ldap_add(slapd: Slapd, ldif: str) -> None:
    done = subprocess.run(
        ["ldapadd", "-x", "-H", slapd.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
        input=ldif,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for uid in ("zz0003",):
        subprocess.run(
            [
                "ldappasswd",
                "-x",
                "-H",
                slapd.url,
                "-D",
                ROOT_DN,
                "-w",
                ROOT_PASSWORD,
                "-s",
                "ldap-pass-zz0003",
                f"uid={uid},{PEOPLE_DN}",
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )


def audit_report(started: str, severity: str) -> dict[str, object]:
    results: list[dict[str, object]] = [
        {
            "check": check,
            "endpoint": subject,
            "subject": subject,
            "severity": sev,
            "detail": "",
            "findings": [],
        }
        for subject in ("imap.example.edu:993", "smtp.example.edu:465")
        for check, sev in (("chain", "ok"), ("expiry", severity), ("revocation", "ok"))
    ]
    results += [
        {
            "check": "spf",
            "endpoint": None,
            "subject": "example.edu",
            "severity": "ok",
            "detail": "",
            "findings": [],
        }
    ]
    return {
        "schema": "mailwarden-audit",
        "version": 1,
        "started": started,
        "seconds": 4.2,
        "site": "site.toml",
        "exit_status": 1 if severity == "warning" else 0,
        "status": "warning" if severity == "warning" else "ok",
        "warn_days": 30,
        "critical_days": 14,
        "counts": {"warning": 2 if severity == "warning" else 0, "info": 3},
        "notes": [],
        "endpoints": [],
        "results": results,
        "certificates": {},
        "findings": [
            {
                "check": "expiry",
                "endpoint": "imap.example.edu:993",
                "severity": "warning",
                "code": "TLS-CERT-EXPIRES-SOON",
                "subject": "imap.example.edu",
                "message": "the certificate expires in 21 days",
                "fix": "",
            }
        ]
        if severity == "warning"
        else [],
    }


def console_toml(auth: str, slapd: Slapd) -> str:
    common = 'audit_dir = "audit"\nusers_file = "console-users.txt"\n'
    if auth == "local":
        return f'[console]\nauth = "local"\n{common}'
    if auth == "ldap":
        return f"""[console]
auth = "ldap"
idle_minutes = 0.1
{common}
[console.ldap]
uri = "{slapd.url}"
starttls = false
base_dn = "{PEOPLE_DN}"
bind_dn = "{SERVICE_DN}"
password_file = "{slapd.password_file}"
helpdesk_group = "{HELPDESK_GROUP}"
admin_group = "{ADMIN_GROUP}"
"""
    return f"""[console]
auth = "proxy"
{common}
[console.proxy]
trusted = ["127.0.0.1"]
admins = ["sso-admin"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("console-browser")
    sink_port = free_port()
    with running_slapd(tmp / "slapd", users=5) as slapd:
        ldap_add(
            slapd,
            f"dn: {HELPDESK_GROUP}\nobjectClass: groupOfNames\ncn: mail-helpdesk\n"
            f"member: uid=zz0003,{PEOPLE_DN}\n\ndn: {ADMIN_GROUP}\nobjectClass: groupOfNames\n"
            f"cn: mail-admins\nmember: uid=zz0004,{PEOPLE_DN}\n",
        )
        secret = tmp / "ldap.secret"
        secret.write_text(ROOT_PASSWORD + "\n")
        site = write_site(tmp, guard_toml(slapd, secret, sink_port))
        imported = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailwarden",
                "users",
                "--config",
                str(site),
                "import",
                str(EXAMPLES / "users.csv"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert imported.returncode == 0, imported.stderr
        added = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailwarden",
                "users",
                "--config",
                str(site),
                "add",
                "zz0002@example.edu",
                "--login",
                "zz0002",
                "--name",
                "Zora Zimmer",
                "--alias",
                "zora.zimmer@example.edu",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert added.returncode == 0, added.stderr
        audit = tmp / "audit"
        audit.mkdir()
        for day, severity in (("01", "ok"), ("02", "warning")):
            (audit / f"audit-202601{day}T0600Z.json").write_text(
                json.dumps(audit_report(f"2026-01-{day}T06:00:00Z", severity))
            )
        # the newest run's own HTML report, as `mailwarden audit --save-dir` leaves it
        (audit / "audit-20260102T060000Z.html").write_text(
            render_html(sample_report()), encoding="utf-8"
        )
        with running_guard(site, name="mta1", milter=True) as guard:
            ports = {"mta1": (guard.policy_port, guard.milter_port)}
            with running_mail_lab(USERS, ports, sink_port) as lab:
                conf = lab.folder / "mta1" / "conf"
                text = site.read_text(encoding="utf-8").replace(
                    'local_domains = ["example.com"]\n',
                    'local_domains = ["example.com"]\n'
                    f'postsuper = ["/usr/sbin/postsuper", "-c", "{conf}"]\n'
                    f'postqueue = ["/usr/sbin/postqueue", "-c", "{conf}"]\n',
                )
                sites = {}
                for auth in ("local", "ldap", "proxy"):
                    sites[auth] = tmp / f"site-{auth}.toml"
                    sites[auth].write_text(
                        text + "\n" + console_toml(auth, slapd), encoding="utf-8"
                    )
                add_user(sites["local"], "ada", "admin", "admin-password-123")
                add_user(sites["local"], "hilda", "helpdesk", "helpdesk-password-1")
                with (
                    running_console(sites["local"]) as local,
                    running_console(sites["ldap"]) as ldap,
                    running_console(sites["proxy"]) as proxy,
                ):
                    yield World(lab, slapd, sites["local"], local, ldap, proxy)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (make test does)", pytrace=False
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


def _context(browser: Browser, **options: object) -> BrowserContext:
    return browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", **options)  # type: ignore[arg-type]


def at(console: Console) -> str:
    """The console as the browser reaches it: ``localhost`` is a secure context, so Chromium
    keeps the ``Secure`` cookies over plain HTTP there, as it would over HTTPS."""
    return f"http://localhost:{console.port}"


def log_in(browser: Browser, console: Console, name: str, password: str) -> Page:
    page = _context(browser).new_page()
    page.goto(f"{at(console)}/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("header .who")).to_contain_text(f"Signed in as {name}")
    return page


def shot(page: Page, name: str, docs: bool = False) -> None:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    if docs and os.environ.get("MAILWARDEN_UPDATE_DOCS_IMG") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / f"{name}.png")


def ldap_attribute(slapd: Slapd, uid: str, attribute: str) -> str:
    out = subprocess.run(
        [
            "ldapsearch",
            "-LLL",
            "-x",
            "-H",
            slapd.url,
            "-D",
            ROOT_DN,
            "-w",
            ROOT_PASSWORD,
            "-b",
            f"uid={uid},{PEOPLE_DN}",
            "-s",
            "base",
            attribute,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    found = re.search(rf"^{attribute}: (.*)$", out.stdout, re.M)
    return found.group(1) if found else ""


def lock_by_spam_run(lab: MailLab, user: str) -> None:
    for i in range(40):
        rcpts = [f"victim{i}-{k}@target{i}-{k}.example" for k in range(4)]
        r = lab.submit("mta1", user, rcpts, subject=f"Your parcel {i}")
        if not r.accepted and "locked" in r.text:
            return
    pytest.fail(f"{user} was never locked")


def test_unlock_in_the_browser_lets_mail_flow_again(world: World, browser: Browser) -> None:
    lock_by_spam_run(world.lab, "zz0002")
    wait_until(lambda: ldap_attribute(world.slapd, "zz0002", "mailEnabled") == "FALSE", 20)
    page = log_in(browser, world.local, "hilda", "helpdesk-password-1")
    expect(page.locator("#locks")).to_contain_text("zz0002")
    expect(page.locator("figure svg rect").first).to_be_attached()  # the decisions chart
    page.locator("#locks").get_by_role("link", name="zz0002").click()
    expect(page.locator("#lock-state")).to_contain_text("Locked since")
    expect(page.locator("#timeline")).to_contain_text("locked")
    page.locator("#unlock").click()
    expect(page.locator("#question")).to_contain_text("Unlock zz0002?")
    page.locator("#confirm").click()
    expect(page.locator(".flash")).to_contain_text("zz0002 unlocked")
    expect(page.locator("#lock-state")).to_have_text("Not locked.")
    expect(page.locator("#timeline li").first).to_contain_text(
        "unlocked by hilda (console, from 127.0.0.1)"
    )
    assert ldap_attribute(world.slapd, "zz0002", "mailEnabled") == "TRUE"
    wait_until(lambda: "account zz0002 unlocked by hilda" in world.lab.sink_text(), 20)
    again = world.lab.submit("mta1", "zz0002", ["friend@example.org"], subject="sorry about that")
    assert again.accepted, again
    wait_until(lambda: "sorry about that" in world.lab.sink_text(), 30)
    page.context.close()


def test_release_one_held_message(world: World, browser: Browser) -> None:
    rcpts = [f"member{k}@club{k}.example" for k in range(4)]  # zz0005 is watched: 3 an hour
    r = world.lab.submit("mta1", "zz0005", rcpts, subject="club newsletter draft")
    assert r.accepted, r
    wait_until(lambda: world.lab.hold_queue("mta1") != "", 20)
    page = log_in(browser, world.local, "hilda", "helpdesk-password-1")
    page.goto(f"{at(world.local)}/account?q=zz0005")
    rows = page.locator("#account-holds tbody tr")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("button").click()
    expect(page.locator("#question")).to_contain_text("Release the held message")
    page.locator("#confirm").click()
    expect(page.locator(".flash")).to_contain_text("released")
    expect(page.locator("#account-holds")).to_have_count(0)
    wait_until(lambda: "club newsletter draft" in world.lab.sink_text(), 30)
    history = json.loads(guard_cli(world.site, "history", "zz0005", "--format", "json").stdout)
    assert history[-1]["action"] == "release"
    assert history[-1]["detail"]["by"] == "hilda"
    page.context.close()


def test_helpdesk_is_refused_a_lock_and_forged_forms_are_refused(
    world: World, browser: Browser
) -> None:
    page = log_in(browser, world.local, "hilda", "helpdesk-password-1")
    page.goto(f"{at(world.local)}/account?q=zz0001")
    expect(page.locator("#unlock")).to_be_visible()
    expect(page.locator("#lock")).to_have_count(0)
    token = page.locator('input[name="csrf"]').first.get_attribute("value") or ""
    form: dict[str, str | float | bool] = {
        "csrf": token,
        "op": "lock",
        "user": "zz0001",
        "reason": "x",
        "confirm": "yes",
    }
    assert page.request.post(f"{at(world.local)}/action", form=form).status == 403
    admin = log_in(browser, world.local, "ada", "admin-password-123")
    forged: dict[str, str | float | bool] = {
        "op": "lock",
        "user": "zz0001",
        "reason": "x",
        "confirm": "yes",
    }
    refused = admin.request.post(f"{at(world.local)}/action", form=forged)
    assert refused.status == 403
    assert "not sent by this console" in refused.text()
    locked = guard_cli(world.site, "locked", "--format", "json").stdout
    assert '"zz0001"' not in locked
    page.context.close()
    admin.context.close()


def test_admin_locks_with_a_reason(world: World, browser: Browser) -> None:
    page = log_in(browser, world.local, "ada", "admin-password-123")
    page.goto(f"{at(world.local)}/account?q=zz0004")
    page.get_by_label("Reason for the lock").fill("phished, ticket 4711")
    page.locator("#lock").click()
    page.locator("#confirm").click()
    expect(page.locator("#lock-state")).to_contain_text("phished, ticket 4711")
    assert ldap_attribute(world.slapd, "zz0004", "mailEnabled") == "FALSE"
    refused = world.lab.submit("mta1", "zz0004", ["friend@example.org"])
    assert not refused.accepted
    page.locator("#unlock").click()
    page.locator("#confirm").click()
    expect(page.locator("#lock-state")).to_have_text("Not locked.")
    page.context.close()


def test_ldap_login_and_the_session_runs_out(world: World, browser: Browser) -> None:
    page = log_in(browser, world.ldap, "zz0003", "ldap-pass-zz0003")
    expect(page.locator("header .who")).to_contain_text("(helpdesk)")

    # Any request would keep the session alive, so nothing is asked until the idle time
    # (idle_minutes = 0.1: six seconds) has passed since the last one.
    last_request = time.monotonic()
    wait_until(lambda: time.monotonic() - last_request > 6.5, 20)
    page.goto(f"{at(world.ldap)}/")
    assert "/login" in page.url
    expect(page.locator(".error")).to_contain_text("Your session has ended")
    page.context.close()


def test_proxy_login(world: World, browser: Browser) -> None:
    context = _context(browser, extra_http_headers={"X-Remote-User": "sso-admin"})
    page = context.new_page()
    page.goto(f"{at(world.proxy)}/")
    expect(page.locator("header .who")).to_contain_text("Signed in as sso-admin (admin)")
    context.close()


def test_screenshots_for_the_docs(world: World, browser: Browser) -> None:
    page = log_in(browser, world.local, "ada", "admin-password-123")
    shot(page, "console-overview", docs=True)
    page.goto(f"{at(world.local)}/account?q=zz0002%40example.edu")
    expect(page.locator("#entry .login")).to_have_text("zz0002")
    expect(page.locator("#entry")).to_contain_text("zora.zimmer@example.edu")
    expect(page.locator("#clients")).to_contain_text("Thunderbird")
    expect(page.locator("#timeline")).to_contain_text("unlocked by hilda")
    shot(page, "console-account", docs=True)
    page.goto(f"{at(world.local)}/audit")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    # The report in its frame, styled: its own CSP lets its style sheet in, the sandbox
    # lets nothing run.
    report = page.frame_locator("#report")
    expect(report.locator("h1")).to_be_visible()
    grid_cell = report.locator("td[data-state=warning]").first
    expect(grid_cell).not_to_have_css("background-color", "rgba(0, 0, 0, 0)")
    shot(page, "console-audit")
    page.goto(f"{at(world.local)}/?lang=de")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    shot(page, "console-overview-de")
    page.context.close()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/account?q=zz0002%40example.edu",
        "/account?q=jdoe%40example.edu",
        "/audit",
        "/config",
        "/?lang=de",
        "confirm",
        "login",
    ],
)
def test_axe_finds_no_wcag_aa_violations(world: World, browser: Browser, path: str) -> None:
    if path == "login":
        page = _context(browser).new_page()
        page.goto(f"{at(world.local)}/login")
    else:
        page = log_in(browser, world.local, "ada", "admin-password-123")
        if path == "confirm":
            page.goto(f"{at(world.local)}/account?q=zz0001")
            page.locator("#unlock").click()
            expect(page.locator("#question")).to_be_visible()
        else:
            page.goto(f"{at(world.local)}{path}")
    results = Axe().run(page, options=WCAG_AA)
    assert results.violations_count == 0, results.generate_report()
    page.context.close()


def test_axe_really_runs_on_the_console(world: World, browser: Browser) -> None:
    """The check above is only worth something if axe runs under the console's CSP."""
    page = _context(browser).new_page()
    page.goto(f"{at(world.local)}/login")
    page.evaluate("document.querySelector('label').remove()")
    assert Axe().run(page, options=WCAG_AA).violations_count > 0
    page.context.close()
