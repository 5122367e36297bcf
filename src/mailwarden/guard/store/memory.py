"""In-memory state for one MTA: the detector's :class:`UserState` per user in a dict.

Decisions never wait on I/O here, which is what makes the memory path fast; the asyncio loop
runs one decision at a time, so per-user updates are atomic without locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from mailwarden.guard.detector import Detector, Observation, UserState, Verdict, forgive
from mailwarden.guard.store.base import IDLE_DAYS, MAX_HISTORY, Event, HoldInfo, LockInfo


class MemoryStore:
    name = "memory"
    immediate = True

    def __init__(self, lock_ttl: float = 0.0) -> None:
        self.lock_ttl = lock_ttl
        """Seconds after which a lock expires by itself (0: never)."""
        self.users: OrderedDict[str, UserState] = OrderedDict()
        """Least recently active first (each decision moves its user to the end), so the idle
        sweep (:meth:`forget_idle`) only looks at users it forgets."""
        self._locks: dict[str, LockInfo] = {}
        self._holds: dict[str, HoldInfo] = {}
        self._history: dict[str, deque[Event]] = {}

    def state(self, user: str) -> UserState:
        state = self.users.get(user)
        if state is None:
            state = self.users[user] = UserState()
            lock = self._locks.get(user)
            state.locked = lock.reason if lock else None
        return state

    async def decide(self, obs: Observation, detector: Detector) -> Verdict:
        return self.decide_now(obs, detector)

    def _expire(self, user: str, now: float) -> None:
        lock = self._locks.get(user)
        if lock is not None and self.lock_ttl and lock.since + self.lock_ttl <= now:
            self._drop_lock(user)

    def _drop_lock(self, user: str) -> None:
        self._locks.pop(user, None)
        state = self.users.get(user)
        if state is not None:
            forgive(state)

    def decide_now(self, obs: Observation, detector: Detector) -> Verdict:
        self._expire(obs.user, obs.now)
        state = self.state(obs.user)
        self.users.move_to_end(obs.user)
        verdict = detector.observe(state, obs)
        if state.locked is not None and obs.user not in self._locks:
            self._set_lock(LockInfo(obs.user, state.locked, obs.now))
        return verdict

    def _set_lock(self, info: LockInfo) -> None:
        self._locks[info.user] = info
        self.state(info.user).locked = info.reason

    async def locked(self, user: str) -> str | None:
        self._expire(user, time.time())
        lock = self._locks.get(user)
        return lock.reason if lock else None

    async def lock(self, user: str, reason: str, now: float, by: str = "guard") -> None:
        self._set_lock(LockInfo(user, reason, now, by))

    async def unlock(self, user: str) -> bool:
        found = self._locks.pop(user, None) is not None
        state = self.users.get(user)
        if state is not None:
            found = found or state.locked is not None
            forgive(state)
        return found

    async def locks(self) -> list[LockInfo]:
        return sorted(self._locks.values(), key=lambda lock: lock.since)

    async def add_hold(self, hold: HoldInfo) -> None:
        self._holds[hold.queue_id] = hold

    async def holds(self) -> list[HoldInfo]:
        return sorted(self._holds.values(), key=lambda h: h.since)

    async def drop_holds(self, key: str) -> list[HoldInfo]:
        gone = [h for h in self._holds.values() if key in (h.queue_id, h.user)]
        for hold in gone:
            del self._holds[hold.queue_id]
        return gone

    async def add_event(self, event: Event) -> None:
        self._history.setdefault(event.user, deque(maxlen=MAX_HISTORY)).append(event)

    async def history(self, user: str, limit: int = 50) -> list[Event]:
        return list(self._history.get(user, ()))[-limit:]

    async def events_since(self, since: float, limit: int = 10000) -> list[Event]:
        """Every user's history entries from ``since`` on, oldest first, at most ``limit``."""
        found = [e for events in self._history.values() for e in events if e.when >= since]
        return sorted(found, key=lambda e: e.when)[-limit:]

    def forget_idle(self, now: float) -> list[str]:
        """Forget the users without mail for :data:`IDLE_DAYS` (locked ones are kept); return
        who was forgotten."""
        cutoff = now - IDLE_DAYS * 86400.0
        gone: list[str] = []
        users = self.users
        for _ in range(len(users)):
            user, state = next(iter(users.items()))
            if state.hour_index >= 0 and state.hour_index * 3600.0 >= cutoff:
                break  # the least recently active user left was active within the period
            if state.locked is not None or user in self._locks:
                users.move_to_end(user)
                continue
            del users[user]
            gone.append(user)
        return gone

    locks_at_once = False  # the locks are answered at once anyway: immediate

    def watch_locks(self) -> None:
        return None  # the locks are here

    def checkpoint(self) -> int:
        return 0  # nothing survives a restart

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
