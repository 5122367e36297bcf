"""``mailwarden audit`` on 100 endpoints against sslyze ``--certinfo`` (and testssl.sh), one run.

The lab (``bench/audit_lab.py``) is started once: 80 HTTPS endpoints on one nginx, 10 IMAP
STARTTLS on one Dovecot, 10 SMTP STARTTLS on one Postfix, each with its own name, address and
certificate of a known class, names in a Knot DNS, revocation from a real OCSP responder and CRL.
Then, after one untimed warm-up each, ``RUNS`` rounds alternate (which tool goes first alternates
too, so a slow drift of a shared machine hits both):

- ours: ``mailwarden audit --config SITE --resolver KNOT --format json --output FILE``, every
  check on (TLS 1.0/1.1 probes and revocation look-ups included), the whole process timed;
- sslyze: ``sslyze --certinfo --certinfo_ca_file ROOT`` over the same endpoints, given as
  ``name:port{address}``. One sslyze run takes one STARTTLS protocol, so there are three runs
  (HTTPS, ``--starttls imap``, ``--starttls smtp``), timed twice per round: started together
  (wall time until the last one ends: the most favourable way to run sslyze here, and the
  figure the target is judged on) and one after another, as a script would run them.

Every run's verdicts are checked (``bench/audit_verdicts.py``): ours must be right on all 100.
``--with-testssl`` adds one timed testssl.sh mass run in parallel mode (about ten minutes).

usage: python -m bench.audit_bench [--sslyze PATH] [--runs N] [--with-testssl --testssl PATH]
                                   [--out DIR] [--ocsp presigned|live] [--hold SECONDS]
(``bash bench/audit.sh`` installs the tools first; ``--hold`` only keeps the lab up.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import audit_verdicts as verdicts
from bench.audit_lab import KIND_TEXT, KINDS, Lab, LabEndpoint, running_lab, site_toml

ROOT = Path(__file__).resolve().parent.parent
MAILWARDEN = ROOT / ".venv" / "bin" / "mailwarden"
TARGET_SSLYZE = 3.0
TARGET_TESTSSL = 300.0
RUN_TIMEOUT = 600.0
TESTSSL_TIMEOUT = 3600.0


@dataclass
class Runs:
    walls: list[float] = field(default_factory=list)
    scores: list[verdicts.Score] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    def span(self) -> str:
        return f"{self.median:.2f} s ({min(self.walls):.2f}–{max(self.walls):.2f})"

    @property
    def worst(self) -> verdicts.Score:
        return min(self.scores, key=lambda s: s.right)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _timed(
    commands: Sequence[tuple[str, list[str], Path]], *, together: bool = True
) -> tuple[float, dict[str, float]]:
    """Run the commands, started together or one after another; the wall time until the last
    one ended, and each one's (from the start: together; its own: one after another)."""
    if not together:
        each: dict[str, float] = {}
        for command in commands:
            each.update(_timed([command])[1])
        return sum(each.values()), each
    started = time.perf_counter()
    procs = []
    for name, argv, output in commands:
        out = output.open("wb")
        procs.append((name, subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT), out))
    each = {}
    try:
        while len(each) < len(procs):
            for name, proc, _ in procs:
                if name not in each and proc.poll() is not None:
                    each[name] = time.perf_counter() - started
            if time.perf_counter() - started > RUN_TIMEOUT:
                late = [name for name, _, _ in procs if name not in each]
                raise RuntimeError(f"{', '.join(late)} did not finish in {RUN_TIMEOUT:g} s")
            time.sleep(0.002)
    finally:
        for _, proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    return max(each.values()), each


# ------------------------------------------------------------------------------ the tools


def run_ours(lab: Lab, site: Path, raw: Path, tag: str) -> tuple[float, verdicts.Score]:
    report = raw / f"ours-{tag}.json"
    report.unlink(missing_ok=True)
    argv = [str(MAILWARDEN), "audit", "--config", str(site), "--resolver", lab.nameserver]
    argv += ["--format", "json", "--output", str(report)]
    wall, _ = _timed([("mailwarden audit", argv, raw / f"ours-{tag}.log")])
    if not report.exists():
        log_text = (raw / f"ours-{tag}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"mailwarden audit wrote no report:\n{log_text}")
    document = json.loads(report.read_text(encoding="utf-8"))
    return wall, verdicts.score(lab.endpoints, verdicts.ours(document, lab.endpoints))


def sslyze_commands(
    sslyze: Path, lab: Lab, folder: Path, raw: Path, tag: str
) -> list[tuple[str, list[str], Path]]:
    commands = []
    groups = {
        "https": [e for e in lab.endpoints if e.tls == "implicit"],
        "imap": [e for e in lab.endpoints if e.protocol == "imap"],
        "smtp": [e for e in lab.endpoints if e.protocol == "smtp"],
    }
    for group, members in groups.items():
        targets = folder / f"sslyze-{group}.txt"
        targets.write_text("".join(f"{e.name}:{e.port}{{{e.address}}}\n" for e in members))
        argv = [str(sslyze), "--certinfo", "--certinfo_ca_file", str(lab.root)]
        if group != "https":
            argv += ["--starttls", group]
        argv += [
            "--targets_in",
            str(targets),
            "--json_out",
            str(raw / f"sslyze-{tag}-{group}.json"),
        ]
        argv += ["--quiet"]
        commands.append((f"sslyze {group}", argv, raw / f"sslyze-{tag}-{group}.log"))
    return commands


def run_sslyze(
    sslyze: Path, lab: Lab, folder: Path, raw: Path, tag: str, *, together: bool
) -> tuple[float, dict[str, float], verdicts.Score]:
    """The three sslyze runs (https, imap, smtp), started together or one after another."""
    commands = sslyze_commands(sslyze, lab, folder, raw, tag)
    for _, argv, _ in commands:
        Path(argv[argv.index("--json_out") + 1]).unlink(missing_ok=True)
    wall, each = _timed(commands, together=together)
    files = [Path(argv[argv.index("--json_out") + 1]) for _, argv, _ in commands]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise RuntimeError(f"sslyze wrote no JSON ({', '.join(missing)}); see {raw}/*.log")
    found = verdicts.sslyze(files, lab.endpoints, lab.root)
    return wall, each, verdicts.score(lab.endpoints, found)


def testssl_targets(lab: Lab) -> str:
    """One testssl.sh command line per endpoint (its ``--file`` mass-testing format)."""
    lines = []
    for e in lab.endpoints:
        starttls = f"-t {e.protocol} " if e.tls == "starttls" else ""
        lines.append(f"{starttls}--ip {e.address} {e.name}:{e.port}")
    return "\n".join(lines) + "\n"


def run_testssl(testssl: Path, lab: Lab, folder: Path, raw: Path) -> tuple[float, verdicts.Score]:
    targets = folder / "testssl-targets.txt"
    targets.write_text(testssl_targets(lab))
    report = raw / "testssl.json"
    report.unlink(missing_ok=True)
    argv = [str(testssl), "--quiet", "--color", "0", "--warnings", "off", "--phone-out"]
    argv += ["--add-ca", str(lab.root), "--nodns", "none", "--mode", "parallel"]
    argv += ["--jsonfile", str(report), "--file", str(targets)]
    started = time.perf_counter()
    with (raw / "testssl.log").open("wb") as out:
        done = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, timeout=TESTSSL_TIMEOUT, check=False
        )
    wall = time.perf_counter() - started
    if not report.exists():
        raise RuntimeError(f"testssl.sh (exit {done.returncode}) wrote no JSON; see {raw}")
    return wall, verdicts.score(lab.endpoints, verdicts.testssl(report, lab.endpoints))


# ------------------------------------------------------------------------------ report


def _machine(sslyze: Path) -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run(
        [
            str(sslyze.parent / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('sslyze'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    ours = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-c",
            "import mailwarden; print(mailwarden.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; mailwarden {ours or '?'}, sslyze {version or '?'}"
    )


def _verdict_text(score: verdicts.Score) -> str:
    return f"{score.right}/{score.total}"


def _met(ratio: float, target: float) -> str:
    return "met" if ratio >= target else "NOT met"


def table(
    lab: Lab,
    ours: Runs,
    peer: Runs,
    serial: Runs,
    testssl: tuple[float, verdicts.Score] | None,
) -> list[str]:
    ratio = peer.median / ours.median
    lines = [
        "| tool | wall time, median (min–max) | verdicts right | time ÷ ours |",
        "| --- | --- | --- | --- |",
        f"| mailwarden audit | {ours.span()} | {_verdict_text(ours.worst)} | 1 |",
        f"| sslyze --certinfo, 3 runs at once | {peer.span()} | {_verdict_text(peer.worst)} | "
        f"{ratio:.1f}× (target ≥ {TARGET_SSLYZE:g}×: {_met(ratio, TARGET_SSLYZE)}) |",
        f"| sslyze --certinfo, 3 runs in a row | {serial.span()} | "
        f"{_verdict_text(serial.worst)} | {serial.median / ours.median:.1f}× |",
    ]
    if testssl is not None:
        wall, score = testssl
        t_ratio = wall / ours.median
        lines.append(
            f"| testssl.sh (parallel) | {wall:.1f} s (one run) | {_verdict_text(score)} | "
            f"{t_ratio:.0f}× (target ≥ {TARGET_TESTSSL:g}×: {_met(t_ratio, TARGET_TESTSSL)}) |"
        )
    lines += [
        "",
        "| class | endpoints | what | ours | sslyze" + (" | testssl" if testssl else "") + " |",
    ]
    lines.append("| --- | --- | --- | --- | ---" + (" | ---" if testssl else "") + " |")
    for kind in KINDS:
        members = [e for e in lab.endpoints if e.kind == kind]
        servers = ", ".join(
            f"{sum(1 for e in members if e.protocol == p)} {p}"
            for p in ("https", "imap", "smtp")
            if any(e.protocol == p for e in members)
        )
        row = f"| {kind} | {len(members)} ({servers}) | {KIND_TEXT[kind]} | "
        row += f"{ours.worst.per_kind[kind][0]} | {peer.worst.per_kind[kind][0]}"
        if testssl is not None:
            row += f" | {testssl[1].per_kind.get(kind, (0, 0))[0]}"
        lines.append(row + " |")
    return lines


def _missed(name: str, lab: Lab, score: verdicts.Score) -> list[str]:
    """A peer's wrong verdicts, grouped: class, what it reported instead, how often."""
    kinds = {e.name: e.kind for e in lab.endpoints}
    groups = Counter(
        (kinds[endpoint], ", ".join(got) or "nothing") for endpoint, (_, got) in score.wrong.items()
    )
    return [
        f"  {name}: {count} × {kind} reported {got}"
        for (kind, got), count in sorted(groups.items())
    ]


def _wrong(name: str, score: verdicts.Score, limit: int = 12) -> list[str]:
    lines = []
    for endpoint, (expected, got) in list(score.wrong.items())[:limit]:
        lines.append(
            f"  {name} {endpoint}: expected {expected or 'nothing'}, reported {got or 'nothing'}"
        )
    if len(score.wrong) > limit:
        lines.append(f"  … and {len(score.wrong) - limit} more")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--sslyze",
        type=Path,
        default=ROOT / "var" / "bench" / "sslyze-venv" / "bin" / "sslyze",
        help="the sslyze command (default: the venv bench/audit.sh installs)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--with-testssl", action="store_true")
    parser.add_argument("--testssl", type=Path, default=Path("/usr/bin/testssl"))
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "audit")
    parser.add_argument("--ocsp", choices=("presigned", "live"), default="presigned")
    parser.add_argument(
        "--hold",
        type=float,
        metavar="SECONDS",
        help="only start the lab, write the site file and keep it up this long (for profiling)",
    )
    args = parser.parse_args(argv)
    # A plain SIGTERM would end Python without unwinding: the lab's servers would stay up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not MAILWARDEN.exists():
        print(f"{MAILWARDEN} is missing: make venv", file=sys.stderr)
        return 1
    probe = subprocess.run(
        [str(MAILWARDEN), "audit", "--help"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        print("`mailwarden audit` is not available in this tree yet", file=sys.stderr)
        return 1
    out: Path = args.out
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for old in raw.iterdir():
        old.unlink()
    log("building the lab (PKI, 100 certificates, DNS, nginx, Dovecot, Postfix)")
    started = time.perf_counter()
    with running_lab(out / "lab", ocsp_mode=args.ocsp) as lab:
        log(
            f"lab up in {time.perf_counter() - started:.1f} s; "
            f"DNS {lab.nameserver}, pids {lab.pids}"
        )
        site = out / "site.toml"
        site.write_text(site_toml(lab.endpoints, lab.root), encoding="utf-8")
        (out / "endpoints.json").write_text(
            json.dumps([_endpoint_dict(e) for e in lab.endpoints], indent=1), encoding="utf-8"
        )
        if args.hold:
            log(
                f"lab held for {args.hold:g} s: mailwarden audit --config {site} --resolver "
                f"{lab.nameserver}"
            )
            time.sleep(args.hold)
            return 0
        for w in range(args.warmup):
            run_ours(lab, site, raw, f"warmup{w + 1}")
            run_sslyze(args.sslyze, lab, out, raw, f"warmup{w + 1}", together=True)
        ours, peer, serial = Runs(), Runs(), Runs()
        load_before = _load()
        for r in range(1, args.runs + 1):
            order = ("ours", "sslyze", "sslyze-serial")
            if r % 2 == 0:
                order = order[::-1]
            for tool in order:
                if tool == "ours":
                    wall, score = run_ours(lab, site, raw, f"run{r}")
                    each: dict[str, float] = {}
                    runs = ours
                else:
                    together = tool == "sslyze"
                    wall, each, score = run_sslyze(
                        args.sslyze, lab, out, raw, f"run{r}-{tool}", together=together
                    )
                    runs = peer if together else serial
                runs.walls.append(wall)
                runs.parts.append(each)
                runs.scores.append(score)
                log(f"run {r} {tool}: {wall:.2f} s, verdicts right {score.right}/{score.total}")
        load_after = _load()
        testssl: tuple[float, verdicts.Score] | None = None
        if args.with_testssl:
            log("testssl.sh, parallel mass run (tens of minutes on a small machine)")
            testssl = run_testssl(args.testssl, lab, out, raw)
            log(f"testssl.sh: {testssl[0]:.1f} s, verdicts right {testssl[1].right}/100")
    lines = [
        "",
        f"== audit benchmark: {len(lab.endpoints)} endpoints (80 HTTPS, 10 IMAP STARTTLS, "
        f"10 SMTP STARTTLS), median of {args.runs} runs after {args.warmup} warm-up, OCSP "
        f"{args.ocsp} ==",
        _machine(args.sslyze),
        f"load average before the runs: {load_before}; after: {load_after}",
        "",
        *table(lab, ours, peer, serial, testssl),
        "",
        "sslyze at once (seconds from the start until each of https, imap, smtp ended): "
        + _parts(peer),
        "sslyze in a row (seconds each of https, imap, smtp took): " + _parts(serial),
    ]
    wrong = _wrong("ours", ours.worst) + _missed("sslyze", lab, peer.worst)
    wrong += _missed("sslyze (in a row)", lab, serial.worst)
    if testssl is not None:
        wrong += _missed("testssl.sh", lab, testssl[1])
    if wrong:
        lines += ["", "wrong verdicts (worst run):", *wrong]
    lines += ["", f"raw output: {raw}; figures: {out / 'summary.json'}"]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "summary.txt").write_text(text, encoding="utf-8")
    summary: dict[str, Any] = {
        "endpoints": len(lab.endpoints),
        "runs": args.runs,
        "ocsp": args.ocsp,
        "load_before": load_before,
        "load_after": load_after,
        "ours": {
            "walls": ours.walls,
            "median": ours.median,
            "scores": [s.to_dict() for s in ours.scores],
        },
        "sslyze": {
            "walls": peer.walls,
            "median": peer.median,
            "parts": peer.parts,
            "scores": [s.to_dict() for s in peer.scores],
        },
        "sslyze_in_a_row": {
            "walls": serial.walls,
            "median": serial.median,
            "parts": serial.parts,
            "scores": [s.to_dict() for s in serial.scores],
        },
        "ratio_sslyze": peer.median / ours.median,
        "ratio_sslyze_in_a_row": serial.median / ours.median,
    }
    if testssl is not None:
        summary["testssl"] = {"wall": testssl[0], "score": testssl[1].to_dict()}
        summary["ratio_testssl"] = testssl[0] / ours.median
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    right = all(s.right == s.total for s in ours.scores)
    if not right:
        print(
            "FAILED: mailwarden audit did not give the right verdict on every endpoint",
            file=sys.stderr,
        )
    return 0 if right else 1


def _parts(runs: Runs) -> str:
    return "; ".join(
        ", ".join(f"{name.split()[-1]} {secs:.2f}" for name, secs in part.items())
        for part in runs.parts
    )


def _endpoint_dict(e: LabEndpoint) -> dict[str, Any]:
    return {
        "name": e.name,
        "address": e.address,
        "port": e.port,
        "protocol": e.protocol,
        "tls": e.tls,
        "class": e.kind,
        "staple": e.staple,
        "crl_only": e.crl_only,
        "expected": sorted(e.expected),
    }


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
