"""Memory and SQLite stores: lock expiry, what survives a restart."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

import pytest

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Action, Detector, Observation
from mailwarden.guard.engine import Engine
from mailwarden.guard.service import housekeeping
from mailwarden.guard.store.base import IDLE_DAYS, HoldInfo
from mailwarden.guard.store.memory import MemoryStore
from mailwarden.guard.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
DETECTOR = Detector(GuardConfig.model_validate({}), frozenset({"example.edu"}))


def blast(store: MemoryStore, user: str, start: float) -> list[Action]:
    async def run() -> list[Action]:
        out = []
        for i in range(20):
            rcpts = tuple(f"v{i}x{k}@s{i}-{k}.example" for k in range(30))
            v = await store.decide(Observation(user, start + i, rcpts, True, 30, "", "x"), DETECTOR)
            out.append(v.action)
        return out

    return asyncio.run(run())


def test_locks_expire_after_the_configured_time() -> None:
    store = MemoryStore(lock_ttl=3600)
    assert Action.LOCK in blast(store, "eve", T0)
    ok = Observation("eve", T0 + 100, ("a@example.edu",), True, 1)
    assert asyncio.run(store.decide(ok, DETECTOR)).action is Action.REJECT
    later = Observation("eve", T0 + 3700, ("a@example.edu",), True, 1)
    assert asyncio.run(store.decide(later, DETECTOR)).action is Action.ACCEPT
    forever = MemoryStore()
    blast(forever, "eve", T0)
    never = Observation("eve", T0 + 10**7, ("a@example.edu",), True, 1)
    assert asyncio.run(forever.decide(never, DETECTOR)).action is Action.REJECT


def test_sqlite_keeps_locks_holds_history_and_baselines_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "guard.sqlite"
    store = SqliteStore(path)
    for i in range(48):  # two days of a busy hour each hour: a baseline to remember
        rcpts = tuple(f"p{k}@d{k}.example" for k in range(20))
        asyncio.run(store.decide(Observation("ann", T0 + i * 3600, rcpts, True, 20), DETECTOR))
    assert Action.LOCK in blast(store, "eve", T0)
    held = HoldInfo("4Xc1", "eve", "held for review", T0, "mta1")
    asyncio.run(store.add_hold(held))
    baseline = store.users["ann"].baseline_hour
    assert baseline > 10
    profile = list(store.users["ann"].hour_profile)
    assert max(profile) == 20.0
    asyncio.run(store.close())

    again = SqliteStore(path)
    assert asyncio.run(again.locked("eve")) is not None
    assert again.users["ann"].baseline_hour == baseline
    assert again.users["ann"].rcpt_seen == 48
    assert again.users["ann"].rcpt_avg == pytest.approx(20.0)
    assert again.users["ann"].hour_profile == profile
    assert again.users["ann"].profile_since == store.users["ann"].profile_since >= 0
    assert [lock.user for lock in asyncio.run(again.locks())] == ["eve"]
    assert asyncio.run(again.holds()) == [held]  # with the MTA holding it
    asyncio.run(again.close())


def test_sqlite_adds_the_hour_profile_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "guard.sqlite"
    db = sqlite3.connect(str(path))
    db.execute(
        "CREATE TABLE baselines (user TEXT PRIMARY KEY, baseline_hour REAL NOT NULL, "
        "hour_index INTEGER NOT NULL, hour_ext INTEGER NOT NULL, flagged_until REAL NOT NULL, "
        "networks TEXT NOT NULL, rcpt_avg REAL NOT NULL DEFAULT 0, "
        "rcpt_seen INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO baselines VALUES ('ann', 12.0, 5, 0, 0, '{}', 2.0, 30)")
    db.commit()
    db.close()
    db = sqlite3.connect(str(path))
    db.execute(
        "CREATE TABLE holds (queue_id TEXT PRIMARY KEY, user TEXT NOT NULL, "
        "reason TEXT NOT NULL, since REAL NOT NULL)"
    )
    db.execute("INSERT INTO holds VALUES ('4Xd1', 'ann', 'held', 1.0)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert asyncio.run(store.holds()) == [HoldInfo("4Xd1", "ann", "held", 1.0, "")]
    assert store.users["ann"].baseline_hour == 12.0
    assert store.users["ann"].hour_profile == [0.0] * 24
    assert store.users["ann"].profile_since == -1
    asyncio.run(store.close())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_users_idle_for_the_period_are_forgotten_unless_locked(tmp_path: Path, kind: str) -> None:
    """As Redis lets a user's keys expire after IDLE_DAYS without mail, memory and SQLite
    forget the user in their sweep; a locked user is kept, and so is everything recent."""

    def open_store() -> MemoryStore:
        return MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "guard.sqlite")

    store = open_store()
    day = 86400.0

    async def mail(user: str, when: float) -> None:
        await store.decide(Observation(user, when, ("a@example.edu",), True, 1), DETECTOR)

    async def run() -> None:
        for i, user in enumerate(["old", "older", "kept", "recent"]):
            await mail(user, T0 + i * 60)
        await mail("kept", T0 + 5 * day)  # mail again later: now the most recently active
        await store.lock("older", "by hand", T0, by="admin")
        await mail("recent", T0 + 20 * day)

    asyncio.run(run())
    assert store.forget_idle(T0 + IDLE_DAYS * day - 3600) == []  # nobody idle that long yet
    assert store.forget_idle(T0 + (IDLE_DAYS + 1) * day) == ["old"]
    assert set(store.users) == {"older", "kept", "recent"}
    assert store.forget_idle(T0 + (IDLE_DAYS + 5) * day + 7200) == ["kept"]
    assert store.forget_idle(T0 + (IDLE_DAYS + 5) * day + 7200) == []
    assert asyncio.run(store.locked("older")) == "by hand"
    if isinstance(store, SqliteStore):
        asyncio.run(store.close())
        reopened = SqliteStore(tmp_path / "guard.sqlite")
        assert set(reopened.users) == {"older", "recent"}  # the forgotten rows are gone too
        asyncio.run(reopened.close())


def test_housekeeping_takes_user_state_out_of_full_collections() -> None:
    """After the minute's housekeeping no user's state is left for the collector's full
    passes to walk (they are frozen), while a forgotten user's state is still freed."""
    store = MemoryStore()
    engine = Engine(GuardConfig.model_validate({}), store, DETECTOR, clock=lambda: T0)

    async def run() -> None:
        for i in range(200):
            await engine.decide(Observation(f"u{i}", T0 + i, ("a@example.edu",), True, 1))

    asyncio.run(run())
    try:
        housekeeping(engine)
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(state) in tracked for state in store.users.values())
        assert gc.get_freeze_count() > 200 * 20
        frozen = gc.get_freeze_count()
        forgotten = store.forget_idle(T0 + (IDLE_DAYS + 1) * 86400.0)
        assert len(forgotten) == 200
        # frozen, yet freed by reference counting: they left the permanent generation
        assert gc.get_freeze_count() < frozen - 200 * 20
    finally:
        gc.unfreeze()
