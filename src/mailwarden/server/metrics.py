"""Prometheus metrics, correct with one worker or many.

With several worker processes each keeps its own counters; ``prometheus_client``'s
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set up by ``mailwarden serve``) writes them to
shared files and ``/metrics`` in any worker sums all of them.

A request only adds to plain integers; they are written to the metrics (in multiprocess mode:
to the shared files, one locked write per value) at most :data:`FLUSH_INTERVAL` seconds later,
in one go for all requests since, and at once when this worker answers a scrape or shuts
down. Writing every increment to the files cost about a tenth of a cached request. So a scrape
sees the other workers' requests of the last :data:`FLUSH_INTERVAL` seconds a little later,
nothing is lost, and the figures of this worker are exact.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("ascii")
FLUSH_INTERVAL = 0.1
"""Seconds between a request and the write of its counts (what other workers' scrapes lag)."""


class Metrics:
    """The server's metrics. One instance per process (a registry cannot hold two)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self._own_registry = registry
        self.flush_interval = flush_interval
        target = registry if registry is not None else REGISTRY
        self.requests = Counter(
            "mailwarden_http_requests_total",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=target,
        )
        self.lookup_seconds = Histogram(
            "mailwarden_directory_lookup_seconds",
            "Time spent looking an address up in the directory.",
            buckets=(
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1.0,
                2.5,
            ),
            registry=target,
        )
        self.unknown_addresses = Counter(
            "mailwarden_unknown_addresses_total",
            "Lookups of addresses the directory does not know (or knows as disabled).",
            registry=target,
        )
        self.directory_errors = Counter(
            "mailwarden_directory_errors_total",
            "Lookups that failed because the directory could not answer.",
            registry=target,
        )
        self.directory_throttled = Counter(
            "mailwarden_directory_throttled_total",
            "Lookups skipped because the client IP used up its token bucket.",
            registry=target,
        )
        self.directory_cache = Counter(
            "mailwarden_directory_cache_events_total",
            "Directory cache events: hit, miss, stale (served past TTL), refresh, error, "
            "deadline (answered without the directory), skipped (backend marked down).",
            ["event"],
            registry=target,
        )
        self._cache_children: dict[str, Counter] = {}
        self._children: dict[tuple[str, int], Counter] = {}
        self._pending: dict[Counter, int] = {}
        """Increments not yet written, by counter (child)."""
        self._bounds = self.lookup_seconds._upper_bounds  # ends with +Inf
        self._lookups = [0] * len(self._bounds)
        """Lookup durations not yet written, counted per bucket, and their sum."""
        self._lookup_sum = 0.0
        self._flush_at: asyncio.TimerHandle | None = None

    # -- counting (per request: plain integers only) ---------------------------------------

    def _add(self, counter: Counter) -> None:
        pending = self._pending
        pending[counter] = pending.get(counter, 0) + 1
        if self._flush_at is None:
            self._schedule()

    def count(self, endpoint: str, status: int) -> None:
        child = self._children.get((endpoint, status))
        if child is None:
            child = self.requests.labels(endpoint, str(status))
            self._children[(endpoint, status)] = child
        self._add(child)

    def directory_event(self, event: str) -> None:
        child = self._cache_children.get(event)
        if child is None:
            child = self._cache_children[event] = self.directory_cache.labels(event)
        self._add(child)

    def unknown_address(self) -> None:
        self._add(self.unknown_addresses)

    def directory_error(self) -> None:
        self._add(self.directory_errors)

    def throttled(self) -> None:
        self._add(self.directory_throttled)

    def observe_lookup(self, seconds: float) -> None:
        """One lookup of ``seconds`` into the histogram (bucket: the first bound ≥ it)."""
        self._lookups[bisect_left(self._bounds, seconds)] += 1
        self._lookup_sum += seconds
        if self._flush_at is None:
            self._schedule()

    # -- writing ---------------------------------------------------------------------------

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): write at once
            self.flush()
            return
        self._flush_at = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Write everything counted since the last flush."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        pending, self._pending = self._pending, {}
        for counter, amount in pending.items():
            counter.inc(amount)
        if self._lookup_sum or any(self._lookups):
            # What Histogram.observe does per value, once per bucket for all values.
            histogram = self.lookup_seconds
            histogram._sum.inc(self._lookup_sum)
            for bucket, amount in zip(histogram._buckets, self._lookups, strict=True):
                if amount:
                    bucket.inc(amount)
            self._lookups = [0] * len(self._bounds)
            self._lookup_sum = 0.0

    def exposition(self) -> bytes:
        self.flush()
        if self._own_registry is not None:
            return bytes(generate_latest(self._own_registry))
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(REGISTRY))
