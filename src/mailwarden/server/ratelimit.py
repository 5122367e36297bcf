"""Per-client token buckets on directory lookups (anti-enumeration).

Each client IP may start ``rate`` lookups per second on average, with bursts of ``burst``.
A client past its budget still gets an answer — the one the site gives when the directory cannot
answer — so a person behind a busy NAT still gets working settings while a script walking
through addresses learns nothing. The client IP is the peer address, or the address the trusted
proxies named in ``X-Forwarded-For`` (uvicorn resolves that from ``[server] trusted_proxies``).

Pure: the caller passes the time; memory is bounded (the least recently seen clients are
forgotten first, which only ever gives them a full bucket again).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_CLIENTS = 100_000


class TokenBuckets:
    """One bucket per key; :meth:`take` says whether the key may do one more lookup."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float) -> bool:
        """Spend one token of ``key`` at time ``now``; False when none is left."""
        if not self.enabled:
            return True
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed
