"""The application a worker serves: the current :class:`AutoconfigApp`, swapped on reload.

Every request is handed to the application that is current when it arrives and finishes on
it, even if a reload swaps in a new one meanwhile: one request never mixes two configurations.
The old application is retired once its last request is done (its directory closed, unless
the new one kept it because ``[directory]`` did not change: its connections and cache then
live on). See :mod:`mailwarden.server.reload` for how a reload reaches the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from mailwarden.directory import open_directory
from mailwarden.errors import MailwardenError
from mailwarden.server.app import AutoconfigApp
from mailwarden.server.http import Receive, Scope, Send
from mailwarden.server.metrics import Metrics
from mailwarden.server.reload import (
    WATCH_INTERVAL,
    discard,
    is_publisher,
    load_published,
    publish_logged,
    take_early_hup,
)
from mailwarden.site.model import Site

log = logging.getLogger("mailwarden.server")

RETIRE_TIMEOUT = 60.0
"""Seconds a retired application waits for its last requests before its directory closes."""


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the snapshot is replaced (``os.replace``: a new inode each time)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class LiveApp:
    """ASGI application that serves the published site and follows its reloads."""

    def __init__(self, source: Path, snapshot: Path, metrics: Metrics | None = None) -> None:
        self.source = source
        self.snapshot = snapshot
        self.metrics = metrics if metrics is not None else Metrics()
        self._seen = _stamp(snapshot)  # before reading: a change after it is seen next time
        site = load_published(source, snapshot)
        self.current = AutoconfigApp(site, open_directory(site.directory), self.metrics)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        app = self.current
        app.in_flight += 1
        try:
            await app(scope, receive, send)
        finally:
            app.in_flight -= 1

    # -- reload -----------------------------------------------------------------------------

    def check(self) -> bool:
        """Swap in the snapshot if it changed since last seen; whether a swap happened.

        A snapshot that cannot be used here (it passed validation in the main process, so
        this takes a directory that cannot be opened, or a signing key changed since) is
        logged and the current application keeps serving.
        """
        stamp = _stamp(self.snapshot)
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp
        try:
            site = load_published(self.source, self.snapshot)
            fresh = self._build(site)
        except MailwardenError as exc:
            log.error("worker %d keeps its configuration: %s", os.getpid(), exc.message)
            return False
        except Exception:
            log.exception("worker %d keeps its configuration", os.getpid())
            return False
        old, self.current = self.current, fresh
        self._spawn(self._retire(old, keep_directory=fresh.directory is old.directory))
        log.info("worker %d serves the reloaded %s", os.getpid(), self.source)
        return True

    def _build(self, site: Site) -> AutoconfigApp:
        current = self.current
        same = site.directory == current.site.directory
        directory = current.directory if same else open_directory(site.directory)
        try:
            fresh = AutoconfigApp(site, directory, self.metrics)
        except Exception:
            if not same:
                self._spawn(directory.close())
            raise
        old, new = current.site.server, site.server
        if (old.lookup_rate, old.lookup_burst) == (new.lookup_rate, new.lookup_burst):
            # a reload is no way round the limit
            fresh.resolver.lookup_buckets = current.resolver.lookup_buckets
        return fresh

    async def _retire(self, old: AutoconfigApp, *, keep_directory: bool) -> None:
        deadline = time.monotonic() + RETIRE_TIMEOUT
        while old.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not keep_directory:
            await old.directory.close()
        del old
        # Start-up froze everything then alive (see AutoconfigApp._lifespan); the old
        # application is part of that, and it holds reference cycles, which the collector
        # never frees in the permanent generation. Collect once, then freeze the new one.
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            self.check()

    def _on_hup(self) -> None:
        if is_publisher():  # one worker, in the main process: validate and publish here
            publish_logged(self.source, self.snapshot)
        self.check()  # several workers: the supervisor published; look now, not in 0.5 s

    # -- lifespan ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                gc.freeze()  # as AutoconfigApp._lifespan, for the same reason
                loop.add_signal_handler(signal.SIGHUP, self._on_hup)
                watcher = loop.create_task(self._watch())
                if take_early_hup():
                    self._on_hup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                loop.remove_signal_handler(signal.SIGHUP)
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                for task in list(self._tasks):
                    with contextlib.suppress(Exception):
                        await task
                await self.current.directory.close()
                self.metrics.flush()
                if is_publisher():
                    discard(self.snapshot)
                await send({"type": "lifespan.shutdown.complete"})
                return
