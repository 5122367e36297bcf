"""Outages under load against the real server: stop, freeze and restart the real directory.

A bounded load (16 concurrent clients, a few seconds) runs against ``mailwarden serve`` while
slapd is stopped and started again, then frozen (SIGSTOP: connections hang, nothing answers),
and while PostgreSQL is stopped and started again. Every request must get a correct 200 answer
(the user's login from a fresh or stale entry, the generic document, or — for unknown addresses
— the address itself) within the deadline: 0 failed, 0 hung.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.directory.helpers import ldap_toml, site_toml, sql_toml
from tests.fixtures.postgres import Postgres
from tests.fixtures.server import running_server
from tests.fixtures.slapd import Slapd

CONCURRENCY = 16
CLIENT_TIMEOUT = 5.0
DEADLINE = 0.5
FAST_CACHE = (
    f"deadline = {DEADLINE}\nretry_interval = 0.5\n"
    "cache = {positive_ttl = 0.3, negative_ttl = 0.3}"
)
USERNAME = re.compile(r"<username>([^<]*)</username>")


@dataclass
class LoadResult:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    hung: int = 0
    generic: int = 0
    latencies: list[float] = field(default_factory=list)
    actions_at: list[float] = field(default_factory=list)
    """When each action (stop, start, …) was done, in seconds from the start of the load."""
    started_at: list[float] = field(default_factory=list)

    @property
    def p100(self) -> float:
        return max(self.latencies, default=0.0)


def _expected(index: int, kind: str, login: Callable[[int], str]) -> tuple[str, set[str]]:
    """The address to ask for and the user names that are correct answers for it."""
    if kind == "known":
        n = index % 50 + 1
        address = f"user{n:04d}@example.com"
        return address, {login(n), "%EMAILADDRESS%"}
    address = f"ghost{index}@example.com"
    return address, {address, "%EMAILADDRESS%"}


def _uid(n: int) -> str:
    return f"zz{n:04d}"


def _mailbox(n: int) -> str:
    return f"user{n:04d}@example.com"


async def _load(
    base: str,
    seconds: float,
    actions: list[tuple[float, Callable[[], None]]],
    login: Callable[[int], str] = _uid,
) -> LoadResult:
    result = LoadResult()
    begun = time.monotonic()
    stop_at = begun + seconds
    counter = iter(range(10**9))

    async def client(worker: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT) as http:
            while time.monotonic() < stop_at:
                index = next(counter)
                address, good = _expected(index, "known" if index % 3 else "unknown", login)
                started = time.monotonic()
                result.started_at.append(started - begun)
                try:
                    response = await http.get(
                        "/mail/config-v1.1.xml", params={"emailaddress": address}
                    )
                except httpx.TimeoutException:
                    result.hung += 1
                    continue
                except httpx.HTTPError as exc:
                    result.failed.append(f"{address}: {exc!r}")
                    continue
                result.latencies.append(time.monotonic() - started)
                names = set(USERNAME.findall(response.text))
                if response.status_code != 200 or not names or not names <= good:
                    result.failed.append(f"{address}: {response.status_code} {names}")
                    continue
                result.ok += 1
                result.generic += "%EMAILADDRESS%" in names

    async def director() -> None:
        for at, action in actions:
            await asyncio.sleep(max(0.0, begun + at - time.monotonic()))
            await asyncio.to_thread(action)
            result.actions_at.append(time.monotonic() - begun)

    await asyncio.gather(director(), *(client(i) for i in range(CONCURRENCY)))
    return result


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def _check(result: LoadResult, label: str) -> None:
    down, up = result.actions_at
    during = sum(down <= t < up for t in result.started_at)
    print(
        f"{label}: ok={result.ok} failed={len(result.failed)} hung={result.hung} "
        f"generic={result.generic} max latency={result.p100 * 1000:.0f} ms; "
        f"outage {down:.2f}-{up:.2f} s with {during} requests started in it"
    )
    assert during >= CONCURRENCY, "the outage and the load did not overlap"
    assert result.failed == [], result.failed[:5]
    assert result.hung == 0
    assert result.ok > 100, "the load did not run"
    # The server answers within DEADLINE; the margin is for a busy 2-core test machine (the
    # load generator shares it), and anything at CLIENT_TIMEOUT would have counted as hung.
    latencies = sorted(result.latencies)
    assert latencies[int(len(latencies) * 0.99)] < DEADLINE + 2.5


def test_slapd_stopped_frozen_and_restarted_under_load(slapd: Slapd, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(site_toml(ldap_toml(slapd) + "\n" + FAST_CACHE))
    with running_server(site) as base:
        restart = asyncio.run(_load(base, 5.0, [(1.5, slapd.stop), (3.0, slapd.start)]))
        _check(restart, "slapd stop/start")
        errors = _metric(base, "mailwarden_directory_errors_total")
        assert errors > 0, "the outage did not reach the server"
        freeze = asyncio.run(_load(base, 5.0, [(1.0, slapd.pause), (3.5, slapd.resume)]))
        _check(freeze, "slapd frozen")
        assert _metric(base, "mailwarden_directory_errors_total") > errors
        time.sleep(1.0)  # past the retry interval: recovery needs nobody
        r = httpx.get(
            f"{base}/mail/config-v1.1.xml", params={"emailaddress": "a.example@example.com"}
        )
        assert "<username>ab1234</username>" in r.text


def test_postgres_stopped_and_restarted_under_load(postgres: Postgres, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(site_toml(sql_toml(postgres) + "\ntimeout = 0.4\n" + FAST_CACHE))
    with running_server(site) as base:
        result = asyncio.run(
            _load(base, 6.0, [(1.5, postgres.stop), (3.5, postgres.start)], _mailbox)
        )
        _check(result, "postgres stop/start")
        assert _metric(base, "mailwarden_directory_errors_total") > 0
        time.sleep(1.0)
        r = httpx.get(
            f"{base}/mail/config-v1.1.xml", params={"emailaddress": "a.example@example.com"}
        )
        assert "<username>alice@example.com</username>" in r.text
