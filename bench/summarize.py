"""Summarise the raw ``wrk --latency`` outputs of ``bench/autoconfig.sh``.

Each file ``RAW/<server>__<endpoint>__run<N>.txt`` is one wrk run. Per server and endpoint the
median of the runs is reported (the machine is shared, so single runs are noisy), with the
spread of the runs so a reader can see how noisy it was, then our ratios to the peers against
the targets. Exit status 1 when any run saw non-2xx answers: such a run measured errors, not
the endpoint.

usage: python -m bench.summarize RAW_DIR [RESULTS_JSON]
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

OURS = "ours"
PEER = "automx2"
CEILING = "nginx"
SERVER_ORDER = (OURS, PEER, CEILING, "uvicorn-static")
ENDPOINT_ORDER = ("autoconfig", "autodiscover")

TARGET_VS_PEER = 20.0
TARGET_VS_CEILING = 0.30
TARGET_P99_MS = 10.0

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_NAME = re.compile(r"^(?P<server>[\w-]+)__(?P<endpoint>[\w-]+)__run(?P<run>\d+)$")


@dataclass(frozen=True, slots=True)
class Run:
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_seconds: float
    """CPU time (user + system) the server's processes used during the run."""

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else math.nan


@dataclass(frozen=True, slots=True)
class Row:
    """The median of several runs of one server on one endpoint."""

    server: str
    endpoint: str
    runs: tuple[Run, ...]

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def cpu_us_per_request(self) -> float:
        return statistics.median(r.cpu_us_per_request for r in self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median of req/s: how much the runs disagreed."""
        values = [r.rps for r in self.runs]
        median = statistics.median(values)
        return (max(values) - min(values)) / median if median else math.nan

    @property
    def non_2xx(self) -> int:
        return sum(r.non_2xx for r in self.runs)

    @property
    def socket_errors(self) -> int:
        return sum(r.socket_errors for r in self.runs)


def to_ms(value: str) -> float:
    """wrk's latency notation (``812.00us``, ``1.25ms``, ``2.01s``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    return float(match.group(1)) * _UNIT_MS[match.group(2)] if match else math.nan


def parse_run(text: str) -> Run:
    """One ``wrk --latency`` output."""

    def number(pattern: str) -> str | None:
        match = re.search(pattern, text, re.MULTILINE)
        return match.group(1) if match else None

    def latency(pct: str) -> float:
        value = number(rf"^\s+{pct}%\s+(\S+)")
        return to_ms(value) if value else math.nan

    ticks = re.search(r"server CPU ticks: (\d+) at (\d+) per second", text)
    errors = re.search(
        r"Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return Run(
        rps=float(number(r"Requests/sec:\s+([\d.]+)") or "nan"),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(number(r"(\d+) requests in") or 0),
        non_2xx=int(number(r"Non-2xx or 3xx responses:\s+(\d+)") or 0),
        socket_errors=sum(int(x) for x in errors.groups()) if errors else 0,
        cpu_seconds=int(ticks.group(1)) / int(ticks.group(2)) if ticks else math.nan,
    )


def collect(raw: Path) -> dict[tuple[str, str], Row]:
    runs: dict[tuple[str, str], list[Run]] = {}
    for path in sorted(raw.glob("*__*__run*.txt")):
        match = _NAME.match(path.stem)
        if match is None:
            continue
        key = (match["server"], match["endpoint"])
        runs.setdefault(key, []).append(parse_run(path.read_text(errors="replace")))
    return {key: Row(key[0], key[1], tuple(values)) for key, values in runs.items()}


def _order(key: tuple[str, str]) -> tuple[int, int, str, str]:
    server, endpoint = key
    s = SERVER_ORDER.index(server) if server in SERVER_ORDER else len(SERVER_ORDER)
    e = ENDPOINT_ORDER.index(endpoint) if endpoint in ENDPOINT_ORDER else len(ENDPOINT_ORDER)
    return (e, s, endpoint, server)


def table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, so the output can be pasted into the README as it is."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(head), rule, *(line(r) for r in rows)])


def measurements(rows: dict[tuple[str, str], Row]) -> str:
    head = ["endpoint", "server", "req/s", "p50 ms", "p99 ms", "req/s per run", "spread"]
    head += ["server CPU µs/req", "non-2xx", "socket err"]
    body = []
    for key in sorted(rows, key=_order):
        row = rows[key]
        body.append(
            [
                row.endpoint,
                row.server,
                f"{row.rps:,.0f}",
                f"{row.p50_ms:.2f}",
                f"{row.p99_ms:.2f}",
                " / ".join(f"{r.rps:,.0f}" for r in row.runs),
                f"{row.spread:.0%}",
                f"{row.cpu_us_per_request:,.0f}",
                str(row.non_2xx),
                str(row.socket_errors),
            ]
        )
    return table(head, body)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratios(rows: dict[tuple[str, str], Row]) -> tuple[str, dict[str, dict[str, float]]]:
    """Our figures against the targets, per endpoint (a missing peer shows as n/a)."""
    head = [
        "endpoint",
        f"ours/{PEER} (≥{TARGET_VS_PEER:.0f}×)",
        f"ours/{CEILING} (≥{TARGET_VS_CEILING:.0%})",
        f"ours p99 (≤{TARGET_P99_MS:.0f} ms)",
    ]
    body = []
    figures: dict[str, dict[str, float]] = {}
    for endpoint in ENDPOINT_ORDER:
        ours = rows.get((OURS, endpoint))
        if ours is None:
            continue
        cells = [endpoint]
        figures[endpoint] = {"p99_ms": ours.p99_ms}
        for name, target, fmt in (
            (PEER, TARGET_VS_PEER, "{:.1f}×"),
            (CEILING, TARGET_VS_CEILING, "{:.0%}"),
        ):
            peer = rows.get((name, endpoint))
            if peer is None or not peer.rps:
                cells.append("n/a")
                continue
            ratio = ours.rps / peer.rps
            figures[endpoint][f"ours_over_{name}"] = ratio
            cells.append(f"{fmt.format(ratio)} {_verdict(ratio >= target)}")
        cells.append(f"{ours.p99_ms:.2f} ms {_verdict(ours.p99_ms <= TARGET_P99_MS)}")
        body.append(cells)
    return (table(head, body) if body else "(no runs of ours)"), figures


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    rows = collect(Path(argv[0]))
    if not rows:
        print(f"{argv[0]}: no wrk outputs found", file=sys.stderr)
        return 1
    print(measurements(rows))
    print()
    text, figures = ratios(rows)
    print(text)
    if len(argv) == 2:
        document = {
            "rows": [
                {
                    "server": r.server,
                    "endpoint": r.endpoint,
                    "rps": r.rps,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "spread": r.spread,
                    "cpu_us_per_request": r.cpu_us_per_request,
                    "runs": [asdict(run) for run in r.runs],
                }
                for r in (rows[k] for k in sorted(rows, key=_order))
            ],
            "ratios": figures,
        }
        Path(argv[1]).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    failed = [f"{r.server}/{r.endpoint}" for r in rows.values() if r.non_2xx]
    if failed:
        print(f"\nnon-2xx answers in {', '.join(failed)}: those figures are not valid")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
