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
``?ssl_ca_certs=``, host name checked, as redis-py does) and ``unix:///path?db=N``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url


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
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.path: str | None = options.get("path")
        self.host: str = options.get("host", "localhost")
        self.port: int = options.get("port", 6379)
        self.where = self.path or f"{self.host}:{self.port}"
        self.password: str | None = options.get("password")
        self.username: str | None = options.get("username")
        self.db: int = options.get("db", 0)
        self.tls = (
            tls_context(options) if options.get("connection_class") is SSLConnection else None
        )
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
            for fut in setup:
                await self._wait(fut)

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
