"""Thunderbird's account setup, replayed (protocols.md §1.5, §2.9).

Thunderbird starts every source at once and takes the highest-priority one that succeeds:
the four autoconfig URLs of the domain (HTTPS before HTTP, ``autoconfig.`` before
``.well-known``), the ISPDB, then the domain of the lowest-preference MX host (HTTPS only).
Exchange Autodiscover runs alongside and is used only when no autoconfig source answers. If
everything fails it guesses host names, which is not replayed here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from urllib.parse import urlencode, urlsplit

from mailwarden.address import Address
from mailwarden.discovery import outlook
from mailwarden.discovery.context import ClientResult, ProbeContext, host_of
from mailwarden.discovery.follow import follow
from mailwarden.discovery.resolver import absolute
from mailwarden.discovery.settings import ClientSettings, from_autoconfig
from mailwarden.discovery.steps import Outcome, Step, Timer
from mailwarden.discovery.verdicts import step_findings
from mailwarden.errors import InputError
from mailwarden.findings import Finding, Severity
from mailwarden.ispdb.document import parse_document
from mailwarden.psl import public_suffix_list

CLIENT = "thunderbird"
LABEL = "Thunderbird"
_XML_TYPES = ("text/xml", "application/xml", "text/rdf")


@dataclass(frozen=True, slots=True)
class _Source:
    """One autoconfig source Thunderbird tries, with what it got."""

    priority: int
    steps: tuple[Step, ...]
    settings: ClientSettings | None
    url: str
    findings: tuple[Finding, ...]
    via_http: bool


def autoconfig_urls(address: Address) -> list[tuple[int, str]]:
    """The domain's four URLs in Thunderbird's priority order (``fromISP``)."""
    query = urlencode({"emailaddress": str(address)})
    d = address.domain
    return [
        (1, f"https://autoconfig.{d}/mail/config-v1.1.xml?{query}"),
        (2, f"https://{d}/.well-known/autoconfig/mail/config-v1.1.xml?{query}"),
        (3, f"http://autoconfig.{d}/mail/config-v1.1.xml?{query}"),
        (4, f"http://{d}/.well-known/autoconfig/mail/config-v1.1.xml?{query}"),
    ]


async def _fetch_config(
    ctx: ProbeContext, address: Address, url: str, priority: int, *, meant_for_clients: bool
) -> _Source:
    """GET one autoconfig URL the way Thunderbird's XHR does and read the document."""
    followed = await follow(ctx, CLIENT, "GET", url, priority=priority)
    steps = list(followed.steps)
    findings = list(followed.findings)
    response = followed.response
    settings: ClientSettings | None = None
    last = steps[-1]
    if response is not None and 200 <= response.status < 300:
        content_type = response.content_type.lower()
        if not content_type.startswith(_XML_TYPES):
            last = replace(
                last,
                outcome=Outcome.FAILED,
                failure="content-type",
                detail=f"{last.detail}; Content-Type {response.content_type or 'missing'!r} is "
                "not XML: Thunderbird reads the body as text and fails",
            )
        else:
            try:
                document = parse_document(response.body, followed.url)
                parsed = from_autoconfig(document, address)
            except InputError as exc:
                last = replace(
                    last, outcome=Outcome.FAILED, failure="document", detail=exc.message[:300]
                )
            else:
                if parsed.incoming is None or parsed.outgoing is None:
                    missing = "incoming" if parsed.incoming is None else "outgoing"
                    last = replace(
                        last,
                        outcome=Outcome.FAILED,
                        failure="document",
                        detail=f"{last.detail}; no valid {missing} server: Thunderbird "
                        "rejects the document",
                    )
                else:
                    settings = parsed
                    incoming = parsed.incoming
                    last = replace(last, detail=f"{last.detail}; {incoming.line()}")
    steps[-1] = last
    if last.outcome is Outcome.FAILED:
        findings += step_findings(LABEL, last, meant_for_clients=meant_for_clients)
    via_http = urlsplit(followed.url).scheme == "http"
    return _Source(priority, tuple(steps), settings, followed.url, tuple(findings), via_http)


async def _ispdb(ctx: ProbeContext, address: Address, priority: int) -> _Source:
    if ctx.ispdb is None:
        url = f"ISPDB ({address.domain})"
        step = Step(
            CLIENT,
            "GET",
            url,
            Outcome.SKIPPED,
            "Thunderbird asks its ISP database here; give --ispdb URL to include it",
            priority=priority,
            started_ms=ctx.clock.now(),
        )
        return _Source(priority, (step,), None, url, (), False)
    url = ctx.ispdb.rstrip("/") + "/" + address.domain
    return await _fetch_config(ctx, address, url, priority, meant_for_clients=False)


def mx_domains(mx_host: str, email_domain: str) -> list[str]:
    """The names Thunderbird asks for an MX host: its base domain (eTLD+1) and the name one
    label longer (``mx1.mail.example.com`` → ``mail.example.com``, ``example.com``); none when
    the base domain is the email domain itself (nothing new to learn)."""
    host = mx_host.rstrip(".").lower()
    base = public_suffix_list().privatesuffix(host)
    if base is None or base == email_domain:
        return []
    names = [base]
    labels = host.split(".")
    base_len = len(base.split("."))
    if len(labels) > base_len + 1:
        names.insert(0, ".".join(labels[-(base_len + 1) :]))
    return names


async def _for_mx(ctx: ProbeContext, address: Address, priority: int) -> list[_Source]:
    timer = Timer(ctx.clock)
    answer = await ctx.network.resolver.query(address.domain, "MX")
    step = Step(
        CLIENT,
        "DNS MX",
        absolute(address.domain),
        Outcome.OK if answer.records else Outcome.FAILED,
        answer.summary(),
        ms=timer.elapsed(),
        started_ms=timer.started,
        priority=priority,
        failure=None if answer.records else "dns",
    )
    if not answer.records:
        findings = step_findings(LABEL, step, meant_for_clients=False)
        return [_Source(priority, (step,), None, step.target, tuple(findings), False)]
    best = min(
        (r.split() for r in answer.records if len(r.split()) == 2),
        key=lambda parts: int(parts[0]) if parts[0].isdigit() else 65536,
    )
    names = mx_domains(best[1], address.domain)
    if not names:
        step = replace(
            step,
            detail=f"{answer.summary()}; the MX host's base domain is {address.domain} itself: "
            "nothing more to ask",
        )
        return [_Source(priority, (step,), None, step.target, (), False)]
    query = urlencode({"emailaddress": str(address)})
    urls = [f"https://autoconfig.{name}/mail/config-v1.1.xml?{query}" for name in names]
    fetched = await asyncio.gather(
        *(
            _fetch_config(ctx, address, url, priority + i, meant_for_clients=False)
            for i, url in enumerate(urls)
        )
    )
    first = _Source(priority, (step,), None, step.target, (), False)
    return [first, *fetched]


async def replay(ctx: ProbeContext, address: Address) -> ClientResult:
    """Everything Thunderbird does for ``address``, in parallel as it does it."""
    own = [
        _fetch_config(ctx, address, url, priority, meant_for_clients=priority in (1, 3))
        for priority, url in autoconfig_urls(address)
    ]
    results = await asyncio.gather(
        asyncio.gather(*own),
        _ispdb(ctx, address, 5),
        _for_mx(ctx, address, 6),
        outlook.replay_for_thunderbird(ctx, address),
    )
    isp_sources, ispdb_source, mx_sources, exchange = results
    sources = sorted([*isp_sources, ispdb_source, *mx_sources], key=lambda s: s.priority)
    winner = next((s for s in sources if s.settings is not None), None)
    steps: list[Step] = []
    findings: list[Finding] = []
    for source in sources:
        source_steps = list(source.steps)
        if source is winner:
            source_steps[-1] = replace(source_steps[-1], chosen=True)
        steps += source_steps
        findings += source.findings
    asks: list[str] = []
    settings: ClientSettings | None = None
    origin: str | None = None
    if winner is not None:
        settings, origin = winner.settings, winner.url
        if winner.via_http:
            asks.append(
                "fetched over plain HTTP: the autoconfig draft asks clients to have the user "
                "confirm such settings"
            )
            if not any(s.settings and not s.via_http for s in sources):
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "PROBE-HTTP-ONLY",
                        winner.url,
                        f"{LABEL} found settings only over plain HTTP",
                        f"serve https://autoconfig.{address.domain}/ with a certificate for "
                        "that name",
                    )
                )
        if winner.priority >= 6:
            asks.append(
                f"found through the MX host's domain ({host_of(winner.url)}): the draft asks "
                "clients to have the user confirm such settings"
            )
    exchange_steps = [
        replace(s, client=CLIENT, action=f"Autodiscover {s.action}", chosen=False)
        for s in exchange.steps
    ]
    if settings is None and exchange.settings is not None:
        settings, origin = exchange.settings, exchange.source
        asks += exchange.asks_user
        for index in range(len(exchange_steps) - 1, -1, -1):
            if exchange_steps[index].target == exchange.source:
                exchange_steps[index] = replace(exchange_steps[index], chosen=True)
                break
    steps += exchange_steps
    findings += exchange.findings
    if settings is None:
        steps.append(
            Step(
                CLIENT,
                "guess",
                f"imap.{address.domain}, smtp.{address.domain}, mail.{address.domain}",
                Outcome.SKIPPED,
                "no source answered: Thunderbird would now guess server names (not replayed)",
                started_ms=ctx.clock.now(),
            )
        )
        findings.append(
            Finding(
                Severity.ERROR,
                "PROBE-NO-SETTINGS",
                str(address),
                f"{LABEL} finds no settings for {address}",
                f"publish autoconfig.{address.domain} (see 'mailwarden dns records')",
            )
        )
    return ClientResult(CLIENT, LABEL, settings, origin, tuple(steps), tuple(findings), tuple(asks))
