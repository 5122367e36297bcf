"""The cache in front of every directory backend.

What it guarantees, so that a directory's bad minute never reaches users:

* **fresh** entries (known: ``positive_ttl``, unknown: ``negative_ttl``) are answered from
  memory;
* **stale** entries (past their TTL, within ``stale_ttl``) are answered at once while one
  background query refreshes them (stale-while-revalidate) — and while the backend is down they
  keep being answered;
* **single-flight**: concurrent lookups of one address share one backend query;
* **deadline**: a lookup that must wait for the backend waits at most ``deadline`` seconds, then
  raises :class:`DirectoryError` (the server answers per its outage policy); the query itself
  goes on and fills the cache when it completes;
* after a failure, lookups that miss the cache skip the backend for ``retry_interval`` seconds
  (one fast answer instead of a queue of doomed queries), then the next miss tries again:
  recovery needs nobody.

Known and unknown addresses take the same path and are stored alike, so cached answers take the
same time whether the address exists or not. The LRU bound (``max_entries``) caps memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mailwarden.address import Address
from mailwarden.directory.base import Account, Directory, LoginEntry
from mailwarden.directory.base import by_login as _by_login
from mailwarden.directory.config import CacheConfig
from mailwarden.errors import DirectoryError

log = logging.getLogger("mailwarden.directory")

Event = str
"""``hit``, ``miss``, ``stale`` (served past TTL), ``refresh`` (background query started),
``error`` (backend failed), ``deadline`` (gave up waiting), ``skipped`` (backend marked down)."""


@dataclass(slots=True)
class _Entry:
    account: Account | None
    fresh_until: float
    stale_until: float


async def _wait(flight: asyncio.Task[Account | None], timeout: float) -> bool:
    """Wait for ``flight`` at most ``timeout`` seconds without cancelling it (it goes on and
    fills the cache); whether it is done. What ``asyncio.timeout`` around ``asyncio.shield``
    does, with one future instead of two futures, a context manager and their callbacks: this
    runs on every cache miss."""
    if flight.done():
        return True
    waiter = asyncio.get_running_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    flight.add_done_callback(wake)
    timer = waiter.get_loop().call_later(timeout, wake)
    try:
        await waiter  # a cancelled caller leaves here; the flight is not touched
    finally:
        timer.cancel()
        flight.remove_done_callback(wake)
    return flight.done()


class CachedDirectory:
    """Wraps any :class:`Directory`; itself a :class:`Directory`."""

    def __init__(
        self,
        backend: Directory,
        config: CacheConfig,
        *,
        deadline: float,
        retry_interval: float,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.config = config
        self.deadline = deadline
        self.retry_interval = retry_interval
        self._clock = clock
        self._on_event = on_event
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, asyncio.Task[Account | None]] = {}
        self._down_until = 0.0
        self._down_reason = ""

    def __len__(self) -> int:
        return len(self._entries)

    def set_event_hook(self, hook: Callable[[Event], None] | None) -> None:
        self._on_event = hook

    def _event(self, name: Event) -> None:
        if self._on_event is not None:
            self._on_event(name)

    @property
    def backend_down(self) -> bool:
        return self._clock() < self._down_until

    async def lookup(self, address: Address) -> Account | None:
        key = address.key
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if now < entry.fresh_until:
                self._entries.move_to_end(key)
                self._event("hit")
                return entry.account
            if now < entry.stale_until:
                self._entries.move_to_end(key)
                self._event("stale")
                if now >= self._down_until and key not in self._flights:
                    self._event("refresh")
                    self._flight(key, address)
                return entry.account
            del self._entries[key]
        self._event("miss")
        if now < self._down_until:
            self._event("skipped")
            raise DirectoryError(f"directory unavailable: {self._down_reason}")
        flight = self._flights.get(key) or self._flight(key, address)
        if not await _wait(flight, self.deadline):
            self._event("deadline")
            raise DirectoryError(
                f"directory gave no answer within {self.deadline} s (deadline)"
            ) from None
        return flight.result()

    def _flight(self, key: str, address: Address) -> asyncio.Task[Account | None]:
        task = asyncio.get_running_loop().create_task(self._fetch(key, address))
        self._flights[key] = task
        task.add_done_callback(self._landed)
        return task

    def _landed(self, task: asyncio.Task[Account | None]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here, so asyncio never logs "never retrieved"

    async def _fetch(self, key: str, address: Address) -> Account | None:
        try:
            account = await self.backend.lookup(address)
        except DirectoryError as exc:
            self._failed(exc.message)
            raise
        except Exception as exc:  # a backend bug must not become a 5xx: fail soft, log loud
            log.exception("directory %s raised an unexpected error", self.name)
            self._failed(f"unexpected {type(exc).__name__}")
            raise DirectoryError(f"directory {self.name}: unexpected {type(exc).__name__}") from exc
        finally:
            self._flights.pop(key, None)
        if self._down_until:
            log.warning("directory %s answers again", self.name)
            self._down_until = 0.0
        self._store(key, account)
        return account

    def _failed(self, reason: str) -> None:
        self._event("error")
        if self._clock() >= self._down_until:
            log.error("directory %s failed: %s", self.name, reason)
        self._down_reason = reason
        self._down_until = self._clock() + self.retry_interval

    def _store(self, key: str, account: Account | None) -> None:
        limit = self.config.max_entries
        if limit == 0:
            return
        now = self._clock()
        ttl = self.config.positive_ttl if account is not None else self.config.negative_ttl
        fresh_until = now + ttl
        self._entries[key] = _Entry(account, fresh_until, fresh_until + self.config.stale_ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > limit:
            self._entries.popitem(last=False)

    async def by_login(self, login: str) -> list[LoginEntry]:
        """Straight to the backend, uncached: the console's rare search, where a stale
        answer would only mislead (:class:`~mailwarden.directory.base.NoLoginSearch` when the
        backend cannot)."""
        return await _by_login(self.backend, login)

    async def close(self) -> None:
        for task in list(self._flights.values()):
            task.cancel()
        await self.backend.close()
