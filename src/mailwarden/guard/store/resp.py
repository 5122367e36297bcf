"""A pipelined Redis connection for the guard's hot path: EVALSHA and nothing else.

redis-py is used for everything else; for the one call per decision its per-command overhead
(connection pool, locks, command building) costs more CPU than the decision itself. Here many
coroutines share one connection: each request is written at once and its future queued; one
reader task parses replies with hiredis (a pinned dependency) and resolves the futures in
order. Any error or timeout closes the connection and fails every pending call, so the engine
can fail open; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return self._writer
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout
                )
            except (OSError, TimeoutError) as exc:
                raise RespError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            self._writer = writer
            self._reader_task = asyncio.ensure_future(self._read(reader))
            setup = []
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                setup.append(self._send(encode("AUTH", *auth)))
            if self.db:
                setup.append(self._send(encode("SELECT", self.db)))
            for fut in setup:
                await self._wait(fut)
            return writer

    def _send(self, data: bytes) -> asyncio.Future[Any]:
        assert self._writer is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        self._writer.write(data)
        return fut

    async def _wait(self, fut: asyncio.Future[Any]) -> Any:
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except TimeoutError:
            self._fail(RespError(f"no answer from {self.host}:{self.port} in {self.timeout} s"))
            raise RespError(f"no answer from {self.host}:{self.port} in {self.timeout} s") from None
        if isinstance(result, hiredis.ReplyError):
            raise RespError(str(result))
        return result

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(encoding="utf-8", errors="replace")
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise RespError("connection closed by Redis")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if self._pending:
                        fut = self._pending.popleft()
                        if not fut.done():
                            fut.set_result(reply)
        except (OSError, RespError, hiredis.ProtocolError) as exc:
            self._fail(exc if isinstance(exc, RespError) else RespError(str(exc)))
        except asyncio.CancelledError:
            self._fail(RespError("connection closed"))
            raise

    def _fail(self, exc: RespError) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warnings for abandoned calls

    async def evalsha(self, keys: list[str], args: list[object]) -> Any:
        """Run the script (loading it on NOSCRIPT) and return its reply."""
        if self._writer is None:
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
        if self._writer is None:
            await self._connect()
        return await self._wait(self._send(encode(*parts)))

    async def close(self) -> None:
        self._fail(RespError("closed"))
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
