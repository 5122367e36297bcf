"""uvicorn's HTTP/1.1 protocol (httptools) with the bounds an internet-facing listener needs.

uvicorn 0.54 puts no limit on a request's head: httptools keeps an unfinished header line in
memory however long it grows (and grows it by concatenation, so a 100 MiB line also costs the
worker seconds of copying while every other connection waits), and a connection is only timed
out while it is idle between two requests. :class:`LimitedHttpProtocol` is uvicorn's
:class:`~uvicorn.protocols.http.httptools_impl.HttpToolsProtocol` with, per connection:

* **head size**: the bytes given to the parser while a request's head is incomplete are
  counted, and the parser never gets more than ``max_header_bytes`` of one head: beyond it the
  client gets ``431`` and the connection is closed. The request line (in practice the URL) is
  capped at ``max_request_line_bytes`` (``414``). What the worker holds for one connection's
  head is therefore at most the cap (plus the one read the event loop hands over, 256 KiB at
  most, which is dropped right after).
* **header timeout**: the head must be complete ``header_timeout`` seconds after its first
  byte (after the connection opened, for the first request), however slowly it drips in
  (slowloris): ``408`` and close, or just close when nothing was sent.
* **body timeout**: the body must be complete ``body_timeout`` seconds after the head
  (``408`` and close); a client that reads none of our answer for as long is disconnected.
* **keep-alive idle timeout**: uvicorn's own (``timeout_keep_alive``), set to
  ``idle_timeout``.
* **connections**: a worker admits ``max_connections`` connections; one more is answered
  ``503`` at once and closed.
* **pipelining**: while answers to pipelined requests are due, the rest of a read waits and
  the socket is not read (uvicorn alone parses every read to its end and queues every request
  in it: 5 MB of pipelined requests whose answers are not read cost it ~100 MB).
* **unread answers**: a connection whose answers cannot leave (uvicorn's write buffer full,
  or closed with an answer it cannot flush) is reset after ``body_timeout``.

Refusals are sent with a *lingering close*: the answer goes out, our side of the connection
is shut down (the client sees the end of the stream right after the answer), and whatever the
client still sends is read and dropped for a moment (:data:`LINGER_SECONDS`, at most
:data:`LINGER_BYTES`) before the socket is closed: closing a socket with unread input makes
the kernel reset the connection, and the client may then never read the answer.

Timeouts are not a timer per request: a connection records a deadline (a float), and one sweep
per worker (:class:`_Sweeper`, a few times a second while connections exist) closes those past
it. A request costs three more Python calls and a few attribute updates, about 1 µs (see the
README's benchmark).

The limits come from the site file's ``[server]`` table (:class:`HttpLimits`) and travel to
worker processes inside uvicorn's configuration (:class:`LimitedConfig`, pickled by uvicorn's
supervisor), so they are fixed when the server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from mailwarden.site.model import ServerSettings

SLICE = 4096
"""Bytes given to the parser at once when a read is larger: a pipelined request's head that
starts inside a slice may be charged more of the slice than it has (never less), and a read
stops being parsed at a slice's end once answers are due. A client's request fits in one."""
LINGER_SECONDS = 2.0
"""How long a refused connection's further input is read and dropped."""
LINGER_BYTES = 256 * 1024
"""How much of it: a client that keeps streaming beyond this is reset."""
END_OF_HEAD = b"\r\n\r\n"
BODY_STARTED = -1.0
"""A deadline not yet set: a request's head is complete, its body timeout starts at the next
sweep (a clock read less per request; the timeout is at most one sweep later)."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The per-connection bounds of the HTTP listener (``[server]`` in the site file)."""

    max_request_line_bytes: int = 8192
    max_header_bytes: int = 16384
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    idle_timeout: float = 10.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, server: ServerSettings) -> HttpLimits:
        return cls(
            max_request_line_bytes=server.max_request_line_bytes,
            max_header_bytes=server.max_header_bytes,
            header_timeout=server.header_timeout,
            body_timeout=server.body_timeout,
            idle_timeout=server.idle_timeout,
            max_connections=server.max_connections,
        )

    @property
    def sweep_interval(self) -> float:
        """How often expired connections are looked for: an eighth of the shortest timeout
        (between 0.05 and 1 s), so a timeout is enforced at most a quarter late (a body's
        deadline is set by the first sweep after its head, see :data:`BODY_STARTED`)."""
        shortest = min(self.header_timeout, self.body_timeout, LINGER_SECONDS)
        return min(1.0, max(0.05, shortest / 8))


class LimitedConfig(Config):
    """uvicorn's configuration running :class:`LimitedHttpProtocol` with ``limits``.

    WebSocket upgrades are switched off (``ws="none"``): the server speaks no WebSocket, and
    an upgraded connection would leave this protocol and its bounds behind.
    """

    def __init__(self, *, limits: HttpLimits, **options: Any) -> None:
        super().__init__(
            http=LimitedHttpProtocol,
            ws="none",
            timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # seconds, float
            **options,
        )
        self.limits = limits


def _refusal(code: int) -> bytes:
    """A complete ``code`` answer that closes the connection (the phrase as uvicorn has it)."""
    reason = HTTPStatus(code).phrase
    body = f"{reason}\n".encode("ascii")
    return (
        f"HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


REFUSALS = {code: _refusal(code) for code in (408, 414, 431, 503)}


async def _uri_too_long(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The answer to a complete request whose request line is over the cap."""
    body = REFUSALS[414].partition(b"\r\n\r\n")[2]
    await send(
        {
            "type": "http.response.start",
            "status": 414,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Sweeper:
    """One worker's admitted connections and the periodic look for expired deadlines."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.admitted = 0
        self.members: set[LimitedHttpProtocol] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn: LimitedHttpProtocol) -> None:
        self.members.add(conn)
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self.members if c.expired(now)]:
            conn.expire()
        self._timer = self.loop.call_later(self.interval, self._sweep) if self.members else None


_SWEEPERS: weakref.WeakKeyDictionary[ServerState, _Sweeper] = weakref.WeakKeyDictionary()


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, timeouts and a connection cap."""

    # Slots, not instance attributes: uvicorn's protocol already has 28, and CPython keeps an
    # instance's attributes in its fast shared-key layout only up to 30; beyond, every
    # attribute access of uvicorn's own code on the request path gets slower.
    __slots__ = (
        "_admitted",
        "_body_timeout",
        "_deadline",
        "_head_used",
        "_header_timeout",
        "_in_head",
        "_lingering",
        "_max_connections",
        "_max_head",
        "_max_line",
        "_pending",
        "_restarted",
        "_slow",
        "_started",
        "_sweeper",
        "_write_blocked_at",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits: HttpLimits = getattr(config, "limits", None) or HttpLimits()
        self._max_head = limits.max_header_bytes
        self._max_line = limits.max_request_line_bytes
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._max_connections = limits.max_connections
        sweeper = _SWEEPERS.get(server_state)
        if sweeper is None:
            sweeper = _SWEEPERS[server_state] = _Sweeper(self.loop, limits.sweep_interval)
        self._sweeper = sweeper
        self.url = b""
        self._in_head = True
        """The parser is before or inside a request's head (not in a body)."""
        self._head_used = 0
        """Bytes of the current head given to the parser so far (an upper bound)."""
        self._restarted = False
        """A request ended inside the bytes being fed: what follows starts the next head."""
        self._deadline: float | None = None
        self._write_blocked_at: float | None = None
        self._admitted = False
        self._lingering = -1
        """Bytes a refused connection may still drop; ``-1`` while not refused."""
        self._started: list[RequestResponseCycle] = []
        """Requests that were pipelined behind another (rare): told when the client goes."""
        self._pending: memoryview | None = None
        self._slow = False
        """Refused (lingering) or with bytes pending: every read takes the long way."""
        """The rest of a read that came while uvicorn had paused reading."""

    # -- connection life ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sweeper = self._sweeper
        sweeper.add(self)
        if sweeper.admitted >= self._max_connections:
            self._refuse(503)
            return
        sweeper.admitted += 1
        self._admitted = True
        self._deadline = self.loop.time() + self._header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        sweeper = self._sweeper
        sweeper.members.discard(self)
        if self._admitted:
            self._admitted = False
            sweeper.admitted -= 1
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_blocked_at = self.loop.time()
        super().pause_writing()

    def resume_writing(self) -> None:
        self._write_blocked_at = None
        super().resume_writing()

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        size = len(data)
        if (
            size > SLICE
            or self._slow
            or (self._in_head and self._head_used + size > self._max_head)
        ):
            self._received_in_slices(data)
            return
        # The usual case, kept short: a whole request, or the next part of one.
        self._restarted = False
        _parse(self, data)
        if self._in_head:
            if self._restarted:
                self._head_used = 0 if data.endswith(END_OF_HEAD) else self._next_head(data)
            else:
                self._head_used += size
            if self._head_used:
                self._check_head()

    def _received_in_slices(self, data: bytes) -> None:
        """A large read (or a refused connection's input): given to the parser
        :data:`SLICE` bytes at a time, and never more of a head than the cap allows."""
        if self._lingering >= 0:
            self._drop(len(data))
            return
        if self._pending is not None:  # not expected (the socket is paused): keep the order
            data = bytes(self._pending) + data
            self._pending = None
        self._slow = False
        self._consume(memoryview(data))

    def _consume(self, view: memoryview) -> None:
        size = len(view)
        start = 0
        while start < size:
            if self.flow.read_paused or self.pipeline:
                # Answers to pipelined requests are still due: the rest of the read waits
                # (and the socket with it) until they are given, instead of becoming
                # thousands of queued requests. uvicorn's next resume_reading feeds it.
                self._pending = view[start:]
                self._slow = True
                self.transport.pause_reading()
                self.flow.resume_reading = self._resume_pending  # type: ignore[method-assign]
                return
            step = SLICE
            if self._in_head:
                step = min(step, self._max_head - self._head_used)
                if step <= 0:
                    self._refuse(431)
                    return
            piece = view[start : start + step]
            self._restarted = False
            _parse(self, piece)  # type: ignore[arg-type]  # httptools takes any buffer
            if self._lingering >= 0 or self.transport.is_closing():
                self._drop(max(0, size - start - step))
                return
            if self._in_head:
                if self._restarted:
                    self._head_used = self._next_head(bytes(piece))
                else:
                    self._head_used += len(piece)
                if self._head_used:
                    self._check_head()
            start += step

    def _resume_pending(self) -> None:
        """uvicorn's ``flow.resume_reading`` while bytes of an earlier read wait: those are
        parsed first, and the socket is read again only once they are (routed here only
        then, so the usual path pays nothing)."""
        self.flow.read_paused = False
        self.loop.call_soon(self._feed_pending)

    def _feed_pending(self) -> None:
        view, self._pending = self._pending, None
        self._slow = self._lingering >= 0
        with contextlib.suppress(AttributeError):
            del self.flow.resume_reading  # uvicorn's own again
        if view is None or self.transport.is_closing() or self._lingering >= 0:
            return
        self._consume(view)
        if self._pending is None and not self.flow.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def _next_head(self, data: bytes) -> int:
        """Bytes of the next head already parsed when a request ended inside ``data``: none
        when ``data`` ends where that request ends (its head or its body, which uvicorn
        still holds for the application), else :func:`pipelined_head_bytes`."""
        body = self.cycle.body
        if data.endswith(END_OF_HEAD) or (body and data.endswith(body)):
            return 0
        return pipelined_head_bytes(data)

    def _check_head(self) -> None:
        """The head is still unfinished: within its caps, and with its deadline running."""
        if self._lingering >= 0 or self.transport.is_closing():
            return
        if self._head_used > self._max_head:
            self._refuse(431)
        elif len(self.url) > self._max_line:
            self._refuse(414)
        elif self._deadline is None:
            self._deadline = self.loop.time() + self._header_timeout

    def _drop(self, size: int) -> None:
        """Input of a refused connection: dropped, up to :data:`LINGER_BYTES`."""
        if self._lingering < 0:
            return
        self._lingering -= size
        if self._lingering < 0:
            self._abort()

    # -- parser callbacks --------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._deadline = BODY_STARTED  # the sweep that first sees it sets the time
        if len(self.url) <= self._max_line:
            previous = self.cycle
            _headers_complete(self)
            if self.pipeline:  # queued behind an unfinished request: remember both
                self._queued(previous, self.cycle)
            return
        app, self.app = self.app, _uri_too_long
        try:
            _headers_complete(self)
        finally:
            self.app = app

    def _queued(self, *cycles: RequestResponseCycle | None) -> None:
        started = self._started
        if len(started) >= 64:
            started[:] = [c for c in started if not c.response_complete]
        started.extend(c for c in cycles if c is not None and c not in started)

    def on_message_complete(self) -> None:
        _message_complete(self)
        self._in_head = True
        self._restarted = True
        self._head_used = 0
        self._deadline = None

    # -- limits ------------------------------------------------------------------------------

    def expired(self, now: float) -> bool:
        if self._write_blocked_at is None and self.transport.is_closing():
            # Closed by uvicorn or by us, but the answer cannot be flushed to a client that
            # reads nothing: reset after the body timeout, or the socket is held for ever.
            self._write_blocked_at = now
        blocked = self._write_blocked_at
        if blocked is not None and now - blocked > self._body_timeout:
            return True
        deadline = self._deadline
        if deadline == BODY_STARTED:
            self._deadline = now + self._body_timeout
            return False
        return deadline is not None and now >= deadline

    def expire(self) -> None:
        """A deadline has passed: the head or body took too long, our answer was not read,
        or a refused connection's moment of lingering is over."""
        if self._lingering >= 0 or self._write_blocked_at is not None:
            self._abort()
        elif self._in_head and not self._head_used:
            self.transport.close()  # nothing of a request arrived: nothing to answer
        else:
            self._refuse(408)

    def _abort(self) -> None:
        """Reset the connection (:meth:`connection_lost` tells the requests)."""
        self._gone()
        self.transport.abort()

    def _gone(self) -> None:
        """Tell every unfinished request of this connection that its client is gone: the
        one running and the pipelined ones too (uvicorn tells only the last one parsed, and
        the running one would write to the closed socket once it may write again)."""
        for cycle in (self.cycle, *self._started):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    def _refuse(self, status: int) -> None:
        """Answer ``status``, shut our side, and drop the client's input for a moment."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._in_head or cycle.response_started or self.pipeline:
                # An earlier request's answer is still due: one more would be out of order.
                self.transport.close()
                return
            cycle.disconnected = True  # this request's body timed out: the app stops waiting
            cycle.message_event.set()
        self._in_head = False
        self._pending = None
        self._slow = True
        self._lingering = LINGER_BYTES
        self._deadline = self.loop.time() + LINGER_SECONDS
        self.transport.write(REFUSALS[status])
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # pragma: no cover - TLS transports; mailwarden serves plain HTTP
            self.transport.close()
        self.flow.resume_reading()


_parse = HttpToolsProtocol.data_received
_headers_complete = HttpToolsProtocol.on_headers_complete
_message_complete = HttpToolsProtocol.on_message_complete
"""uvicorn's own steps, called without ``super()`` on the per-request path."""


def pipelined_head_bytes(data: bytes) -> int:
    """At most how many bytes at the end of ``data`` belong to a head that started in it,
    after a request that ended in it (pipelining): what follows the last blank line (a head
    has none before its end), else all of ``data``. Too many when the request before had a
    body (it is counted too), never too few."""
    end = data.rfind(END_OF_HEAD)
    return len(data) - end - len(END_OF_HEAD) if end >= 0 else len(data)
