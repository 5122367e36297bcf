"""A pipelined Redis connection for the guard's hot path: EVALSHA and nothing else.

redis-py is used for everything else; for the one call per decision its per-command overhead
(connection pool, locks, command building) costs more CPU than the decision itself. Here many
coroutines share one connection: each request is written at once and its future queued. The
connection is an :class:`asyncio.Protocol`: the bytes Redis sends are fed to hiredis (a
pinned dependency) right in ``data_received`` and each reply resolves the oldest future, so
an answer reaches its decision without a reader task, a stream or ``wait_for`` in between.
Each request carries a timer; when it fires, or on any error, the connection is closed and
every pending call fails, so the engine can fail open. The next call reconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


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


class ScriptConnection:
    def __init__(self, url: str, script: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.db = int(parts.path.strip("/") or 0)
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
            loop = asyncio.get_running_loop()
            try:
                transport, protocol = await asyncio.wait_for(
                    loop.create_connection(lambda: _Replies(self), self.host, self.port),
                    self.timeout,
                )
            except (OSError, TimeoutError) as exc:
                raise RespError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            self._transport = transport
            self._protocol = protocol
            setup = []
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                setup.append(self._send(encode("AUTH", *auth)))
            if self.db:
                setup.append(self._send(encode("SELECT", self.db)))
            for fut in setup:
                await self._wait(fut)

    def _send(self, data: bytes) -> asyncio.Future[Any]:
        transport = self._transport
        if transport is None:
            raise RespError(f"not connected to {self.host}:{self.port}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(self.timeout, self._expire, fut)
        self._pending.append((fut, timer))
        transport.write(data)
        return fut

    def _expire(self, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            self._fail(RespError(f"no answer from {self.host}:{self.port} in {self.timeout} s"))

    async def _wait(self, fut: asyncio.Future[Any]) -> Any:
        result = await fut
        if isinstance(result, hiredis.ReplyError):
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

    async def evalsha(self, keys: list[str], args: list[object]) -> Any:
        """Run the script (loading it on NOSCRIPT) and return its reply."""
        if self._transport is None:
            await self._connect()
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
        return await self._wait(self._send(encode(*parts)))

    async def close(self) -> None:
        self._fail(RespError("closed"))
