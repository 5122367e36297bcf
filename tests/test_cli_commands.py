"""The command line loads only the command being run, and still lists every command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailwarden.cli import COMMANDS, build_parser


def test_every_command_is_listed_in_the_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["--help"]).parse_args(["--help"])
    out = capsys.readouterr().out
    for word in COMMANDS:
        assert word in out


@pytest.mark.parametrize(
    ("argv", "unwanted"),
    [
        (["probe", "a@example.org"], "sqlalchemy"),
        (["lint", "sendmail", "x.mc"], "cryptography.x509"),
        (["dns", "records"], "mailwarden.server.app"),
    ],
)
def test_a_command_loads_only_its_own_module(argv: list[str], unwanted: str) -> None:
    code = (
        "import sys; from mailwarden.cli import build_parser; "
        f"build_parser({argv!r}); print({unwanted!r} in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", result.stderr


def test_a_parser_built_for_one_command_still_takes_config_after_the_action() -> None:
    """Only the command's module is loaded, and the shared --config still reaches its actions."""
    for argv in (
        ["users", "list", "--config", "s.toml"],
        ["guard", "history", "jdoe", "-c", "s.toml"],
        ["dns", "records", "-c", "s.toml"],
        ["check-config", "--config", "s.toml"],
        ["reputation", "-c", "s.toml", "scan", "mail.log"],
    ):
        assert build_parser(argv).parse_args(argv).config == "s.toml"
