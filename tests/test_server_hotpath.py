"""The in-process benchmark harnesses run, check their answers and print their figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^(autoconfig|autodiscover|json)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)x", re.M)


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_hotpath_measures_every_endpoint_against_the_do_nothing_app() -> None:
    out = _run("bench.hotpath", "--requests", "50", "--rounds", "2", "--users", "30")
    rows = {name: (float(ours), float(static)) for name, ours, static, _ in ROW.findall(out)}
    assert set(rows) == {"autoconfig", "autodiscover", "json"}
    for ours, static in rows.values():
        assert ours > 0
        assert static > 0


def test_coldpath_answers_every_request_from_slapd() -> None:
    out = _run(
        "bench.coldpath",
        "--users",
        "30",
        "--connections",
        "4",
        "--seconds",
        "0.5",
        "--pool-size",
        "2",
    )
    (row,) = re.findall(r"^\s+2\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+(\d+)$", out, re.M)
    assert int(row[0]) > 0  # requests per second, every answer checked for its login
