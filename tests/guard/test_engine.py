"""The engine: escalations are logged and kept in the history; floods are not logged twice."""

from __future__ import annotations

import asyncio

import pytest

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Action, Detector, Observation
from mailwarden.guard.engine import Engine
from mailwarden.guard.store.memory import MemoryStore

T0 = 1_700_000_000.0


def test_lock_is_logged_kept_in_history_and_refusals_are_not_a_log_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = GuardConfig.model_validate({})
    engine = Engine(config, MemoryStore(), Detector(config, frozenset({"example.edu"})))

    async def run() -> list[Action]:
        actions = []
        for i in range(200):
            rcpts = tuple(f"v{i}x{k}@s{i}-{k}.example" for k in range(30))
            v = await engine.decide(Observation("eve", T0 + i * 0.1, rcpts, True, 30))
            actions.append(v.action)
        await engine.drain()
        return actions

    with caplog.at_level("WARNING", logger="mailwarden.guard"):
        actions = asyncio.run(run())
    assert Action.LOCK in actions
    assert actions.count(Action.REJECT) > 150
    rejects = [r for r in caplog.records if '"action": "reject"' in r.getMessage()]
    assert len(rejects) == 1  # 150+ refusals within 20 s: one line
    history = asyncio.run(engine.store.history("eve"))
    assert [e.action for e in history][-1] == "lock"
    assert engine.metrics.locks._value.get() == 1
