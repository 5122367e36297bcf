"""Helpers for the lint tests: the real m4/sendmail-cf and postconf, and the CLI in-process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mailwarden.cli import main

CF_M4 = Path("/usr/share/sendmail/cf/m4/cf.m4")


def require(tool: str, package: str) -> str:
    """The tool's path; a missing tool fails the test (``make test`` installs it)."""
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if path is None:
        pytest.fail(f"{tool} is missing: install the Debian package {package} (make debian-test)")
    return path


def m4_cf(mc: Path) -> Path:
    """Generate ``sendmail.cf`` from ``mc`` with the real m4 and Debian's sendmail-cf macros."""
    m4 = require("m4", "m4")
    if not CF_M4.is_file():
        pytest.fail(f"{CF_M4} is missing: install the Debian package sendmail-cf")
    done = subprocess.run(
        [m4, str(CF_M4), str(mc)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr, done.stderr
    cf = mc.with_suffix(".cf")
    cf.write_text(done.stdout, encoding="utf-8")
    return cf


def _postconf(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require("postconf", "postfix")
    return subprocess.run(
        [binary, "-c", str(directory), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def postconf(directory: Path, *args: str) -> str:
    """Run the real ``postconf -c DIR``; the configuration must be valid (exit 0, no warning)."""
    done = _postconf(directory, *args)
    assert done.returncode == 0, f"postconf rejects {directory}: {done.stderr}"
    assert "warning" not in done.stderr, done.stderr
    return done.stdout


def postconf_fatal(directory: Path, *args: str) -> str:
    """The fatal message the real ``postconf -c DIR`` stops with (it must stop)."""
    done = _postconf(directory, *args)
    assert done.returncode != 0, f"postconf accepts {directory}: {done.stdout}"
    return done.stderr


def lint(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """``mailwarden lint … --format json`` in-process: (exit status, parsed report)."""
    capsys.readouterr()
    status = main(["lint", *argv, "--format", "json"])
    out, err = capsys.readouterr()
    assert err == "", err
    return status, json.loads(out)


def codes(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(code, severity, subject) of every finding, in report order."""
    return [(f["code"], f["severity"], f["subject"]) for f in report["findings"]]


def outcome(report: dict[str, Any], subject: str, kind: str = "daemon") -> str:
    found = [
        p["outcome"] for p in report["predictions"] if p["subject"] == subject and p["kind"] == kind
    ]
    assert len(found) == 1, (subject, report["predictions"])
    return str(found[0])
