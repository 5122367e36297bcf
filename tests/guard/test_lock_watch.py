"""The milter's lock check at MAIL FROM from the local copy of the pool's locks (Redis
pub/sub), against a real redis-server: no round trip while live, a round trip otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Detector
from mailwarden.guard.engine import Engine
from mailwarden.guard.milter import C_MAIL, MilterServer, Session
from mailwarden.guard.store.redis import RedisStore
from tests.fixtures.redis_server import running_redis
from tests.fixtures.wait import async_wait_until

pytestmark = pytest.mark.slow  # starts redis

LOCAL = frozenset({"example.edu"})


async def wait_for(check: Callable[[], object], seconds: float = 5.0) -> None:
    await async_wait_until(check, seconds, interval=0.01, what="the lock watch")


async def commands(store: RedisStore, name: str) -> int:
    stats = await store._r.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def mail_from(server: MilterServer, user: str) -> bytes:
    session = Session(macros={"{auth_authen}": user})
    return b"".join(await server.on(session, C_MAIL, b"<x@example.edu>\0"))


def test_lock_via_another_guard_is_refused_at_mail_from_without_a_round_trip(
    tmp_path: Path,
) -> None:
    config = GuardConfig.model_validate({})
    detector = Detector(config, LOCAL)

    async def run() -> None:
        with running_redis(tmp_path / "r") as redis:
            a, b, cli = (RedisStore(redis.url, timeout=1.0) for _ in range(3))
            await a._r.flushdb()
            await a.lock("early", "locked before B started", time.time())
            b.watch_locks()
            server = MilterServer(Engine(config, b, detector, name="b"))
            await wait_for(lambda: b.locks_at_once)
            assert server.engine.locked_at_once()
            assert b"is locked" in await mail_from(server, "early")  # loaded at start
            gets = await commands(a, "get")
            await a.lock("amy", "spam run", time.time())  # via guard A
            await wait_for(lambda: b.watch.reason("amy") is not None, 2.0)
            assert b"is locked" in await mail_from(server, "amy")
            await cli.lock("bob", "by hand", time.time(), by="admin")  # as the CLI does
            await wait_for(lambda: b.watch.reason("bob") is not None, 2.0)
            assert b"is locked" in await mail_from(server, "bob")
            assert b"is locked" not in await mail_from(server, "carl")
            assert await commands(a, "get") == gets  # no GET at MAIL FROM while live
            assert await cli.unlock("amy")
            await wait_for(lambda: b.watch.reason("amy") is None, 2.0)
            assert b"is locked" not in await mail_from(server, "amy")

            # Redis goes away: not live, MAIL FROM asks Redis (fails open, as configured)
            redis.stop()
            await wait_for(lambda: not b.locks_at_once, 5.0)
            assert not server.engine.locked_at_once()
            assert b"is locked" not in await mail_from(server, "bob")
            assert server.engine.store_down
            generation = b.watch.generation
            redis.start()  # empty: a lock set while B was cut off must be enforced
            later = RedisStore(redis.url, timeout=1.0)  # a new CLI run
            await later.lock("dan", "set while B was disconnected", time.time())
            await later.close()
            await wait_for(lambda: b.watch.generation > generation, 10.0)
            await wait_for(lambda: b.locks_at_once, 5.0)
            assert b.watch.reason("dan") is not None
            assert b"is locked" in await mail_from(server, "dan")
            assert b"is locked" not in await mail_from(server, "bob")  # gone with the data
            for store in (a, b, cli):
                await store.close()

    asyncio.run(run())
