"""Redis-backed state shared by several MTAs: one atomic Lua call per decision.

The Lua script below does what :func:`mailwarden.guard.detector.record` does for the memory
store — lock check, bucketed windows, distinct recipient and domain sets, subject
fingerprints, networks with probation, the decayed baseline — atomically on the server, and
returns the :class:`Counters`. It travels over a pipelined connection of our own
(:mod:`.resp`), because redis-py's per-command overhead costs more CPU than the decision.
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
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mailwarden.guard.detector import (
    MAX_FINGERPRINTS,
    NETWORK_MEMORY_DAYS,
    NETWORK_PROBATION,
    RCPT_ALPHA,
    RCPT_HISTORY,
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
from mailwarden.guard.window import SPANS

PREFIX = "mwg"
MAX_DISTINCT = 2000

# The windows of a user live in one field ("w") of the user's scalar hash, packed with the
# cmsgpack library Redis builds into its Lua: {name = ring}. A ring is an array {head, c0 ..
# c(n-1), running total} with the semantics of :class:`mailwarden.guard.window.Ring` (head =
# newest bucket index, counts at index % n, the total kept as buckets come and go). One HGET,
# one unpack, plain Lua arithmetic, one pack, one HSET: the earlier layout (two hash fields
# per bucket, an HMGET per total) spent ~0.5 ms of Redis time per decision building field
# names and converting replies; this one ~0.1 ms.
_HELPERS = (
    "local SPEC = {"
    + ", ".join(
        f"{name} = {{{width:g}, {n}}}"
        for name, (width, n) in {
            "m1": SPANS["1m"],
            "mh": SPANS["1h"],
            "md": SPANS["24h"],
            "r1": SPANS["1m"],
            "rh": SPANS["1h"],
            "rd": SPANS["24h"],
            "xh": SPANS["1h"],
            "fh": SPANS["1h"],
            "ah": SPANS["1h"],
            "sh": SPANS["1h"],
            "sd": SPANS["24h"],
        }.items()
    )
    + "}\n"
    + """
local function windows(packed)
  if packed then return cmsgpack.unpack(packed) end
  return {}
end
local function ring(w, name)
  local r = w[name]
  if not r then
    local n = SPEC[name][2]
    r = {-1}
    for i = 2, n + 2 do r[i] = 0 end  -- counts at 2 .. n+1, their running total at n+2
    w[name] = r
  end
  return r
end
local function advance(r, n, idx)
  local head = r[1]
  if idx <= head then return end
  if head < 0 or idx - head >= n then
    for i = 2, n + 2 do r[i] = 0 end
  else
    local running = r[n + 2]
    for b = head + 1, idx do
      local i = b % n + 2
      running = running - r[i]
      r[i] = 0
    end
    r[n + 2] = running
  end
  r[1] = idx
end
local function add(w, name, now, k)
  local spec = SPEC[name]
  local r, n = ring(w, name), spec[2]
  local idx = math.floor(now / spec[1])
  advance(r, n, idx)
  if idx >= r[1] - n + 1 then
    local i = idx % n + 2
    r[i] = r[i] + k
    r[n + 2] = r[n + 2] + k
  end
end
local function total(w, name, now)
  local spec = SPEC[name]
  local r, n = ring(w, name), spec[2]
  advance(r, n, math.floor(now / spec[1]))
  return r[n + 2]
end
local function distinct_add(z, now, value)
  redis.call('ZADD', z, now, value)
end
local function distinct_count(z, now, window, cap)
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
  local n = redis.call('ZCARD', z)
  if n > cap then
    redis.call('ZREMRANGEBYRANK', z, 0, n - cap - 1)
    n = cap
  end
  redis.call('EXPIRE', z, math.ceil(window) + 60)
  return n
end
"""
)

# KEYS: 1 scalars hash (with the windows), 2 lock, 3 rcpt zset (1h), 4 unused (a 1 h domain
# zset once: the 24 h one answers for the hour too), 5 domain zset (24h), 6 subject hash
# (fingerprint → packed windows), 7 network hash.
# ARGV: 1 now, 2 distinct(0/1), 3 message(0/1), 4 network, 5 subject fp, 6 probation s,
# 7 network memory s, 8 half-life days, 9 cap, 10 recipients of the message (0 at RCPT),
# 11 hours added to UTC for the hour of the day, 12 profile days, 13 N recipients to count,
# 14..13+N recipients, then the external domains (one per external recipient).
RECORD_LUA = (
    _HELPERS
    + f"local RCPT_HISTORY, RCPT_ALPHA = {RCPT_HISTORY}, {RCPT_ALPHA}\n"
    + f"local MAX_FINGERPRINTS, IDLE_SECONDS = {MAX_FINGERPRINTS}, {IDLE_DAYS * 86400}\n"
    + """
local h = KEYS[1]
local why = redis.call('GET', KEYS[2])
if why then return {why} end
local now = tonumber(ARGV[1])
local distinct = ARGV[2] == '1'
local message = ARGV[3] == '1'
local network, fp = ARGV[4], ARGV[5]
local probation, memory = tonumber(ARGV[6]), tonumber(ARGV[7])
local half_life, cap = tonumber(ARGV[8]), tonumber(ARGV[9])
local mrcpts = tonumber(ARGV[10])
local offset, profile_days = tonumber(ARGV[11]), tonumber(ARGV[12])
local n = tonumber(ARGV[13])

local s = redis.call('HMGET', h, 'peak', 'hidx', 'hext', 'flag', 'psince', 'ravg', 'rseen', 'w')
local peak = tonumber(s[1]) or 0
local hidx = tonumber(s[2]) or -1
local hext = tonumber(s[3]) or 0
local flagged_until = tonumber(s[4]) or 0
local flagged = now < flagged_until
local index = math.floor(now / 3600)
local psince = tonumber(s[5]) or -1
local w = windows(s[8])
if not s[8] and s[2] then
  -- kept by a guard from before the packed windows: drop its per-bucket fields once
  local stale = {}
  for _, f in ipairs(redis.call('HKEYS', h)) do
    if string.find(f, '^%a%w:%d+t?$') then stale[#stale + 1] = f end
  end
  for i = 1, #stale, 500 do
    redis.call('HDEL', h, unpack(stale, i, math.min(i + 499, #stale)))
  end
end
local out = {}  -- learned fields of h to write back with the windows

-- baseline: fold finished clock hours into the decayed peak unless flagged
if psince < 0 then
  psince = index
  redis.call('HSET', h, 'psince', psince)
end
if hidx < 0 then
  hidx = index
elseif index > hidx then
  local decay1 = 0.5 ^ (1 / (half_life * 24))
  peak = peak * decay1
  if not flagged and hext > peak then peak = hext end
  -- the hour-of-day profile: the slot of the finished hour keeps its decayed peak
  if not flagged and hext > 0 then
    local pf = 'p' .. (math.floor(hidx + offset) % 24)
    local pv = (tonumber(redis.call('HGET', h, pf)) or 0) * (0.5 ^ (24 / (half_life * 24)))
    if hext > pv then pv = hext end
    redis.call('HSET', h, pf, tostring(pv))
  end
  local gap = index - hidx - 1
  if gap > 0 then peak = peak * (0.5 ^ (math.min(gap, 8760) / (half_life * 24))) end
  hidx = index
  hext = 0
end

local typical = 0
if message then
  add(w, 'm1', now, 1); add(w, 'mh', now, 1); add(w, 'md', now, 1)
  if mrcpts > 0 then
    local ravg, rseen = tonumber(s[6]) or 0, tonumber(s[7]) or 0
    if rseen >= RCPT_HISTORY then typical = ravg end
    if not flagged then
      if rseen == 0 then ravg = mrcpts else ravg = ravg + RCPT_ALPHA * (mrcpts - ravg) end
      rseen = math.min(rseen + 1, 1000000)
      out[#out + 1] = 'ravg'; out[#out + 1] = tostring(ravg)
      out[#out + 1] = 'rseen'; out[#out + 1] = rseen
    end
  end
end
-- recipients accepted this hour: read before this decision, then counted as accepted;
-- a verdict other than accept takes them back in the FLAG call (as memory counts them only
-- after an accept)
local accepted = total(w, 'ah', now)
local ext = 0
if n > 0 then
  add(w, 'ah', now, n)
  add(w, 'r1', now, n); add(w, 'rh', now, n); add(w, 'rd', now, n)
  if distinct then
    for i = 14, 13 + n do distinct_add(KEYS[3], now, ARGV[i]) end
    for i = 14 + n, #ARGV do
      ext = ext + 1
      distinct_add(KEYS[5], now, ARGV[i])
    end
    if ext > 0 then
      add(w, 'xh', now, ext)
      hext = hext + ext
    end
  end
end
local same1, same24 = 0, 0
if message and fp ~= '' and distinct then
  local fh = KEYS[6]
  local packed = redis.call('HGET', fh, fp)
  if not packed and redis.call('HLEN', fh) >= MAX_FINGERPRINTS then
    -- full: forget the fingerprint seen longest ago (as memory forgets the oldest)
    local all, oldest, at = redis.call('HGETALL', fh), nil, nil
    for i = 1, #all, 2 do
      local head = cmsgpack.unpack(all[i + 1]).sh[1]
      if at == nil or head < at then oldest, at = all[i], head end
    end
    redis.call('HDEL', fh, oldest)
  end
  local fw = windows(packed)
  add(fw, 'sh', now, 1); add(fw, 'sd', now, 1)
  same1, same24 = total(fw, 'sh', now), total(fw, 'sd', now)
  redis.call('HSET', fh, fp, cmsgpack.pack(fw))
  redis.call('EXPIRE', fh, 90000)
end
local new_network = 0
if network ~= '' then
  local nh = KEYS[7]
  local all = redis.call('HGETALL', nh)
  local known, count, mine = {}, 0, nil
  for i = 1, #all, 2 do
    local first, last = string.match(all[i + 1], '([^,]+),([^,]+)')
    first, last = tonumber(first), tonumber(last)
    if last < now - memory then
      redis.call('HDEL', nh, all[i])
    else
      count = count + 1
      if first <= now - probation then known[all[i]] = true end
      if all[i] == network then mine = first end
    end
  end
  local any_known = next(known) ~= nil
  if mine == nil and not flagged and count < 64 then
    redis.call('HSET', nh, network, now .. ',' .. now)
  elseif mine ~= nil then
    redis.call('HSET', nh, network, mine .. ',' .. now)
  end
  if any_known and not known[network] then new_network = 1 end
  redis.call('EXPIRE', nh, math.ceil(memory))
end
local profile = -1
if index - psince >= profile_days * 24 then
  profile = tonumber(redis.call('HGET', h, 'p' .. (math.floor(index + offset) % 24))) or 0
end
-- distinct domains of the last hour: the 24 h set holds each domain's last sighting
local domains24 = distinct_count(KEYS[5], now, 86400, cap)
local domains1 = redis.call('ZCOUNT', KEYS[5], '(' .. (now - 3600), '+inf')
local reply = {
  false,
  total(w, 'm1', now), total(w, 'mh', now), total(w, 'md', now),
  total(w, 'r1', now), total(w, 'rh', now), total(w, 'rd', now),
  total(w, 'xh', now),
  distinct_count(KEYS[3], now, 3600, cap), domains1, domains24,
  total(w, 'fh', now),
  same1, same24, new_network, tostring(peak), flagged and 1 or 0, tostring(typical),
  tostring(profile), accepted
}
redis.call('HSET', h, 'peak', tostring(peak), 'hidx', hidx, 'hext', hext,
  'w', cmsgpack.pack(w), unpack(out))
redis.call('EXPIRE', h, IDLE_SECONDS)
return reply
"""
)

# KEYS: 1 scalars hash, 2 network hash. ARGV: 1 now, 2 flag until, 3 refused count,
# 4 probation s, 5 recipients the record call counted as accepted that were not.
FLAG_LUA = (
    _HELPERS
    + """
local h = KEYS[1]
local now, until_, refused = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', h, 'flag', 'w')
local w = windows(s[2])
if until_ > (tonumber(s[1]) or 0) then redis.call('HSET', h, 'flag', until_) end
if refused > 0 then add(w, 'fh', now, refused) end
local back = tonumber(ARGV[5]) or 0
if back > 0 then
  local r, width, n = ring(w, 'ah'), SPEC['ah'][1], SPEC['ah'][2]
  local idx = math.floor(now / width)
  if idx <= r[1] and idx >= r[1] - n + 1 then
    local i = idx % n + 2
    local taken = math.min(r[i], back)
    r[i] = r[i] - taken
    r[n + 2] = r[n + 2] - taken
  end
end
redis.call('HSET', h, 'hext', 0, 'w', cmsgpack.pack(w))
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local first = tonumber(string.match(all[i + 1], '([^,]+),'))
  if first > now - tonumber(ARGV[4]) then redis.call('HDEL', KEYS[2], all[i]) end
end
return 1
"""
)


def _learned(field: str) -> bool:
    """Fields of the scalar hash an unlock keeps: the baseline and the hour-of-day profile."""
    return field in ("peak", "hidx", "psince") or (field[:1] == "p" and field[1:].isdigit())


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
        self._client = aioredis.from_url(
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
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                self.live = False
                raise
            except Exception as exc:  # whatever it was: fall back to asking Redis
                if self.live or self.generation == 0:
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

    def __init__(self, url: str, *, timeout: float = 0.2, lock_ttl: float = 0.0) -> None:
        self.url = url
        self.lock_ttl = lock_ttl
        self._r = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )
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
        args: list[Any] = [
            repr(obs.now),
            "1" if limits.anomaly else "0",
            "1" if obs.message else "0",
            obs.network,
            obs.subject_fp,
            NETWORK_PROBATION,
            NETWORK_MEMORY_DAYS * 86400,
            config.ladder.baseline_half_life_days,
            MAX_DISTINCT,
            obs.rcpt_count if obs.message else 0,
            config.ladder.profile_utc_offset,
            config.ladder.profile_days,
            len(obs.recipients),
            *obs.recipients,
            *externals,
        ]
        try:
            raw = await self._record.evalsha(keys[:7], args)
        except RespError as exc:
            raise self._fail(exc) from None
        if raw[0]:
            return Verdict(Action.REJECT, 0.0, (f"account locked: {_reason(raw[0])}",))
        n = [int(x) for x in raw[1:15]]
        counters = Counters(
            msgs_1m=n[0],
            msgs_1h=n[1],
            msgs_24h=n[2],
            rcpts_1m=n[3],
            rcpts_1h=n[4],
            rcpts_24h=n[5],
            ext_rcpts_1h=n[6],
            distinct_rcpts_1h=n[7],
            domains_1h=n[8],
            domains_24h=n[9],
            refused_1h=n[10],
            same_subject_1h=n[11],
            same_subject_24h=n[12],
            new_network=bool(n[13]),
            baseline_hour=float(raw[15]),
            message_rcpts=obs.rcpt_count if obs.message else 0,
            typical_rcpts=float(raw[17]),
            hour_profile=float(raw[18]),
            accepted_1h=int(raw[19]),
            flagged=raw[16] == 1,
        )
        verdict = assess(counters, limits, config.ladder)
        if verdict.action in (Action.THROTTLE, Action.HOLD, Action.LOCK):
            refused = refused_by(verdict, obs)
            until = obs.now + config.ladder.flag_hours * 3600
            try:
                await self._flag(
                    keys=[keys[0], keys[6]],
                    args=[repr(obs.now), until, refused, NETWORK_PROBATION, len(obs.recipients)],
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
                await pipe.execute()
        except RedisError as exc:
            raise self._fail(exc) from None

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
            await self._r.hset(HOLDS, hold.queue_id, value)
        except RedisError as exc:
            raise self._fail(exc) from None

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
