"""What the probe records: one :class:`Step` per thing a client does (a DNS query, an HTTP
request, a connection to a mail server), in the order the client does it, with its timing.

Steps are values; the text and JSON renderers only format them. A step that went wrong is a
step with ``outcome`` FAILED and a one-line ``detail``, never an exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Outcome(Enum):
    OK = "ok"
    """The step succeeded (for a client's lookup: this is the answer the client takes)."""
    FAILED = "failed"
    """The step did not give the client what it needed; it moves on."""
    SKIPPED = "skipped"
    """The client would not run this step here (an earlier one won, or it needs an option)."""
    NOTICE = "notice"
    """It worked, but with something a user would see (a warning, a question)."""


@dataclass(frozen=True, slots=True)
class Step:
    client: str
    """``thunderbird``, ``outlook``, ``autodiscover-json`` or ``servers``."""
    action: str
    """What was done: ``GET``, ``POST``, ``DNS MX``, ``IMAP STARTTLS``…"""
    target: str
    """The URL, DNS name or host:port."""
    outcome: Outcome
    detail: str
    """One line: what came back, or why it failed."""
    ms: float = 0.0
    started_ms: float = 0.0
    """When the step started, relative to the start of the probe (shows what ran in parallel)."""
    status: int | None = None
    """HTTP status, when there was one."""
    priority: int | None = None
    """The client's priority for this source (1 = first choice), where it ranks its sources."""
    tls: str | None = None
    """The TLS result in one line, when TLS was spoken."""
    chosen: bool = False
    """This step's answer is the one the client took."""
    failure: str | None = None
    """Why it failed, as a word: ``dns``, ``connect``, ``timeout``, ``tls``, ``too-large``,
    ``protocol``, ``status``, ``content-type``, ``document``, ``deadline``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "ms": round(self.ms, 1),
            "started_ms": round(self.started_ms, 1),
            "status": self.status,
            "priority": self.priority,
            "tls": self.tls,
            "chosen": self.chosen,
            "failure": self.failure,
        }


@dataclass
class Clock:
    """Milliseconds since the probe started; shared by every step of one probe."""

    origin: float = field(default_factory=time.perf_counter)

    def now(self) -> float:
        return (time.perf_counter() - self.origin) * 1000


@dataclass
class Timer:
    """Times one step: ``started`` relative to the probe, ``elapsed()`` since then."""

    clock: Clock
    started: float = 0.0
    _t0: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.clock.now()
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return (time.perf_counter() - self._t0) * 1000
