"""Following HTTP redirects the way a mail client does, and saying what was wrong on the way.

Thunderbird's XHR follows redirects by itself; Outlook follows a 302 on its POST and warns the
user when the host changes. Both are bounded here at :data:`MAX_REDIRECTS` hops, a loop is
named as a loop, and a redirect from HTTPS to plain HTTP is flagged (and, for Outlook, not
followed: its documentation says to follow HTTPS URLs only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from mailwarden.discovery.context import MAX_REDIRECTS, ProbeContext, host_of, http_step
from mailwarden.discovery.http import HttpResponse
from mailwarden.discovery.steps import Outcome, Step
from mailwarden.findings import Finding, Severity

REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True, slots=True)
class Followed:
    steps: tuple[Step, ...]
    response: HttpResponse | None
    """The last answer that was not a redirect (None: failed, looped or refused to follow)."""
    url: str
    """The URL of that answer."""
    findings: tuple[Finding, ...]
    hosts_changed: bool


async def follow(
    ctx: ProbeContext,
    client: str,
    method: str,
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    priority: int | None = None,
    https_only: bool = False,
) -> Followed:
    """``method`` to ``url``, re-sent (same method and body) to each redirect's Location."""
    steps: list[Step] = []
    findings: list[Finding] = []
    seen: set[str] = set()
    current = url
    first_host = host_of(url)
    for _hop in range(MAX_REDIRECTS + 1):
        seen.add(current)
        exchange = await http_step(
            ctx, client, method, current, headers=headers, body=body, priority=priority
        )
        response = exchange.response
        if response is None or response.status not in REDIRECTS or not response.location:
            steps.append(exchange.step)
            return Followed(
                tuple(steps), response, current, tuple(findings), host_of(current) != first_host
            )
        target = urljoin(current, response.location.strip())
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            steps.append(_failed(exchange.step, f"redirect to a non-HTTP URL {target[:200]!r}"))
            return Followed(tuple(steps), None, current, tuple(findings), False)
        if urlsplit(current).scheme == "https" and scheme == "http":
            findings.append(
                Finding(
                    Severity.WARNING,
                    "PROBE-DOWNGRADE",
                    current,
                    f"{client}: HTTPS redirects to plain HTTP ({target[:200]}): the answer can "
                    "then be read and changed on the way",
                    "redirect to an https:// URL",
                )
            )
            if https_only:
                steps.append(
                    _failed(exchange.step, f"not followed: redirect to plain HTTP {target}")
                )
                return Followed(tuple(steps), None, current, tuple(findings), False)
        if target in seen:
            steps.append(_failed(exchange.step, f"redirect loop: {target[:200]} was asked before"))
            findings.append(
                Finding(
                    Severity.WARNING,
                    "PROBE-REDIRECT-LOOP",
                    url,
                    f"{client}: redirects lead back to {target[:200]}; the client gives up on "
                    "this URL",
                    "make the redirect point at the autoconfig host's real endpoint",
                )
            )
            return Followed(tuple(steps), None, current, tuple(findings), False)
        steps.append(exchange.step)
        current = target
    steps.append(
        Step(client, method, current, Outcome.FAILED, f"more than {MAX_REDIRECTS} redirects")
    )
    findings.append(
        Finding(
            Severity.WARNING,
            "PROBE-REDIRECT-LOOP",
            url,
            f"{client}: more than {MAX_REDIRECTS} redirects; the client gives up on this URL",
            "redirect once, to the autoconfig host's real endpoint",
        )
    )
    return Followed(tuple(steps), None, current, tuple(findings), False)


def _failed(step: Step, detail: str) -> Step:
    from dataclasses import replace

    return replace(step, outcome=Outcome.FAILED, detail=f"{step.detail}; {detail}")
