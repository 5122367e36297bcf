"""The little HTTP plumbing the app needs, on bare ASGI.

The hot endpoints answer in a few tens of microseconds; a framework's routing and request
objects would cost more than the work itself, so requests are read and answered here directly.
Everything from the client is bounded: the body by the site's ``max_body_bytes``, the query
string by :data:`MAX_QUERY`, each header value by what the ASGI server accepted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_QUERY = 4096
QUERY_CACHE_SIZE = 1024
MAX_QUERY_FIELDS = 50
TEXT = b"text/plain; charset=utf-8"

_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]


class BodyTooLarge(Exception):
    """The client sent more than the configured body limit."""


class QueryTooLong(Exception):
    """The query string exceeds :data:`MAX_QUERY` bytes or :data:`MAX_QUERY_FIELDS` fields."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def query_params(scope: Scope) -> dict[str, str]:
    """Query parameters with lowercased names; the first occurrence of a name wins."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    if len(raw) > MAX_QUERY:
        raise QueryTooLong
    return dict(_parse_query(bytes(raw)))  # a copy: the cached dict is shared


@lru_cache(maxsize=QUERY_CACHE_SIZE)
def _parse_query(raw: bytes) -> dict[str, str]:
    """Parse a query string (cached: a client repeats the same query on every URL it probes,
    and parsing cost about a fifth of an autoconfig request; failures are never cached)."""
    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(
            raw.decode("latin-1"),
            keep_blank_values=True,
            max_num_fields=MAX_QUERY_FIELDS,
            encoding="utf-8",
            errors="replace",
        )
    except ValueError:  # more than MAX_QUERY_FIELDS fields
        raise QueryTooLong from None
    for key, value in pairs:
        params.setdefault(key.lower(), value)
    return params


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refusing (:class:`BodyTooLarge`) anything over ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class StatusSend:
    """``send`` that remembers the status of the response (for the request metric).

    :func:`respond` records the status itself and calls the wrapped ``send`` directly: one
    coroutine fewer per message on every request.
    """

    __slots__ = ("send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.started = True
        await self.send(message)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = TEXT,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        *_COMMON_HEADERS,
        *extra_headers,
    ]
    if isinstance(send, StatusSend):
        send.status = status
        send.started = True
        send = send.send
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
