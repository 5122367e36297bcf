"""The store interface and the records it keeps (no message content, ever)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mailwarden.errors import MailwardenError
from mailwarden.guard.detector import Detector, Observation, Verdict

MAX_HISTORY = 200
"""Events kept per user; older ones are dropped (the structured log keeps everything)."""
IDLE_DAYS = 30
"""What the guard learned of an account (baseline, networks, windows) is forgotten after this
many days without mail, unless it is locked: Redis lets the keys expire, memory and SQLite
drop the user in their periodic sweep. A returning user starts as a new one."""


class StoreError(MailwardenError):
    """The state store could not answer (Redis down, database locked or corrupt)."""

    code = "GUARD-STORE"


@dataclass(frozen=True, slots=True)
class LockInfo:
    user: str
    reason: str
    since: float
    by: str = "guard"
    """``guard`` (the ladder) or the admin who locked by hand."""


@dataclass(frozen=True, slots=True)
class HoldInfo:
    """A message in the MTA's hold queue because of the guard."""

    queue_id: str
    user: str
    reason: str
    since: float
    instance: str = ""
    """The guard instance (``instance_name``, one per MTA) whose MTA holds the message;
    ``""`` for holds recorded before instances were named."""


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a user's history: a decision above accept, or an admin action."""

    user: str
    when: float
    action: str
    reason: str
    detail: dict[str, str] = field(default_factory=dict)


class Store(Protocol):
    name: str
    immediate: bool
    """True when no method ever waits (memory, SQLite): the front ends then finish a
    decision right where the request arrived instead of in a task."""

    async def decide(self, obs: Observation, detector: Detector) -> Verdict:
        """Record ``obs`` and return the verdict, atomically per user."""
        ...

    async def locked(self, user: str) -> str | None: ...

    async def lock(self, user: str, reason: str, now: float, by: str = "guard") -> None: ...

    async def unlock(self, user: str) -> bool: ...

    async def locks(self) -> list[LockInfo]: ...

    async def add_hold(self, hold: HoldInfo) -> None: ...

    async def holds(self) -> list[HoldInfo]: ...

    async def drop_holds(self, key: str) -> list[HoldInfo]:
        """Forget the holds of queue id or user ``key`` (after a release); return them."""
        ...

    async def add_event(self, event: Event) -> None: ...

    async def history(self, user: str, limit: int = 50) -> list[Event]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    # -- what only some stores do: declared here, a no-op where it means nothing ----------

    @property
    def locks_at_once(self) -> bool:
        """True while :meth:`locked` answers without waiting though the store otherwise
        waits (Redis with a live local copy of the pool's locks)."""
        ...

    def watch_locks(self) -> None:
        """A serving guard starts following the pool's locks (Redis: pub/sub into a local
        copy, so the milter refuses a locked account at MAIL FROM without a round trip);
        a no-op where the locks are local anyway."""
        ...

    def forget_idle(self, now: float) -> list[str]:
        """Forget the accounts idle for :data:`IDLE_DAYS` (locked ones kept); return who
        was forgotten. Called once a minute; a no-op where the store expires them itself."""
        ...

    def checkpoint(self) -> int:
        """Save what was learned since the last call (baselines, networks); return how
        many accounts. Called once a minute and at shutdown; a no-op where every change is
        already saved (or nothing survives a restart)."""
        ...
