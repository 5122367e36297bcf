"""One audit, start to end: endpoints → observations → revocation → checks → report.

The only place that knows the order of the phases. Each phase is bounded: the scanner by the
per-connection timeout and the deadline, the revocation look-ups by the timeout (at most one per
distinct certificate, a few at a time), the checks are pure.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from mailwarden.audit.checks import (
    CHECKS,
    CheckContext,
    certificate_infos,
    fingerprint,
    leaf_and_issuer,
    load_trust,
)
from mailwarden.audit.endpoints import find_endpoints
from mailwarden.audit.model import (
    AuditReport,
    CertificateInfo,
    CheckResult,
    Endpoint,
    Observation,
)
from mailwarden.audit.revocation import CrlCache, Revocation, check_revocation, http_fetch
from mailwarden.audit.scan import scan_all
from mailwarden.audit.sitewide import SITE_CHECKS, SiteContext, site_result
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver
from mailwarden.errors import InputError
from mailwarden.findings import Finding, Severity
from mailwarden.site.model import Site

REVOCATION_PARALLEL = 16
"""Responders and CRL servers are shared by many certificates: ask them a few at a time."""

CODES = {
    "AUDIT-CHECK-FAILED": "A site-wide check did not finish: it ran past the audit's deadline, "
    "or it stopped on an unexpected error (a fault in mailwarden, not in the site). What it "
    "was to judge stays unjudged (unknown). The message names the check and the reason; "
    "raise [audit] deadline for the first, report the second with the message.",
}
"""Codes the runner itself reports (docs/audit.md)."""

ALL_CHECKS: tuple[str, ...] = (*CHECKS, *SITE_CHECKS)
"""Every ``--only`` word: the endpoint checks, then the site-wide ones."""


@dataclass(frozen=True, slots=True)
class AuditOptions:
    only: frozenset[str] | None = None
    """Check names to run (None: all)."""
    ca_file: Path | None = None
    timeout: float = 10.0
    deadline: float = 300.0
    per_server: int = 2
    ehlo_name: str | None = None
    legacy: bool = True
    warn_days: int = 30
    critical_days: int = 14

    @classmethod
    def from_site(cls, site: Site, **overrides: object) -> AuditOptions:
        settings = site.audit
        values: dict[str, object] = {
            "ca_file": settings.ca_file,
            "timeout": settings.timeout,
            "deadline": settings.deadline,
            "per_server": settings.connections_per_server,
            "ehlo_name": settings.ehlo_name,
            "legacy": settings.legacy_versions,
            "warn_days": settings.warn_days,
            "critical_days": settings.critical_days,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def check_names(text: str) -> frozenset[str]:
    """``--only chain,expiry``: known check names, or an error naming the known ones."""
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - set(ALL_CHECKS))
    if unknown or not names:
        raise InputError(
            f"--only {text!r}: unknown check(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(ALL_CHECKS)}"
        )
    return names


class _Revocations:
    """One revocation look-up per distinct leaf (by SHA-256), started as soon as a scan hands
    in its chain, so OCSP and CRL requests run while other endpoints are still being scanned."""

    def __init__(
        self,
        trust: tuple[x509.Certificate, ...],
        network: Network,
        now: datetime.datetime,
        timeout: float,
    ) -> None:
        self._trust = trust
        self._fetch = http_fetch(network, timeout=timeout)
        self._now = now
        self._timeout = timeout
        self._gate = asyncio.Semaphore(REVOCATION_PARALLEL)
        self._crls = CrlCache()  # many certificates, one CA: its CRL is fetched once
        self._tasks: dict[str, asyncio.Task[Revocation]] = {}

    def add(self, observation: Observation) -> None:
        if not observation.chain:
            return
        key = fingerprint(observation.chain[0])
        if key in self._tasks:
            return
        pair = leaf_and_issuer(observation.chain, self._trust)
        if pair is not None:  # else the chain check reports what is wrong with the chain
            self._tasks[key] = asyncio.ensure_future(self._one(*pair))

    async def _one(self, leaf: x509.Certificate, issuer: x509.Certificate) -> Revocation:
        async with self._gate:
            return await check_revocation(
                leaf,
                issuer,
                self._fetch,
                now=self._now,
                timeout=self._timeout,
                crl_cache=self._crls,
            )

    async def results(self) -> dict[str, Revocation]:
        keys = list(self._tasks)
        verdicts = await asyncio.gather(*(self._tasks[k] for k in keys))
        return dict(zip(keys, verdicts, strict=True))


def default_ehlo_name() -> str:
    name = socket.getfqdn()
    return name if "." in name else f"{name}.invalid"


async def _site_check(name: str, context: SiteContext, deadline: float) -> list[CheckResult]:
    """One site-wide check, bounded by what is left of the audit's deadline; a check that does
    not finish, or fails on a fault of its own, is one unknown finding instead of the audit's
    end."""
    module = SITE_CHECKS[name]
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
            results: list[CheckResult] = await module.run(context)
            return results
    except TimeoutError:
        why = "not finished by the audit's deadline"
    except Exception as exc:  # a fault in the check: reported, and the other checks go on
        why = f"stopped on an unexpected error: {type(exc).__name__}: {exc}"
    finding = Finding(Severity.UNKNOWN, "AUDIT-CHECK-FAILED", name, f"the {name} check {why}", "")
    return [site_result(name, name, [finding])]


async def run_audit(
    site: Site,
    site_path: str,
    resolver: Resolver,
    options: AuditOptions,
    *,
    progress: Callable[[Observation], None] | None = None,
    on_endpoints: Callable[[int], None] | None = None,
) -> AuditReport:
    """Endpoints, scans with the revocation look-ups beside them, the endpoint checks; the
    site-wide checks run beside the scans (DANE, which compares DNS with what the MX hosts
    sent, after them). With only site-wide checks chosen that need no scan, no endpoint is
    looked up or connected to."""
    started = time.perf_counter()
    ends = time.monotonic() + options.deadline
    now = datetime.datetime.now(datetime.UTC)
    try:
        trust = load_trust(options.ca_file)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    wanted = options.only or frozenset(ALL_CHECKS)
    site_names = [name for name in SITE_CHECKS if name in wanted]
    late = [name for name in site_names if SITE_CHECKS[name].AFTER_SCAN]
    scanning = bool(late) or any(name in wanted for name in CHECKS)
    ehlo_name = options.ehlo_name or default_ehlo_name()
    network = Network(resolver, connect_timeout=options.timeout, ca_file=options.ca_file)
    site_context = SiteContext(
        site=site,
        resolver=resolver,
        network=network,
        now=now,
        timeout=options.timeout,
        trust=trust,
        ca_file=options.ca_file,
        ehlo_name=ehlo_name,
    )
    early = {
        name: asyncio.ensure_future(_site_check(name, site_context, ends))
        for name in site_names
        if name not in late
    }
    endpoints: list[Endpoint] = []
    general: list[Finding] = []
    observations: tuple[Observation, ...] = ()
    revocation: dict[str, Revocation] = {}
    if scanning:
        discovered = await find_endpoints(site, resolver)
        endpoints, general = discovered.endpoints, discovered.findings
        if on_endpoints is not None:
            on_endpoints(len(endpoints))
        lookups: _Revocations | None = None
        if wanted & {"revocation", "stapling"}:
            lookups = _Revocations(trust, network, now, options.timeout)

        def scanned(observation: Observation) -> None:
            if lookups is not None:
                lookups.add(observation)
            if progress is not None:
                progress(observation)

        left = max(options.deadline - (time.perf_counter() - started), 1.0)
        observations = await scan_all(
            endpoints,
            timeout=options.timeout,
            deadline=left,
            per_server=options.per_server,
            ehlo_name=ehlo_name,
            legacy=options.legacy,
            progress=scanned,
        )
        revocation = await lookups.results() if lookups is not None else {}
    elif on_endpoints is not None:
        on_endpoints(0)
    context = CheckContext(
        now=now,
        trust=trust,
        warn_days=options.warn_days,
        critical_days=options.critical_days,
        revocation=revocation,
    )
    groups: dict[tuple[str, int, str, str], list[Observation]] = {}
    for observation in observations:
        e = observation.endpoint
        groups.setdefault((e.host, e.port, e.protocol, e.tls), []).append(observation)
    results: list[CheckResult] = []
    for name, check in CHECKS.items():
        if name in wanted:
            for group in groups.values():
                results += check(group, context)
    after = replace(site_context, observations=observations)
    late_results = {name: await _site_check(name, after, ends) for name in late}
    for name in site_names:
        results += late_results[name] if name in late else await early[name]
    certificates: dict[str, tuple[CertificateInfo, ...]] = {
        o.endpoint.label: certificate_infos(o.chain, now) for o in observations if o.chain
    }
    return AuditReport(
        started=now.isoformat(timespec="seconds"),
        seconds=time.perf_counter() - started,
        site=site_path,
        endpoints=tuple(endpoints),
        observations=tuple(observations),
        results=tuple(results),
        certificates=certificates,
        general=tuple(general),
        warn_days=options.warn_days,
        critical_days=options.critical_days,
    )
