"""The benchmark summariser reads wrk's output right (the figures in the README come from it)."""

from __future__ import annotations

import math
from pathlib import Path

from bench.summarize import collect, main, parse_run, ratios, to_ms
from hypothesis import given
from hypothesis import strategies as st

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:58987/mail/config-v1.1.xml
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.80ms    6.36ms 125.65ms   90.28%
    Req/Sec     5.39k     3.08k   11.32k    62.00%
  Latency Distribution
     50%    4.69ms
     75%    8.62ms
     90%   13.03ms
     99%   33.44ms
  107447 requests in 10.03s, 184.24MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  10716.39
Transfer/sec:     18.38MB
server CPU ticks: 1228 at 100 per second
"""


def test_parse_run_reads_every_figure() -> None:
    run = parse_run(WRK_OUTPUT)
    assert run.rps == 10716.39
    assert (run.p50_ms, run.p99_ms) == (4.69, 33.44)
    assert run.requests == 107447
    assert (run.non_2xx, run.socket_errors) == (7, 5)
    assert run.cpu_seconds == 12.28
    assert round(run.cpu_us_per_request) == 114


@given(st.decimals(min_value=0, max_value=10_000, places=2), st.sampled_from(["us", "ms", "s"]))
def test_to_ms_scales_each_unit(value: object, unit: str) -> None:
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    assert math.isclose(to_ms(f"{value}{unit}"), float(str(value)) * factor)


def test_unreadable_latency_is_nan_not_zero() -> None:
    assert math.isnan(to_ms("fast"))
    assert math.isnan(parse_run("nothing here").p99_ms)


def _write(raw: Path, server: str, endpoint: str, rps: float, run: int) -> None:
    text = WRK_OUTPUT.replace("10716.39", str(rps)).replace("  Non-2xx or 3xx responses: 7\n", "")
    (raw / f"{server}__{endpoint}__run{run}.txt").write_text(text)


def test_medians_and_ratios(tmp_path: Path) -> None:
    for run, (ours, peer, ceiling) in enumerate([(900, 40, 3000), (1000, 50, 2000), (5, 60, 1)]):
        _write(tmp_path, "ours", "autoconfig", ours, run)
        _write(tmp_path, "automx2", "autoconfig", peer, run)
        _write(tmp_path, "nginx", "autoconfig", ceiling, run)
    rows = collect(tmp_path)
    assert rows[("ours", "autoconfig")].rps == 900
    text, figures = ratios(rows)
    assert figures["autoconfig"]["ours_over_automx2"] == 900 / 50
    assert figures["autoconfig"]["ours_over_nginx"] == 900 / 2000
    assert "18.0× MISSED" in text
    assert "45% met" in text


def test_error_answers_make_the_summary_fail(tmp_path: Path) -> None:
    (tmp_path / "ours__autoconfig__run1.txt").write_text(WRK_OUTPUT)
    assert main([str(tmp_path), str(tmp_path / "out.json")]) == 1
    assert (tmp_path / "out.json").is_file()
