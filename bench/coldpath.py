"""The directory cold path in-process: every request one LDAP search, no load generator.

Starts the test suite's slapd (``tests/fixtures/slapd.py``) with USERS people, serves the
``ours-cold`` site of ``bench/directory.sh`` (LDAP directory, cache turned off) from our app
under uvicorn's HTTP protocol over in-memory connections (``bench/hotpath.py``), and keeps
CONNECTIONS requests in flight for SECONDS, rotating through all users: one worker's share of
the benchmark's load. Prints per pool size: requests/s, latency p50/p99/max (wall clock, from
handing the request to the protocol to its last byte) and our CPU per request (slapd's not
included). Every answer is checked for the user's login name from the directory.

usage: python -m bench.coldpath [--users N] [--connections C] [--seconds S] [--pool-size P ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from tests.fixtures.slapd import PEOPLE_DN, SERVICE_DN, Slapd, running_slapd

from bench.directory_env import SITE
from bench.hotpath import Connection, request_bytes, response_body
from mailwarden.directory import open_directory
from mailwarden.server.app import AutoconfigApp
from mailwarden.server.metrics import Metrics
from mailwarden.site import load_site


def write_site(folder: Path, slapd: Slapd, pool_size: int) -> Path:
    text = SITE.format(
        port=slapd.port,
        bind_dn=SERVICE_DN,
        password_file=slapd.password_file,
        base_dn=PEOPLE_DN,
        cache="cache = {max_entries = 0}\n",
    ).replace("pool_size = 8", f"pool_size = {pool_size}")
    path = folder / f"site-{pool_size}.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def load(site: Path, users: list[tuple[str, str]], connections: int, seconds: float) -> str:
    loaded = load_site(site)
    app = AutoconfigApp(loaded, open_directory(loaded.directory), Metrics(CollectorRegistry()))
    conns = [Connection(app) for _ in range(connections)]
    latencies: list[float] = []
    failed: list[str] = []
    turn = 0

    async def client(conn: Connection, stop_at: float) -> None:
        nonlocal turn
        while time.monotonic() < stop_at:
            address, login = users[turn % len(users)]
            turn += 1
            started = time.perf_counter()
            status, body = response_body(await conn.request(request_bytes("autoconfig", address)))
            latencies.append(time.perf_counter() - started)
            if status != 200 or f"<username>{login}</username>".encode() not in body:
                failed.append(f"{address}: HTTP {status}")

    # warm: the pool's connections are opened and bound, as in a running server
    await asyncio.gather(*(client(c, time.monotonic() + 0.5) for c in conns))
    latencies.clear()
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(client(c, wall + seconds) for c in conns))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    for conn in conns:
        conn.close()
    await app.directory.close()
    if failed:
        raise SystemExit(f"{len(failed)} wrong answers, e.g. {failed[:3]}")
    ms = sorted(x * 1000 for x in latencies)
    count = len(ms)
    return (
        f"{count / wall:>8.0f} {statistics.median(ms):>8.1f} {ms[int(count * 0.99)]:>8.1f} "
        f"{ms[-1]:>8.1f} {cpu / count * 1e6:>9.0f}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldpath", description=__doc__)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pool-size", type=int, nargs="+", default=[8])
    args = parser.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory(prefix="mailwarden-coldpath-") as tmp:
        folder = Path(tmp)
        with running_slapd(folder / "slapd", users=args.users) as slapd:
            users = [(p.mail, p.uid) for p in slapd.entries if p.uid.startswith("zz")]
            print(
                f"directory cold path: {args.connections} requests in flight for "
                f"{args.seconds:g} s, {len(users)} users in rotation, one slapd, cache off"
            )
            print(
                f"{'pool':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU µs':>9}"
            )
            for pool_size in args.pool_size:
                site = write_site(folder, slapd, pool_size)
                figures = uvloop.run(load(site, users, args.connections, args.seconds))
                print(f"{pool_size:>4} {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
