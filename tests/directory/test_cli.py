"""``mailwarden directory check`` against the real slapd and PostgreSQL, as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.directory.helpers import ldap_toml, site_toml, sql_toml
from tests.fixtures.net import free_port
from tests.fixtures.postgres import Postgres
from tests.fixtures.slapd import Slapd


def _run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwarden", "directory", "-c", str(site), "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _site(tmp_path: Path, directory: str) -> Path:
    site = tmp_path / "site.toml"
    site.write_text(site_toml(directory))
    return site


def test_known_address_json(slapd: Slapd, tmp_path: Path) -> None:
    result = _run(_site(tmp_path, ldap_toml(slapd)), "a.example@example.com", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["account"]["login"] == "ab1234"
    assert data["server"] == slapd.url
    assert data["query"] == (
        "(|(mail=a.example@example.com)(mailAlternateAddress=a.example@example.com))"
    )
    assert data["seconds"] < 5


def test_unknown_address_text(slapd: Slapd, tmp_path: Path) -> None:
    result = _run(_site(tmp_path, ldap_toml(slapd)), "shared@example.com")
    assert result.returncode == 1
    assert "more than one entry matches" in result.stdout


def test_bad_credentials_one_line(slapd: Slapd, tmp_path: Path) -> None:
    secret = tmp_path / "wrong.secret"
    secret.write_text("nope\n")
    toml = ldap_toml(slapd).replace(str(slapd.password_file), str(secret))
    result = _run(_site(tmp_path, toml), "alice@example.com")
    assert result.returncode == 2
    assert "[DIRECTORY-AUTH]" in result.stderr
    assert "invalid credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert "nope" not in result.stderr


def test_unreachable_one_line(slapd: Slapd, tmp_path: Path) -> None:
    toml = ldap_toml(slapd).replace(slapd.url, f"ldap://127.0.0.1:{free_port()}")
    result = _run(_site(tmp_path, toml), "alice@example.com")
    assert result.returncode == 2
    assert "[DIRECTORY-UNREACHABLE]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tls_failure_one_line(slapd: Slapd, tmp_path: Path) -> None:
    toml = ldap_toml(slapd).replace(slapd.url, slapd.ldaps_url)
    toml += f'\nca_file = "{slapd.tls.other_ca_file}"'
    result = _run(_site(tmp_path, toml), "alice@example.com")
    assert result.returncode == 2
    assert "[DIRECTORY-TLS]" in result.stderr


def test_bad_filter_is_a_config_error(slapd: Slapd, tmp_path: Path) -> None:
    toml = ldap_toml(slapd) + '\nfilter = "(mail={address}"'
    result = _run(_site(tmp_path, toml), "alice@example.com")
    assert result.returncode == 2
    assert "[CONFIG-INVALID]" in result.stderr
    assert "directory.filter" in result.stderr
    assert "unmatched" in result.stderr


def test_clear_password_refused_without_opt_in(slapd: Slapd, tmp_path: Path) -> None:
    toml = ldap_toml(slapd).replace(
        f'password_file = "{slapd.password_file}"', 'password = "service-secret"'
    )
    result = _run(_site(tmp_path, toml), "alice@example.com")
    assert result.returncode == 2
    assert "allow_password_in_site_file" in result.stderr
    assert "service-secret" not in result.stderr


def test_sql_check(postgres: Postgres, tmp_path: Path) -> None:
    result = _run(_site(tmp_path, sql_toml(postgres)), "alice@example.com", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["account"]["display_name"] == "Alice Example"
    assert "pg-test-secret" not in result.stdout
