"""``HOST:PORT`` / ``unix:/path`` listen addresses for the guard's servers, and the connection
class both front ends build on.

Both protocols are request/answer on a persistent connection: the MTA sends a request (a
policy request, a milter packet with its macros) and waits. A :class:`Conversation` is an
:class:`asyncio.Protocol`: bytes arrive in :meth:`~asyncio.Protocol.data_received`, every
complete request in them is answered and the answers leave in one write. With a store that
never waits (memory, SQLite: ``Store.immediate``) the answer is computed right there, without
a task, a future or a stream per request — on the policy path that was a third of the CPU
per decision. With Redis the requests of a connection are answered in order by one task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from mailwarden.errors import ConfigError

log = logging.getLogger("mailwarden.guard")

T = TypeVar("T")
MAX_BACKLOG = 1 << 21
"""Unanswered bytes a connection may pile up while its answers wait for the store; beyond
that the guard stops reading from it until it has caught up."""


class FrameError(ValueError):
    """The peer broke the protocol (or its bounds): the connection is closed."""


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
    (:meth:`answer`), write the answers of one read together."""

    what = "connection"

    def __init__(self, immediate: bool) -> None:
        self.immediate = immediate
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = False
        """Set by :meth:`answer` when the peer said goodbye: answer nothing more."""

    # -- what a protocol provides ------------------------------------------------------

    def take(self) -> list[Any]:
        """Remove the complete requests from ``self.buf`` and return them; raise
        :class:`FrameError` for a broken or oversized one."""
        raise NotImplementedError

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

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.task is not None:  # the answering task picks it up
            if len(self.buf) > MAX_BACKLOG and self.transport is not None:
                self.transport.pause_reading()
            return
        out: list[bytes] = []
        try:
            requests = self.take()
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

    async def _answer_in_order(self, requests: list[Any]) -> None:
        try:
            while requests and not self.done:
                out = []
                for request in requests:
                    if self.done:
                        break
                    out.append(await self.answer(request))
                self._send(out)
                requests = self.take()
        except FrameError as exc:
            self._broken(exc)
        finally:
            self.task = None
            if self.transport is not None:
                if self.done:
                    self.transport.close()
                else:
                    self.transport.resume_reading()

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


async def start(
    address: str, factory: Callable[[], asyncio.Protocol], *, what: str
) -> asyncio.Server:
    """Listen on ``address`` (``127.0.0.1:10040``, ``[::1]:10040`` or ``unix:/path``)."""
    loop = asyncio.get_running_loop()
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
