"""``mailwarden lint`` as operators run it: help, terminal output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.cli import main
from mailwarden.lint.addresses import Family
from mailwarden.lint.system import SystemResolver, local_addresses, read_bindv6only

SEED_MC = """\
OSTYPE(`linux')dnl
DAEMON_OPTIONS(`Name=MTA-v4,Family=inet,A=smtp-out.rrz.uni-koeln.de,M=fh')
DAEMON_OPTIONS(`Name=MTA-v6,Family=inet6,A=smtp-out.rrz.uni-koeln.de,M=fh')
DAEMON_OPTIONS(`Port=smtp,Addr=127.0.0.1, Name=MTA')
CLIENT_OPTIONS(`Name=MSA-v4,Family=inet,A=smtp-out.rrz.uni-koeln.de,M=h')
CLIENT_OPTIONS(`Name=MSA-v6,Family=inet6,A=smtp-out.rrz.uni-koeln.de,M=h')
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mailwarden", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def help_text(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["lint"], ["lint", "sendmail"], ["lint", "postfix"]):
        assert "  mailwarden lint " in help_text(args, capsys)
    sendmail = help_text(["lint", "sendmail"], capsys)
    for option in ("--hosts", "--resolve", "--bindv6only", "--sendmail-version", "--format"):
        assert option in sendmail
    assert "--local-address" in help_text(["lint", "postfix"], capsys)


def test_terminal_report_for_the_seed(tmp_path: Path) -> None:
    mc = tmp_path / "sendmail.mc"
    mc.write_text(SEED_MC, encoding="utf-8")
    hosts = tmp_path / "hosts"
    hosts.write_text("134.95.1.25 smtp-out.rrz.uni-koeln.de\n", encoding="utf-8")
    done = run("lint", "sendmail", str(mc), "--hosts", str(hosts))
    assert done.returncode == 2, done.stderr
    out = done.stdout
    assert "net.ipv6.bindv6only=" in out
    assert "read from /proc/sys/net/ipv6/bindv6only" in out
    assert "fatal at start-up" in out
    assert f"FATAL S3 daemon MTA-v6  {mc}:3" in out
    assert "DAEMON_OPTIONS(`Name=MTA-v6,Family=inet6,A=IPv6:" in out
    assert "2 fatal" in out
    assert "Traceback" not in done.stderr


def test_json_report_and_clean_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mc = tmp_path / "ok.mc"
    mc.write_text("DAEMON_OPTIONS(`Port=smtp, Addr=192.0.2.25, Name=MTA')\n", encoding="utf-8")
    status = main(["lint", "sendmail", str(mc), "--bindv6only", "1", "--format", "json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exit_status"] == 0
    assert report["findings"] == []
    assert [p["kind"] for p in report["predictions"]] == ["mta", "daemon", "daemon"]
    assert report["predictions"][1]["detail"] == "listens on 192.0.2.25:25"
    assert "net.ipv6.bindv6only=1 (from --bindv6only)" in report["notes"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lint", "sendmail", "{dir}/missing.mc"], "{dir}/missing.mc: cannot read"),
        (["lint", "sendmail", "{dir}/bad.mc"], "{dir}/bad.mc:2: unbalanced m4 quotes"),
        (["lint", "sendmail", "{dir}/bad.cf"], "{dir}/bad.cf:1: DaemonPortOptions: unknown key"),
        (["lint", "sendmail", "{dir}/ok.mc", "--resolve", "x"], "--resolve: expected NAME="),
        (["lint", "sendmail", "{dir}/ok.mc", "--sendmail-version", "8"], "--sendmail-version"),
        (["lint", "sendmail", "{dir}/ok.mc", "--hosts", "{dir}/bad.mc"], "{dir}/bad.mc:1: "),
        (["lint", "postfix", "{dir}/nowhere"], "{dir}/nowhere: not a directory"),
        (["lint", "postfix", "{dir}"], "{dir}/main.cf:1: missing '='"),
    ],
)
def test_bad_input_is_one_line_with_file_and_line(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ok.mc").write_text("DAEMON_OPTIONS(`Name=MTA')\n", encoding="utf-8")
    (tmp_path / "bad.mc").write_text("dnl\nDAEMON_OPTIONS(`Name=MTA)\n", encoding="utf-8")
    (tmp_path / "bad.cf").write_text("O DaemonPortOptions=Hostname=x\n", encoding="utf-8")
    (tmp_path / "main.cf").write_text("inet_interfaces all\n", encoding="utf-8")
    (tmp_path / "master.cf").write_text("", encoding="utf-8")
    status = main([a.format(dir=tmp_path) for a in args])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mailwarden: error [LINT-INPUT]: ")
    assert message.format(dir=tmp_path) in lines[0]


def test_system_edge_reads_values(tmp_path: Path) -> None:
    sysctl = tmp_path / "bindv6only"
    sysctl.write_text("1\n", encoding="ascii")
    assert read_bindv6only(sysctl) is True
    assert read_bindv6only(tmp_path / "absent") is None
    if_inet6 = tmp_path / "if_inet6"
    if_inet6.write_text(
        "20010db8000000000000000000000025 02 40 00 80     eth0\n"
        "00000000000000000000000000000001 01 80 10 80       lo\n",
        encoding="ascii",
    )
    trie = tmp_path / "fib_trie"
    trie.write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.0.2.25\n        /32 host LOCAL\n"
        "     |-- 192.0.2.255\n        /32 link BROADCAST\n",
        encoding="ascii",
    )
    assert local_addresses(if_inet6, trie) == {"2001:db8::25", "::1", "192.0.2.25"}
    # Literals need no DNS: the system resolver answers them per family, as sendmail asks.
    resolver = SystemResolver()
    assert resolver.lookup("127.0.0.1", Family.INET) == ("127.0.0.1",)
    assert resolver.lookup("127.0.0.1", Family.INET6) == ()


# -- input that is not a sendmail configuration ---------------------------------------------------

POSTFIX_MAIN = """\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
myhostname = mx.example.org
inet_interfaces = all
inet_protocols = all
"""
POSTFIX_MASTER = """\
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
"""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.mc", b"", "empty (nothing but blank lines and comments)"),
        ("comments.cf", b"# nothing here\n\n#\n", "empty (nothing but blank lines and comments)"),
        ("sendmail.cf", bytes(range(256)) * 8, "binary file, not a sendmail .mc or .cf"),
        ("sendmail.mc", b"\x1f\x8b\x08\x00" + b"\x00" * 64, "binary file"),
        ("main.cf", POSTFIX_MAIN.encode(), "looks like a Postfix main.cf"),
        ("master.cf", POSTFIX_MASTER.encode(), "looks like a Postfix master.cf"),
        ("notes.mc", b"remember to restart the MTA\n", "not a sendmail .mc or .cf: no m4"),
    ],
)
def test_input_that_is_not_sendmail_is_refused_with_exit_2(
    tmp_path: Path, name: str, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "✓ no findings" on cf.m4's defaults: a job pointed at the wrong file must fail."""
    path = tmp_path / name
    path.write_bytes(content)
    status = main(["lint", "sendmail", str(path), "--bindv6only", "0"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.startswith(f"mailwarden: error [LINT-INPUT]: {path}: {message}"), err
    assert len(err.strip().splitlines()) == 1


def test_minimal_real_files_are_still_linted(tmp_path: Path) -> None:
    """The sniff lets through the smallest files of each kind an admin really has."""
    from mailwarden.lint.sniff import refuse_foreign

    for text in (
        "OSTYPE(`linux')dnl\n",
        "dnl only a comment for now\n",
        "MAILER(smtp)\n",
        "V10/Berkeley\n",
        "O DaemonPortOptions=Port=smtp,Name=MTA\n",
        "# sendmail.cf\nSlocal_check_mail\nR$*\t$: $1\n",
    ):
        refuse_foreign(text, "x")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_the_sniff_raises_only_lint_input_errors(text: str) -> None:
    from mailwarden.lint.errors import LintInputError
    from mailwarden.lint.sniff import refuse_foreign

    message = ""
    try:
        refuse_foreign(text, "f.cf")
    except LintInputError as exc:
        message = exc.message
    assert not message or message.startswith("f.cf: ")
