"""Login throttling: failed attempts counted per client address and per account name.

A sliding window of failure times; a success does not reset the count of the client (one
valid password must not buy a guesser new attempts at other names) but does reset the
account's. Bounded: at most :data:`MAX_KEYS` keys are remembered.
"""

from __future__ import annotations

from collections import deque

MAX_KEYS = 50000


class LoginLimiter:
    def __init__(self, per_account: int, per_client: int, window: float) -> None:
        self.per_account = per_account
        self.per_client = per_client
        self.window = window
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> int:
        times = self._fails.get(key)
        if times is None:
            return 0
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._fails[key]
            return 0
        return len(times)

    def allowed(self, client: str, account: str, now: float) -> bool:
        return (
            self._recent(f"c:{client}", now) < self.per_client
            and self._recent(f"a:{account.lower()}", now) < self.per_account
        )

    def failed(self, client: str, account: str, now: float) -> None:
        if len(self._fails) >= MAX_KEYS:
            for key in [k for k in self._fails if self._recent(k, now) == 0]:
                self._fails.pop(key, None)
            if len(self._fails) >= MAX_KEYS:
                self._fails.clear()
        for key in (f"c:{client}", f"a:{account.lower()}"):
            self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, account: str) -> None:
        self._fails.pop(f"a:{account.lower()}", None)
