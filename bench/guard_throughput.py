"""Throughput benchmark: decisions per second of the guard's policy and milter paths.

Starts the real ``mailwarden guard serve`` (memory store, then Redis store against a
redis-server this script starts on a free port), drives it over TCP on 127.0.0.1 with C
persistent connections (like C smtpd processes) for D seconds per case, and reports:

* client-side rate and latency percentiles (policy: one RCPT decision per round trip;
  milter: one whole message, connect to end of data, per session), under load (C
  connections) and with one connection (the latency a single SMTP session sees);
* the server's own CPU time per decision, read from /proc, and what that makes per core —
  the number that says how many decisions one core can make, independent of the load
  generator sharing the machine;
* Redis's own time per decision script call (``INFO commandstats``) over all Redis cases;
* the peer: policyd-rate-limit (the static per-user limiter whose defaults ``bench.guard_sim``
  compares against), installed from PyPI into a venv of its own (versions pinned in
  ``bench/policyd-constraints.txt``), SQLite backend as shipped, counting at RCPT, driven by
  the same requests over the same connections; our policy path's figures over its, as ratios.

Run: ``.venv/bin/python -m bench.guard_throughput`` (about a minute and a half; the first run
also installs the peer); ``--seconds 2`` for a quick look, ``--no-peer`` without the peer.
Users are drawn from 5,000 names with ordinary traffic, so the decisions are the common accept
path with every window and set updated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis as redis_client
import uvloop
from tests.fixtures.guard_milter_client import MilterClient
from tests.fixtures.net import free_port, wait_for_port
from tests.fixtures.paths import example_site_text

ROOT = Path(__file__).resolve().parents[1]
SITE = """
[guard]
store = "{store}"
redis_url = "{redis}"
redis_timeout = 1.0
message_stage = "milter"
"""
REQUEST = (
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    "client_address=192.0.2.{ip}\nclient_name=unknown\nhelo_name=webmail.example.edu\n"
    "sender={u}@example.edu\nrecipient=r{n}@dest{d}.example\nrecipient_count=0\n"
    "queue_id=\ninstance={inst}\nsize=0\nsasl_method=PLAIN\nsasl_username={u}\n"
    "server_address=127.0.0.1\nserver_port=587\n\n"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def policy_worker(
    port: int, users: list[str], deadline: float, lat: list[float], index: int
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random(port * 1000 + index)  # each connection its own users
    n = 0
    while time.perf_counter() < deadline:
        user = rng.choice(users)
        req = REQUEST.format(
            ip=rng.randint(1, 254), u=user, n=n, d=rng.randint(1, 50), inst=f"{id(writer):x}.{n}"
        )
        t0 = time.perf_counter()
        writer.write(req.encode())
        await writer.drain()
        line = await reader.readline()
        await reader.readline()
        lat.append(time.perf_counter() - t0)
        if not line.startswith(b"action="):
            raise RuntimeError(f"bad policy answer {line!r}")
        n += 1
    writer.close()
    return n


async def milter_worker(
    port: int, users: list[str], deadline: float, lat: list[float], index: int
) -> int:
    client = await MilterClient.connect("127.0.0.1", port)
    rng = random.Random(port * 1000 + index)
    n = 0
    while time.perf_counter() < deadline:
        user = rng.choice(users)
        t0 = time.perf_counter()
        await client.message(
            user,
            [f"r{n}@dest{rng.randint(1, 50)}.example"],
            subject=f"note {rng.randint(1, 9)}",
            queue_id=f"Q{n}",
        )
        lat.append(time.perf_counter() - t0)
        n += 1
    await client.close()
    return n


def pct(values: list[float], q: float) -> float:
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0


async def drive(kind: str, port: int, conns: int, seconds: float) -> tuple[int, list[float]]:
    users = [f"user{i}" for i in range(5000)]
    lat: list[float] = []
    worker = policy_worker if kind == "policy" else milter_worker
    deadline = time.perf_counter() + seconds
    counts = await asyncio.gather(*(worker(port, users, deadline, lat, i) for i in range(conns)))
    return sum(counts), lat


@dataclass(frozen=True)
class Figures:
    """One case: a front end (``kind``) of one server (``who``: store or ``peer``)."""

    kind: str
    who: str
    conns: int
    n: int
    rate: float
    p50: float
    p99: float
    cpu_us: float

    @property
    def per_core(self) -> float:
        return 1e6 / self.cpu_us if self.cpu_us else 0.0

    def line(self) -> str:
        unit = "decisions" if self.kind == "policy" else "messages"
        return (
            f"{self.kind:<6} {self.who:<6} conns={self.conns:<3} {unit}={self.n:<7} "
            f"rate={self.rate:7.0f}/s p50={self.p50:6.2f}ms p99={self.p99:6.2f}ms  "
            f"server_cpu={self.cpu_us:6.0f}us/{unit[:-1]} (~{self.per_core:,.0f}/s per core)"
        )


def measure(pid: int, kind: str, who: str, port: int, conns: int, seconds: float) -> Figures:
    """Drive one front end of the server ``pid`` for ``seconds``: client-side rate and
    latency, and the server's own CPU time per decision from /proc."""
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    n, lat = uvloop.run(drive(kind, port, conns, seconds))
    cpu, wall = cpu_seconds(pid) - c0, time.perf_counter() - t0
    return Figures(
        kind, who, conns, n, n / wall, pct(lat, 0.5), pct(lat, 0.99), cpu / n * 1e6 if n else 0.0
    )


def ratios(ours: list[Figures], peer: list[Figures]) -> list[str]:
    """Our policy path against the peer's, same requests, same run."""
    out = []
    for theirs in peer:
        for mine in (f for f in ours if f.kind == "policy" and f.conns == theirs.conns):
            if theirs.conns > 1:
                out.append(
                    f"ratio  policy {mine.who:<6}/peer conns={mine.conns:<3} "
                    f"decisions per core {mine.per_core / theirs.per_core:5.1f}x, "
                    f"rate {mine.rate / theirs.rate:5.1f}x"
                )
            else:
                out.append(
                    f"ratio  policy {mine.who:<6}/peer conns={mine.conns:<3} "
                    f"p99 {mine.p99:.2f} vs {theirs.p99:.2f} ms "
                    f"({theirs.p99 / mine.p99:4.1f}x lower)"
                )
    return out


def run_case(folder: Path, store: str, redis_url: str, conns: int, seconds: float) -> list[Figures]:
    site_text = example_site_text(guard=False)
    site = folder / f"site-{store}.toml"
    site.write_text(site_text + SITE.format(store=store, redis=redis_url), encoding="utf-8")
    policy, milter = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailwarden",
            "guard",
            "--config",
            str(site),
            "serve",
            "--policy",
            f"127.0.0.1:{policy}",
            "--milter",
            f"127.0.0.1:{milter}",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
    )
    lines: list[Figures] = []
    try:
        wait_for_port(policy, alive=lambda: proc.poll() is None)
        wait_for_port(milter, alive=lambda: proc.poll() is None)
        uvloop.run(drive("policy", policy, 2, 0.5))  # warm up
        cases = [
            (kind, port, c)
            for c in (conns, 1)
            for kind, port in (("policy", policy), ("milter", milter))
        ]
        lines = [measure(proc.pid, kind, store, port, c, seconds) for kind, port, c in cases]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return lines


PEER_CONFIG = """\
debug: False
user: "root"
group: "root"
pidfile: "{folder}/policyd.pid"
backend: 0
sqlite_config:
    database: "{folder}/policyd.sqlite3"
SOCKET: ["127.0.0.1", {port}]
limits:
    - [10, 60]
    - [150, 86400]
limits_by_id: {{}}
sql_limits_by_id: ""
limit_by_sasl: True
limit_by_sender: False
limit_by_ip: False
limited_networks: []
success_action: "dunno"
fail_action: "defer_if_permit Rate limit reach, retry later"
db_error_action: "dunno"
report: False
delay_to_close: 300
count_mode: 0
"""
"""policyd-rate-limit's shipped limits and SQLite backend; ``count_mode: 0`` counts each RCPT,
the requests both servers get here (as root it would drop privileges: to root)."""


def peer_venv() -> Path:
    """policyd-rate-limit in a venv of its own, (re)installed when the pinned version is not
    the one there."""
    venv = Path(tempfile.gettempdir()) / "mailwarden-bench-guard" / "policyd-venv"
    constraints = ROOT / "bench" / "policyd-constraints.txt"
    want = next(
        line.split("==", 1)[1].strip()
        for line in constraints.read_text(encoding="utf-8").splitlines()
        if line.startswith("policyd-rate-limit==")
    )
    python = venv / "bin" / "python"
    version = "import importlib.metadata as m; print(m.version('policyd-rate-limit'))"
    have = ""
    if python.exists():
        done = subprocess.run([python, "-c", version], capture_output=True, text=True, check=False)
        have = done.stdout.strip()
    if have != want:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "-c", str(constraints)]
        subprocess.run([*pip, "policyd-rate-limit"], check=True)
    return venv


def run_peer(folder: Path, conns: int, seconds: float) -> list[Figures]:
    """The peer's policy figures, measured like ours (:func:`run_case`)."""
    venv = peer_venv()
    port = free_port()
    config = folder / "policyd.yaml"
    config.write_text(PEER_CONFIG.format(folder=folder, port=port), encoding="utf-8")
    proc = subprocess.Popen(
        [str(venv / "bin" / "policyd-rate-limit"), "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
    )
    lines: list[Figures] = []
    try:
        wait_for_port(port, alive=lambda: proc.poll() is None)
        uvloop.run(drive("policy", port, 2, 0.5))  # warm up
        lines = [measure(proc.pid, "policy", "peer", port, c, seconds) for c in (conns, 1)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return lines


def redis_time(port: int) -> str:
    """Redis's own time per decision script call (``INFO commandstats``): what one Redis core
    spends on each decision, which no client-side figure shows."""
    client = redis_client.Redis(host="127.0.0.1", port=port)
    stats = client.info("commandstats")
    client.close()
    calls = sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))
    usec = sum(float(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in ("evalsha", "eval"))
    per = usec / calls if calls else 0.0
    return (
        f"redis  script calls={calls:<8} redis_cpu={per:6.0f}us/call "
        f"(~{1e6 / per if per else 0:,.0f} calls/s per Redis core)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=20)
    parser.add_argument("--no-peer", action="store_true", help="leave out policyd-rate-limit")
    args = parser.parse_args(argv)
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is missing: install the redis-server package", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mw-guard-bench-") as tmp:
        folder = Path(tmp)
        rport = free_port()
        redis = subprocess.Popen(
            [
                redis_server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(rport),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(rport, alive=lambda: redis.poll() is None)
            print(
                f"# {os.cpu_count()} cores, Python {sys.version.split()[0]}, load generator "
                f"on the same machine, {args.seconds:g} s per case"
            )
            ours: list[Figures] = []
            for store in ("memory", "redis"):
                for case in run_case(
                    folder, store, f"redis://127.0.0.1:{rport}/0", args.conns, args.seconds
                ):
                    ours.append(case)
                    print(case.line(), flush=True)
            print(redis_time(rport))
            if not args.no_peer:
                peer = run_peer(folder, args.conns, args.seconds)
                for case in peer:
                    print(case.line(), flush=True)
                for line in ratios(ours, peer):
                    print(line, flush=True)
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
