"""Outlook's Autodiscover, replayed; and the Autodiscover run Thunderbird makes alongside.

Outlook (protocols.md §2.2, §2.6) tries one way after the other: a POST to the bare domain,
then to ``autodiscover.<domain>``, then the plain-HTTP GET whose only useful answer is a 302 to
HTTPS, then the ``_autodiscover._tcp`` SRV record. It follows ``redirectAddr`` by starting over
with the new address and ``redirectUrl`` by posting there, at most 10 times, and asks the user
before it trusts a redirect or an SRV target. Thunderbird (§2.9) asks the same URLs in parallel,
``autodiscover.`` first, ignores the SRV port and priority, and reads the answer its own way.
Autodiscover v2 (§3) is the JSON request of Outlook mobile, Outlook for Mac and new Outlook
(through Microsoft's cloud service): it names the POX URL, which is then asked like Outlook.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import quote, urlsplit

from mailwarden.address import Address, AddressError, parse_address
from mailwarden.discovery.context import (
    MAX_REDIRECTS,
    ClientResult,
    ProbeContext,
    host_of,
    http_step,
)
from mailwarden.discovery.follow import follow
from mailwarden.discovery.pox import PoxAnswer, PoxResponseError, parse_response, request_body
from mailwarden.discovery.settings import ClientSettings, from_pox
from mailwarden.discovery.steps import Outcome, Step, Timer
from mailwarden.discovery.verdicts import step_findings
from mailwarden.findings import Finding, Severity

POX_PATH = "/autodiscover/autodiscover.xml"
LABEL = "Outlook"
JSON_LABEL = "Outlook (Autodiscover v2 JSON)"
_HEADERS = (("Content-Type", "text/xml; charset=utf-8"),)
Reader = Literal["outlook", "thunderbird"]


@dataclass
class _Run:
    """What one replay has gathered so far."""

    client: str
    label: str
    reader: Reader
    steps: list[Step] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    asks: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Answer:
    answer: PoxAnswer
    url: str


async def _post(
    ctx: ProbeContext,
    run: _Run,
    url: str,
    address: Address,
    *,
    meant_for_clients: bool,
    priority: int | None = None,
) -> _Answer | None:
    """POST the Autodiscover request to ``url`` (following redirects); the answer, if usable."""
    followed = await follow(
        ctx,
        run.client,
        "POST",
        url,
        headers=_HEADERS,
        body=request_body(str(address)),
        priority=priority,
        https_only=run.reader == "outlook",
    )
    steps = list(followed.steps)
    run.findings += followed.findings
    if followed.hosts_changed and run.reader == "outlook":
        run.asks.append(
            f"redirected to {host_of(followed.url)}: Outlook asks the user whether to let that "
            "server configure the account"
        )
    response = followed.response
    last = steps[-1]
    result: _Answer | None = None
    if response is not None and response.status == 200:
        try:
            answer = parse_response(response.body)
        except PoxResponseError as exc:
            last = replace(
                last, outcome=Outcome.FAILED, failure="document", detail=f"{last.detail}; {exc}"
            )
        else:
            if answer.action == "error":
                last = replace(
                    last,
                    outcome=Outcome.FAILED,
                    failure="autodiscover-error",
                    detail=f"{last.detail}; Autodiscover error {answer.error_code}: "
                    f"{answer.error_message or ''}".rstrip(": "),
                )
                run.findings.append(
                    Finding(
                        Severity.WARNING,
                        "PROBE-AUTODISCOVER-ERROR",
                        followed.url,
                        f"{run.label}: error {answer.error_code} "
                        f"({answer.error_message or 'no message'}) for {address}; Outlook does "
                        "not show it and goes on guessing",
                    )
                )
            else:
                last = replace(
                    last, detail=f"{last.detail}; {_describe(answer, address, run.reader)}"
                )
                result = _Answer(answer, followed.url)
    if last.outcome is Outcome.FAILED:
        if last.failure == "tls" and run.reader == "outlook":
            run.asks.append(
                f"a certificate warning for {host_of(last.target)} ({last.detail}): Outlook "
                "asks whether to go on with a certificate it cannot verify"
            )
        if last.failure == "tls" and not meant_for_clients and run.reader == "outlook":
            run.findings.append(
                Finding(
                    Severity.WARNING,
                    "PROBE-TLS",
                    last.target,
                    f"{run.label}: {last.detail}. Outlook asks this URL first and shows the "
                    "user a certificate warning",
                    f"let https://{host_of(url)}/ refuse connections on port 443, or give it a "
                    "certificate for that name",
                )
            )
        else:
            run.findings += step_findings(run.label, last, meant_for_clients=meant_for_clients)
    steps[-1] = last
    run.steps += steps
    return result


def _describe(answer: PoxAnswer, address: Address, reader: Reader) -> str:
    if answer.action == "settings":
        settings = from_pox(answer.protocols, address, reader=reader)
        return settings.incoming.line() if settings.incoming else "settings without incoming server"
    return f"{answer.action} → {answer.redirect}"


async def _srv_targets(ctx: ProbeContext, run: _Run, domain: str) -> list[str]:
    """``_autodiscover._tcp`` SRV → HTTPS URLs, in the order the client tries them."""
    timer = Timer(ctx.clock)
    answer = await ctx.network.resolver.query(f"_autodiscover._tcp.{domain}", "SRV")
    step = Step(
        run.client,
        "DNS SRV",
        answer.name,
        Outcome.OK if answer.records else Outcome.FAILED,
        answer.summary(),
        ms=timer.elapsed(),
        started_ms=timer.started,
        failure=None if answer.records else "dns",
    )
    run.steps.append(step)
    run.findings += step_findings(run.label, step, meant_for_clients=False)
    records = []
    for text in answer.records:
        parts = text.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[:3]) and parts[3] != ".":
            records.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3].rstrip(".")))
    if run.reader == "thunderbird":  # ignores port and priority, sorts by weight (§2.2)
        records.sort(key=lambda r: r[1])
        return [f"https://{r[3]}{POX_PATH}" for r in records]
    records.sort(key=lambda r: (r[0], -r[1]))  # best priority, then highest weight
    return [f"https://{r[3]}{'' if r[2] == 443 else f':{r[2]}'}{POX_PATH}" for r in records if r[2]]


async def _outlook_once(ctx: ProbeContext, run: _Run, address: Address) -> _Answer | None:
    """Outlook's four ways for one address, one after the other; the first usable answer."""
    d = address.domain
    for url, meant in (
        (f"https://{d}{POX_PATH}", False),
        (f"https://autodiscover.{d}{POX_PATH}", True),
    ):
        answer = await _post(ctx, run, url, address, meant_for_clients=meant)
        if answer is not None:
            return answer
    probe = await http_step(ctx, run.client, "GET", f"http://autodiscover.{d}{POX_PATH}")
    response = probe.response
    location = response.location if response is not None else None
    if response is not None and response.status == 302 and location:
        if urlsplit(location).scheme.lower() == "https":
            run.steps.append(replace(probe.step, outcome=Outcome.OK, failure=None))
            run.asks.append(
                f"the plain-HTTP redirect points to {host_of(location)}: Outlook asks the user "
                "before it sends the address there"
            )
            answer = await _post(ctx, run, location, address, meant_for_clients=True)
            if answer is not None:
                return answer
        else:
            run.steps.append(
                replace(
                    probe.step,
                    outcome=Outcome.FAILED,
                    detail=f"{probe.step.detail}; not "
                    "an HTTPS Location: Outlook does not follow it",
                )
            )
    else:
        step = probe.step
        if response is not None:
            step = replace(
                step,
                outcome=Outcome.FAILED,
                failure="status",
                detail=f"{step.detail}; only a 302 to HTTPS is used here",
            )
        run.steps.append(step)
    for url in await _srv_targets(ctx, run, d):
        run.asks.append(
            f"found through the _autodiscover._tcp SRV record ({host_of(url)}): Outlook asks the "
            "user once before it uses that server"
        )
        answer = await _post(ctx, run, url, address, meant_for_clients=True)
        if answer is not None:
            return answer
    return None


async def _follow_answers(
    ctx: ProbeContext,
    run: _Run,
    address: Address,
    first: _Answer | None,
    again: Callable[[Address], Awaitable[_Answer | None]],
) -> tuple[ClientSettings | None, str | None, Address]:
    """Follow redirectAddr / redirectUrl answers (at most :data:`MAX_REDIRECTS`)."""
    answer = first
    current = address
    seen = {str(address)}
    for _ in range(MAX_REDIRECTS):
        if answer is None:
            return None, None, current
        if answer.answer.action == "settings":
            return (
                from_pox(answer.answer.protocols, address, reader=run.reader),
                answer.url,
                current,
            )
        target = answer.answer.redirect or ""
        if answer.answer.action == "redirectUrl":
            if urlsplit(target).scheme.lower() != "https":
                run.findings.append(
                    Finding(
                        Severity.WARNING,
                        "PROBE-DOWNGRADE",
                        answer.url,
                        f"{run.label}: redirectUrl to a non-HTTPS URL {target[:200]!r} is "
                        "not followed",
                    )
                )
                return None, None, current
            answer = await _post(ctx, run, target, current, meant_for_clients=True)
            continue
        try:
            new = parse_address(target)
        except AddressError as exc:
            run.findings.append(
                Finding(
                    Severity.ERROR,
                    "PROBE-REDIRECT-ADDRESS",
                    answer.url,
                    f"{run.label}: redirectAddr {target[:200]!r} is not an address ({exc})",
                )
            )
            return None, None, current
        if str(new) in seen:
            run.findings.append(
                Finding(
                    Severity.ERROR,
                    "PROBE-REDIRECT-LOOP",
                    answer.url,
                    f"{run.label}: redirectAddr leads back to {new}, which was asked before",
                )
            )
            return None, None, current
        seen.add(str(new))
        run.findings.append(
            Finding(
                Severity.INFO,
                "PROBE-REDIRECT-ADDRESS",
                answer.url,
                f"{run.label}: the server sends {current} on to {new}; the client starts over "
                "with that address",
            )
        )
        current = new
        answer = await again(current)
    run.findings.append(
        Finding(
            Severity.WARNING,
            "PROBE-REDIRECT-LOOP",
            str(address),
            f"{run.label}: more than {MAX_REDIRECTS} redirects; the client gives up",
        )
    )
    return None, None, current


def _result(
    run: _Run, address: Address, settings: ClientSettings | None, source: str | None
) -> ClientResult:
    if source is not None:
        for index in range(len(run.steps) - 1, -1, -1):
            if run.steps[index].target == source and run.steps[index].outcome is Outcome.OK:
                run.steps[index] = replace(run.steps[index], chosen=True)
                break
        own = (address.domain, f"autodiscover.{address.domain}")
        # Autodiscover v2 names the POX URL itself; whether the cloud service asks anybody
        # before using another host is not known, so only the classic clients get this note.
        if run.client != "autodiscover-json" and host_of(source) not in own:
            run.findings.append(
                Finding(
                    Severity.INFO,
                    "PROBE-REDIRECT-ELSEWHERE",
                    source,
                    f"{run.label}: settings come from {host_of(source)}; the client asks the "
                    "user once before it uses them",
                )
            )
    elif run.client == "outlook":
        run.findings.append(
            Finding(
                Severity.ERROR,
                "PROBE-NO-SETTINGS",
                str(address),
                f"{run.label} finds no settings for {address}",
                f"publish autodiscover.{address.domain} or the _autodiscover._tcp SRV record "
                "(see 'mailwarden dns records')",
            )
        )
    elif run.client == "autodiscover-json":
        # Microsoft's cloud service makes this request; whether it also follows the SRV record
        # or POSTs itself is not documented (protocols.md §3): a warning, not an error.
        run.findings.append(
            Finding(
                Severity.WARNING,
                "PROBE-NO-SETTINGS",
                f"autodiscover.json {address}",
                f"{run.label} finds no settings for {address}: Outlook mobile, Outlook for Mac "
                "and new Outlook may then need the servers typed in",
                f"serve https://autodiscover.{address.domain}/autodiscover/autodiscover.json "
                "(a certificate for that name)",
            )
        )
    return ClientResult(
        run.client,
        run.label,
        settings,
        source,
        tuple(run.steps),
        tuple(run.findings),
        tuple(dict.fromkeys(run.asks)),
    )


async def replay(ctx: ProbeContext, address: Address) -> ClientResult:
    """Classic Outlook (POX), step by step."""
    run = _Run("outlook", LABEL, "outlook")

    async def again(new: Address) -> _Answer | None:
        return await _outlook_once(ctx, run, new)

    first = await _outlook_once(ctx, run, address)
    settings, source, _ = await _follow_answers(ctx, run, address, first, again)
    return _result(run, address, settings, source)


async def _thunderbird_once(ctx: ProbeContext, run: _Run, address: Address) -> _Answer | None:
    d = address.domain
    urls = [
        (1, f"https://autodiscover.{d}{POX_PATH}", True),
        (2, f"https://{d}{POX_PATH}", False),
        (3, f"http://autodiscover.{d}{POX_PATH}", True),
    ]

    async def srv() -> list[_Answer | None]:
        found = []
        for url in await _srv_targets(ctx, run, d):
            found.append(await _post(ctx, run, url, address, meant_for_clients=True, priority=4))
        return found

    answers = await asyncio.gather(
        *(
            _post(ctx, run, url, address, meant_for_clients=meant, priority=p)
            for p, url, meant in urls
        ),
        srv(),
    )
    direct = [a for a in answers[:3] if isinstance(a, _Answer)]
    from_srv = [a for a in answers[3] if a is not None] if isinstance(answers[3], list) else []
    for answer in [*direct, *from_srv]:
        if answer is not None:
            if urlsplit(answer.url).scheme == "http" or answer in from_srv:
                run.asks.append(
                    f"Autodiscover answer from {host_of(answer.url)} (plain HTTP or SRV): "
                    "Thunderbird asks the user before it sends the password there"
                )
            return answer
    return None


async def replay_for_thunderbird(ctx: ProbeContext, address: Address) -> ClientResult:
    """The Autodiscover run Thunderbird makes alongside its autoconfig lookup."""
    run = _Run("thunderbird", "Thunderbird (Exchange Autodiscover)", "thunderbird")

    async def again(new: Address) -> _Answer | None:
        return await _thunderbird_once(ctx, run, new)

    first = await _thunderbird_once(ctx, run, address)
    settings, source, _ = await _follow_answers(ctx, run, address, first, again)
    return _result(run, address, settings, source)


async def replay_json(ctx: ProbeContext, address: Address) -> ClientResult:
    """Autodiscover v2: the JSON answer names the POX URL, which is then asked like Outlook."""
    run = _Run("autodiscover-json", JSON_LABEL, "outlook")
    d = address.domain
    pox_url: str | None = None
    for host, meant in ((f"autodiscover.{d}", True), (d, False)):
        url = (
            f"https://{host}/autodiscover/autodiscover.json/v1.0/{quote(str(address), safe='@')}"
            "?Protocol=AutodiscoverV1"
        )
        followed = await follow(ctx, run.client, "GET", url, https_only=True)
        steps = list(followed.steps)
        run.findings += followed.findings
        response = followed.response
        last = steps[-1]
        if response is not None and response.status == 200:
            try:
                data = json.loads(response.body)
                candidate = data.get("Url") if isinstance(data, dict) else None
            except ValueError:
                candidate = None
            if isinstance(candidate, str) and urlsplit(candidate).scheme.lower() == "https":
                pox_url = candidate
                last = replace(last, detail=f"{last.detail}; Url {candidate[:200]}")
            else:
                last = replace(
                    last,
                    outcome=Outcome.FAILED,
                    failure="document",
                    detail=f'{last.detail}; no HTTPS "Url" in the JSON answer',
                )
        if last.outcome is Outcome.FAILED:
            run.findings += step_findings(run.label, last, meant_for_clients=meant)
        steps[-1] = last
        run.steps += steps
        if pox_url is not None:
            break
    first = None
    if pox_url is not None:
        first = await _post(ctx, run, pox_url, address, meant_for_clients=True)

    async def again(new: Address) -> _Answer | None:
        return await _outlook_once(ctx, run, new)

    settings, source, _ = await _follow_answers(ctx, run, address, first, again)
    return _result(run, address, settings, source)
