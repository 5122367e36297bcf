"""``mailwarden probe``: what each mail client does for one address, and what it ends with.

The clients run side by side (as they would on different users' machines), each step timed;
then every IMAP/POP3/SMTP server any client ended with is connected to as advertised. The
settings are compared between clients and, given the site file, with what it says. One deadline
bounds the whole probe: what is still running then is stopped and reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailwarden.address import Address
from mailwarden.discovery import outlook, thunderbird
from mailwarden.discovery.context import ClientResult, ProbeContext
from mailwarden.discovery.mailserver import EndpointResult, MailEndpoint, check_endpoints
from mailwarden.discovery.settings import ClientSettings, ServerSetting
from mailwarden.discovery.steps import Outcome, Step
from mailwarden.findings import Finding, Severity, exit_status

if TYPE_CHECKING:  # the comparison with the site file loads the directory: only when asked
    from mailwarden.discovery.expected import Expected

DEFAULT_DEADLINE = 20.0

Replay = Callable[[ProbeContext, Address], Awaitable[ClientResult]]

CLIENTS: dict[str, tuple[tuple[str, Replay], ...]] = {
    "thunderbird": (("thunderbird", thunderbird.replay),),
    "outlook": (("outlook", outlook.replay), ("autodiscover-json", outlook.replay_json)),
}
CLIENTS["all"] = CLIENTS["thunderbird"] + CLIENTS["outlook"]


@dataclass(frozen=True, slots=True)
class ProbeReport:
    address: str
    resolver: str
    clients: tuple[ClientResult, ...]
    servers: tuple[EndpointResult, ...]
    findings: tuple[Finding, ...]
    """Findings about the whole probe (disagreements, the site file, the deadline)."""
    expected_note: str
    ms: float

    def all_findings(self) -> list[Finding]:
        """Every finding once (the same problem seen by two clients is reported once)."""
        seen: set[tuple[str, str]] = set()
        result: list[Finding] = []
        groups = [c.findings for c in self.clients] + [s.findings for s in self.servers]
        for finding in [f for group in groups for f in group] + list(self.findings):
            key = (finding.code, finding.subject)
            if key not in seen:
                seen.add(key)
                result.append(finding)
        return result

    @property
    def exit_status(self) -> int:
        return exit_status(self.all_findings())

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "resolver": self.resolver,
            "ms": round(self.ms, 1),
            "clients": [c.to_dict() for c in self.clients],
            "servers": [_server_dict(s) for s in self.servers],
            "findings": [f.to_dict() for f in self.all_findings()],
            "site_file": self.expected_note,
            "exit_status": self.exit_status,
        }


def _server_dict(result: EndpointResult) -> dict[str, Any]:
    endpoint = result.endpoint
    return {
        "kind": endpoint.kind,
        "host": endpoint.host,
        "port": endpoint.port,
        "tls": endpoint.tls,
        "ok": result.ok,
        "tls_version": result.tls_version,
        "mechanisms": list(result.mechanisms),
        "steps": [s.to_dict() for s in result.steps],
        "findings": [f.to_dict() for f in result.findings],
    }


def _stopped(client: str, label: str, ctx: ProbeContext, deadline: float) -> ClientResult:
    step = Step(
        client,
        "deadline",
        label,
        Outcome.FAILED,
        f"still running after the probe's deadline of {deadline:g} s: stopped",
        started_ms=ctx.clock.now(),
        failure="deadline",
    )
    finding = Finding(
        Severity.WARNING,
        "PROBE-DEADLINE",
        label,
        f"{label} had not finished after {deadline:g} s (a server that accepts and never "
        "answers makes clients wait this long too)",
        "find the slow step with a longer --deadline",
    )
    return ClientResult(client, label, None, None, (step,), (finding,))


def endpoints(results: Sequence[ClientResult]) -> list[MailEndpoint]:
    """Every server any client ended with (chosen or offered), once."""
    found: dict[tuple[str, str, int, str], MailEndpoint] = {}
    for result in results:
        if result.settings is None:
            continue
        for server in result.settings.servers():
            key = (server.kind, server.host, server.port, server.tls)
            previous = found.get(key)
            auth = tuple(dict.fromkeys((*(previous.auth if previous else ()), *server.auth)))
            found[key] = MailEndpoint(server.kind, server.host, server.port, server.tls, auth)
    return list(found.values())


def _pair(role: str, a: ServerSetting | None, b: ServerSetting | None) -> str | None:
    if a is None and b is None:
        return None
    if a is None or b is None or not a.same_as(b):
        left = a.line() if a else "none"
        right = b.line() if b else "none"
        return f"{role}: {left} vs {right}"
    return None


def differences(a: ClientSettings, b: ClientSettings) -> list[str]:
    return [
        d
        for d in (
            _pair("incoming", a.incoming, b.incoming),
            _pair("outgoing", a.outgoing, b.outgoing),
        )
        if d
    ]


def compare(
    results: Sequence[ClientResult], expected: Expected | None, address: Address
) -> list[Finding]:
    findings: list[Finding] = []
    ended = [(r, r.settings) for r in results if r.settings is not None]
    for index, (first, first_settings) in enumerate(ended):
        for second, second_settings in ended[index + 1 :]:
            diff = differences(first_settings, second_settings)
            if diff:
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "PROBE-DISAGREE",
                        str(address),
                        f"{first.label} and {second.label} end with different settings: "
                        + "; ".join(diff),
                        "serve the same servers in every document (a stale document on one "
                        "host, or a client reading an ambiguous document its own way)",
                    )
                )
    if expected is None:
        return findings
    for result, settings in ended:
        key = result.client
        if result.client == "thunderbird" and result.source and "autodiscover" in result.source:
            key = "tb-pox"  # Thunderbird fell back to Autodiscover and reads it its own way
        wanted = expected.settings.get(key)
        if wanted is None:
            continue
        diff = differences(wanted, settings)
        if diff:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "PROBE-SITE-DIFFERS",
                    result.source or str(address),
                    f"{result.label} ends with other settings than the site file gives: "
                    + "; ".join(diff).replace(" vs ", " (site file) vs "),
                    "deploy the site file that is checked here, or find the host that answers "
                    "in its place",
                )
            )
    return findings


async def probe(
    ctx: ProbeContext,
    address: Address,
    *,
    clients: str = "all",
    deadline: float = DEFAULT_DEADLINE,
    expected: Expected | None = None,
    check_servers: bool = True,
) -> ProbeReport:
    """Replay ``clients`` for ``address``, then connect to the servers they ended with."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    chosen = CLIENTS[clients]
    tasks = [asyncio.ensure_future(replay(ctx, address)) for _, replay in chosen]
    _done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    results: list[ClientResult] = []
    for (name, _), task in zip(chosen, tasks, strict=True):
        if task in pending:
            label = {"thunderbird": thunderbird.LABEL, "outlook": outlook.LABEL}.get(
                name, outlook.JSON_LABEL
            )
            results.append(_stopped(name, label, ctx, deadline))
        else:
            results.append(task.result())
    servers: tuple[EndpointResult, ...] = ()
    findings = compare(results, expected, address)
    left = end - loop.time()
    wanted = endpoints(results)
    if check_servers and wanted:
        if left > 0.2:
            servers = await check_endpoints(
                ctx.network, wanted, ctx.clock, timeout=min(ctx.step_timeout, left)
            )
        else:
            findings.append(
                Finding(
                    Severity.WARNING,
                    "PROBE-DEADLINE",
                    "servers",
                    f"no time left to connect to the {len(wanted)} mail servers before the "
                    f"deadline of {deadline:g} s",
                    "give a longer --deadline",
                )
            )
    return ProbeReport(
        str(address),
        ctx.network.resolver.describe(),
        tuple(results),
        servers,
        tuple(findings),
        (expected.note or "compared") if expected is not None else "not compared (no --config)",
        ctx.clock.now(),
    )
