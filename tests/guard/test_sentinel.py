"""Redis Sentinel: the URL, and a real failover (master + replica + three Sentinels).

The failover test kills the master with SIGKILL while decisions flow over persistent
connections and measures the gap: decisions fail open (with a log line) only between the
kill and the promotion of the replica, then resume on the new master with every lock and
held message recorded before the kill; the lock watch resubscribes; ``guard status`` names
the new master and the Sentinel that named it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.errors import ConfigError
from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Detector, Observation
from mailwarden.guard.engine import Engine
from mailwarden.guard.store.base import HoldInfo
from mailwarden.guard.store.redis import LOCK_INDEX, RedisStore
from mailwarden.guard.store.resp import RespError, ScriptConnection
from mailwarden.guard.store.sentinel import (
    DEFAULT_PORT,
    SentinelTarget,
    is_sentinel_url,
    master_report,
    parse_sentinel_url,
    redact,
    replicas_to_wait,
)
from mailwarden.site.load import parse_site
from tests.fixtures.guard_server import write_site
from tests.fixtures.paths import example_site_text
from tests.fixtures.redis_sentinel import SERVICE, SentinelLab, running_sentinel_lab
from tests.fixtures.wait import async_wait_until

pytestmark = pytest.mark.slow  # starts redis and its sentinels

LOCAL = frozenset({"example.edu"})
BASE = example_site_text(guard=False)
FAIL_OPEN = ("store down: fail open",)

# -- the URL --------------------------------------------------------------------------------


def test_sentinel_url_parts() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://:s%40cret@10.0.0.1:26380,redis-b.example.edu,[2001:db8::7]:5000"
        "/mymaster/3?sentinel_password=x&wait_replicas=2&min_other_sentinels=1"
    )
    assert target == SentinelTarget(
        sentinels=(
            ("10.0.0.1", 26380),
            ("redis-b.example.edu", DEFAULT_PORT),
            ("2001:db8::7", 5000),
        ),
        service="mymaster",
        db=3,
        password="s@cret",
        sentinel_password="x",
        min_other_sentinels=1,
        wait_replicas=2,
    )
    assert parse_sentinel_url("redis+sentinel://h/svc").db == 0
    assert parse_sentinel_url("redis+sentinel://h/svc").wait_replicas == 1
    tls = parse_sentinel_url("rediss+sentinel://h/svc/1?ssl_ca_certs=/etc/ca.pem")
    assert tls.tls
    assert tls.connection_kwargs()["ssl_ca_certs"] == "/etc/ca.pem"
    assert replicas_to_wait("redis://127.0.0.1:6379/0") == 0  # one Redis: nothing to wait for
    assert replicas_to_wait("redis+sentinel://h/svc?wait_replicas=0") == 0
    assert not is_sentinel_url("redis://h:6379/0")
    assert redact("redis+sentinel://u:pw@h/s?sentinel_password=pw2") == (
        "redis+sentinel://…@h/s?sentinel_password=…"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1", "no service name"),
        ("redis+sentinel:///svc", "no Sentinel address"),
        ("redis+sentinel://h:1,,h:2/svc", "no Sentinel address"),
        ("redis+sentinel://h:0/svc", "bad Sentinel port"),
        ("redis+sentinel://h:1/svc/db9", "db='db9'"),
        ("redis+sentinel://h:1/svc/1/2", "too many path parts"),
        ("redis+sentinel://h:1/svc?sentinal_password=x", "unknown option 'sentinal_password'"),
        ("redis+sentinel://h:1/svc?ssl_ca_certs=/x", "need rediss+sentinel"),
        ("redis+sentinel://secret@h:1/svc", "after a colon"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong_in_the_config(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_site(BASE + f'\n[guard]\nstore = "redis"\nredis_url = "{url}"\n')
    text = info.value.message
    assert "guard.redis_url" in text
    assert says in text
    assert "redis+sentinel://[:PASSWORD@]HOST:PORT" in text  # the expected form
    assert "secret" not in text.partition(" (got ")[0]  # ours names no password (the loader's
    # "(got …)" echoes the raw value, whatever the field)


_host = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True)
_port = st.integers(1, 65535)


@given(
    sentinels=st.lists(st.tuples(_host, _port), min_size=1, max_size=5),
    service=st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True),
    db=st.integers(0, 15),
    password=st.none() | st.text(min_size=1, max_size=20),
)
def test_sentinel_url_round_trip(
    sentinels: list[tuple[str, int]], service: str, db: int, password: str | None
) -> None:
    from urllib.parse import quote

    auth = f":{quote(password, safe='')}@" if password is not None else ""
    hosts = ",".join(f"{h}:{p}" for h, p in sentinels)
    target = parse_sentinel_url(f"redis+sentinel://{auth}{hosts}/{service}/{db}")
    assert target.sentinels == tuple(sentinels)
    assert (target.service, target.db, target.password) == (service, db, password)


@given(st.text(max_size=300))
def test_any_text_is_a_sentinel_url_or_a_value_error(text: str) -> None:
    for url in (text, "redis+sentinel://" + text):
        with contextlib.suppress(ValueError):
            parse_sentinel_url(url)


def test_an_overlong_url_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than"):
        parse_sentinel_url("redis+sentinel://h/" + "s" * 5000)
    with pytest.raises(ValueError, match="more than 16"):
        parse_sentinel_url("redis+sentinel://" + ",".join(["h"] * 17) + "/s")


# -- against real Sentinels ------------------------------------------------------------------


async def wait_for(check: Callable[[], object], seconds: float, what: str) -> None:
    await async_wait_until(check, seconds, interval=0.02, what=what)


def status(lab: SentinelLab, folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir(exist_ok=True)
    site = write_site(folder, f'[guard]\nstore = "redis"\nredis_url = "{lab.url}"\n')
    return subprocess.run(
        [sys.executable, "-m", "mailwarden", "guard", "--config", str(site), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_failover_fails_open_only_in_the_gap_and_loses_no_lock_or_hold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailwarden.guard")
    config = GuardConfig.model_validate({"store": "redis", "redis_timeout": 0.2})
    detector = Detector(config, LOCAL)
    flows, pause, users = 8, 0.02, 20000
    locked_users = [f"locked{i}" for i in range(10)]
    held = [f"HQ{i:04X}" for i in range(10)]

    with running_sentinel_lab(tmp_path / "lab", down_after_ms=1000) as lab:
        old_master, replica = lab.master, lab.replica
        before = status(lab, tmp_path / "s1")
        assert f"redis master 127.0.0.1:{old_master.port}" in before.stdout, before
        assert "named by Sentinel 127.0.0.1:" in before.stdout

        async def run() -> dict[str, float]:
            store = RedisStore(lab.url, timeout=0.2)
            engine = Engine(config, store, detector, name="a")
            store.watch_locks()
            await wait_for(lambda: store.locks_at_once, 10, "lock watch live")
            generation = store.watch.generation
            log: list[tuple[float, bool]] = []  # (when, failed open)
            stop = asyncio.Event()

            async def flow(k: int) -> None:
                n = k
                while not stop.is_set():
                    obs = Observation(
                        user=f"u{n % users}",
                        now=time.time(),
                        recipients=("colleague@example.edu",),
                        message=True,
                        rcpt_count=1,
                        network="192.0.2.0/24",
                    )
                    verdict = await engine.decide(obs)
                    log.append((time.monotonic(), verdict.reasons == FAIL_OPEN))
                    n += flows
                    await asyncio.sleep(pause)

            tasks = [asyncio.ensure_future(flow(k)) for k in range(flows)]
            await asyncio.sleep(1.0)
            # written just before the kill: each one acknowledged by the replica (WAIT)
            for user in locked_users:
                await store.lock(user, "spam run", time.time())
            for qid in held:
                await engine.record_hold(qid, "heldone", "hold before the failover")
            assert "redis-write-not-replicated" not in caplog.text
            killed = time.monotonic()
            old_master.kill(signal.SIGKILL)

            def resumed() -> bool:
                fails = [t for t, bad in log if bad]
                return bool(fails) and any(t > fails[-1] for t, bad in log if not bad)

            await wait_for(resumed, 30, "decisions resume on the new master")
            first_fail = min(t for t, bad in log if bad)
            back = min(t for t, bad in log if not bad and t > first_fail)
            await asyncio.sleep(2.0)  # decisions keep flowing on the new master
            stop.set()
            await asyncio.gather(*tasks)

            assert not [t for t, bad in log if bad and t < killed]  # none before the kill
            assert not [t for t, bad in log if bad and t > back]  # none after the recovery
            assert sum(1 for t, bad in log if not bad and t > back) > 100
            lab.wait_master(replica.port)

            # nothing recorded before the failover is lost
            assert {lock.user for lock in await store.locks()} >= set(locked_users)
            assert {h.queue_id for h in await store.holds()} >= set(held)
            assert await engine.locked("locked3") == "spam run"

            # the lock watch is back, on the new master, and follows new locks
            await wait_for(
                lambda: store.watch.generation > generation and store.locks_at_once,
                15,
                "lock watch resubscribed",
            )
            assert store.watch.reason("locked7") == "spam run"
            cli = RedisStore(lab.url, timeout=1.0)
            await cli.lock("late", "locked after the failover", time.time(), by="admin")
            await cli.close()
            await wait_for(lambda: store.watch.reason("late") is not None, 2, "new lock seen")

            report = await master_report(lab.url, 1.0)
            assert report.master == f"127.0.0.1:{replica.port}"
            assert report.role == "master"
            assert report.said_by in {f"127.0.0.1:{s.port}" for s in lab.sentinels}
            await store.close()
            return {
                "detected_after": first_fail - killed,
                "gap": back - killed,
                "decisions": len(log),
                "failed_open": sum(1 for _, bad in log if bad),
            }

        figures = asyncio.run(run())
        after = status(lab, tmp_path / "s2")
        assert after.returncode == 1  # something is locked and held
        assert f"redis master 127.0.0.1:{replica.port}" in after.stdout, after
        assert "named by Sentinel 127.0.0.1:" in after.stdout
        assert "role master" in after.stdout

    # loudly: every failed-open decision logged, and the switch of master too
    assert "fail-open" in caplog.text
    assert "redis-master-changed" in caplog.text
    assert "lock-watch-down" in caplog.text
    # the gap: detection (down-after 1 s) + Sentinel election + promotion
    print(f"\nSentinel failover (down-after-milliseconds 1000): {json.dumps(figures)}")
    assert 0.5 < figures["gap"] < 10.0, figures


def test_locks_and_holds_wait_for_a_replica_and_a_switchover_is_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``WAIT``: a lock returns once the replica has it; a stalled replica makes it slow and
    loud, never failed. Then a planned switchover (SENTINEL FAILOVER: the old master lives on
    as a replica, answering READONLY): every connection moves to the new master."""
    caplog.set_level(logging.INFO, logger="mailwarden.guard")
    with running_sentinel_lab(tmp_path / "lab") as lab:
        old_master, replica = lab.master, lab.replica

        async def run() -> None:
            store = RedisStore(lab.url, timeout=0.4)
            store.watch_locks()
            await wait_for(lambda: store.locks_at_once, 10, "lock watch live")
            await store.lock("amy", "spam run", time.time())
            with replica.client() as r:
                assert r.sismember(LOCK_INDEX, "amy")  # the replica had it when lock() returned
            with old_master.client() as m:
                assert int(m.info("commandstats")["cmdstat_wait"]["calls"]) == 1
            assert "redis-write-not-replicated" not in caplog.text

            assert replica.proc is not None
            replica.kill(signal.SIGSTOP)
            try:
                started = time.monotonic()
                await store.lock("bob", "spam run", time.time())
                await store.add_hold(HoldInfo("Q1", "bob", "held", time.time(), "mta1"))
                waited = time.monotonic() - started
            finally:
                replica.kill(signal.SIGCONT)
            assert waited >= 0.35  # two WAITs of 0.2 s each: they did wait
            assert caplog.text.count("redis-write-not-replicated") == 2
            assert {lock.user for lock in await store.locks()} == {"amy", "bob"}  # not failed

            script = "redis.call('SET', KEYS[1], ARGV[1]); return ARGV[1]"
            conn = ScriptConnection(lab.url, script, timeout=0.4)
            assert await conn.evalsha(["k"], ["before"]) == "before"
            assert str(old_master.port) in conn.where
            lab.wait_ready()
            with lab.sentinels[0].client() as s:
                s.execute_command("SENTINEL", "FAILOVER", SERVICE)
            await asyncio.to_thread(lab.wait_master, replica.port)
            # the old master still takes writes until Sentinel reconfigures it (~10 s):
            # the connection must leave it once the Sentinels name the new one
            deadline = time.monotonic() + 5
            errors = []
            while str(replica.port) not in conn.where:
                try:
                    await conn.evalsha(["k"], ["after"])
                except RespError as exc:  # the connection dropped, or READONLY
                    errors.append(str(exc))
                assert time.monotonic() < deadline, (conn.where, errors)
                await asyncio.sleep(0.05)
            assert await conn.evalsha(["k"], ["after"]) == "after"
            assert len(errors) <= 3, errors
            generation = store.watch.generation
            await store.lock("carl", "after the switchover", time.time())
            with replica.client() as new_master:
                assert new_master.execute_command("ROLE")[0] == "master"
                assert new_master.get("k") == "after"
                assert new_master.sismember(LOCK_INDEX, "carl")  # not on the old master
            # the lock watch left the old master too, and follows locks on the new one
            await wait_for(lambda: store.watch.generation > generation, 5, "resubscribed")
            await wait_for(lambda: store.locks_at_once, 5, "lock watch live again")
            cli = RedisStore(lab.url, timeout=1.0)
            await cli.lock("dora", "by hand", time.time(), by="admin")
            await cli.close()
            await wait_for(lambda: store.watch.reason("dora") is not None, 2, "new lock seen")
            await conn.close()
            await store.close()

        asyncio.run(run())
