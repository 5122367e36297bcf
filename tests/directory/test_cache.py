"""The cache in front of every backend: TTLs, LRU, single-flight, stale answers, deadline.

The backend here is a small in-memory directory whose answers, delay and failures the test
controls, and the clock is the test's, so every timing rule is checked exactly; the same cache
runs against the real slapd and PostgreSQL in test_outage.py.
"""

from __future__ import annotations

import asyncio

import pytest

from mailwarden.address import Address
from mailwarden.directory.base import Account
from mailwarden.directory.cache import CachedDirectory
from mailwarden.directory.config import CacheConfig
from mailwarden.errors import DirectoryError

ALICE = Address("alice", "example.com")
BOB = Address("bob", "example.com")
ACCOUNT = Account("alice@example.com", "ab1234")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    name = "test"

    def __init__(self) -> None:
        self.accounts = {"alice@example.com": ACCOUNT}
        self.calls = 0
        self.delay = 0.0
        self.failing = False

    async def lookup(self, address: Address) -> Account | None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            raise DirectoryError("backend down")
        return self.accounts.get(address.key)

    async def close(self) -> None:
        pass


def _cache(
    backend: Backend, clock: Clock, deadline: float = 1.0, **config: float
) -> tuple[CachedDirectory, list[str]]:
    events: list[str] = []
    cache = CachedDirectory(
        backend,
        CacheConfig.model_validate(
            {"positive_ttl": 60, "negative_ttl": 10, "stale_ttl": 600, **config}
        ),
        deadline=deadline,
        retry_interval=5,
        clock=clock,
        on_event=events.append,
    )
    return cache, events


def test_positive_and_negative_ttl() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        cache, events = _cache(backend, clock)
        assert await cache.lookup(ALICE) == ACCOUNT
        assert await cache.lookup(ALICE) == ACCOUNT
        assert await cache.lookup(BOB) is None
        assert await cache.lookup(BOB) is None
        assert backend.calls == 2
        clock.now += 11  # negative entry stale, positive still fresh
        backend.accounts["bob@example.com"] = Account("bob@example.com", "bob")
        assert await cache.lookup(BOB) is None  # stale answer, refresh started
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert await cache.lookup(BOB) == Account("bob@example.com", "bob")
        assert await cache.lookup(ALICE) == ACCOUNT
        assert backend.calls == 3
        assert events.count("hit") == 4
        assert "refresh" in events

    asyncio.run(run())


def test_lru_bound() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        cache, _ = _cache(backend, clock, max_entries=3)
        for i in range(10):
            await cache.lookup(Address(f"u{i}", "example.com"))
        assert len(cache) == 3
        await cache.lookup(Address("u9", "example.com"))
        assert backend.calls == 10
        await cache.lookup(Address("u0", "example.com"))
        assert backend.calls == 11

    asyncio.run(run())


def test_zero_entries_turns_caching_off() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        cache, _ = _cache(backend, clock, max_entries=0)
        await cache.lookup(ALICE)
        await cache.lookup(ALICE)
        assert backend.calls == 2

    asyncio.run(run())


def test_single_flight() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        backend.delay = 0.05
        cache, _ = _cache(backend, clock)
        results = await asyncio.gather(*(cache.lookup(ALICE) for _ in range(100)))
        assert results == [ACCOUNT] * 100
        assert backend.calls == 1

    asyncio.run(run())


def test_stale_while_revalidate_refreshes_once() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        cache, _ = _cache(backend, clock)
        await cache.lookup(ALICE)
        clock.now += 61
        backend.delay = 0.05
        backend.accounts["alice@example.com"] = Account("alice@example.com", "new-login")
        answers = await asyncio.gather(*(cache.lookup(ALICE) for _ in range(20)))
        assert answers == [ACCOUNT] * 20  # at once, from the stale entry
        assert backend.calls == 2  # one refresh for all twenty
        await asyncio.sleep(0.1)
        assert (await cache.lookup(ALICE)).login == "new-login"  # type: ignore[union-attr]

    asyncio.run(run())


def test_stale_entry_served_while_backend_down_and_recovery() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        cache, events = _cache(backend, clock)
        await cache.lookup(ALICE)
        backend.failing = True
        clock.now += 120
        for _ in range(5):
            assert await cache.lookup(ALICE) == ACCOUNT
            await asyncio.sleep(0)
        # Unknown to the cache and backend down: an error, fast, without asking the backend.
        with pytest.raises(DirectoryError):
            await cache.lookup(BOB)
        calls = backend.calls
        with pytest.raises(DirectoryError, match="unavailable"):
            await cache.lookup(BOB)
        assert backend.calls == calls
        assert "skipped" in events
        backend.failing = False
        clock.now += 6  # retry interval over: the next miss asks again
        assert await cache.lookup(BOB) is None
        assert not cache.backend_down

    asyncio.run(run())


def test_stale_limit() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        cache, _ = _cache(backend, clock)
        await cache.lookup(ALICE)
        backend.failing = True
        clock.now += 60 + 601  # past TTL and stale_ttl: nothing left to serve
        with pytest.raises(DirectoryError):
            await cache.lookup(ALICE)

    asyncio.run(run())


def test_deadline_then_late_answer_fills_cache() -> None:
    async def run() -> None:
        backend, clock = Backend(), Clock()
        backend.delay = 1.0
        cache, events = _cache(backend, clock, deadline=0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DirectoryError, match="deadline"):
            await cache.lookup(ALICE)
        assert loop.time() - started < 0.5  # long before the backend answers
        assert "deadline" in events
        await asyncio.sleep(1.05)
        backend.delay = 0
        assert await cache.lookup(ALICE) == ACCOUNT
        assert backend.calls == 1

    asyncio.run(run())


def test_unexpected_backend_error_becomes_a_directory_error() -> None:
    class Broken(Backend):
        async def lookup(self, address: Address) -> Account | None:
            raise RuntimeError("bug")

    async def run() -> None:
        cache, events = _cache(Broken(), Clock())
        with pytest.raises(DirectoryError, match="unexpected RuntimeError"):
            await cache.lookup(ALICE)
        assert cache.backend_down
        assert "error" in events

    asyncio.run(run())
