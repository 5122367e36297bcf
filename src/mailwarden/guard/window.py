"""Sliding-window counters with a fixed memory cost per user.

A :class:`Ring` splits its window into equal buckets and forgets a bucket when time wraps
around to it, so a count costs O(buckets) memory however much mail a user sends; the oldest
bucket may be partly outside the window, which errs on the side of counting slightly more. A
:class:`Recent` set remembers when each distinct value was last seen, pruned on use and capped,
so a spam run to a million domains cannot grow it without bound. Time is always passed in:
nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

# (bucket width in seconds, bucket count) of the three windows every metric keeps
SPANS: dict[str, tuple[float, int]] = {"1m": (5.0, 12), "1h": (300.0, 12), "24h": (3600.0, 24)}


@dataclass(slots=True)
class Ring:
    """Event counts in ``n`` buckets of ``width`` seconds, with a running total.

    Buckets that time leaves behind are cleared (and taken off the total) when the ring is
    next touched, so ``add`` and ``total`` cost O(1) amortised: at most one bucket cleared
    per bucket of time that passed.
    """

    width: float
    n: int
    counts: list[int] = field(default_factory=list)
    head: int = -1
    """The newest bucket index the ring has advanced to (-1: never used)."""
    running: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * self.n

    def _advance(self, idx: int) -> None:
        head = self.head
        if idx <= head:
            return
        counts = self.counts
        if head < 0 or idx - head >= self.n:
            for i in range(self.n):
                counts[i] = 0
            self.running = 0
        else:
            n = self.n
            for b in range(head + 1, idx + 1):
                i = b % n
                self.running -= counts[i]
                counts[i] = 0
        self.head = idx

    def add(self, now: float, k: int = 1) -> None:
        idx = int(now // self.width)
        self._advance(idx)
        if idx < self.head - self.n + 1:
            return  # older than the window: nothing to count
        self.counts[idx % self.n] += k
        self.running += k

    def total(self, now: float) -> int:
        self._advance(int(now // self.width))
        return self.running

    def add_total(self, now: float, k: int) -> int:
        """``add(now, k)`` then ``total(now)`` with one advance (the hot path's pair)."""
        idx = int(now // self.width)
        if idx > self.head:
            self._advance(idx)
        if k and idx >= self.head - self.n + 1:
            self.counts[idx % self.n] += k
            self.running += k
        return self.running


@dataclass(slots=True)
class Tally:
    """One metric over the three windows (1 min, 1 h, 24 h)."""

    m1: Ring = field(default_factory=lambda: Ring(*SPANS["1m"]))
    h1: Ring = field(default_factory=lambda: Ring(*SPANS["1h"]))
    d1: Ring = field(default_factory=lambda: Ring(*SPANS["24h"]))

    def add(self, now: float, k: int = 1) -> None:
        if k:
            self.m1.add(now, k)
            self.h1.add(now, k)
            self.d1.add(now, k)

    def totals(self, now: float) -> tuple[int, int, int]:
        return self.m1.total(now), self.h1.total(now), self.d1.total(now)

    def add_totals(self, now: float, k: int) -> tuple[int, int, int]:
        """``add(now, k)`` then ``totals(now)``, one pass over the three rings."""
        return self.m1.add_total(now, k), self.h1.add_total(now, k), self.d1.add_total(now, k)


@dataclass(slots=True)
class Recent:
    """Distinct values seen within ``window`` seconds (at most ``cap`` remembered).

    An ordered dict kept oldest-first (``move_to_end`` on every sighting), so pruning pops
    from the front in O(1) per stale value.
    """

    window: float
    cap: int = 2000
    seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def add(self, now: float, value: str) -> None:
        seen = self.seen
        if value in seen:
            seen.move_to_end(value)
        seen[value] = now
        if len(seen) > self.cap:
            seen.popitem(last=False)

    def count(self, now: float) -> int:
        cutoff = now - self.window
        seen = self.seen
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] > cutoff:
                break
            seen.popitem(last=False)
        return len(seen)

    def count_since(self, since: float, cap: int = 100_000) -> int:
        """Distinct values last seen after ``since`` (newest first, so it costs the count, not
        the set; at most ``cap``): the short windows read from a longer set."""
        n = 0
        for value in reversed(self.seen):
            if self.seen[value] <= since or n >= cap:
                break
            n += 1
        return n
