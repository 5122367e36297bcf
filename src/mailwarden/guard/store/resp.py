"""A pipelined Redis connection for the guard's hot path: EVALSHA and nothing else.

redis-py is used for everything else; for the one call per decision its per-command overhead
(connection pool, locks, command building) costs more CPU than the decision itself. Here many
coroutines share one connection: each request is written at once and its future queued. The
connection is an :class:`asyncio.Protocol`: the bytes Redis sends are fed to hiredis (a
pinned dependency) right in ``data_received`` and each reply resolves the oldest future, so
an answer reaches its decision without a reader task, a stream or ``wait_for`` in between.
Each request carries a timer; when it fires, or on any error, the connection is closed and
every pending call fails, so the engine can fail open. The next call reconnects.

The URL is read by redis-py's own parser, so this connection goes where redis-py's go, the
same way: ``redis://`` (TCP), ``rediss://`` (TLS, verified against the system CAs or
``?ssl_ca_certs=``, host name checked, as redis-py does) and ``unix:///path?db=N``. Behind
Redis Sentinel (``redis+sentinel://``, see :mod:`.sentinel`) every (re)connect asks the
Sentinels for the master first and checks with ``ROLE`` that it is one; a ``READONLY`` reply
(a master demoted under us) drops the connection, so the next call finds the new master.
At most every :data:`MASTER_CHECK_EVERY` seconds a call also asks the Sentinels in the
background whether they still name this master: after a planned switchover (``SENTINEL
FAILOVER``) the old master keeps taking writes until Sentinel reconfigures it, seconds
later, and whatever it takes then is lost.

A connect that failed is not retried for :data:`RECONNECT_PAUSE`: while Redis (or, during
a failover, the master) is gone, each decision then fails open at once instead of queueing
behind a connect attempt of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections import deque
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import RedisError

from mailwarden.guard.store.sentinel import MASTER_CHECK_EVERY, MasterLocator, is_sentinel_url

RECONNECT_PAUSE = 0.1
"""Seconds after a failed connect during which calls fail without trying again."""


class RespError(Exception):
    """Redis answered with an error, or the connection failed or timed out."""


def encode(*parts: object) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Replies(asyncio.Protocol):
    """The connection's receiving side: replies resolve the pending futures in order."""

    def __init__(self, owner: ScriptConnection) -> None:
        self.owner = owner
        self.parser = hiredis.Reader(encoding="utf-8", errors="replace")

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        pending = self.owner._pending
        try:
            while (reply := self.parser.gets()) is not False:
                if not pending:
                    raise RespError("a reply nobody asked for")
                fut, timer = pending.popleft()
                timer.cancel()
                if not fut.done():
                    fut.set_result(reply)
        except (RespError, hiredis.ProtocolError) as exc:
            self.owner._fail(exc if isinstance(exc, RespError) else RespError(str(exc)), self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._fail(RespError(f"connection lost: {exc or 'closed by Redis'}"), self)


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context redis-py would use for a ``rediss://`` URL's options."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    reqs = _CERT_REQS.get(str(options.get("ssl_cert_reqs", "required")).lower(), ssl.CERT_REQUIRED)
    context.check_hostname = reqs != ssl.CERT_NONE and options.get("ssl_check_hostname", True)
    context.verify_mode = reqs
    return context


class ScriptConnection:
    def __init__(self, url: str, script: str, timeout: float) -> None:
        self._locator: MasterLocator | None = None
        if is_sentinel_url(url):
            self._locator = MasterLocator(url, timeout)
            target = self._locator.target
            options: dict[str, Any] = {**target.connection_kwargs(), **target.tls_options}
            if target.tls:
                options["connection_class"] = SSLConnection
        else:
            options = parse_url(url)  # type: ignore[no-untyped-call]
        self.path: str | None = options.get("path")
        self.host: str = options.get("host", "localhost")
        self.port: int = options.get("port", 6379)
        self.where = self.path or f"{self.host}:{self.port}"
        if self._locator is not None:
            self.where = f"the master of {self._locator.target.service!r}"
        self.password: str | None = options.get("password")
        self.username: str | None = options.get("username")
        self.db: int = options.get("db", 0)
        self.tls = (
            tls_context(options) if options.get("connection_class") is SSLConnection else None
        )
        self._retry_at = 0.0
        self._checked = 0.0
        self._checking: asyncio.Task[None] | None = None
        self.script = script
        self.sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: _Replies | None = None
        self._pending: deque[tuple[asyncio.Future[Any], asyncio.TimerHandle]] = deque()
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._transport is not None:
                return
            if time.monotonic() < self._retry_at:
                raise RespError(f"{self.where} unreachable a moment ago; not retrying yet")
            try:
                await self._open()
            except RespError:
                self._retry_at = time.monotonic() + RECONNECT_PAUSE
                raise

    async def _open(self) -> None:
        """Connect (to the master the Sentinels name, behind Sentinel) and set it up."""
        if self._locator is not None:
            try:
                master = await self._locator.locate()
            except RedisError as exc:
                raise RespError(f"no master from the Sentinels: {exc}") from None
            self.host, self.port = master.host, master.port
            self.where = f"{master.where} (master per Sentinel {master.said_by})"
        loop = asyncio.get_running_loop()
        if self.path is not None:
            opening = loop.create_unix_connection(lambda: _Replies(self), self.path)
        else:
            opening = loop.create_connection(
                lambda: _Replies(self),
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.host if self.tls is not None else None,
            )
        try:
            transport, protocol = await asyncio.wait_for(opening, self.timeout)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            reason = str(exc) or type(exc).__name__
            raise RespError(f"cannot connect to {self.where}: {reason}") from None
        self._transport = transport
        self._protocol = protocol
        setup = []
        if self.password is not None:
            auth = (self.username, self.password) if self.username else (self.password,)
            setup.append(self._send(encode("AUTH", *auth)))
        if self.db:
            setup.append(self._send(encode("SELECT", self.db)))
        role = self._send(encode("ROLE")) if self._locator is not None else None
        try:
            for fut in setup:
                await self._wait(fut)
            if role is not None and (kind := (await self._wait(role))[0]) != "master":
                raise RespError(f"{self.where} is a {kind}, not the master")
        except RespError as exc:  # a half set-up connection must not serve the next call
            self._fail(exc)
            raise

    def _send(self, data: bytes) -> asyncio.Future[Any]:
        transport = self._transport
        if transport is None:
            raise RespError(f"not connected to {self.where}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(self.timeout, self._expire, fut)
        self._pending.append((fut, timer))
        transport.write(data)
        return fut

    def _expire(self, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            self._fail(RespError(f"no answer from {self.where} in {self.timeout} s"))

    async def _wait(self, fut: asyncio.Future[Any]) -> Any:
        result = await fut
        if isinstance(result, hiredis.ReplyError):
            if str(result).startswith("READONLY") and self._locator is not None:
                # the master was demoted under us: drop it, the next call asks the Sentinels
                self._fail(RespError(f"{self.where} is no longer the master: {result}"))
            raise RespError(str(result))
        return result

    def _fail(self, exc: RespError, protocol: _Replies | None = None) -> None:
        """Close the connection (if ``protocol`` is still the current one) and fail every
        pending call with ``exc``."""
        if protocol is not None and protocol is not self._protocol:
            return  # an old connection's late news
        transport, self._transport, self._protocol = self._transport, None, None
        pending, self._pending = self._pending, deque()
        if transport is not None:
            transport.abort()
        for fut, timer in pending:
            timer.cancel()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warnings for abandoned calls

    def _check_master(self) -> None:
        """Behind Sentinel: now and then, ask in the background whether the master moved."""
        now = time.monotonic()
        if self._locator is None or self._checking is not None:
            return
        if now - self._checked < MASTER_CHECK_EVERY:
            return
        self._checked = now
        self._checking = asyncio.ensure_future(self._recheck(self._locator))

    async def _recheck(self, locator: MasterLocator) -> None:
        try:
            master = await locator.locate()
            if self._transport is not None and (master.host, master.port) != (
                self.host,
                self.port,
            ):
                self._fail(RespError(f"{self.where}: the Sentinels now name {master.where}"))
        except RedisError:
            pass  # no master named (a failover under way): the connection's errors tell
        finally:
            self._checking = None

    async def evalsha(self, keys: list[str], args: list[object]) -> Any:
        """Run the script (loading it on NOSCRIPT) and return its reply."""
        if self._transport is None:
            await self._connect()
        self._check_master()
        command = encode("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._wait(self._send(command))
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._wait(self._send(encode("EVAL", self.script, len(keys), *keys, *args)))

    async def call(self, *parts: object) -> Any:
        """Any other command on the same pipelined connection (e.g. the lock check)."""
        if self._transport is None:
            await self._connect()
        self._check_master()
        return await self._wait(self._send(encode(*parts)))

    async def close(self) -> None:
        self._fail(RespError("closed"))
        checking, self._checking = self._checking, None
        if checking is not None:
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking
        if self._locator is not None:
            await self._locator.aclose()
