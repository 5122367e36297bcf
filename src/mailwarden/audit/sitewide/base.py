"""What every site-wide check is given and how it answers.

The endpoint checks (``audit/checks/``) judge what the scanner saw on one ``host:port``. The
site-wide checks look at what belongs to the site as a whole: each mail domain's
authentication records (SPF, DKIM, DMARC, MTA-STS, TLS-RPT, DANE), each outbound address's
reputation (block lists, reverse DNS) and the virus scanner. They ask DNS, fetch a policy or
talk to clamd themselves, so each is a coroutine; what they conclude is the same
:class:`~mailwarden.audit.model.CheckResult` as the endpoint checks', about a ``subject``
(``example.edu``, ``192.0.2.25``, ``clamd``) instead of an endpoint, so the reports, the exit
status and monitoring treat both alike.

A check module defines ``NAME`` (its ``--only`` word), ``CODES`` (every code → what it means,
why it matters, how to fix it; docs/audit.md is checked against it), ``AFTER_SCAN`` (True when
it needs :attr:`SiteContext.observations`, as DANE does to compare TLSA records with the chain an
MX really sends) and ``async def run(context: SiteContext) -> list[CheckResult]``. A check never
raises for anything the network or a server does: that is a finding (``UNKNOWN`` when it could
not tell).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509

from mailwarden.audit.model import CheckResult, Observation
from mailwarden.discovery.net import Network
from mailwarden.discovery.resolver import Resolver
from mailwarden.findings import Finding
from mailwarden.site.model import Site


@dataclass(frozen=True, slots=True)
class SiteContext:
    """The site, the means to look (resolver, network) and, after the scan, what it saw."""

    site: Site
    resolver: Resolver
    """The audit's resolver (``--resolver``): a validating one sets the AD bit DANE needs."""
    network: Network
    """Connections and HTTPS through :attr:`resolver`; its TLS context trusts :attr:`ca_file`
    (or the system store)."""
    now: datetime
    """Aware, UTC: the moment ages and expiry dates are judged at."""
    timeout: float
    """Seconds one query, connection or request may take."""
    trust: tuple[x509.Certificate, ...] = ()
    """The audit's trusted roots (system store or ``ca_file``)."""
    ca_file: Path | None = None
    ehlo_name: str = "localhost"
    """This host's name for SMTP's EHLO (the banner check)."""
    observations: tuple[Observation, ...] = field(default=())
    """What the scanner saw, for ``AFTER_SCAN`` checks; empty for the others."""

    @property
    def domains(self) -> tuple[str, ...]:
        """Every served mail domain (canonical names and aliases), in file order."""
        return self.site.mail_domains()


SiteCheck = Callable[[SiteContext], Awaitable[list[CheckResult]]]
"""The signature of every site-wide check."""


def site_result(
    check: str, subject: str, findings: Iterable[Finding] = (), detail: str = ""
) -> CheckResult:
    """A result about ``subject`` (a domain, an address, the virus scanner), not an endpoint.

    ``detail`` is the one line a report shows when all is well (``v=spf1, 4 of 10 lookups``).
    """
    return CheckResult(check, None, tuple(findings), detail, subject=subject)
