"""``HOST:PORT`` / ``unix:/path`` listen addresses for the guard's servers, and the connection
class both front ends build on.

Both protocols are request/answer on a persistent connection: the MTA sends a request (a
policy request, a milter packet with its macros) and waits. A :class:`Conversation` is an
:class:`asyncio.Protocol`: bytes arrive in :meth:`~asyncio.Protocol.data_received`, the
complete requests in them are answered in batches and each batch's answers leave in one
write. With a store that never waits (memory, SQLite: ``Store.immediate``) the answer is
computed right there, without a task, a future or a stream per request — on the policy path
that was a third of the CPU per decision. With Redis the requests of a connection are
answered in order by one task.

The peer is untrusted, so every connection is bounded in memory and time
(:class:`Listener`): a client that stops reading our answers is no longer read from once
:data:`WRITE_HIGH` bytes of answers wait for it (the transport's ``pause_writing``), a
connection without progress for ``idle_timeout`` seconds is closed, and a listener holds at
most ``max_connections`` at a time — the ones beyond are closed at once (an MTA retries, or
applies its default action). Postfix's and sendmail's own traffic never comes near these
bounds: one request, then a wait for its answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from mailwarden.errors import ConfigError

log = logging.getLogger("mailwarden.guard")

T = TypeVar("T")
MAX_BACKLOG = 1 << 18
"""Unanswered bytes a connection may pile up while its answers wait for the store (Redis);
beyond that the guard stops reading from it until it has caught up."""
WRITE_HIGH = 1 << 16
"""Answers a peer may leave unread before the guard stops reading its requests; reading
resumes once fewer than :data:`WRITE_LOW` bytes are left."""
WRITE_LOW = 1 << 14
BATCH = 64
"""Requests answered per write: an MTA's one request per read is still one write, while a
pipelined flood is answered in small steps, each one checking whether the peer reads."""
ROUNDS = 16
"""Batches answered before the connection lets the others have their turn: a pipelined flood
of tiny requests must not hold the event loop for a whole read (52,000 five-byte requests)."""
REFUSAL_LOG_SECONDS = 10.0
"""At most one log line per listener this often for connections beyond the cap."""
FD_LIMIT_WANTED = 65536


class FrameError(ValueError):
    """The peer broke the protocol (or its bounds): the connection is closed."""


class Listener:
    """The bounds of one listening socket, shared by its connections: how many may be open
    at a time, and how long one may go without progress."""

    def __init__(self, what: str, *, max_connections: int, idle_timeout: float) -> None:
        self.what = what
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.open = 0
        self.refused = 0
        """Connections closed for the cap since the last log line about them."""
        self.logged_at = float("-inf")

    def admit(self, now: float) -> bool:
        """Count a new connection in, or say no (and log it, at most every few seconds)."""
        if self.open < self.max_connections:
            self.open += 1
            return True
        self.refused += 1
        if now - self.logged_at >= REFUSAL_LOG_SECONDS:
            log.warning(
                json.dumps(
                    {
                        "event": f"{self.what}-connection-refused",
                        "reason": "max_connections",
                        "max_connections": self.max_connections,
                        "refused": self.refused,
                    }
                )
            )
            self.logged_at, self.refused = now, 0
        return False


def finish_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``, which must not wait for anything, to its end and return its value."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a store that answers at once (Store.immediate) had to wait")


class Conversation(asyncio.Protocol):
    """One MTA connection: split the bytes into requests (:meth:`take`), answer each
    (:meth:`answer`), write the answers of one batch together."""

    what = "connection"

    def __init__(self, immediate: bool, listener: Listener | None = None) -> None:
        self.immediate = immediate
        self.listener = listener
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = False
        """Set by :meth:`answer` when the peer said goodbye: answer nothing more."""
        self.counted = False
        self.write_full = False
        """The transport holds more than :data:`WRITE_HIGH` unsent bytes (``pause_writing``)."""
        self.drained: asyncio.Future[None] | None = None
        self.last = 0.0
        """When the peer last made progress (a complete request, or read our answers)."""
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False
        """Reading is paused (see :meth:`_reading`)."""
        self.queued = False
        """More complete requests wait in ``buf`` for this connection's next turn."""

    # -- what a protocol provides ------------------------------------------------------

    def take(self, limit: int) -> list[Any]:
        """Remove up to ``limit`` complete requests from ``self.buf`` and return them; raise
        :class:`FrameError` for a broken or oversized one."""
        raise NotImplementedError

    def frame(self, data: bytes) -> bytes:
        """The bytes just read, as :meth:`take` wants them (a hook for normalising); called
        before they are appended to ``buf``, which it may edit (its tail only)."""
        return data

    async def answer(self, request: Any) -> bytes:
        """The bytes to send for ``request`` (``b""``: no answer)."""
        raise NotImplementedError

    def waits(self, request: Any) -> bool:
        """False for a request whose answer never asks the store (answered at once even
        with a store that waits)."""
        return True

    # -- the machinery -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        listener = self.listener
        if listener is None:
            return
        loop = asyncio.get_running_loop()
        self.last = now = loop.time()
        if not listener.admit(now):
            self.done = True
            self.transport.close()
            return
        self.counted = True
        self.timer = loop.call_later(listener.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.counted and self.listener is not None:
            self.counted = False
            self.listener.open -= 1
        self._wake()

    def pause_writing(self) -> None:
        self.write_full = True
        self._reading()

    def resume_writing(self) -> None:
        self.write_full = False
        if self.listener is not None:
            self.last = asyncio.get_running_loop().time()  # the peer reads: progress
        self._reading()
        self._wake()
        if self.task is None and self.buf:
            asyncio.get_running_loop().call_soon(self._process)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        data = self.frame(data)
        self.buf = self.buf + data if self.buf else data
        if self.task is not None or self.write_full or self.queued:  # picked up later
            if len(self.buf) > MAX_BACKLOG:
                self._reading()
            return
        self._process()

    def _process(self) -> None:
        """Answer the complete requests in ``buf``, batch by batch, while the peer reads our
        answers and no answer waits for the store; after :data:`ROUNDS` batches, continue
        in a later turn of the event loop (not reading meanwhile)."""
        self.queued = False
        for _ in range(ROUNDS):
            if self.done or self.write_full or self.task is not None:
                break
            out: list[bytes] = []
            try:
                requests = self.take(BATCH)
                if not requests:
                    break
                if self.listener is not None:
                    self.last = asyncio.get_running_loop().time()
                for i, request in enumerate(requests):
                    if self.done:
                        break
                    if not self.immediate and self.waits(request):
                        # from here on in order, in a task: the store has to be waited for
                        self.task = asyncio.ensure_future(self._answer_in_order(requests[i:]))
                        break
                    out.append(finish_now(self.answer(request)))
            except FrameError as exc:
                self._send(out)
                self._broken(exc)
                return
            self._send(out)
            if len(requests) < BATCH:
                break  # take() found no more
        else:
            if not self.done and not self.write_full and self.task is None:
                self.queued = True
                asyncio.get_running_loop().call_soon(self._process)
        self._reading()

    async def _answer_in_order(self, requests: list[Any]) -> None:
        try:
            while requests and not self.done:
                out = []
                for request in requests:
                    if self.done:
                        break
                    out.append(await self.answer(request))
                self._send(out)
                if self.write_full and not self.done:
                    self.drained = asyncio.get_running_loop().create_future()
                    await self.drained
                requests = self.take(BATCH)
                if requests and self.listener is not None:
                    self.last = asyncio.get_running_loop().time()
        except FrameError as exc:
            self._broken(exc)
        finally:
            self.task = None
            self.drained = None
            if self.transport is not None:
                if self.done:
                    self.transport.close()
                else:
                    self._reading()

    def _wake(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _reading(self) -> None:
        """Read from the peer only while its answers leave and its backlog is small."""
        pause = (
            self.write_full
            or self.queued
            or (self.task is not None and len(self.buf) > MAX_BACKLOG)
        )
        if pause == self.paused:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _check_idle(self) -> None:
        """Close a connection that made no progress for ``idle_timeout`` seconds: idle,
        stuck half-way through a request, or not reading its answers."""
        self.timer = None
        transport, listener = self.transport, self.listener
        if transport is None or listener is None:
            return
        loop = asyncio.get_running_loop()
        left = self.last + listener.idle_timeout - loop.time()
        if left > 0 or (self.task is not None and not self.write_full):
            # busy, or the guard itself is waiting for its store: not the peer's fault
            self.timer = loop.call_later(max(left, 0.0) or listener.idle_timeout, self._check_idle)
            return
        log.info(
            json.dumps(
                {
                    "event": f"{self.what}-idle-timeout",
                    "idle_timeout": listener.idle_timeout,
                    "pending_bytes": len(self.buf),
                    "unsent_bytes": transport.get_write_buffer_size(),
                }
            )
        )
        self.done = True
        transport.abort()  # nothing worth flushing to a peer that stopped reading

    def _send(self, out: list[bytes]) -> None:
        if self.transport is None:
            return
        data = b"".join(out)
        if data:
            self.transport.write(data)
        if self.done and self.task is None:
            self.transport.close()

    def _broken(self, exc: FrameError) -> None:
        log.warning(json.dumps({"event": f"{self.what}-protocol-error", "error": str(exc)}))
        self.done = True
        if self.transport is not None:
            self.transport.close()


def raise_fd_limit(wanted: int = FD_LIMIT_WANTED) -> None:
    """Lift the soft limit on open files towards the hard one: every connection is a file
    descriptor, and systemd's default soft limit (1,024) is below the connection cap."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):  # not allowed here: the cap still holds, accept() may fail
        pass


async def start(
    address: str, factory: Callable[[], asyncio.Protocol], *, what: str
) -> asyncio.Server:
    """Listen on ``address`` (``127.0.0.1:10040``, ``[::1]:10040`` or ``unix:/path``)."""
    loop = asyncio.get_running_loop()
    raise_fd_limit()
    try:
        if address.startswith("unix:"):
            path = Path(address[5:])
            if path.is_socket():
                path.unlink()  # a stale socket from a previous run
            server = await loop.create_unix_server(factory, str(path))
            os.chmod(path, 0o660)
            return server
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"{what}: {address!r} is not HOST:PORT or unix:/path")
        return await loop.create_server(factory, host.strip("[]") or "127.0.0.1", int(port))
    except OSError as exc:
        raise ConfigError(f"{what}: cannot listen on {address}: {exc.strerror}") from None
