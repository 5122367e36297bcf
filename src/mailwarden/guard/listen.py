"""``HOST:PORT`` / ``unix:/path`` listen addresses for the guard's servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailwarden.errors import ConfigError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start(address: str, handler: Handler, *, what: str) -> asyncio.Server:
    """Listen on ``address`` (``127.0.0.1:10040``, ``[::1]:10040`` or ``unix:/path``)."""
    try:
        if address.startswith("unix:"):
            path = Path(address[5:])
            if path.is_socket():
                path.unlink()  # a stale socket from a previous run
            server = await asyncio.start_unix_server(handler, str(path))
            os.chmod(path, 0o660)
            return server
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"{what}: {address!r} is not HOST:PORT or unix:/path")
        return await asyncio.start_server(handler, host.strip("[]") or "127.0.0.1", int(port))
    except OSError as exc:
        raise ConfigError(f"{what}: cannot listen on {address}: {exc.strerror}") from None
