"""Redis Sentinel for the guard's store: one URL, every connection follows the master.

A university running several MTAs keeps the guard's state in a Redis master with replicas
and lets Redis Sentinel promote a replica when the master dies. The guard then names the
Sentinels, not a Redis::

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB][?OPTIONS]

(``rediss+sentinel://`` talks TLS to the data nodes; the Sentinels themselves are asked in
clear, as redis-py does.) ``PASSWORD`` is the data nodes' password; the Sentinels' own goes
in ``?sentinel_password=``. The port defaults to 26379.

Every connection the guard opens goes through this module: redis-py's clients (locks, holds,
the lock watch's pub/sub) come from :func:`client`, which for a Sentinel URL is redis-py's
own :class:`~redis.asyncio.sentinel.Sentinel` ``master_for``; the pipelined decision
connection (:mod:`.resp`) asks a :class:`MasterLocator` on every (re)connect. Both ask the
Sentinels anew after a connection is lost, so after a failover they find the new master.

Redis replication is asynchronous: a write the master acknowledged can die with it. For the
writes that matter (a lock, a held message) the store asks the master to ``WAIT`` until
:attr:`SentinelTarget.wait_replicas` replicas have them (see :func:`replicas_to_wait`).

The parser is pure and bounded (URL length, number of Sentinels): the URL comes from a
config file and its errors must read as a sentence, not a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.connection import parse_url
from redis.exceptions import RedisError

log = logging.getLogger("mailwarden.guard")

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379
MAX_URL = 4096
MAX_SENTINELS = 16
DEFAULT_WAIT_REPLICAS = 1
"""Replicas that must hold a lock or a hold before it counts as recorded (Sentinel only)."""

_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_OPTIONS = (
    "sentinel_username",
    "sentinel_password",
    "min_other_sentinels",
    "wait_replicas",
    *_TLS_OPTIONS,
)
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}")
FORM = "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]"


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed Sentinel URL: whom to ask, for which service, and how to talk to it."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    min_other_sentinels: int = 0
    wait_replicas: int = DEFAULT_WAIT_REPLICAS
    tls: bool = False
    tls_options: dict[str, str] = field(default_factory=dict)

    def connection_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for a connection to a data node (master)."""
        out: dict[str, Any] = {"db": self.db}
        if self.password is not None:
            out["password"] = self.password
        if self.username is not None:
            out["username"] = self.username
        if self.tls:
            out["ssl"] = True
            out.update(self.tls_options)
        return out

    def sentinel_kwargs(self, timeout: float) -> dict[str, Any]:
        """redis-py keyword arguments for a connection to a Sentinel."""
        out: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.sentinel_password is not None:
            out["password"] = self.sentinel_password
        if self.sentinel_username is not None:
            out["username"] = self.sentinel_username
        return out


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, close, rest = item[1:].partition("]")
        if not close or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"bad Sentinel address {item!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = item.partition(":")
        if not _HOST.fullmatch(host):
            raise ValueError(f"bad Sentinel host {host!r}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad Sentinel port {port_text!r}")
    return host, int(port_text)


def _small_int(name: str, text: str, limit: int) -> int:
    if not text.isdigit() or int(text) > limit:
        raise ValueError(f"{name}={text!r}: expected a number from 0 to {limit}")
    return int(text)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The :class:`SentinelTarget` of a ``redis+sentinel://`` URL; ValueError says what is
    wrong (never which password)."""
    if len(url) > MAX_URL:
        raise ValueError(f"longer than {MAX_URL} characters")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("not a Sentinel URL")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        if not colon:
            raise ValueError("put the password after a colon: redis+sentinel://:PASSWORD@…")
        username, password = unquote(user) or None, unquote(secret)
    items = hosts.split(",")
    if not hosts or any(not item for item in items):
        raise ValueError("no Sentinel address")
    if len(items) > MAX_SENTINELS:
        raise ValueError(f"more than {MAX_SENTINELS} Sentinels")
    sentinels = tuple(_host_port(item) for item in items)
    parts = [unquote(p) for p in path.split("/")] if path else []
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash
    if not parts or not _SERVICE.fullmatch(parts[0]):
        raise ValueError("no service name, or a bad one")
    if len(parts) > 2:
        raise ValueError("too many path parts")
    db = _small_int("db", parts[1], 15_999) if len(parts) == 2 else 0
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        options[key] = value
    tls = scheme.lower() == "rediss+sentinel"
    tls_options = {k: options[k] for k in _TLS_OPTIONS if k in options}
    if tls_options and not tls:
        raise ValueError("ssl_* options need rediss+sentinel:// (TLS to the data nodes)")
    return SentinelTarget(
        sentinels=sentinels,
        service=parts[0],
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
        min_other_sentinels=_small_int(
            "min_other_sentinels", options.get("min_other_sentinels", "0"), MAX_SENTINELS
        ),
        wait_replicas=_small_int(
            "wait_replicas", options.get("wait_replicas", str(DEFAULT_WAIT_REPLICAS)), 16
        ),
        tls=tls,
        tls_options=tls_options,
    )


def redact(url: str) -> str:
    """``url`` without its passwords, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    head, query_sep, query = rest.partition("?")
    _, at, tail = head.rpartition("@")
    if at:
        head = f"…@{tail}"
    query = re.sub(r"(^|&)(sentinel_password)=[^&]*", r"\1\2=…", query)
    return f"{scheme}{sep}{head}{query_sep}{query}"


def replicas_to_wait(url: str) -> int:
    """How many replicas must acknowledge a lock or a hold (``WAIT``): the URL's
    ``wait_replicas`` behind Sentinel, none for a single Redis (it has no replica to wait
    for, and ``WAIT`` would then cost its whole timeout on every lock)."""
    return parse_sentinel_url(url).wait_replicas if is_sentinel_url(url) else 0


def note_replication(acked: object, wanted: int, what: str, user: str) -> None:
    """Log (loudly) a lock or hold that fewer than ``wanted`` replicas acknowledged in time.

    It is not an error: the master has it and enforces it; only a failover in the next
    moments could lose it. Refusing the write instead would turn a slow replica into an
    outage of the guard."""
    if isinstance(acked, int) and acked >= wanted:
        return
    log.warning(
        json.dumps(
            {
                "event": "redis-write-not-replicated",
                "what": what,
                "user": user,
                "replicas": acked,
                "wanted": wanted,
                "risk": "lost if the master fails before its replicas catch up",
            }
        )
    )


MASTER_CHECK_EVERY = 1.0
"""Seconds between two background checks that the Sentinels still name our master."""


class _FollowingPool(SentinelConnectionPool):
    """redis-py's Sentinel pool asks the Sentinels only when it opens a connection, so
    after a planned switchover its open connections (the lock watch's subscription among
    them) stay with the old master, which takes writes (and loses them) until Sentinel
    reconfigures it seconds later. This pool asks again before handing out a connection,
    at most every :data:`MASTER_CHECK_EVERY` seconds (one round trip to a Sentinel), and
    closes every connection to the old master once the master moved."""

    _checked = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        await self.moved()
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    async def moved(self) -> bool:
        """True (and every connection closed) when the Sentinels now name another master;
        asks at most every :data:`MASTER_CHECK_EVERY` seconds."""
        now = time.monotonic()
        if self.master_address is None or now - self._checked < MASTER_CHECK_EVERY:
            return False
        self._checked = now
        try:
            found = await self.sentinel_manager.discover_master(self.service_name)
        except RedisError:
            return False  # no master named (a failover under way): connecting will tell
        if found != self.master_address:
            log.warning(
                json.dumps(
                    {
                        "event": "redis-master-changed",
                        "service": self.service_name,
                        "to": f"{found[0]}:{found[1]}",
                        "closing": "every connection to the old master",
                    }
                )
            )
            self.master_address = found
            await self.disconnect(inuse_connections=True)
            return True
        return False


async def master_moved(redis: aioredis.Redis) -> bool:
    """For a long-lived connection (a subscription): did the master move since it was
    opened? Always False for a single Redis. See :class:`_FollowingPool`."""
    pool = redis.connection_pool
    return await pool.moved() if isinstance(pool, _FollowingPool) else False


class _SentinelRedis(aioredis.Redis):
    """A ``master_for`` client that also closes its Sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        manager = getattr(pool, "sentinel_manager", None)
        if isinstance(manager, Sentinel):
            await manager.aclose()


def _sentinel(target: SentinelTarget, timeout: float) -> Sentinel:
    return Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        min_other_sentinels=target.min_other_sentinels,
        sentinel_kwargs=target.sentinel_kwargs(timeout),
    )


def client(url: str, **kwargs: Any) -> aioredis.Redis:
    """A redis-py client for ``url``: :func:`redis.asyncio.from_url` for a single Redis, the
    Sentinels' current master (found anew after every lost connection) for a Sentinel
    URL. ``kwargs`` are the usual connection options (timeouts, retries, decoding)."""
    if not is_sentinel_url(url):
        return aioredis.from_url(url, **kwargs)
    target = parse_sentinel_url(url)
    timeout = float(kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout") or 1.0)
    options = {**target.connection_kwargs(), **kwargs}
    redis: aioredis.Redis = _sentinel(target, timeout).master_for(
        target.service,
        redis_class=_SentinelRedis,
        connection_pool_class=_FollowingPool,
        **options,
    )
    return redis


@dataclass(frozen=True)
class Master:
    host: str
    port: int
    said_by: str
    """``HOST:PORT`` of the Sentinel that named it."""

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class MasterLocator:
    """Asks the Sentinels where the master is, for a connection that is not redis-py's
    (the pipelined decision connection). Logs when the answer changes: a failover."""

    def __init__(self, url: str, timeout: float) -> None:
        self.target = parse_sentinel_url(url)
        self._sentinel = _sentinel(self.target, timeout)
        self.last: Master | None = None

    async def locate(self) -> Master:
        """The current master; raises :class:`RedisError` (``MasterNotFoundError`` among
        them) when no Sentinel names a healthy one, as during a failover."""
        host, port = await self._sentinel.discover_master(self.target.service)
        said = self._sentinel.sentinels[0].connection_pool.connection_kwargs  # who answered
        master = Master(str(host), int(port), f"{said['host']}:{said['port']}")
        if self.last is not None and self.last.where != master.where:
            log.warning(
                json.dumps(
                    {
                        "event": "redis-master-changed",
                        "service": self.target.service,
                        "from": self.last.where,
                        "to": master.where,
                        "said_by": master.said_by,
                    }
                )
            )
        self.last = master
        return master

    async def aclose(self) -> None:
        await self._sentinel.aclose()


@dataclass(frozen=True)
class MasterReport:
    """What ``guard status`` shows about the Redis behind the store."""

    master: str
    said_by: str | None
    """The Sentinel that named the master; None for a single Redis."""
    role: str
    """What the master says it is (``master``; anything else is worth a look)."""
    replicas: int


async def master_report(url: str, timeout: float) -> MasterReport:
    """Ask (the Sentinels, then) the master who it is; raises :class:`RedisError`."""
    said_by: str | None = None
    if is_sentinel_url(url):
        locator = MasterLocator(url, timeout)
        try:
            found = await locator.locate()
        finally:
            await locator.aclose()
        master, said_by = found.where, found.said_by
    else:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        master = str(options.get("path") or f"{options.get('host')}:{options.get('port', 6379)}")
    r = client(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        role = await r.execute_command("ROLE")  # type: ignore[no-untyped-call]
        info = await r.info("replication")
    finally:
        await r.aclose()
    name = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    return MasterReport(master, said_by, name, int(info.get("connected_slaves", 0)))


__all__ = [
    "FORM",
    "Master",
    "MasterLocator",
    "MasterReport",
    "RedisError",
    "SentinelTarget",
    "client",
    "is_sentinel_url",
    "master_moved",
    "master_report",
    "note_replication",
    "parse_sentinel_url",
    "redact",
    "replicas_to_wait",
]
