"""The little HTTP plumbing the app needs, on bare ASGI.

The hot endpoints answer in a few tens of microseconds; a framework's routing and request
objects would cost more than the work itself, so requests are read and answered here directly.
Everything from the client is bounded: the body by the site's ``max_body_bytes``, the query
string by :data:`MAX_QUERY`, each header value by what the ASGI server accepted.

Each URL component is percent-decoded exactly once, here, from the bytes the client sent, and
must then be UTF-8: a query or path that is not is refused (:class:`BadRequest`, a 400) instead
of having U+FFFD slipped into what becomes an address. Decoding twice would let
``user%2540example.edu`` turn into ``user@example.edu`` behind the back of every check made on
the first decoding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

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


class BadRequest(Exception):
    """A URL component that cannot be decoded (not UTF-8): answered 400 with the message."""


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
    and parsing cost about a fifth of an autoconfig request; failures are never cached).

    ``application/x-www-form-urlencoded`` as browsers write it: fields split on ``&``, ``+``
    for a space, each name and value percent-decoded once *as bytes* and then decoded as
    strict UTF-8, so a raw UTF-8 octet and its ``%XX`` escape mean the same character.
    ``urllib.parse.parse_qsl`` cannot be told to refuse invalid UTF-8 without also reading
    raw non-ASCII octets as Latin-1.
    """
    if raw.count(b"&") >= MAX_QUERY_FIELDS:
        raise QueryTooLong
    params: dict[str, str] = {}
    for field in raw.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        key = _form_decode(name).lower()
        params.setdefault(key, _form_decode(value))
    return params


def _form_decode(component: bytes) -> str:
    try:
        return unquote_to_bytes(component.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("query string is not valid UTF-8") from None


def path_tail(scope: Scope, prefix: str) -> str:
    """What follows ``prefix`` in the request path, percent-decoded exactly once.

    ASGI servers hand over ``path`` already decoded (and invalid UTF-8 replaced by U+FFFD), so
    the tail is cut from ``raw_path``, the bytes as sent: after as many ``/`` as ``prefix``
    has. ``prefix`` must end with ``/``; routing has checked that the decoded path starts with
    it. A raw path whose head does not decode to ``prefix`` (an encoded ``/`` in it) is
    refused rather than guessed at.
    """
    raw = scope.get("raw_path")
    if raw is None:  # the server kept no raw path: its decoding is the only one
        return str(scope["path"])[len(prefix) :]
    raw = bytes(raw).partition(b"?")[0]
    cut = 0
    for _ in range(prefix.count("/")):
        cut = raw.find(b"/", cut) + 1
        if cut == 0:
            raise BadRequest("malformed path")
    try:
        head = unquote(raw[:cut].decode("ascii"), errors="strict")
        tail = unquote_to_bytes(raw[cut:]).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("path is not valid UTF-8") from None
    if head.lower() != prefix.lower():
        raise BadRequest("malformed path")
    return tail


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
    """``send`` that remembers the status of the response (for the request metric) and, for a
    ``HEAD`` request, drops the body while keeping every header (``Content-Length`` too).

    :func:`respond` records the status itself and calls the wrapped ``send`` directly: one
    coroutine fewer per message on every request.
    """

    __slots__ = ("head", "send", "started", "status")

    def __init__(self, send: Send, head: bool = False) -> None:
        self.send = send
        self.status = 500
        self.started = False
        self.head = head

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.started = True
        elif self.head and message.get("body"):
            message = {**message, "body": b""}
        await self.send(message)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = TEXT,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """A complete response; its body is dropped when ``send`` answers a ``HEAD`` request."""
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        *_COMMON_HEADERS,
        *extra_headers,
    ]
    head = False
    if isinstance(send, StatusSend):
        send.status = status
        send.started = True
        head = send.head
        send = send.send
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def redirect(send: Send, location: str, body: bytes = b"moved\n") -> None:
    """A 302 to ``location`` (already percent-encoded where needed)."""
    await respond(send, 302, body, extra_headers=[(b"location", location.encode())])
