"""Site-file snippets and model objects pointing at the test servers."""

from __future__ import annotations

from typing import Any

from mailwarden.directory.config import LdapConfig, SqlConfig
from tests.fixtures.mariadb import MariaDB
from tests.fixtures.postgres import Postgres
from tests.fixtures.slapd import PEOPLE_DN, SERVICE_DN, Slapd

POSTFIXADMIN_QUERY = (
    "SELECT m.username AS login, m.name AS display_name, (m.active AND a.active) AS enabled "
    "FROM alias a JOIN mailbox m ON m.username = a.goto WHERE a.address = :address"
)


def ldap_config(slapd: Slapd, **overrides: Any) -> LdapConfig:
    values: dict[str, Any] = {
        "backend": "ldap",
        "servers": [slapd.url],
        "starttls": False,
        "bind_dn": SERVICE_DN,
        "password_file": slapd.password_file,
        "base_dn": PEOPLE_DN,
        "attributes": {"login": "uid", "display_name": "cn", "enabled": "mailEnabled"},
        "timeout": 5.0,  # generous: a loaded two-core machine can be slow to answer
        "connect_timeout": 1.0,
    }
    values.update(overrides)
    return LdapConfig.model_validate(values)


def sql_config(pg: Postgres | MariaDB, **overrides: Any) -> SqlConfig:
    values: dict[str, Any] = {
        "backend": "sql",
        "url": pg.url,
        "password_file": pg.password_file,
        "query": POSTFIXADMIN_QUERY,
        "timeout": 10.0,  # generous: the first asyncpg connection is slow on a loaded machine
    }
    values.update(overrides)
    return SqlConfig.model_validate(values)


def site_toml(directory: str, server: str = "") -> str:
    """A one-domain site whose login names come from ``directory`` (TOML lines)."""
    return f"""\
primary_domain = "example.com"

[organisation]
name = "Example University"
short_name = "ExampleUni"

[server]
{server}

[directory]
{directory}

[[services.default.imap]]
host = "imap.example.com"

[[services.default.smtp]]
host = "smtp.example.com"
tls = "starttls"

[domains."example.com"]
login = "directory"
"""


def ldap_toml(slapd: Slapd, **extra: str) -> str:
    lines = [
        'backend = "ldap"',
        f'servers = ["{slapd.url}"]',
        "starttls = false",
        f'bind_dn = "{SERVICE_DN}"',
        f'password_file = "{slapd.password_file}"',
        f'base_dn = "{PEOPLE_DN}"',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines)


def sql_toml(pg: Postgres | MariaDB, **extra: str) -> str:
    lines = [
        'backend = "sql"',
        f'url = "{pg.url}"',
        f'password_file = "{pg.password_file}"',
        f'query = "{POSTFIXADMIN_QUERY}"',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines)
