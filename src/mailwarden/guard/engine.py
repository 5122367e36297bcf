"""One decision engine behind both front ends (policy server and milter).

The engine asks the store for a verdict, turns store failures into the configured fail-open or
fail-closed answer (loudly: log, metric, alert), writes every decision above accept as a
structured log event and into the user's history, and fires the lock and alert actions in the
background so the MTA never waits for LDAP or a mail relay.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mailwarden.guard.actions import Alerter, Locker
from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Action, Detector, Observation, Verdict
from mailwarden.guard.stages import new_ref
from mailwarden.guard.store.base import Event, HoldInfo, Store, StoreError

log = logging.getLogger("mailwarden.guard")

STORE_ALERT_INTERVAL = 300.0
"""At most one "store is down" alert per this many seconds."""
HOLD_ALERT_INTERVAL = 3600.0
REJECT_LOG_INTERVAL = 60.0
"""At most one log line a minute per locked account whose mail keeps being refused."""


MAX_LOCK_REFS = 10000
"""Locked accounts whose reference this guard remembers (see :meth:`Engine.check_lock`)."""
LOCKED_PREFIX = "account locked: "
"""How the detector words the refusal of a locked account's mail, before the lock reason."""


LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.2, 1.0)


class _HotMetrics(Collector):
    """Decisions by front and action, and the decision time, counted in plain integers.

    prometheus_client's Counter and Histogram take a lock and walk the buckets in Python on
    every update, which cost several percent of a decision; these two are updated on every
    decision, so they are kept here and only turned into metric families when scraped."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, front: str, action: str, seconds: float) -> None:
        key = (front, action)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "mailwarden_guard_decisions",
            "Decisions by front end and action",
            labels=["front", "action"],
        )
        for (front, action), n in sorted(self.counts.items()):
            decisions.add_metric([front, action], n)
        yield decisions
        cumulative, acc = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.buckets, strict=True):
            acc += n
            cumulative.append((bound, float(acc)))
        yield HistogramMetricFamily(
            "mailwarden_guard_decision_seconds",
            "Time to decide, store included",
            buckets=cumulative,
            sum_value=self.total,
        )


class Metrics:
    """Prometheus metrics of one engine (own registry: several engines can live in a test)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.hot = _HotMetrics()
        self.registry.register(self.hot)
        self.store_errors = Counter(
            "mailwarden_guard_store_errors",
            "Decisions made without the store (fail open or closed)",
            registry=self.registry,
        )
        self.locks = Counter(
            "mailwarden_guard_locks", "Accounts locked by the guard", registry=self.registry
        )


class Engine:
    def __init__(
        self,
        config: GuardConfig,
        store: Store,
        detector: Detector,
        *,
        clock: Callable[[], float] = time.time,
        name: str = "guard",
    ) -> None:
        self.config = config
        self.store = store
        self.detector = detector
        self.clock = clock
        self.name = name
        self.metrics = Metrics()
        self.locker = Locker(config.lock)
        self.alerter = Alerter(config.alerts)
        self._tasks: set[asyncio.Task[object]] = set()
        self._last_store_alert = -STORE_ALERT_INTERVAL
        self._last_hold_alert: dict[str, float] = {}
        self._last_reject_log: dict[str, float] = {}
        self._lock_refs: dict[str, tuple[str, str]] = {}
        """user → (lock reason, reference) of the locks this guard has refused mail for."""
        self.store_down = False

    # -- deciding --------------------------------------------------------------------------

    async def decide(self, obs: Observation, front: str = "policy") -> Verdict:
        return (await self.judge(obs, front))[0]

    async def judge(self, obs: Observation, front: str = "policy") -> tuple[Verdict, str]:
        """The verdict on ``obs`` and, above accept, its reference (see :func:`new_ref`)."""
        start = time.perf_counter()
        ref = ""
        try:
            verdict = await self.store.decide(obs, self.detector)
            self.store_down = False
        except StoreError as exc:
            verdict = self._store_failed(exc, obs.user)
        if verdict.action is not Action.ACCEPT:
            ref = await self._escalate(obs, verdict, front)
        elif log.isEnabledFor(logging.DEBUG):  # every decision, when asked for (--log-level debug)
            log.debug(
                json.dumps(
                    {
                        "event": "decision",
                        "guard": self.name,
                        "front": front,
                        "user": obs.user,
                        "action": "accept",
                        "score": round(verdict.score, 2),
                        "time": obs.now,
                    }
                )
            )
        self.metrics.hot.observe(front, verdict.action.value, time.perf_counter() - start)
        return verdict, ref

    def locked_at_once(self) -> bool:
        """True when :meth:`locked` answers without waiting: a store that never waits, or
        the Redis store while its local copy of the pool's locks is live."""
        return self.store.immediate or self.store.locks_at_once

    async def check_lock(self, user: str, front: str = "") -> tuple[Verdict, str]:
        """Reject (with the lock's reference) when ``user`` is locked, else accept. A store
        failure accepts (fail open) or tempfails (fail closed), never rejects."""
        try:
            why = await self.store.locked(user)
        except StoreError as exc:
            return self._store_failed(exc, user), ""
        if why is None:
            return Verdict(Action.ACCEPT), ""
        ref = self._lock_ref(user, why, front)
        return Verdict(Action.REJECT, 0.0, (LOCKED_PREFIX + why,)), ref

    def _lock_ref(self, user: str, reason: str, front: str) -> str:
        """The reference shown to a locked account's sender: the lock's own when this guard
        took the lock, otherwise one made at the first refusal (per lock and guard), written
        to the history once with the lock's reason; later refusals repeat it, so a script
        knocking all day neither floods the history nor gets a new reference each time."""
        known = self._lock_refs.get(user)
        if known is not None and known[0] == reason:
            return known[1]
        ref = new_ref()
        self._remember_lock(user, reason, ref)
        event = Event(
            user,
            self.clock(),
            Action.REJECT.value,
            f"mail refused: {LOCKED_PREFIX}{reason}",
            {"ref": ref, "front": front, "guard": self.name},
        )
        self._background(self._add_event(event))
        return ref

    def _remember_lock(self, user: str, reason: str, ref: str) -> None:
        if len(self._lock_refs) >= MAX_LOCK_REFS and user not in self._lock_refs:
            self._lock_refs.clear()
        self._lock_refs[user] = (reason, ref)

    async def _add_event(self, event: Event) -> None:
        try:
            await self.store.add_event(event)
        except StoreError as exc:
            log.error(json.dumps({"event": "store-error", "error": exc.message}))

    async def locked(self, user: str) -> str | None:
        """The lock reason of ``user`` or None; a store failure counts as not locked (fail
        open) or as a tempfail (fail closed, reported as a lock reason)."""
        try:
            return await self.store.locked(user)
        except StoreError as exc:
            verdict = self._store_failed(exc, user)
            return verdict.text if verdict.action is not Action.ACCEPT else None

    def _store_failed(self, exc: StoreError, user: str) -> Verdict:
        self.metrics.store_errors.inc()
        self.store_down = True
        closed = self.config.on_store_error == "tempfail"
        record: dict[str, object] = {
            "event": "store-error",
            "guard": self.name,
            "store": self.store.name,
            "user": user,
            "error": exc.message,
            "mode": "fail-closed" if closed else "fail-open",
        }
        log.error(json.dumps(record))
        now = self.clock()
        if now - self._last_store_alert >= STORE_ALERT_INTERVAL:
            self._last_store_alert = now
            mode = "mail is tempfailed" if closed else "mail flows unchecked"
            self._background(
                self.alerter.send(
                    f"mailwarden guard {self.name}: state store {self.store.name} is down, {mode}",
                    record,
                )
            )
        if closed:
            return Verdict(Action.THROTTLE, 0.0, ("guard state store unavailable",))
        return Verdict(Action.ACCEPT, 0.0, ("store down: fail open",))

    async def _escalate(self, obs: Observation, verdict: Verdict, front: str) -> str:
        """Log, record and act on a verdict above accept; return its reference."""
        if verdict.action is Action.REJECT:
            ref = self._lock_ref(obs.user, verdict.text.removeprefix(LOCKED_PREFIX), front)
        else:
            ref = new_ref()
        record: dict[str, object] = {
            "event": "decision",
            "guard": self.name,
            "front": front,
            "user": obs.user,
            "action": verdict.action.value,
            "score": verdict.score,
            "reasons": list(verdict.reasons),
            "network": obs.network,
            "time": obs.now,
            "ref": ref,
        }
        if verdict.action is Action.REJECT:
            # a locked account's script keeps knocking: one line per user a minute is enough
            last = self._last_reject_log.get(obs.user, -REJECT_LOG_INTERVAL)
            if obs.now - last >= REJECT_LOG_INTERVAL:
                if len(self._last_reject_log) > 10000:
                    self._last_reject_log.clear()
                self._last_reject_log[obs.user] = obs.now
                log.warning(json.dumps(record, ensure_ascii=False))
            return ref
        log.warning(json.dumps(record, ensure_ascii=False))
        if verdict.reasons == ("guard state store unavailable",):
            return ref
        detail = {"score": str(verdict.score), "front": front, "guard": self.name, "ref": ref}
        await self._add_event(Event(obs.user, obs.now, verdict.action.value, verdict.text, detail))
        if verdict.action is Action.LOCK:
            self._remember_lock(obs.user, verdict.text, ref)
            self.metrics.locks.inc()
            self._background(self._on_lock(obs.user, verdict.text, record))
        elif verdict.action is Action.HOLD:
            last = self._last_hold_alert.get(obs.user, -HOLD_ALERT_INTERVAL)
            if obs.now - last >= HOLD_ALERT_INTERVAL:
                self._last_hold_alert[obs.user] = obs.now
                self._background(
                    self.alerter.send(f"mailwarden guard: mail of {obs.user} held", record)
                )
        return ref

    async def _on_lock(self, user: str, reason: str, record: dict[str, object]) -> None:
        result = await self.locker.set(user, locked=True, reason=reason)
        record = {**record, "lock_action": result.detail, "lock_ok": result.ok}
        log.warning(
            json.dumps({"event": "lock", "user": user, "detail": result.detail, "ok": result.ok})
        )
        await self.alerter.send(f"mailwarden guard: account {user} locked", record)

    def _background(self, job: Coroutine[object, object, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for background actions (locks, alerts) to finish; used at shutdown and tests."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    # -- holds -----------------------------------------------------------------------------

    async def record_hold(self, queue_id: str, user: str, reason: str) -> None:
        try:
            hold = HoldInfo(queue_id, user, reason, self.clock(), self.config.instance_name)
            await self.store.add_hold(hold)
        except StoreError as exc:
            log.error(json.dumps({"event": "store-error", "error": exc.message}))
