"""Metrics counted in plain integers and written later: nothing lost, nothing changed.

The reference is prometheus_client itself: the same events counted the ordinary way (one
``inc``/``observe`` each) in a registry of their own must give the same samples.
"""

from __future__ import annotations

import asyncio
import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from mailwarden.server.metrics import Metrics
from tests.fixtures.wait import async_wait_until

DURATIONS = [0.0, 0.0001, 0.00007, 0.0003, 0.002, 0.0025, 0.04, 0.5, 2.5, 3.0, 7.0]


def _samples(
    registry: CollectorRegistry, prefix: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith(prefix) and not sample.name.endswith("_created")
    }


def test_deferred_counts_equal_prometheus_counting_each_event() -> None:
    rng = random.Random(7)
    durations = DURATIONS + [rng.uniform(0, 3) for _ in range(500)]
    ours_registry = CollectorRegistry()
    metrics = Metrics(ours_registry)
    reference = CollectorRegistry()
    requests = Counter(
        "mailwarden_http_requests_total", "", ["endpoint", "status"], registry=reference
    )
    lookups = Histogram(
        "mailwarden_directory_lookup_seconds",
        "",
        buckets=metrics.lookup_seconds._upper_bounds[:-1],
        registry=reference,
    )
    unknown = Counter("mailwarden_unknown_addresses_total", "", registry=reference)
    errors = Counter("mailwarden_directory_errors_total", "", registry=reference)
    throttled = Counter("mailwarden_directory_throttled_total", "", registry=reference)
    events = Counter("mailwarden_directory_cache_events_total", "", ["event"], registry=reference)
    for i, seconds in enumerate(durations):
        endpoint, status = rng.choice([("autoconfig", 200), ("autoconfig", 404), ("x", 500)])
        metrics.count(endpoint, status)
        requests.labels(endpoint, str(status)).inc()
        metrics.observe_lookup(seconds)
        lookups.observe(seconds)
        event = ("hit", "miss", "stale")[i % 3]
        metrics.directory_event(event)
        events.labels(event).inc()
        if i % 4 == 0:
            metrics.unknown_address()
            unknown.inc()
        if i % 5 == 0:
            metrics.directory_error()
            errors.inc()
        if i % 7 == 0:
            metrics.throttled()
            throttled.inc()
    # No event loop here: each count is written at once; the exposition flushes in any case.
    metrics.exposition()
    ours = _samples(ours_registry, "mailwarden_")
    expected = _samples(reference, "mailwarden_")
    assert ours == expected
    assert ours[("mailwarden_directory_lookup_seconds_count", ())] == len(durations)


def test_inside_an_event_loop_counts_wait_for_the_flush() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, flush_interval=0.05)
    name = "mailwarden_http_requests_total"
    labels = {"endpoint": "autoconfig", "status": "200"}

    async def scenario() -> tuple[float | None, float | None, float | None]:
        for _ in range(3):
            metrics.count("autoconfig", 200)
            metrics.observe_lookup(0.001)
        before = registry.get_sample_value(name, labels)
        # the flush timer has fired: the counts were written
        await async_wait_until(lambda: (registry.get_sample_value(name, labels) or 0.0) > 0)
        after = registry.get_sample_value(name, labels)
        metrics.count("autoconfig", 200)
        metrics.exposition()  # a scrape writes this worker's counts at once
        return before, after, registry.get_sample_value(name, labels)

    before, after, scraped = asyncio.run(scenario())
    assert (before or 0.0) == 0.0
    assert after == 3.0
    assert scraped == 4.0
    assert registry.get_sample_value("mailwarden_directory_lookup_seconds_count") == 3.0
    assert registry.get_sample_value("mailwarden_directory_lookup_seconds_sum") == 0.003
