"""Prometheus metrics, correct with one worker or many.

With several worker processes each keeps its own counters; ``prometheus_client``'s
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set up by ``mailwarden serve``) writes them to
shared files and ``/metrics`` in any worker sums all of them.
"""

from __future__ import annotations

import os

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


class Metrics:
    """The server's metrics. One instance per process (a registry cannot hold two)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._own_registry = registry
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

    def count(self, endpoint: str, status: int) -> None:
        child = self._children.get((endpoint, status))
        if child is None:
            child = self.requests.labels(endpoint, str(status))
            self._children[(endpoint, status)] = child
        child.inc()

    def directory_event(self, event: str) -> None:
        child = self._cache_children.get(event)
        if child is None:
            child = self._cache_children[event] = self.directory_cache.labels(event)
        child.inc()

    def exposition(self) -> bytes:
        if self._own_registry is not None:
            return bytes(generate_latest(self._own_registry))
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(REGISTRY))
