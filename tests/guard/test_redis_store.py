"""The Redis store against a real redis-server: same verdicts as memory, shared state,
fail open / closed when Redis goes away."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import MAX_FINGERPRINTS, Action, Detector, Observation
from mailwarden.guard.engine import Engine
from mailwarden.guard.store.base import StoreError
from mailwarden.guard.store.memory import MemoryStore
from mailwarden.guard.store.redis import WINDOWS_LUA, RedisStore, _spans
from mailwarden.guard.window import SPANS, Ring
from tests.fixtures.redis_server import RedisServer, running_redis
from tests.fixtures.slapd import make_test_ca
from tests.fixtures.wait import async_wait_until

pytestmark = pytest.mark.slow  # starts redis

LOCAL = frozenset({"example.edu"})
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def stream(seed: int) -> list[Observation]:
    """A mixed stream: normal users, one fast blast, one drip, a bulk sender."""
    rng = random.Random(seed)
    out = []
    for i in range(400):
        user = rng.choice(["ann", "ben", "cid"])
        rcpts = tuple(
            f"r{rng.randrange(40)}@d{rng.randrange(8)}.example" for _ in range(rng.randint(1, 3))
        )
        out.append(
            Observation(
                user,
                T0 + i * 97.0,
                rcpts,
                True,
                len(rcpts),
                f"10.0.{rng.randrange(3)}.0/24",
                f"s{rng.randrange(6)}",
            )
        )
    for i in range(60):
        rcpts = tuple(f"v{i}x{k}@spam{i}-{k}.example" for k in range(25))
        out.append(
            Observation("eve", T0 + 30000 + i * 3.0, rcpts, True, 25, "203.0.113.0/24", "prize")
        )
    for i in range(40):
        out.append(
            Observation(
                "news", T0 + 5000 + i, tuple(f"n{i}{k}@d{k}.example" for k in range(60)), True, 60
            )
        )
    big = tuple(f"all{k}@d{k % 7}.example" for k in range(40))  # unusual for ann
    out.append(Observation("ann", T0 + 401 * 97.0, big, True, 40, "10.0.0.0/24", "event"))
    return sorted(out, key=lambda o: o.now)


def test_redis_gives_the_same_verdicts_as_memory(redis_server: RedisServer) -> None:
    config = GuardConfig.model_validate({"members": {"bulk": ["news"]}})
    detector = Detector(config, LOCAL)

    async def run() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        memory, shared = MemoryStore(), RedisStore(redis_server.url, timeout=2.0)
        await shared._r.flushdb()
        a, b = [], []
        for obs in stream(3):
            va = await memory.decide(obs, detector)
            vb = await shared.decide(obs, detector)
            a.append((va.action.value, round(va.score, 2)))
            b.append((vb.action.value, round(vb.score, 2)))
        assert await shared.locked("eve") is not None
        assert [x.user for x in await shared.locks()] == ["eve"]
        await shared.close()
        return a, b

    mem, red = asyncio.run(run())
    assert any(x[0] == "lock" for x in mem)
    assert mem[-1][1] > 0  # ann's one big message was noticed (the recipients-per-message signal)
    assert mem == red


def test_redis_learns_the_hour_of_day_profile_like_memory(redis_server: RedisServer) -> None:
    detector = Detector(GuardConfig.model_validate({}), LOCAL)
    start = T0 - T0 % 86400  # midnight UTC
    office = [
        Observation("hal", start + day * 86400 + hour * 3600 + k * 450, (f"p{k}@q{k}.example",))
        for day in range(8)
        for hour in range(9, 17)
        for k in range(8)
    ]
    night = start + 8 * 86400 + 3 * 3600
    burst = [
        Observation("hal", night + i * 60, (f"n{i}@d{i % 9}.example",), True, 1) for i in range(30)
    ]

    async def run() -> tuple[list[float], list[float]]:
        memory, shared = MemoryStore(), RedisStore(redis_server.url, timeout=2.0)
        await shared._r.flushdb()
        for obs in office:
            await memory.decide(obs, detector)
            await shared.decide(obs, detector)
        a = [(await memory.decide(obs, detector)).score for obs in burst]
        b = [(await shared.decide(obs, detector)).score for obs in burst]
        await shared.close()
        return a, b

    mem, red = asyncio.run(run())
    assert max(mem) > 0  # 3 a.m. is not this user's hour
    assert mem == red


def test_redis_counts_accepted_recipients_like_memory(redis_server: RedisServer) -> None:
    """One recipient at a time (the policy server's RCPT stage) until the guard throttles and
    holds: the recipients it turned away must not count as accepted, in either store."""
    detector = Detector(GuardConfig.model_validate({}), LOCAL)
    seq = [Observation("acc", T0 + i * 20.0, (f"r{i}@d{i % 10}.example",)) for i in range(150)]

    Seen = list[tuple[str, float, tuple[str, ...]]]

    async def run() -> tuple[Seen, Seen, int]:
        memory, shared = MemoryStore(), RedisStore(redis_server.url, timeout=2.0)
        await shared._r.flushdb()
        a: Seen = []
        b: Seen = []
        for obs in seq:
            va = await memory.decide(obs, detector)
            vb = await shared.decide(obs, detector)
            a.append((va.action.value, round(va.score, 2), va.reasons))
            b.append((vb.action.value, round(vb.score, 2), vb.reasons))
        accepted = memory.users["acc"].accepted.total(seq[-1].now)
        await shared.close()
        return a, b, accepted

    mem, red, accepted = asyncio.run(run())
    assert any(action == "throttle" for action, _, _ in mem)
    # the part was scored, and from fewer accepted than attempted recipients
    counted = [r for _, _, reasons in mem for r in reasons if "recipients accepted" in r]
    assert counted
    assert 40 < accepted < 150
    assert mem == red


def test_redis_forgets_the_oldest_subject_fingerprint_like_memory(
    redis_server: RedisServer,
) -> None:
    """More distinct subjects than either store keeps: both forget the one seen longest ago,
    so a subject that comes back after many others starts counting afresh in both."""
    detector = Detector(GuardConfig.model_validate({}), LOCAL)
    seq = [
        Observation("sam", T0 + i * 120.0, (f"x{i}@example.edu",), True, 1, "", f"s{i}")
        for i in range(MAX_FINGERPRINTS + 16)
    ]
    t = seq[-1].now
    seq += [  # s0 was forgotten; s40 was not
        Observation(
            "sam", t + 10 + i, (f"y{i}@example.edu",), True, 1, "", "s0" if i % 2 else "s40"
        )
        for i in range(40)
    ]

    async def run() -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
        memory, shared = MemoryStore(), RedisStore(redis_server.url, timeout=2.0)
        await shared._r.flushdb()
        a, b = [], []
        for obs in seq:
            va, vb = await memory.decide(obs, detector), await shared.decide(obs, detector)
            a.append((va.action.value, round(va.score, 2)))
            b.append((vb.action.value, round(vb.score, 2)))
        kept = int(await shared._r.hlen("mwg:{sam}:subjects"))
        await shared.close()
        return a, b, kept

    mem, red, kept = asyncio.run(run())
    assert kept <= MAX_FINGERPRINTS
    assert any(score > 0 for _, score in mem[-40:])  # the repeated subjects were noticed
    assert mem == red


def test_two_engines_share_counters_and_locks(redis_server: RedisServer) -> None:
    config = GuardConfig.model_validate({})
    detector = Detector(config, LOCAL)

    async def run() -> None:
        s1, s2 = RedisStore(redis_server.url), RedisStore(redis_server.url)
        await s1._r.flushdb()
        clock = [T0]
        e1 = Engine(config, s1, detector, clock=lambda: clock[0], name="mta1")
        e2 = Engine(config, s2, detector, clock=lambda: clock[0], name="mta2")
        actions = []
        for i in range(30):  # a burst split across both MTAs
            engine = e1 if i % 2 else e2
            rcpts = tuple(f"v{i}x{k}@b{i}-{k}.example" for k in range(20))
            v = await engine.decide(Observation("zed", T0 + i, rcpts, True, 20, "", "win"))
            actions.append(v.action)
        assert Action.LOCK in actions
        assert actions.index(Action.LOCK) < 12
        # each MTA alone saw half of it, yet the lock set via one is enforced by the other
        assert await e1.locked("zed") is not None
        assert await e2.locked("zed") is not None
        # unlock clears the activity too: the next normal message passes
        assert await s2.unlock("zed")
        v = await e1.decide(Observation("zed", T0 + 100, ("a@example.edu",), True, 1))
        assert v.action is Action.ACCEPT
        await e1.drain()
        await e2.drain()
        await s1.close()
        await s2.close()

    asyncio.run(run())


def test_redis_down_fails_open_loudly_or_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_redis(tmp_path / "r") as server:
        url = server.url
    # the server is gone now
    detector = Detector(GuardConfig.model_validate({}), LOCAL)

    async def run(mode: str) -> tuple[Action, float]:
        config = GuardConfig.model_validate({"on_store_error": mode})
        engine = Engine(config, RedisStore(url, timeout=0.2), detector)
        v = await engine.decide(Observation("amy", T0, ("a@b.example",), True, 1))
        down = engine.store_down
        errors = engine.metrics.store_errors._value.get()
        await engine.drain()
        await engine.store.close()
        assert down
        return v.action, errors

    with caplog.at_level("ERROR", logger="mailwarden.guard"):
        action, errors = asyncio.run(run("accept"))
    assert action is Action.ACCEPT
    assert errors == 1
    assert "store-error" in caplog.text
    assert "fail-open" in caplog.text
    action, _ = asyncio.run(run("tempfail"))
    assert action is Action.THROTTLE


def test_pipelined_script_connection_selects_the_database_and_loads_the_script(
    redis_server: RedisServer,
) -> None:
    from mailwarden.guard.store.resp import RespError, ScriptConnection

    script = "redis.call('SET', KEYS[1], ARGV[1]); return {ARGV[1], 7, false}"

    async def run() -> None:
        url = redis_server.url.rsplit("/", 1)[0] + "/3"
        conn = ScriptConnection(url, script, timeout=2.0)
        # many calls in flight on one connection, answered in order
        replies = await asyncio.gather(*(conn.evalsha([f"k{i}"], [f"v{i}"]) for i in range(50)))
        assert replies[7] == ["v7", 7, None]
        check = RedisStore(url)
        assert await check._r.get("k49") == "v49"
        await check.close()
        await conn.close()
        broken = ScriptConnection(url, "return redis.call('NOPE')", timeout=2.0)
        with pytest.raises(RespError):
            await broken.evalsha(["x"], [])
        await broken.close()

    asyncio.run(run())


def test_pipelined_script_connection_times_out_on_a_frozen_redis_and_recovers(
    tmp_path: Path,
) -> None:
    """A Redis that stops answering (SIGSTOP) fails every pending call after the timeout,
    not later; once it answers again the next call reconnects."""
    from mailwarden.guard.store.resp import RespError, ScriptConnection

    with running_redis(tmp_path / "r") as server:
        proc = server.proc
        assert proc is not None

        async def run() -> None:
            conn = ScriptConnection(server.url, "return ARGV[1]", timeout=0.3)
            assert await conn.evalsha(["k"], ["one"]) == "one"
            proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                calls = [conn.evalsha(["k"], [str(i)]) for i in range(5)]
                results = await asyncio.gather(*calls, return_exceptions=True)
                waited = time.monotonic() - started
            finally:
                proc.send_signal(signal.SIGCONT)
            assert all(isinstance(r, RespError) for r in results), results
            assert "no answer" in str(results[0])
            assert 0.25 < waited < 1.5
            assert await conn.evalsha(["k"], ["two"]) == "two"
            await conn.close()

        asyncio.run(run())


def test_state_kept_by_an_older_guard_is_cleaned_up_not_misread(
    redis_server: RedisServer,
) -> None:
    """A user's hash from a guard that stored two fields per window bucket (and its subject
    hash): the first decision drops those fields, keeps the baseline, and does not fail."""
    detector = Detector(GuardConfig.model_validate({}), LOCAL)

    async def run() -> tuple[Action, list[str], float]:
        store = RedisStore(redis_server.url, timeout=2.0)
        await store._r.flushdb()
        old = [
            x
            for ring in ("m1", "mh", "rd", "ah")
            for slot in range(12)
            for t in ("", "t")
            for x in (f"{ring}:{slot}{t}", "7")
        ]
        await store._r.hset("mwg:{old}:s", items=[*old, "peak", "12.5", "hidx", "472222"])
        await store._r.hset("mwg:{old}:subj", mapping={f"fp{i}h:3": "1" for i in range(80)})
        obs = Observation("old", T0, ("a@example.edu",), True, 1, "", "fp1")
        verdict = await store.decide(obs, detector)
        fields = sorted(str(f) for f in await store._r.hkeys("mwg:{old}:s"))
        peak = float(await store._r.hget("mwg:{old}:s", "peak") or 0)
        await store.close()
        return verdict.action, fields, peak

    action, fields, peak = asyncio.run(run())
    assert action is Action.ACCEPT
    assert not [f for f in fields if ":" in f], fields
    assert "w" in fields
    assert peak > 0  # the learned baseline survived (decayed, not reset)


def test_store_over_tls_and_over_a_unix_socket(tmp_path: Path) -> None:
    """rediss:// (the server's certificate checked against the URL's CA) and unix:// reach
    the same Redis for every connection the store makes: decisions, locks, the lock watch."""
    (tmp_path / "ca").mkdir()
    ca = make_test_ca(tmp_path / "ca")
    detector = Detector(GuardConfig.model_validate({}), LOCAL)

    async def use(url: str) -> tuple[Action, str | None, bool]:
        store = RedisStore(url, timeout=2.0)
        await store._r.flushdb()
        verdict = await store.decide(Observation("tia", T0, ("a@b.example",), True, 1), detector)
        store.watch_locks()
        await store.lock("tia", "by hand", T0, by="admin")
        await async_wait_until(lambda: store.watch.reason("tia") is not None, 5, what="lock seen")
        live = store.watch.live
        reason = await store.locked("tia")
        await store.close()
        return verdict.action, reason, live

    with running_redis(tmp_path / "tls", tls=ca) as server:
        assert server.url.startswith("rediss://")
        assert asyncio.run(use(server.url)) == (Action.ACCEPT, "by hand", True)
        assert asyncio.run(use(server.unix_url)) == (Action.ACCEPT, "by hand", True)

        async def wrong_ca() -> None:
            url = server.url.replace(str(ca.ca_file), str(ca.other_ca_file))
            store = RedisStore(url, timeout=2.0)
            try:
                with pytest.raises(StoreError, match="certificate verify failed"):
                    await store.decide(Observation("tia", T0, ("a@b.example",), True, 1), detector)
            finally:
                await store.close()

        asyncio.run(wrong_ca())


RING_CHECK_LUA = (
    WINDOWS_LUA
    + """
-- ARGV: ring name, the spans (6), then (now, k) pairs; k = 0 asks for the total, k > 0 adds k
spans(2)
local name, w, out = ARGV[1], windows(redis.call('GET', KEYS[1])), {}
for i = 8, #ARGV, 2 do
  local now, k = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if k > 0 then add(w, name, now, k) else out[#out + 1] = total(w, name, now) end
end
redis.call('SET', KEYS[1], cmsgpack.pack(w))
return out
"""
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["m1", "rh", "rd"]),
    steps=st.lists(
        st.tuples(st.floats(-1500.0, 9000.0), st.integers(0, 5), st.booleans()), max_size=40
    ),
)
def test_lua_rings_count_exactly_like_the_memory_store_rings(
    redis_server: RedisServer, name: str, steps: list[tuple[float, int, bool]]
) -> None:
    """The Redis script's rings against :class:`~mailwarden.guard.window.Ring` for any
    sequence of adds and totals: time jumping ahead by more than the window, standing still,
    going back a little (clocks of two MTAs), and a state packed and unpacked between calls."""
    width, n = {"m1": SPANS["1m"], "rh": SPANS["1h"], "rd": SPANS["24h"]}[name]
    ring = Ring(width, n)
    client = redis.Redis.from_url(redis_server.url)
    client.delete("ringcheck")
    now, expected, args = T0, [], []
    calls: list[list[str]] = []
    for i, (dt, k, split) in enumerate(steps):
        now += dt * width / 60
        if k:
            ring.add(now, k)
        else:
            expected.append(ring.total(now))
        args += [repr(now), str(k)]
        if split or i == len(steps) - 1:  # a new script call: the state goes through cmsgpack
            calls.append(args)
            args = []
    got = []
    for part in calls:
        got += client.eval(RING_CHECK_LUA, 1, "ringcheck", name, *_spans(), *part)
    client.close()
    assert got == expected
