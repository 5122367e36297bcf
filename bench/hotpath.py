"""CPU per request of our server, in-process, without a load generator.

Drives the HTTP protocol ``mailwarden serve`` runs (uvicorn's httptools protocol with the
listener's bounds, :mod:`mailwarden.server.protocol`) over an in-memory transport on a uvloop
event loop: raw request bytes in, response bytes out, no sockets, no other process.
Each round sends N requests on one keep-alive connection, rotating
through the benchmark's known users (``bench/autoconfig_data.py``: embedded directory, logins
differ from the addresses, the directory cache in front as configured); the CPU time of the
round (``time.process_time``) divided by N is one sample, the median of the rounds the figure.
The same run measures the do-nothing app of ``bench/static_asgi.py`` answering the same bytes
under bare uvicorn's protocol, so the ratio of the two is what our application and our
listener's bounds add to uvicorn, and is robust against other load on the machine (CPU time,
not wall time).

``--asgi`` also measures the bare applications called directly (no HTTP parsing): the share
of the request that is ours alone.

usage: python -m bench.hotpath [--requests N] [--rounds R] [--users U] [--workers-mode]
       [--asgi] [--profile ENDPOINT]

``--workers-mode`` sets ``PROMETHEUS_MULTIPROC_DIR`` as ``mailwarden serve --workers 2`` does
(the benchmark's configuration); ``--profile ENDPOINT`` runs cProfile over one endpoint and
prints the top functions instead of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]

ENDPOINTS = ("autoconfig", "autodiscover", "json")
POX_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.microsoft.com/'
    'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{}</EMailAddress>'
    "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/"
    "responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>\n"
)
CLIENT_HEADERS = (
    b"Host: 127.0.0.1:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) "
    b"Gecko/20100101 Thunderbird/128.5.0\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
)


def request_bytes(endpoint: str, address: str) -> bytes:
    """One HTTP/1.1 request as a client sends it (the benchmark's wrk script sends the same)."""
    quoted = address.replace("@", "%40")
    if endpoint == "autoconfig":
        return (
            f"GET /mail/config-v1.1.xml?emailaddress={quoted} HTTP/1.1\r\n".encode()
            + CLIENT_HEADERS
            + b"\r\n"
        )
    if endpoint == "autodiscover":
        body = POX_BODY.format(address).encode()
        return (
            b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\n"
            + CLIENT_HEADERS
            + b"Content-Type: text/xml; charset=utf-8\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return (
        f"GET /autodiscover/autodiscover.json/v1.0/{address}?Protocol=AutodiscoverV1 "
        "HTTP/1.1\r\n".encode()
        + CLIENT_HEADERS
        + b"\r\n"
    )


class MemoryTransport(asyncio.Transport):
    """What uvicorn's protocol writes to; looks like a TCP connection from 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """One keep-alive connection into an HTTP protocol: by default the one ``mailwarden serve``
    runs (uvicorn's httptools protocol with our bounds, :mod:`mailwarden.server.protocol`);
    ``bare=True``: uvicorn's own, as a plain ``uvicorn`` serves the peer app."""

    def __init__(self, app: App, *, bare: bool = False) -> None:
        from uvicorn.config import Config
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState

        from mailwarden.server.protocol import HttpLimits, LimitedConfig, LimitedHttpProtocol

        options: dict[str, Any] = {
            "app": app,
            "lifespan": "off",
            "access_log": False,
            "server_header": False,
            "proxy_headers": False,
            "log_level": "warning",
        }
        # two connections take turns: neither may time out
        limits = HttpLimits(header_timeout=3600, body_timeout=3600, idle_timeout=3600)
        config = (
            Config(http="httptools", timeout_keep_alive=3600, **options)
            if bare
            else LimitedConfig(limits=limits, **options)
        )
        config.load()
        self.state = ServerState()
        protocol = HttpToolsProtocol if bare else LimitedHttpProtocol
        self.protocol = protocol(config, self.state, {})
        self.transport = MemoryTransport()
        self.protocol.connection_made(self.transport)
        self._done: asyncio.Future[None] | None = None
        finish = self.protocol.on_response_complete

        def complete() -> None:  # the protocol's hook, then wake the waiting request
            finish()
            if self._done is not None and not self._done.done():
                self._done.set_result(None)

        setattr(self.protocol, "on_response_complete", complete)  # noqa: B010 (a method)

    async def request(self, raw: bytes) -> bytes:
        self._done = asyncio.get_running_loop().create_future()
        self.transport.written.clear()
        self.protocol.data_received(raw)
        await self._done
        if self.transport.closing:
            raise SystemExit("the server closed the connection")
        return b"".join(self.transport.written)

    def close(self) -> None:
        self.protocol.connection_lost(None)


def response_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def bare_call(app: App, raw: bytes) -> None:
    """The application alone: a scope as uvicorn builds it, the body in one message."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].split(b" ")
    path, _, query = target.partition(b"?")
    headers = [
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in lines[1:])
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": method.decode(),
        "root_path": "",
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "headers": headers,
        "state": {},
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        pass

    await app(scope, receive, send)


Call = Callable[[bytes], Awaitable[object]]


async def measure(calls: list[Call], requests: list[bytes], rounds: int) -> list[list[float]]:
    """µs of CPU per request for each of ``calls``, one sample per round of all ``requests``;
    the rounds of the calls alternate, so that load from elsewhere falls on all of them."""
    for call in calls:  # warm every cache once, as a running server is
        for raw in requests:
            await call(raw)
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, into in zip(calls, samples, strict=True):
            started = time.process_time()
            for raw in requests:
                await call(raw)
            into.append((time.process_time() - started) / len(requests) * 1e6)
    return samples


def build(workdir: Path, users: int) -> tuple[App, App, list[str]]:
    """Our app over the benchmark site with ``users`` known users, and the do-nothing app
    loaded with our own response bytes for the first user."""
    from bench.autoconfig_data import write
    from mailwarden.directory import open_directory
    from mailwarden.directory.embedded import UserStore, parse_users_csv
    from mailwarden.server.app import AutoconfigApp
    from mailwarden.server.metrics import Metrics
    from mailwarden.site import load_site

    write(workdir, users)
    ours_dir = workdir / "ours"
    store = UserStore(ours_dir / "users.sqlite")
    csv = (ours_dir / "users.csv").read_text(encoding="utf-8")
    store.import_records(parse_users_csv(csv, "users.csv"), source="users.csv", replace=True)
    store.close()
    site = load_site(ours_dir / "site.toml")
    ours = AutoconfigApp(site, open_directory(site.directory), Metrics())
    addresses = (workdir / "users.txt").read_text(encoding="utf-8").split()
    return ours, _static_app(workdir), addresses


def _static_app(workdir: Path) -> App:
    static_dir = workdir / "static"
    static_dir.mkdir(exist_ok=True)
    os.environ["BENCH_STATIC_DIR"] = str(static_dir)
    return importlib.import_module("bench.static_asgi").app  # type: ignore[no-any-return]


async def fill_static(ours: App, workdir: Path, first: str) -> App:
    """Write our answers for the first user where the do-nothing app reads them, then load it."""
    conn = Connection(ours)
    for endpoint, name in (("autoconfig", "autoconfig.xml"), ("autodiscover", "autodiscover.xml")):
        status, body = response_body(await conn.request(request_bytes(endpoint, first)))
        if status != 200:
            raise SystemExit(f"our {endpoint} answered HTTP {status} for {first}")
        (workdir / "static").mkdir(exist_ok=True)
        (workdir / "static" / name).write_bytes(body)
    conn.close()
    return _static_app(workdir)


async def run(args: argparse.Namespace, workdir: Path) -> int:
    ours, _unused, addresses = build(workdir, args.users)
    static = await fill_static(ours, workdir, addresses[0])
    ours_conn, static_conn = Connection(ours), Connection(static, bare=True)
    for endpoint in ENDPOINTS:  # right answers first: a fast wrong answer measures nothing
        status, body = response_body(
            await ours_conn.request(request_bytes(endpoint, addresses[-1]))
        )
        expected = {"autoconfig": b"<username>b", "autodiscover": b"<LoginName>b"}.get(endpoint)
        if status != 200 or (expected is not None and expected not in body):
            raise SystemExit(f"our {endpoint} answered HTTP {status}: {body[:300]!r}")
    rotation = [addresses[i % len(addresses)] for i in range(args.requests)]
    if args.profile:
        return await profile(
            ours_conn, [request_bytes(args.profile, a) for a in rotation], args.rounds
        )
    if args.callgrind_child:
        for endpoint in ENDPOINTS:
            requests = [request_bytes(endpoint, a) for a in rotation]
            await count_instructions(f"{endpoint}/ours", ours_conn.request, requests)
            await count_instructions(f"{endpoint}/static", static_conn.request, requests)
        await count_instructions("empty", static_conn.request, [])
        return 0
    print(
        f"CPU per request, median of {args.rounds} rounds x {args.requests} requests, "
        + _conditions(args)
    )
    print(f"{'endpoint':<14} {'ours µs':>9} {'static µs':>10} {'ratio':>6}   min: ours static")
    for endpoint in ENDPOINTS:
        requests = [request_bytes(endpoint, a) for a in rotation]
        # The do-nothing app has no JSON document: it answers that path 404, which costs it
        # the same; its row is the floor of the server whatever the endpoint.
        calls: list[Call] = [ours_conn.request, static_conn.request]
        if args.asgi:
            calls += [partial(bare_call, ours), partial(bare_call, static)]
        results = await measure(calls, requests, args.rounds)
        ours_m, static_m = (statistics.median(s) for s in results[:2])
        print(
            f"{endpoint:<14} {ours_m:>9.1f} {static_m:>10.1f} {ours_m / static_m:>5.2f}x"
            f"   {min(results[0]):.1f} {min(results[1]):.1f}"
        )
        if args.asgi:
            bare_ours, bare_static = (statistics.median(s) for s in results[2:])
            print(f"{'  bare app':<14} {bare_ours:>9.1f} {bare_static:>10.1f}")
    ours_conn.close()
    static_conn.close()
    return 0


def _conditions(args: argparse.Namespace) -> str:
    return (
        f"{args.users} users in rotation, in-process: ours under the bounded httptools "
        "protocol, static under bare uvicorn"
        + (", Prometheus multiprocess mode" if args.workers_mode else "")
    )


def _callgrind(*command: str) -> None:
    """Tell the callgrind this process runs under to zero (``-z``) or dump (``-d NAME``)."""
    subprocess.run(["callgrind_control", *command, str(os.getpid())], check=True, stdout=DEVNULL)


async def count_instructions(label: str, call: Call, requests: list[bytes]) -> None:
    """One callgrind dump named ``label`` of exactly ``requests`` (caches warmed first)."""
    for raw in requests:
        await call(raw)
    _callgrind("-z")
    for raw in requests:
        await call(raw)
    _callgrind("-d", label)


def instructions(args: argparse.Namespace) -> int:
    """Run this harness under callgrind and print instructions per request: deterministic,
    whatever else runs on the machine (but about 50 times slower)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind)")
    with tempfile.TemporaryDirectory(prefix="mailwarden-callgrind-") as tmp:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/cg.%p",
            sys.executable,
            "-m",
            "bench.hotpath",
            "--callgrind-child",
            f"--requests={args.requests}",
            f"--users={args.users}",
            *(["--workers-mode"] if args.workers_mode else []),
        ]
        subprocess.run(command, check=True, stderr=DEVNULL, cwd=Path(__file__).parents[1])
        counts: dict[str, int] = {}
        for dump in Path(tmp).glob("cg.*.*"):
            text = dump.read_text(encoding="utf-8", errors="replace")
            label = re.search(r"^desc: Trigger: dump (.*)$", text, re.M)
            total = re.search(r"^summary: (\d+)", text, re.M)
            if label and total:
                counts[label.group(1).strip()] = int(total.group(1))
    empty = counts.get("empty", 0)
    print(
        f"instructions per request (callgrind), {args.requests} requests each, " + _conditions(args)
    )
    print(f"{'endpoint':<14} {'ours':>9} {'static':>9} {'ratio':>6}")
    for endpoint in ENDPOINTS:
        ours, static = (
            (counts[f"{endpoint}/{app}"] - empty) / args.requests for app in ("ours", "static")
        )
        print(f"{endpoint:<14} {ours / 1000:>8.0f}k {static / 1000:>8.0f}k {ours / static:>5.2f}x")
    return 0


async def profile(conn: Connection, requests: list[bytes], rounds: int) -> int:
    """cProfile over ``rounds`` x ``requests``: the functions that cost the most, own time."""
    import cProfile
    import pstats

    for raw in requests:  # warm the caches first, as in the measurement
        await conn.request(raw)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        for raw in requests:
            await conn.request(raw)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--workers-mode", action="store_true")
    parser.add_argument("--asgi", action="store_true")
    parser.add_argument("--profile", choices=ENDPOINTS)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1 or args.users < 1:
        parser.error("--requests, --rounds and --users must be at least 1")
    if args.instructions:
        return instructions(args)
    with tempfile.TemporaryDirectory(prefix="mailwarden-hotpath-") as tmp:
        if args.workers_mode:
            metrics_dir = Path(tmp) / "metrics"
            metrics_dir.mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # before the import
        import uvloop

        return uvloop.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
