"""Site file errors point at the file, the line, the key path, the bad value and what is expected.

An operator who mistypes site.toml must be able to fix it from the message alone, so each test
checks the whole location, not just that loading failed. ``check-config`` is driven as a real
subprocess: exit status 0/2, JSON for scripts, and never a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from mailwarden.directory.config import EmbeddedConfig
from mailwarden.errors import ConfigError
from mailwarden.site import Site, load_site, parse_site
from tests.fixtures.paths import EXAMPLES, ROOT

BASE = """\
primary_domain = "example.org"

[organisation]
name = "Example"
short_name = "Ex"

[[services.default.imap]]
host = "imap.example.org"
port = 993
tls = "implicit"

[[services.default.smtp]]
host = "smtp.example.org"
port = 465
tls = "implicit"

[domains."example.org"]
login = "address"
"""
# Line numbers in BASE that the tests below refer to.
IMAP_PORT_LINE = 9
SMTP_HOST_LINE = 13
DOMAIN_LINE = 17


def load_error(text: str, source: str = "site.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_site(text, source=source)
    return info.value.message


def test_base_is_valid() -> None:
    site = parse_site(BASE)
    assert site.primary_domain == "example.org"
    assert site.domain("example.org") is not None


def test_syntax_error_names_file_and_line() -> None:
    text = BASE.replace('short_name = "Ex"', 'short_name = = "Ex"')
    message = load_error(text, source="/etc/mailwarden/site.toml")
    assert message.startswith("/etc/mailwarden/site.toml:5: not valid TOML")
    assert "column" in message


def test_unknown_key_names_line_key_and_value() -> None:
    message = load_error(BASE + 'colour = "red"\n')
    assert message == (
        f'site.toml:{DOMAIN_LINE + 2}: domains."example.org".colour: '
        "unknown key 'colour'; expected one of: aliases, autodiscover, display_name, "
        "display_short_name, documentation_url, login, moved_to, services, unknown_address "
        "(got 'red')"
    )


def test_unknown_top_level_section() -> None:
    message = load_error(BASE + "[sever]\nmax_body_bytes = 1\n")
    assert message.startswith(f"site.toml:{DOMAIN_LINE + 2}: sever: unknown key 'sever'; ")
    assert "expected one of: audit, console, directory, domains, " in message
    assert ", server, services" in message


def test_unknown_key_lists_the_keys_of_the_chosen_backend() -> None:
    message = load_error(BASE + '\n[directory]\npth = "users.sqlite"\n')
    assert message.startswith(f"site.toml:{DOMAIN_LINE + 4}: directory.pth: unknown key 'pth'; ")
    assert "path" in message
    assert "base_dn" not in message  # an LDAP key: not what an embedded directory takes


def test_wrong_type_says_what_is_expected() -> None:
    message = load_error(BASE.replace("port = 993", 'port = "nine-nine-three"'))
    assert message.startswith(f"site.toml:{IMAP_PORT_LINE}: services.default.imap.0.port: ")
    assert "valid integer" in message
    assert "'nine-nine-three'" in message


def test_bad_host_names_host_and_value() -> None:
    message = load_error(BASE.replace('"smtp.example.org"', '"smtp..example.org"'))
    first = message.splitlines()[0]
    assert first.startswith(f"site.toml:{SMTP_HOST_LINE}: services.default.smtp.0.host: ")
    assert "not a valid host name" in first
    assert "'smtp..example.org'" in first
    # the list's own "too short" error is noise once its item is reported
    assert len(message.splitlines()) == 1


def test_bad_port_out_of_range() -> None:
    message = load_error(BASE.replace("port = 993", "port = 70000"))
    assert message == (
        f"site.toml:{IMAP_PORT_LINE}: services.default.imap.0.port: "
        "Input should be less than or equal to 65535 (got 70000)"
    )


@pytest.mark.parametrize(
    ("port", "tls", "expected"),
    [
        ("993", "starttls", "implicit-TLS port"),
        ("143", "implicit", "STARTTLS port"),
    ],
)
def test_tls_port_mismatch_names_the_server(port: str, tls: str, expected: str) -> None:
    text = BASE.replace('port = 993\ntls = "implicit"', f'port = {port}\ntls = "{tls}"')
    message = load_error(text)
    assert message.startswith(f"site.toml:{IMAP_PORT_LINE + 1}: services.default.imap.0.tls: ")
    assert expected in message
    assert f"(got '{tls}')" in message


def test_unknown_service_set() -> None:
    message = load_error(BASE + 'services = "campus"\n')
    assert message.startswith(f'site.toml:{DOMAIN_LINE + 2}: domains."example.org".services: ')
    assert "'campus' is not a defined service set (defined: default)" in message


def test_duplicate_alias() -> None:
    text = BASE + 'aliases = ["example.net"]\n\n[domains."example.net"]\n'
    message = load_error(text)
    assert message.startswith(f'site.toml:{DOMAIN_LINE + 4}: domains."example.net": ')
    assert "served twice" in message


def test_alias_listed_by_two_domains() -> None:
    text = (
        BASE + 'aliases = ["example.net"]\n\n[domains."example.com"]\naliases = ["Example.NET"]\n'
    )
    message = load_error(text)
    assert message.startswith(f'site.toml:{DOMAIN_LINE + 5}: domains."example.com".aliases: ')
    assert "'example.net' is served twice" in message


def test_missing_primary_domain() -> None:
    message = load_error(BASE.replace('primary_domain = "example.org"\n', ""))
    assert message == "site.toml: primary_domain: required key is missing"


def test_missing_smtp_points_at_the_service_set() -> None:
    text = BASE.replace(
        '[[services.default.smtp]]\nhost = "smtp.example.org"\nport = 465\ntls = "implicit"\n', ""
    )
    message = load_error(text)
    assert message == "site.toml:7: services.default.smtp: required key is missing"


def test_service_set_without_incoming_server() -> None:
    text = BASE.replace(
        '[[services.default.imap]]\nhost = "imap.example.org"\nport = 993\ntls = "implicit"\n', ""
    )
    message = load_error(text)
    assert message.startswith("site.toml:8: services.default: ")
    assert "needs at least one imap or pop3 server" in message


def test_bad_domain_name_as_table_key() -> None:
    message = load_error(BASE + '\n[domains."exa mple.org"]\n')
    assert message.startswith(f'site.toml:{DOMAIN_LINE + 3}: domains."exa mple.org": ')
    assert "is not a valid host name" in message
    assert "[key]" not in message


def test_bad_alias_names_its_index() -> None:
    message = load_error(BASE + 'aliases = ["ok.example", "bad..example"]\n')
    assert message.startswith(f'site.toml:{DOMAIN_LINE + 2}: domains."example.org".aliases.1: ')
    assert "(got 'bad..example')" in message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    site_file = tmp_path / "site.toml"
    site_file.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_site(site_file).primary_domain == "example.org"


def test_primary_domain_not_served() -> None:
    message = load_error(BASE.replace('"example.org"\n\n[org', '"example.com"\n\n[org'))
    assert message.startswith("site.toml:1: primary_domain: ")
    assert "is not one of the [domains] (example.org)" in message


def test_several_errors_each_on_its_own_line() -> None:
    text = BASE.replace("port = 993", "port = -1").replace('login = "address"', 'login = "uid"')
    lines = load_error(text).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"site.toml:{IMAP_PORT_LINE}: services.default.imap.0.port")
    assert lines[1].startswith(f'site.toml:{DOMAIN_LINE + 1}: domains."example.org".login')
    assert "'address', 'localpart' or 'directory'" in lines[1]


def test_unicode_domain_key_is_normalised() -> None:
    text = BASE.replace('"example.org"', '"müller.example"')
    site = parse_site(text)
    assert site.primary_domain == "xn--mller-kva.example"
    assert site.domain("xn--mller-kva.example") is not None


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read site file"):
        load_site(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(BASE.replace("Example", "Ex\xe4mple").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8"):
        load_site(latin)


def test_relative_directory_path_resolves_next_to_the_file(tmp_path: Path) -> None:
    site_file = tmp_path / "site.toml"
    site_file.write_text(BASE + '\n[directory]\npath = "db/users.sqlite"\n', encoding="utf-8")
    directory = load_site(site_file).directory
    assert isinstance(directory, EmbeddedConfig)
    assert directory.path == tmp_path / "db" / "users.sqlite"


# -- the command line ----------------------------------------------------------------------


def check_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwarden", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_valid_example() -> None:
    result = check_config(str(EXAMPLES / "site.toml"))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
    assert "example.edu" in result.stdout


def test_check_config_invalid_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text(BASE.replace("port = 993", "port = 70000"), encoding="utf-8")
    result = check_config(str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip() == (
        f"mailwarden: error [CONFIG-INVALID]: {bad}:{IMAP_PORT_LINE}: "
        "services.default.imap.0.port: Input should be less than or equal to 65535 (got 70000)"
    )


def test_check_config_json_valid_and_invalid(tmp_path: Path) -> None:
    good = check_config("--format", "json", str(EXAMPLES / "site.toml"))
    assert good.returncode == 0, good.stderr
    data = json.loads(good.stdout)
    assert data["valid"] is True
    assert data["primary_domain"] == "example.edu"
    assert data["domains"]["example.edu"]["aliases"] == ["uni-example.de", "mail.example.edu"]

    bad = tmp_path / "site.toml"
    bad.write_text(BASE + 'services = "campus"\n', encoding="utf-8")
    result = check_config("--format", "json", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["code"] == "CONFIG-INVALID"
    assert data["errors"][0].startswith(f'{bad}:{DOMAIN_LINE + 2}: domains."example.org".services')


def test_check_config_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = check_config(str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot read site file" in result.stderr


def test_check_config_warns_about_outlook_2007(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        BASE.replace('port = 465\ntls = "implicit"', 'port = 587\ntls = "starttls"'),
        encoding="utf-8",
    )
    result = check_config(str(site))
    assert result.returncode == 0, result.stderr
    assert "Outlook 2007" in result.stdout


# -- the reference stays complete ---------------------------------------------------------------

REFERENCE = ROOT / "docs" / "site-reference.md"


def _keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every key name a site file can contain below ``model`` (the guard has its own docs)."""
    if model in seen:
        return set()
    seen.add(model)
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        if name == "guard":
            continue
        keys.add(name)
        for arg in _flatten(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys |= _keys(arg, seen)
    return keys


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [a for arg in args for a in _flatten(arg)]


def test_reference_documents_every_key() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    missing = sorted(k for k in _keys(Site, set()) if not re.search(rf"[`\[.]{k}[`\]. =]", text))
    assert missing == [], f"keys missing from {REFERENCE}: {missing}"


def test_reference_examples_are_valid() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks
    parse_site(blocks[-1], source="site-reference.md (complete example)")


# -- the loader as a property ------------------------------------------------------------------

_edits = st.lists(
    st.tuples(
        st.integers(0, len(BASE)),
        st.integers(0, 12),
        st.one_of(
            st.text(max_size=12),
            st.sampled_from(['"', "[", "]]", "=", "\n", "port = 0", 'tls = "none"', "#", "."]),
        ),
    ),
    max_size=4,
)


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    return text


@settings(max_examples=250, deadline=None)
@given(st.one_of(st.text(max_size=300), _edits.map(lambda e: _mutate(BASE, e))))
def test_loader_raises_only_config_errors_with_a_location(text: str) -> None:
    try:
        parse_site(text, source="site.toml")
    except ConfigError as exc:
        message = exc.message
    else:
        return
    for line in message.splitlines():
        assert line.startswith("site.toml"), message
        assert re.match(r"site\.toml(:\d+)?: ", line), message


def test_check_config_prints_markup_like_names_verbatim(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(BASE.replace('name = "Example"', 'name = "[/] Example [bold]"'), "utf-8")
    result = check_config(str(site))
    assert result.returncode == 0, result.stderr
    assert "is valid: [/] Example [bold]" in result.stdout


def test_audit_thresholds_in_order() -> None:
    message = load_error(BASE + "[audit]\nwarn_days = 10\ncritical_days = 20\n")
    assert message.startswith(f"site.toml:{DOMAIN_LINE + 4}: audit.critical_days: ")
    assert "below warn_days" in message


def test_audit_ca_file_is_relative_to_the_site_file(tmp_path: Path) -> None:
    site_file = tmp_path / "site.toml"
    site_file.write_text(BASE + '[audit]\nca_file = "internal-ca.pem"\n', encoding="utf-8")
    assert load_site(site_file).audit.ca_file == tmp_path / "internal-ca.pem"
