"""Bounded, de-duplicated DNS look-ups for the site-wide checks that ask many names at once.

The ``spf``, ``dkim`` and ``dmarc`` checks look up every served domain concurrently (an audit
of 200 domains must not take 200 sequential round trips), but a resolver flooded with
thousands of queries at once drops them: at most :data:`MAX_IN_FLIGHT` are outstanding. Many
domains of one site point at the same names (one ``include:_spf.example.edu``, one external
DMARC report address), so each distinct (name, type) is asked once per run and shared.
"""

from __future__ import annotations

import asyncio

from mailwarden.discovery.resolver import DnsAnswer, Resolver, absolute

MAX_IN_FLIGHT = 32
"""DNS queries outstanding at once, per check run."""


class BoundedDns:
    """One check run's view of the resolver: bounded in flight, each query asked once.

    Create one per run (inside the running event loop), not per module: a semaphore belongs
    to the loop it first waits in.
    """

    def __init__(self, resolver: Resolver, in_flight: int = MAX_IN_FLIGHT) -> None:
        self._resolver = resolver
        self._limit = asyncio.Semaphore(in_flight)
        self._asked: dict[tuple[str, str], asyncio.Task[DnsAnswer]] = {}

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """The resolver's answer (never an exception: failures are a status)."""
        key = (absolute(name), rdtype)
        task = self._asked.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ask(*key))
            self._asked[key] = task
        return await task

    async def _ask(self, name: str, rdtype: str) -> DnsAnswer:
        async with self._limit:
            return await self._resolver.query(name, rdtype)
