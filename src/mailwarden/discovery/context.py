"""What every client replay shares: the network, the clock, the limits, and the one result type.

A client replay (``thunderbird.py``, ``outlook.py``) is a list of steps in the client's order;
the helpers here turn one HTTP exchange or DNS query into a :class:`Step`, so each replay reads
as the client's algorithm and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mailwarden.discovery.http import HttpFailure, HttpResponse, request
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import DnsAnswer
from mailwarden.discovery.settings import ClientSettings
from mailwarden.discovery.steps import Clock, Outcome, Step, Timer
from mailwarden.findings import Finding

MAX_REDIRECTS = 10
"""Outlook's documented limit, applied to every client (browsers allow 20)."""


@dataclass
class ProbeContext:
    network: Network
    clock: Clock = field(default_factory=Clock)
    step_timeout: float = 5.0
    ispdb: str | None = None
    """Base URL of an ISPDB to ask (Thunderbird's ``fromDB`` step); None: shown as skipped."""
    user_agent: str = "mailwarden-probe"


@dataclass(frozen=True, slots=True)
class ClientResult:
    """What one client did for the address, and what it ended with."""

    client: str
    label: str
    settings: ClientSettings | None
    source: str | None
    """The URL (or DNS name) the settings came from."""
    steps: tuple[Step, ...]
    findings: tuple[Finding, ...] = ()
    asks_user: tuple[str, ...] = ()
    """What the client asks or warns the user about before it uses these settings."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "label": self.label,
            "source": self.source,
            "settings": self.settings.to_dict() if self.settings else None,
            "asks_user": list(self.asks_user),
            "steps": [s.to_dict() for s in self.steps],
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP request as a step, with the response when there was one."""

    step: Step
    response: HttpResponse | None


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


async def http_step(
    ctx: ProbeContext,
    client: str,
    method: str,
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    priority: int | None = None,
) -> Exchange:
    """One request, no redirect followed: the caller decides what its client follows."""
    timer = Timer(ctx.clock)
    all_headers = [("User-Agent", ctx.user_agent), *headers]
    try:
        response = await request(
            ctx.network, method, url, headers=all_headers, body=body, timeout=ctx.step_timeout
        )
    except HttpFailure as exc:
        step = Step(
            client,
            method,
            url,
            Outcome.FAILED,
            exc.message,
            ms=timer.elapsed(),
            started_ms=timer.started,
            priority=priority,
            tls=exc.message if exc.kind.startswith("tls") else None,
            failure=exc.kind,
        )
        return Exchange(step, None)
    tls = response.tls.line(host_of(url)) if response.tls else None
    outcome = Outcome.OK if 200 <= response.status < 300 else Outcome.FAILED
    detail = response.brief()
    if response.location:
        detail += f", Location: {response.location[:200]}"
    step = Step(
        client,
        method,
        url,
        outcome,
        detail,
        ms=timer.elapsed(),
        started_ms=timer.started,
        status=response.status,
        priority=priority,
        tls=tls,
        failure=None if outcome is Outcome.OK else "status",
    )
    return Exchange(step, response)


def dns_step(client: str, answer: DnsAnswer, started_ms: float) -> Step:
    outcome = Outcome.OK if answer.records else Outcome.FAILED
    return Step(
        client,
        f"DNS {answer.rdtype}",
        answer.name,
        outcome,
        answer.summary(),
        ms=answer.ms,
        started_ms=started_ms,
    )
