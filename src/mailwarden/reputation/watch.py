"""The ``--follow`` brain: a sliding window per provider and outbound address, and when to alert.

Pure: attempts and the current time go in, state changes come out. An alert is due when a
(provider, outbound) pair *rises* to a worse state (ok → throttle → block) within the window;
a cooldown stops a flapping pair from alerting again at the same or a lower level. Falling back
is reported as a state change but never alerted (nobody needs to be woken up for good news).

Counts are kept in one bucket per minute with running totals, so memory is bounded by the
window's minutes times the pairs seen, whatever the mail volume.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from mailwarden.reputation.logline import Attempt
from mailwarden.reputation.signatures import LEVEL, SignatureSet
from mailwarden.reputation.tally import FIELDS, Key, OutboundNames

STATES = ("ok", "throttle", "block")
MAX_SAMPLE = 500


@dataclass
class _Bucket:
    minute: int
    row: list[int] = field(default_factory=lambda: [0] * len(FIELDS))
    sigs: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pair:
    buckets: deque[_Bucket] = field(default_factory=deque)
    row: list[int] = field(default_factory=lambda: [0] * len(FIELDS))
    sigs: dict[str, int] = field(default_factory=dict)
    sample: str = ""
    state: int = 0
    alerted_level: int = 0
    alerted_at: float = float("-inf")


@dataclass(frozen=True)
class Change:
    """One pair's state changed; ``alert`` says whether the channels must hear about it."""

    at: float
    provider: str
    name: str
    outbound: str
    state: str
    previous: str
    alert: bool
    counts: dict[str, int]
    signatures: dict[str, int]
    sample: str
    window_seconds: float
    advice: list[dict[str, str]]

    @property
    def subject(self) -> str:
        verb = {"throttle": "throttling", "block": "blocking", "ok": "back to normal for"}
        return f"mailwarden reputation: {self.name} {verb[self.state]} mail from {self.outbound}"

    def record(self) -> dict[str, Any]:
        return {
            "event": "reputation",
            "at": self.at,
            "provider": self.provider,
            "provider_name": self.name,
            "outbound": self.outbound,
            "state": self.state,
            "previous_state": self.previous,
            "alert": self.alert,
            "window_seconds": self.window_seconds,
            "counts": self.counts,
            "signatures": self.signatures,
            "sample": self.sample,
            "advice": self.advice,
        }


class Watch:
    """Sliding-window counts per (provider, outbound) and the alert decisions."""

    def __init__(
        self,
        signatures: SignatureSet,
        *,
        window: float,
        cooldown: float,
        min_hits: int = 1,
        outbound: OutboundNames | None = None,
    ) -> None:
        self.signatures = signatures
        self.window = window
        self.cooldown = cooldown
        self.min_hits = max(1, min_hits)
        self.outbound = outbound or OutboundNames()
        self.pairs: dict[Key, _Pair] = {}
        self.now = float("-inf")

    def add(self, a: Attempt) -> None:
        if a.ts <= self.now - self.window:
            return  # older than the window: priming from a long log
        provider = self.signatures.provider_of(a.relay_host, a.domain)
        key = (provider, self.outbound(a.outbound))
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = _Pair()
        minute = int(a.ts // 60)
        buckets = pair.buckets
        if not buckets or minute > buckets[-1].minute:
            buckets.append(_Bucket(minute))
        bucket = buckets[-1]  # a line older than the newest bucket joins it (logs are ordered)
        index = FIELDS.index(a.status) if a.status != "reply" else -1
        if index >= 0:
            bucket.row[index] += 1
            pair.row[index] += 1
        if a.status == "sent":
            return
        sig = self.signatures.match(provider, a.reply)
        if sig is not None:
            k = FIELDS.index(sig.kind)
            bucket.row[k] += 1
            pair.row[k] += 1
            bucket.sigs[sig.id] = bucket.sigs.get(sig.id, 0) + 1
            pair.sigs[sig.id] = pair.sigs.get(sig.id, 0) + 1
            pair.sample = a.reply[:MAX_SAMPLE]

    def _level(self, row: list[int]) -> int:
        blocks = row[4] + row[5]
        if blocks >= self.min_hits:
            return 2
        return 1 if blocks + row[3] >= self.min_hits else 0

    def evaluate(self, now: float, *, quiet: bool = False) -> list[Change]:
        """Drop what left the window, and return the pairs whose state changed. ``quiet``
        (after priming from the existing log) records states without alerting."""
        self.now = now
        oldest = int((now - self.window) // 60)
        names = self.signatures.names
        by_id = self.signatures.by_id()
        changes = []
        for key, pair in self.pairs.items():
            while pair.buckets and pair.buckets[0].minute < oldest:
                gone = pair.buckets.popleft()
                pair.row = [a - b for a, b in zip(pair.row, gone.row, strict=True)]
                for sid, n in gone.sigs.items():
                    left = pair.sigs[sid] - n
                    if left:
                        pair.sigs[sid] = left
                    else:
                        del pair.sigs[sid]
            level = self._level(pair.row)
            if level == pair.state:
                continue
            previous, pair.state = pair.state, level
            alert = not quiet and level > previous
            if alert and level <= pair.alerted_level and now - pair.alerted_at < self.cooldown:
                alert = False
            if alert:
                pair.alerted_level, pair.alerted_at = level, now
            if quiet and level:
                pair.alerted_level, pair.alerted_at = level, now
            sigs = dict(sorted(pair.sigs.items(), key=lambda kv: -kv[1]))
            advice = [
                {
                    "id": s.id,
                    "kind": s.kind,
                    "meaning": s.meaning,
                    "advice": s.advice,
                    "link": s.link,
                }
                for sid in sigs
                if (s := by_id.get(sid)) is not None
            ]
            advice.sort(key=lambda d: -LEVEL[d["kind"]])
            changes.append(
                Change(
                    at=now,
                    provider=key[0],
                    name=names.get(key[0], key[0]),
                    outbound=key[1],
                    state=STATES[level],
                    previous=STATES[previous],
                    alert=alert,
                    counts=dict(zip(FIELDS, pair.row, strict=True)),
                    signatures=sigs,
                    sample=pair.sample if level else "",
                    window_seconds=self.window,
                    advice=advice,
                )
            )
        return changes
