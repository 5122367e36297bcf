"""Summarise the raw ``wrk --latency`` outputs of ``bench/directory.sh``.

Files are ``RAW/<path>__<server>__run<N>.txt`` with path ``warm`` or ``cold`` and server
``ours`` or ``automx2``. Per path and server the median of the runs is reported with the runs
themselves (the machine is shared), then our ratio to automx2 against the targets: warm ≥ 20×,
cold ≥ 10×, our cold p99 ≤ 20 ms. Exit status 1 when a run of ours saw non-2xx answers or
socket errors (such a run measured failures, not lookups); the peer's are reported.

usage: python -m bench.directory_summary RAW_DIR [RESULTS_JSON]
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

TARGETS = {"warm": 20.0, "cold": 10.0}
TARGET_COLD_P99_MS = 20.0
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(match.group(1)) * _UNIT_MS[match.group(2)] if match else float("nan")


def parse(text: str) -> dict[str, float]:
    """Requests/s, p50/p99 (ms), errors of one wrk run."""
    result: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    result["rps"] = float(rps.group(1)) if rps else float("nan")
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        result[f"p{pct}"] = _ms(found.group(1)) if found else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(
        r"Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    result["errors"] = float(
        (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(x) for x in sock.groups()) if sock else 0)
    )
    return result


def main(raw: Path, out: Path | None) -> int:
    runs: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for file in sorted(raw.glob("*__*__run*.txt")):
        path, server, _ = file.stem.split("__")
        runs[(path, server)].append(parse(file.read_text(errors="replace")))
    summary: dict[str, dict[str, dict[str, object]]] = {}
    errors: dict[tuple[str, str], float] = {}
    print(f"{'path':6} {'server':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  runs (req/s)")
    for (path, server), values in sorted(runs.items()):
        median = {k: statistics.median(v[k] for v in values) for k in ("rps", "p50", "p99")}
        errors[(path, server)] = sum(v["errors"] for v in values)
        summary.setdefault(path, {})[server] = {
            **median,
            "errors": errors[(path, server)],
            "runs": [v["rps"] for v in values],
        }
        per_run = " / ".join(f"{v['rps']:.0f}" for v in values)
        print(
            f"{path:6} {server:8} {median['rps']:9.1f} {median['p50']:8.2f} "
            f"{median['p99']:8.2f}  {per_run}"
        )
    print()
    status = 0
    for path, target in TARGETS.items():
        entry = summary.get(path, {})
        ours, peer = entry.get("ours"), entry.get("automx2")
        if not ours or not peer:
            continue
        ratio = float(ours["rps"]) / float(peer["rps"])  # type: ignore[arg-type]
        verdict = "met" if ratio >= target else "NOT met"
        print(f"{path}: ours / automx2 = {ratio:.1f}x (target >= {target:.0f}x: {verdict})")
        entry["ratio"] = {"value": ratio, "target": target}
    cold = summary.get("cold", {}).get("ours")
    if cold:
        p99 = float(cold["p99"])  # type: ignore[arg-type]
        verdict = "met" if p99 <= TARGET_COLD_P99_MS else "NOT met"
        print(f"cold p99 (ours): {p99:.2f} ms (target <= {TARGET_COLD_P99_MS:.0f} ms: {verdict})")
    # automx2's cold runs are copies of its warm runs: count its errors once.
    peer_errors = errors.get(("warm", "automx2"), 0.0)
    if peer_errors:
        print(
            f"automx2: {peer_errors:.0f} non-2xx answers or socket errors/timeouts (wrk --timeout "
            "5s); its req/s counts only the requests it completed"
        )
    if any(count for (_, server), count in errors.items() if server == "ours"):
        print("ours: some runs saw non-2xx answers or socket errors: see the raw output")
        status = 1
    if out is not None:
        out.write_text(json.dumps(summary, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))
