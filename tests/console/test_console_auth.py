"""Logging in through the site's LDAP directory (a real slapd) and through a trusted SSO
proxy's header."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.helpers import ConsoleClient, console_site, running_console
from tests.fixtures.slapd import (
    BASE_DN,
    PEOPLE_DN,
    ROOT_DN,
    ROOT_PASSWORD,
    SERVICE_DN,
    Slapd,
    running_slapd,
)

HELPDESK_GROUP = f"cn=mail-helpdesk,ou=services,{BASE_DN}"
ADMIN_GROUP = f"cn=mail-admins,ou=services,{BASE_DN}"
GROUPS = f"""dn: {HELPDESK_GROUP}
objectClass: groupOfNames
cn: mail-helpdesk
member: uid=zz0001,{PEOPLE_DN}

dn: {ADMIN_GROUP}
objectClass: groupOfNames
cn: mail-admins
member: uid=zz0002,{PEOPLE_DN}
"""


def ldap_tool(slapd: Slapd, *argv: str, stdin: str = "") -> None:
    done = subprocess.run(
        [argv[0], "-x", "-H", slapd.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *argv[1:]],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd"), users=3) as server:
        ldap_tool(server, "ldapadd", stdin=GROUPS)
        for uid in ("zz0001", "zz0002", "zz0003"):
            ldap_tool(server, "ldappasswd", "-s", f"pw-of-{uid}-12345", f"uid={uid},{PEOPLE_DN}")
        yield server


def ldap_console(slapd: Slapd) -> str:
    return f"""
[console]
auth = "ldap"
[console.ldap]
uri = "{slapd.url}"
starttls = false
base_dn = "{PEOPLE_DN}"
bind_dn = "{SERVICE_DN}"
password_file = "{slapd.password_file}"
helpdesk_group = "{HELPDESK_GROUP}"
admin_group = "{ADMIN_GROUP}"
"""


def test_ldap_bind_and_group_decide(slapd: Slapd, tmp_path: Path) -> None:
    site = console_site(tmp_path, ldap_console(slapd))
    with running_console(site) as server:
        helpdesk = ConsoleClient(server.url)
        assert helpdesk.login("zz0001", "pw-of-zz0001-12345").status_code == 303
        assert "Signed in as zz0001 (helpdesk)" in helpdesk.get("/").text
        admin = ConsoleClient(server.url)
        assert admin.login("zz0002", "pw-of-zz0002-12345").status_code == 303
        assert "Signed in as zz0002 (admin)" in admin.get("/").text
        outsider = ConsoleClient(server.url)  # right password, in no console group
        assert outsider.login("zz0003", "pw-of-zz0003-12345").status_code == 401
        wrong = ConsoleClient(server.url)
        assert wrong.login("zz0001", "not-the-password").status_code == 401
        empty = ConsoleClient(server.url)  # an empty password would bind anonymously
        assert empty.login("zz0001", "").status_code == 401
        star = ConsoleClient(server.url)  # a filter wildcard finds nobody
        assert star.login("zz000*", "pw-of-zz0001-12345").status_code == 401
        assert "mwc_session" not in outsider.cookies


def proxy_console(trusted: str) -> str:
    return f"""
[console]
auth = "proxy"
[console.proxy]
header = "X-Remote-User"
trusted = ["{trusted}"]
admins = ["ada"]
helpdesk = ["hilda"]
"""


def test_proxy_header_from_a_trusted_proxy(tmp_path: Path) -> None:
    site = console_site(tmp_path, proxy_console("127.0.0.1/32"))
    with running_console(site) as server:
        ada = ConsoleClient(server.url, headers={"x-remote-user": "ada"})
        page = ada.get("/")
        assert page.status_code == 200
        assert "Signed in as ada (admin)" in page.text
        assert ada.get("/config").status_code == 200
        hilda = ConsoleClient(server.url, headers={"x-remote-user": "hilda"})
        assert "Signed in as hilda (helpdesk)" in hilda.get("/").text
        stranger = ConsoleClient(server.url, headers={"x-remote-user": "mallory"})
        assert stranger.get("/").status_code == 303
        nobody = ConsoleClient(server.url)
        assert nobody.get("/").status_code == 303
        login = nobody.get("/login")
        assert "single sign-on proxy" in login.text
        assert 'name="password"' not in login.text


def test_proxy_header_from_anyone_else_is_ignored(tmp_path: Path) -> None:
    site = console_site(tmp_path, proxy_console("192.0.2.0/24"))
    with running_console(site) as server:
        forged = ConsoleClient(server.url, headers={"x-remote-user": "ada"})
        r = forged.get("/")
        assert r.status_code == 303
        assert r.headers["location"] == "/login"
