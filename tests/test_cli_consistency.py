"""The command line behaves the same in every command: ``--config`` anywhere, help with defaults
on every action and option, one exit-status table, tables that fit 80 columns, a busy port
named in one line, and an example site on which the guard commands work."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailwarden.cli import build_parser, main
from mailwarden.cli.common import Exit, walk
from tests.fixtures.paths import EXAMPLES, ROOT

ROOT_PARSER = build_parser(["--help"])  # every command loaded


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [sys.executable, "-m", "mailwarden", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
        cwd=cwd,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _leaves() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(argv words, parser) of every parser that runs something."""
    found = []
    for parser in walk(ROOT_PARSER):
        if parser.get_default("func") is not None:
            found.append((parser.prog.split()[1:], parser))
    return found


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for what the leaf requires (positionals, required options)."""
    words: list[str] = []
    for a in parser._actions:
        if a.option_strings and a.required:
            words += [a.option_strings[0], "x"]
        elif not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            words += [] if a.nargs in ("?", "*") else ["x"]
    return words


def test_every_action_and_option_has_help_with_its_default() -> None:
    missing = []
    for parser in walk(ROOT_PARSER):
        formatter = parser._get_formatter()
        for action in parser._actions:
            where = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if isinstance(action, argparse._SubParsersAction):
                helped = {c.dest for c in action._choices_actions if c.help}
                missing += [f"{parser.prog} {n}" for n in action.choices if n not in helped]
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(where)
                continue
            default = action.default
            shows = "default" in formatter._expand_help(action).lower()
            worth_saying = default not in (None, False, argparse.SUPPRESS) and default != []
            if action.option_strings and worth_saying and not shows:
                missing.append(f"{where} (default {default!r} not shown)")
    assert missing == []


def test_the_walk_sees_every_command_and_action() -> None:
    """The help test above proves nothing if the walk missed the nested actions."""
    words = {" ".join(argv) for argv, _ in _leaves()}
    for expected in ("users import", "guard history", "dns check", "lint sendmail", "serve"):
        assert expected in words


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["guard", "history", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "newest N decisions (at most 1000) (default: 50)" in text
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: info)" in text


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_accepted_before_or_after_the_action_everywhere(where: str) -> None:
    checked = 0
    for argv, leaf in _leaves():
        if not any("--config" in a.option_strings for a in leaf._actions):
            continue
        words = [*argv, *_positionals(leaf)]
        if where == "before" and len(argv) > 1:
            line = [argv[0], "-c", "S.toml", *words[1:]]
        elif where == "before":
            continue  # no action: "before" and "after" are the same place
        else:
            line = [*words, "--config", "S.toml"]
        args = build_parser(line).parse_args(line)
        assert args.config == "S.toml", line
        checked += 1
    assert checked >= 15


def test_config_after_the_action_wins_and_before_is_kept() -> None:
    line = ["users", "-c", "A.toml", "list", "-c", "B.toml"]
    assert build_parser(line).parse_args(line).config == "B.toml"
    line = ["guard", "--config", "A.toml", "history", "jdoe"]
    assert build_parser(line).parse_args(line).config == "A.toml"


def test_missing_config_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for line in (
        ["users", "list"],
        ["guard", "status"],
        ["audit"],
        ["directory", "check", "a@b.c"],
    ):
        assert main(line) == Exit.ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "--config FILE is required (before or after the action" in err


def test_the_issue_command_lines_work(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    shutil.copy(EXAMPLES / "site.toml", site)
    (tmp_path / "users.csv").write_text("address,login\na@example.edu,a\n", encoding="utf-8")
    done = run_cli("users", "import", "users.csv", "--config", "site.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = run_cli("users", "list", "--config", str(site))
    assert listed.returncode == 0, listed.stderr
    assert "a@example.edu" in listed.stdout
    for line in (["check-config", "--config", str(site)], ["check-config", str(site)]):
        checked = run_cli(*line)
        assert checked.returncode == 0, checked.stderr
        assert "is valid" in checked.stdout
    both = run_cli("check-config", str(site), "--config", str(EXAMPLES / "users.csv"))
    assert both.returncode == 2
    assert "two site files given" in both.stderr


def test_outlook_2007_is_a_one_line_note() -> None:
    checked = run_cli("check-config", str(EXAMPLES / "site.toml"))
    assert checked.returncode == 0
    assert "warning" not in checked.stdout + checked.stderr
    notes = [line for line in checked.stdout.splitlines() if "Outlook 2007" in line]
    assert len(notes) == 1
    assert notes[0].startswith("note: ")


def test_tables_fit_80_columns_and_never_cut_a_name(tmp_path: Path) -> None:
    long = "a-rather-long-local-part@faculty-of-mathematics-and-natural-sciences.example.edu"
    text = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    text = text.replace('path = "../var/demo-users.sqlite"', 'path = "users.sqlite"')
    domain = long.split("@")[1]
    text += f'\n[domains."{domain}"]\nservices = "campus"\n'
    site = tmp_path / "site.toml"
    site.write_text(text, encoding="utf-8")
    (tmp_path / "u.csv").write_text(
        f"address,login,display_name,aliases\n{long},mathuser,Someone With A Name,"
        f"alias-number-one@{domain}\n",
        encoding="utf-8",
    )
    assert run_cli("users", "import", str(tmp_path / "u.csv"), "-c", str(site)).returncode == 0
    for line in (["users", "list", "-c", str(site)], ["check-config", str(site)]):
        out = run_cli(*line).stdout
        table_lines = [x for x in out.splitlines() if x[:1] in "┏┃┡│└"]
        assert table_lines
        assert all(len(x) <= 80 for x in table_lines), out
        assert "…" not in out
        # Folded, not cut: the cells of the first column, read top to bottom, hold the name.
        first = "".join(x.split("│")[1].strip() for x in table_lines if x.startswith("│"))
        assert (long if line[0] == "users" else domain) in first


def _busy_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_busy_port_is_listen_failed_exit_2(workers: str) -> None:
    holder, port = _busy_port()
    with holder:
        done = run_cli(
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            workers,
            "--config",
            str(EXAMPLES / "site.toml"),
        )
    assert done.returncode == 2
    assert done.stderr == (
        f"mailwarden: error [LISTEN-FAILED]: 127.0.0.1:{port} is already in use\n"
    )


@pytest.mark.slow  # starts mailwarden serve
def test_serve_binds_then_serves(tmp_path: Path) -> None:
    """The socket bound before uvicorn is the one it serves on (healthz answers)."""
    import time
    import urllib.request

    holder, port = _busy_port()
    holder.close()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailwarden",
            "serve",
            "-c",
            str(EXAMPLES / "site.toml"),
            *["--listen", f"127.0.0.1:{port}", "--workers", "2"],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.2)
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_guard_commands_work_on_the_example_site(tmp_path: Path) -> None:
    """The README's guard lines, on a copy of examples/ (its state goes to ../var/)."""
    examples = tmp_path / "examples"
    examples.mkdir()
    site = examples / "site.toml"
    shutil.copy(EXAMPLES / "site.toml", site)
    status = run_cli("guard", "status", "-c", str(site))
    assert status.returncode == 0, status.stderr
    lock = run_cli("guard", "lock", "jdoe42", "--reason", "phished, ticket 123", "-c", str(site))
    assert lock.returncode == 0, lock.stderr
    assert run_cli("guard", "-c", str(site), "status").returncode == 1  # locked: monitoring alerts
    history = run_cli("guard", "history", "jdoe42", "--config", str(site))
    assert history.returncode == 0, history.stderr
    assert "phished, ticket 123" in " ".join(history.stdout.split())
    assert run_cli("guard", "unlock", "jdoe42", "-c", str(site)).returncode == 0
    assert run_cli("guard", "status", "-c", str(site)).returncode == 0
    assert (tmp_path / "var" / "guard-state.sqlite").is_file()


def test_readme_documents_one_exit_status_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Exit status") :]
    rows = re.findall(r"^\| `(\d)` \|", section, re.MULTILINE)
    assert rows[:4] == [str(int(s)) for s in Exit]
