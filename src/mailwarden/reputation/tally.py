"""Counting attempts per provider and outbound address over two periods, and the report.

``--since 24h`` means two periods of the same length: the current one (the last 24 h before
the end time) and the previous one (the 24 h before that), so every figure comes with its own
baseline. Pure: attempts in, a JSON-ready dict out (schema in docs/reputation.md).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from mailwarden.reputation.logline import Attempt
from mailwarden.reputation.signatures import LEVEL, OTHER, SignatureSet

FIELDS = ("sent", "deferred", "bounced", "throttle", "block", "blocklist")
_STATUS = {"sent": 0, "deferred": 1, "bounced": 2}
_KIND = {"throttle": 3, "block": 4, "blocklist": 5}
MAX_SAMPLE = 500
SCHEMA = 1

Key = tuple[str, str]
"""(provider id, outbound label)."""


def state_of(row: list[int]) -> str:
    """``block`` if any block or blocklist answer was seen, ``throttle`` if any throttle."""
    if row[4] or row[5]:
        return "block"
    return "throttle" if row[3] else "ok"


class OutboundNames:
    """``--outbound TAG=ADDRESS`` / ``HOST TAG=ADDRESS``: what an outbound label is called."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.names = names or {}
        self._cache: dict[str, str] = {}

    def __call__(self, label: str) -> str:
        found = self._cache.get(label)
        if found is None:
            tag = label.partition(" ")[2]
            named = self.names.get(label) or self.names.get(tag)
            found = f"{named} ({label})" if named else label
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[label] = found
        return found


class Tally:
    """Counts for the current period ``(end - length, end]`` and the previous one."""

    def __init__(
        self,
        signatures: SignatureSet,
        *,
        end: float,
        length: float,
        outbound: OutboundNames | None = None,
    ) -> None:
        self.signatures = signatures
        self.end = end
        self.length = length
        self.middle = end - length
        self.start = end - 2 * length
        self.outbound = outbound or OutboundNames()
        self.rows: tuple[dict[Key, list[int]], dict[Key, list[int]]] = ({}, {})
        self.hits: tuple[dict[tuple[Key, str], int], dict[tuple[Key, str], int]] = (
            defaultdict(int),
            defaultdict(int),
        )
        self.samples: dict[str, str] = {}
        self.lines = 0
        self.attempts = 0
        self.outside = 0

    def add(self, a: Attempt) -> None:
        ts = a.ts
        if ts > self.end or ts <= self.start:
            self.outside += 1
            return
        self.attempts += 1
        period = 0 if ts > self.middle else 1
        provider = self.signatures.provider_of(a.relay_host, a.domain)
        key = (provider, self.outbound(a.outbound))
        rows = self.rows[period]
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0, 0, 0, 0, 0, 0]
        status = a.status
        if status == "sent":
            row[0] += 1
            return
        if status != "reply":
            row[_STATUS[status]] += 1
        sig = self.signatures.match(provider, a.reply)
        if sig is not None:
            row[_KIND[sig.kind]] += 1
            self.hits[period][(key, sig.id)] += 1
            if period == 0 or sig.id not in self.samples:
                self.samples[sig.id] = a.reply[:MAX_SAMPLE]

    # ------------------------------------------------------------------ the report

    def _counts(self, period: int, keys: list[Key]) -> dict[str, Any]:
        total = [0] * len(FIELDS)
        for k in keys:
            row = self.rows[period].get(k)
            if row:
                total = [a + b for a, b in zip(total, row, strict=True)]
        sigs: dict[str, int] = defaultdict(int)
        wanted = set(keys)
        for (key, sid), n in self.hits[period].items():
            if key in wanted:
                sigs[sid] += n
        out: dict[str, Any] = dict(zip(FIELDS, total, strict=True))
        out["signatures"] = dict(sorted(sigs.items()))
        return out

    def report(self) -> dict[str, Any]:
        names = self.signatures.names
        keys = sorted(set(self.rows[0]) | set(self.rows[1]))
        by_provider: dict[str, list[Key]] = defaultdict(list)
        for k in keys:
            by_provider[k[0]].append(k)
        providers: list[dict[str, Any]] = []
        for pid, pkeys in by_provider.items():
            outbounds = []
            for k in pkeys:
                cur = self._counts(0, [k])
                outbounds.append(
                    {
                        "outbound": k[1],
                        "state": _state(cur),
                        "current": cur,
                        "previous": self._counts(1, [k]),
                    }
                )
            outbounds.sort(key=_order)
            cur = self._counts(0, pkeys)
            providers.append(
                {
                    "provider": pid,
                    "name": names.get(pid, pid),
                    "state": _state(cur),
                    "current": cur,
                    "previous": self._counts(1, pkeys),
                    "outbounds": outbounds,
                }
            )
        providers.sort(key=lambda p: (*_order(p), p["provider"] == OTHER))
        seen: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for period in (0, 1):
            for (_, sid), n in self.hits[period].items():
                seen[sid][period] += n
        by_id = self.signatures.by_id()
        sigs = []
        for sid, (cur_n, prev_n) in seen.items():
            entry: dict[str, Any] = by_id[sid].as_dict()
            del entry["pattern"]
            entry.update(current=cur_n, previous=prev_n, sample=self.samples.get(sid, ""))
            sigs.append(entry)
        sigs.sort(key=lambda s: (-LEVEL[s["kind"]], -s["current"], -s["previous"], s["id"]))
        state: str = max((str(p["state"]) for p in providers), key=LEVEL.__getitem__, default="ok")
        return {
            "schema": SCHEMA,
            "state": state,
            "exit_status": LEVEL[state],
            "period_seconds": self.length,
            "current": {"start": _iso(self.middle), "end": _iso(self.end)},
            "previous": {"start": _iso(self.start), "end": _iso(self.middle)},
            "lines": {"read": self.lines, "attempts": self.attempts, "outside": self.outside},
            "providers": providers,
            "signatures": sigs,
        }


def _state(counts: dict[str, Any]) -> str:
    return state_of([counts[f] for f in FIELDS])


def _order(entry: dict[str, Any]) -> tuple[int, int]:
    cur = entry["current"]
    return (-LEVEL[entry["state"]], -(cur["sent"] + cur["deferred"] + cur["bounced"]))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
