"""Redis-backed state shared by several MTAs: one atomic Lua call per decision.

The Lua script ``lua/record.lua`` does what :func:`mailwarden.guard.detector.record` does for
the memory store — lock check, bucketed windows, distinct recipient and domain sets, subject
fingerprints, networks with probation, the decayed baseline — atomically on the server, and
returns the :class:`Counters`; ``lua/flag.lua`` does what :func:`~.detector.flag` does. Each
script's header documents its KEYS, ARGV and reply; every number their rules use is passed in
ARGV from the one Python copy (:func:`record_constants`), none is written in the Lua. The
record call travels over a pipelined connection of our own (:mod:`.resp`), because
redis-py's per-command overhead costs more CPU than the decision.
The verdict is then computed by the same pure :func:`~mailwarden.guard.detector.assess` as
everywhere else. Only an escalation (throttle, hold, lock: rare) costs a second call. Every
key of a user carries the hash tag ``{user}``, so all of them would land on one Redis Cluster
slot (cluster mode itself is not supported: the connections do not follow redirections).

The milter's lock check at MAIL FROM needs no call at all while the :class:`LockWatch` of a
running guard is live: every lock and unlock (from any guard or the CLI) is published on a
channel, and each guard keeps the locked accounts of the whole pool in a local set, loaded in
full whenever its subscription (re)starts. Until it is live again the check asks Redis.

Timeouts are short (default 200 ms): a slow Redis must never stall smtpd. Errors become
:class:`StoreError` and the engine fails open or closed as configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from importlib import resources
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import (
    BASELINE_GAP_HOURS,
    MAX_DISTINCT,
    MAX_FINGERPRINTS,
    MAX_NETWORKS,
    MAX_SUBJECT_TIMES,
    NETWORK_MEMORY_DAYS,
    NETWORK_PROBATION,
    PACE_WINDOW,
    RCPT_ALPHA,
    RCPT_HISTORY,
    RCPT_SEEN_CAP,
    Action,
    Counters,
    Detector,
    Observation,
    Verdict,
    assess,
    is_internal,
    refused_by,
)
from mailwarden.guard.store.base import (
    IDLE_DAYS,
    MAX_HISTORY,
    Event,
    HoldInfo,
    LockInfo,
    StoreError,
)
from mailwarden.guard.store.resp import RespError, ScriptConnection
from mailwarden.guard.store.sentinel import (
    client,
    master_moved,
    note_replication,
    replicas_to_wait,
)
from mailwarden.guard.window import DAY, HOUR, MINUTE, SPANS

PREFIX = "mwg"
RCPT_SET_TTL = int(HOUR) + 60
DOMAIN_SET_TTL = int(DAY) + 60
SUBJECT_TTL = int(DAY + HOUR)
"""Times to live of a user's keys besides the scalar hash (which lives IDLE_DAYS): each a
window plus slack, so an idle user's sets go away on their own. Storage only: no rule reads
them (the scripts prune by time themselves)."""


def _script(name: str) -> str:
    """A Lua script of ``lua/`` with the shared window helpers in front of it (Redis scripts
    cannot load one another)."""
    folder = resources.files(__package__) / "lua"
    helpers = (folder / "windows.lua").read_text(encoding="utf-8")
    return helpers + (folder / name).read_text(encoding="utf-8")


WINDOWS_LUA = (resources.files(__package__) / "lua" / "windows.lua").read_text(encoding="utf-8")
RECORD_LUA = _script("record.lua")
FLAG_LUA = _script("flag.lua")


def _spans() -> list[str]:
    """ARGV for ``windows.lua``'s ``spans()``: width and bucket count of the three windows."""
    return [x for key in ("1m", "1h", "24h") for x in (repr(SPANS[key][0]), str(SPANS[key][1]))]


def record_constants(config: GuardConfig) -> list[str]:
    """ARGV[8..36] of ``record.lua``: every number its rules use, from the one Python copy
    (see the script's header for the order)."""
    ladder = config.ladder
    return [
        *_spans(),
        repr(HOUR),
        repr(ladder.baseline_half_life_days),
        str(BASELINE_GAP_HOURS),
        repr(ladder.profile_utc_offset),
        repr(ladder.profile_days),
        str(int(DAY // HOUR)),
        str(RCPT_HISTORY),
        repr(RCPT_ALPHA),
        str(RCPT_SEEN_CAP),
        str(MAX_DISTINCT),
        repr(HOUR),
        repr(DAY),
        repr(HOUR),
        str(MAX_FINGERPRINTS),
        str(MAX_SUBJECT_TIMES),
        repr(NETWORK_PROBATION),
        repr(NETWORK_MEMORY_DAYS * DAY),
        str(MAX_NETWORKS),
        str(IDLE_DAYS * 86400),
        str(RCPT_SET_TTL),
        str(DOMAIN_SET_TTL),
        str(SUBJECT_TTL),
        ",".join(repr(w) for w in (MINUTE, PACE_WINDOW)),  # domains_1m, domains_10s
    ]


def _learned(field: str) -> bool:
    """Fields of the scalar hash an unlock keeps, as :func:`~mailwarden.guard.detector.forgive`
    does: the baseline, the hour-of-day profile, the usual recipients per message and the
    user's clock."""
    return field in ("peak", "hidx", "psince", "ravg", "rseen", "t") or (
        field[:1] == "p" and field[1:].isdigit()
    )


def _keys(user: str) -> list[str]:
    tag = "{" + user.replace("{", "(").replace("}", ")") + "}"
    return [
        f"{PREFIX}:{tag}:s",
        f"{PREFIX}:{tag}:lock",
        f"{PREFIX}:{tag}:rcpt",
        f"{PREFIX}:{tag}:dom1h",
        f"{PREFIX}:{tag}:dom24h",
        f"{PREFIX}:{tag}:subjects",  # ":subj" held the per-bucket layout; it expires in 25 h
        f"{PREFIX}:{tag}:net",
        f"{PREFIX}:{tag}:hist",
    ]


def _reason(raw: str) -> str:
    try:
        return str(json.loads(raw)["reason"])
    except (ValueError, KeyError, TypeError):
        return str(raw)


LOCK_INDEX = f"{PREFIX}:locked"
HOLDS = f"{PREFIX}:holds"
LOCK_CHANNEL = f"{PREFIX}:lock-events"
"""Where every lock and unlock is published (pub/sub is not per database: the channel name
gets the database number appended)."""

log = logging.getLogger("mailwarden.guard")


def _db_of(url: str) -> int:
    tail = url.rsplit("/", 1)[-1].split("?", 1)[0] if url.count("/") >= 3 else ""
    return int(tail) if tail.isdigit() else 0


class LockWatch:
    """The locked accounts of the pool, kept current over pub/sub.

    :attr:`live` is true only while the subscription is known to work: set after the
    subscription is confirmed *and* the full set was loaded after it (so no lock can fall
    between the load and the first event), cleared on any error, on a missed keep-alive
    answer and when the connection is re-established behind our back. A cached lock carries
    its expiry (``lock_ttl_hours``), so a lock that runs out in Redis runs out here too.
    """

    PING_EVERY = 1.0
    DEAD_AFTER = 3.0
    """Seconds without any answer (an event or the keep-alive's pong) after which the
    subscription counts as dead and MAIL FROM asks Redis again."""
    RETRY_EVERY = 0.5

    def __init__(self, store: RedisStore, url: str, timeout: float) -> None:
        self.store = store
        self.channel = f"{LOCK_CHANNEL}:{_db_of(url)}"
        self.live = False
        self.locked: dict[str, tuple[str, float]] = {}
        """user → (reason, monotonic expiry; inf when the lock does not expire)"""
        # no retries: a reconnect must go through :meth:`_run`, which reloads the set
        self._client = client(
            url,
            decode_responses=True,
            socket_connect_timeout=max(timeout, 1.0),
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._task: asyncio.Task[None] | None = None
        self.generation = 0
        """How many times the set was (re)loaded: tests wait on it."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def reason(self, user: str) -> str | None:
        entry = self.locked.get(user)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self.locked[user]
            return None
        return entry[0]

    async def _run(self) -> None:
        told = False  # this outage was logged (once per outage; each retry resubscribes)
        while True:
            generation = self.generation
            try:
                await self._follow()
            except asyncio.CancelledError:
                self.live = False
                raise
            except Exception as exc:  # whatever it was: fall back to asking Redis
                told = told and self.generation == generation  # was live: a new outage
                if not told:
                    told = True
                    log.warning(
                        json.dumps(
                            {
                                "event": "lock-watch-down",
                                "error": f"{type(exc).__name__}: {exc}",
                                "fallback": "MAIL FROM asks Redis",
                            }
                        )
                    )
            self.live = False
            self.locked.clear()
            await asyncio.sleep(self.RETRY_EVERY)

    async def _follow(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            confirmed = await pubsub.get_message(timeout=self.DEAD_AFTER)
            if confirmed is None or confirmed["type"] != "subscribe":
                raise RedisError("no subscription confirmation")
            self.locked = await self.store.load_locks()
            self.generation += 1
            self.live = True
            log.info(json.dumps({"event": "lock-watch-live", "locked": len(self.locked)}))
            heard = pinged = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=self.PING_EVERY)
                now = time.monotonic()
                if message is not None:
                    heard = now
                    kind = message["type"]
                    if kind == "message":
                        self._apply(str(message["data"]))
                    elif kind == "subscribe":  # the connection was re-made: events lost
                        raise RedisError("resubscribed")
                if now - heard > self.DEAD_AFTER:
                    raise RedisError(f"no answer for {self.DEAD_AFTER} s")
                if now - pinged >= self.PING_EVERY:
                    pinged = now
                    await pubsub.ping()
                    if await master_moved(self._client):  # Sentinel: a switchover
                        raise RedisError("the Redis master moved")
        finally:
            self.live = False
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _apply(self, raw: str) -> None:
        data = json.loads(raw)
        user = str(data["user"])
        if data.get("lock") is None:
            self.locked.pop(user, None)
            return
        ttl = float(data.get("ttl") or 0)
        until = time.monotonic() + ttl if ttl > 0 else float("inf")
        self.locked[user] = (_reason(str(data["lock"])), until)

    async def close(self) -> None:
        task, self._task = self._task, None
        self.live = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()


class RedisStore:
    name = "redis"
    immediate = False
    _constants: tuple[GuardConfig, list[str]] | None = None
    """The configuration the record script's constants were last built for, and them."""

    def __init__(self, url: str, *, timeout: float = 0.2, lock_ttl: float = 0.0) -> None:
        self.url = url
        self.lock_ttl = lock_ttl
        self._r = client(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._replicas = replicas_to_wait(url)
        self._wait_ms = max(1, int(timeout * 500))
        """A lock or hold waits for ``_replicas`` replicas, at most half the timeout."""
        self._record = ScriptConnection(url, RECORD_LUA, timeout)
        self._flag = self._r.register_script(FLAG_LUA)
        self.watch = LockWatch(self, url, timeout)
        """Started by :meth:`watch_locks` (a serving guard); the CLI does without."""

    def watch_locks(self) -> None:
        """Keep a local copy of the pool's locks from now on (see :class:`LockWatch`)."""
        self.watch.start()

    @property
    def locks_at_once(self) -> bool:
        """True while :meth:`locked` answers from the local set, without a round trip."""
        return self.watch.live

    def forget_idle(self, now: float) -> list[str]:
        return []  # Redis lets the keys of idle accounts expire

    def checkpoint(self) -> int:
        return 0  # every change is in Redis already

    def _fail(self, exc: Exception) -> StoreError:
        return StoreError(f"redis {self._safe_url()}: {type(exc).__name__}: {exc}")

    def _safe_url(self) -> str:
        _, sep, tail = self.url.rpartition("@")
        return f"redis://…@{tail}" if sep else self.url

    async def decide(self, obs: Observation, detector: Detector) -> Verdict:
        config = detector.config
        limits = detector.limits_of(obs.user)
        keys = _keys(obs.user)
        externals = [
            d
            for d in (r.rpartition("@")[2] for r in obs.recipients)
            if not is_internal(d, detector.local_domains)
        ]
        constants = self._constants
        if constants is None or constants[0] is not config:
            constants = self._constants = (config, record_constants(config))
        args: list[Any] = [
            repr(obs.now),
            "1" if limits.anomaly else "0",
            "1" if obs.message else "0",
            obs.network,
            obs.subject_fp,
            obs.rcpt_count if obs.message else 0,
            len(obs.recipients),
            *constants[1],
            *obs.recipients,
            *externals,
        ]
        try:
            # KEYS: scalars, lock, recipients, domains (24 h), subjects, networks
            raw = await self._record.evalsha([*keys[:3], *keys[4:7]], args)
        except RespError as exc:
            raise self._fail(exc) from None
        if raw[0]:
            return Verdict(Action.REJECT, 0.0, (f"account locked: {_reason(raw[0])}",))
        n = [int(x) for x in raw[1:13]]
        counters = Counters(
            msgs_1m=n[0],
            rcpts_1m=n[1],
            rcpts_1h=n[2],
            rcpts_24h=n[3],
            ext_rcpts_1h=n[4],
            distinct_rcpts_1h=n[5],
            domains_1h=n[6],
            domains_24h=n[7],
            refused_1h=n[8],
            same_subject_1h=n[9],
            same_subject_24h=n[10],
            new_network=bool(n[11]),
            baseline_hour=float(raw[13]),
            message_rcpts=obs.rcpt_count if obs.message else 0,
            typical_rcpts=float(raw[14]),
            hour_profile=float(raw[15]),
            accepted_1h=int(raw[16]),
            flagged=raw[17] == 1,
            domains_1m=int(raw[18]),
            domains_10s=int(raw[19]),
        )
        verdict = assess(counters, limits, config.ladder)
        if verdict.action in (Action.THROTTLE, Action.HOLD, Action.LOCK):
            refused = refused_by(verdict, obs)
            try:
                await self._flag(
                    keys=[keys[0], keys[6]],
                    args=[
                        repr(obs.now),
                        repr(config.ladder.flag_hours * HOUR),
                        refused,
                        len(obs.recipients),
                        repr(NETWORK_PROBATION),
                        *_spans(),
                    ],
                )
                if verdict.action is Action.LOCK:
                    await self.lock(obs.user, verdict.text, obs.now)
            except RedisError as exc:
                raise self._fail(exc) from None
        return verdict

    async def locked(self, user: str) -> str | None:
        if self.watch.live:  # answered from the local set: no await, no round trip
            return self.watch.reason(user)
        # otherwise on the pipelined connection, not redis-py
        try:
            raw = await self._record.call("GET", _keys(user)[1])
        except RespError as exc:
            raise self._fail(exc) from None
        return None if raw is None else _reason(str(raw))

    async def lock(self, user: str, reason: str, now: float, by: str = "guard") -> None:
        value = json.dumps({"reason": reason, "since": now, "by": by})
        ttl = int(self.lock_ttl) if self.lock_ttl >= 1 else None
        event = json.dumps({"user": user, "lock": value, "ttl": ttl or 0})
        try:
            async with self._r.pipeline(transaction=False) as pipe:  # in order; Cluster-safe
                pipe.set(_keys(user)[1], value, ex=ttl)
                pipe.sadd(LOCK_INDEX, user)
                pipe.publish(self.watch.channel, event)
                if self._replicas:
                    pipe.execute_command("WAIT", self._replicas, self._wait_ms)
                done = await pipe.execute()
        except RedisError as exc:
            raise self._fail(exc) from None
        if self._replicas:
            note_replication(done[-1], self._replicas, "lock", user)

    async def unlock(self, user: str) -> bool:
        keys = _keys(user)
        event = json.dumps({"user": user, "lock": None})
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.delete(keys[1])
                pipe.srem(LOCK_INDEX, user)
                pipe.publish(self.watch.channel, event)
                found = bool((await pipe.execute())[0])
            # forget the activity that led to the lock; keep baseline and networks
            await self._r.delete(keys[2], keys[3], keys[4], keys[5])
            fields = [str(f) for f in await self._r.hkeys(keys[0])]
            forget = [f for f in fields if not _learned(f)]  # the packed windows among them
            if forget:
                await self._r.hdel(keys[0], *forget)
        except RedisError as exc:
            raise self._fail(exc) from None
        return found

    async def locks(self) -> list[LockInfo]:
        try:
            users = sorted(str(u) for u in await self._r.smembers(LOCK_INDEX))
            out = []
            for user in users:
                raw = await self._r.get(_keys(user)[1])
                if raw is None:
                    await self._r.srem(LOCK_INDEX, user)
                    continue
                data = json.loads(raw)
                out.append(LockInfo(user, data["reason"], float(data["since"]), data["by"]))
        except RedisError as exc:
            raise self._fail(exc) from None
        return sorted(out, key=lambda lock: lock.since)

    async def load_locks(self) -> dict[str, tuple[str, float]]:
        """Every current lock: user → (reason, monotonic expiry), for :class:`LockWatch`."""
        users = [str(u) for u in await self._r.smembers(LOCK_INDEX)]
        async with self._r.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.get(_keys(user)[1])
                pipe.pttl(_keys(user)[1])
            replies = await pipe.execute()
        now, out = time.monotonic(), {}
        for user, raw, pttl in zip(users, replies[0::2], replies[1::2], strict=True):
            if raw is not None:
                until = now + int(pttl) / 1000 if int(pttl) > 0 else float("inf")
                out[user] = (_reason(str(raw)), until)
        return out

    async def add_hold(self, hold: HoldInfo) -> None:
        value = json.dumps(
            {
                "user": hold.user,
                "reason": hold.reason,
                "since": hold.since,
                "instance": hold.instance,
            }
        )
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hset(HOLDS, hold.queue_id, value)
                if self._replicas:
                    pipe.execute_command("WAIT", self._replicas, self._wait_ms)
                done = await pipe.execute()
        except RedisError as exc:
            raise self._fail(exc) from None
        if self._replicas:
            note_replication(done[-1], self._replicas, "hold", hold.user)

    async def holds(self) -> list[HoldInfo]:
        try:
            raw = await self._r.hgetall(HOLDS)
        except RedisError as exc:
            raise self._fail(exc) from None
        out = []
        for qid, value in raw.items():
            data = json.loads(value)
            out.append(
                HoldInfo(
                    str(qid),
                    data["user"],
                    data["reason"],
                    float(data["since"]),
                    str(data.get("instance", "")),
                )
            )
        return sorted(out, key=lambda h: h.since)

    async def drop_holds(self, key: str) -> list[HoldInfo]:
        gone = [h for h in await self.holds() if key in (h.queue_id, h.user)]
        if gone:
            try:
                await self._r.hdel(HOLDS, *(h.queue_id for h in gone))
            except RedisError as exc:
                raise self._fail(exc) from None
        return gone

    async def add_event(self, event: Event) -> None:
        key = _keys(event.user)[7]
        value = json.dumps(
            {
                "when": event.when,
                "action": event.action,
                "reason": event.reason,
                "detail": event.detail,
            }
        )
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.rpush(key, value)
                pipe.ltrim(key, -MAX_HISTORY, -1)
                await pipe.execute()
        except RedisError as exc:
            raise self._fail(exc) from None

    async def history(self, user: str, limit: int = 50) -> list[Event]:
        try:
            raw = await self._r.lrange(_keys(user)[7], -limit, -1)
        except RedisError as exc:
            raise self._fail(exc) from None
        out = []
        for value in raw:
            d = json.loads(value)
            out.append(Event(user, float(d["when"]), d["action"], d["reason"], d["detail"]))
        return out

    async def ping(self) -> None:
        try:
            await self._r.ping()
        except RedisError as exc:
            raise self._fail(exc) from None

    async def close(self) -> None:
        await self.watch.close()
        await self._record.close()
        await self._r.aclose()
