"""The smallest ASGI application that answers like ours: fixed bytes, no work per request.

``bench/autoconfig.sh`` serves it with uvicorn exactly as ``mailwarden serve`` is served
(same workers, uvloop, httptools, no access log) to show what the ASGI server alone costs:
the gap between this row and nginx is the Python server's share, the gap between this row and
ours is our application's. The body files come from ``BENCH_STATIC_DIR`` (written by the
benchmark from our own responses); every request body is read and discarded.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_DIR = Path(os.environ.get("BENCH_STATIC_DIR", "."))
_BODIES = {
    "/mail/config-v1.1.xml": _DIR / "autoconfig.xml",
    "/autodiscover/autodiscover.xml": _DIR / "autodiscover.xml",
}
_LOADED = {path: file.read_bytes() for path, file in _BODIES.items() if file.is_file()}
_HEADERS = {
    path: [
        (b"content-type", b"text/xml; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    for path, body in _LOADED.items()
}


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body, as a real endpoint must
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    body = _LOADED.get(scope["path"])
    if body is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS[scope["path"]]})
    await send({"type": "http.response.body", "body": body})
