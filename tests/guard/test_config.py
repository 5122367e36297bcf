"""The [guard] section through the real site loader and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailwarden.errors import ConfigError
from mailwarden.site.load import parse_site
from tests.fixtures.guard_server import write_site
from tests.fixtures.paths import example_site_text

BASE = example_site_text(guard=False)


def test_guard_section_is_optional_and_validated() -> None:
    assert parse_site(BASE).guard is None
    site = parse_site(BASE + '\n[guard]\nstore = "memory"\n[guard.members]\nbulk = ["news"]\n')
    assert site.guard is not None
    assert site.guard.class_of("news") == "bulk"
    assert site.guard.class_of("anyone") == "default"


def test_guard_errors_name_the_line_and_key() -> None:
    text = BASE + '\n[guard]\nstore = "memory"\n\n[guard.ladder]\nthrottle = 5\nhold = 3\n'
    with pytest.raises(ConfigError) as info:
        parse_site(text, source="site.toml")
    message = info.value.message
    assert "guard.ladder" in message
    assert "throttle <= hold <= lock" in message
    ladder_line = len(BASE.splitlines()) + 5  # the [guard.ladder] header
    assert message.startswith(f"site.toml:{ladder_line}: ")
    with pytest.raises(ConfigError, match=r"guard.members.vip: no such class"):
        parse_site(BASE + '\n[guard]\n[guard.members]\nvip = ["x"]\n')
    with pytest.raises(ConfigError, match="command"):
        parse_site(BASE + '\n[guard]\n[guard.lock]\nmethod = "command"\n')
    text = BASE + '\n[guard]\nstore = "redis"\nredis_url = "http://redis.example:6379"\n'
    with pytest.raises(ConfigError) as info:
        parse_site(text, source="site.toml")
    message = info.value.message
    assert message.startswith(f"site.toml:{len(BASE.splitlines()) + 4}: ")
    assert "guard.redis_url" in message
    assert "rediss://" in message  # what is expected
    for good in ("rediss://r.example:6380/1?ssl_ca_certs=/etc/ca.pem", "unix:///run/r.sock?db=2"):
        site = parse_site(BASE + f'\n[guard]\nstore = "redis"\nredis_url = "{good}"\n')
        assert site.guard is not None
        assert site.guard.redis_url == good


def test_cli_without_guard_section_says_what_to_do(tmp_path: Path) -> None:
    site = write_site(tmp_path, "")
    out = subprocess.run(
        [sys.executable, "-m", "mailwarden", "guard", "--config", str(site), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "no [guard] section" in out.stderr
    assert "Traceback" not in out.stderr
    (tmp_path / "m").mkdir()
    memory = write_site(tmp_path / "m", '[guard]\nstore = "memory"\n')
    out = subprocess.run(
        [sys.executable, "-m", "mailwarden", "guard", "--config", str(memory), "locked"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "keeps no state" in out.stderr
