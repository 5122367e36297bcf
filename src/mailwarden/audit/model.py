"""The values the audit passes around: what to look at, what was seen, what it means.

The pipeline reads straight through: the site file and DNS give :class:`Endpoint` values
(``endpoints.py``); the scanner connects to each and records an :class:`Observation`
(``scan.py``, the only part that speaks TLS); each check (``checks/``) turns observations into
:class:`~mailwarden.findings.Finding` values; the reports (``report/``) only format an
:class:`AuditReport`. Checks never touch the network except revocation, which is handed a fetcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mailwarden.findings import Finding, Severity, exit_status, worst

Protocol = Literal["https", "imap", "pop3", "smtp"]
TlsMode = Literal["implicit", "starttls"]

SCHEMA_VERSION = 2
"""Version of the JSON report (docs/audit.md); raised when a field changes meaning or goes."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One name × address × port to connect to, and why it is audited."""

    host: str
    """The name connected with (SNI, certificate name check), A-label, no trailing dot."""
    address: str
    """One A or AAAA address of ``host``."""
    port: int
    protocol: Protocol
    tls: TlsMode
    names: tuple[str, ...] = ()
    """Every service name that points at this host and port (site file, MX, SRV), ``host``
    first: the certificate must cover all of them."""
    roles: tuple[str, ...] = ()
    """Why it is audited, for people: ``IMAP server of campus``, ``MX of example.edu``…"""
    domains: tuple[str, ...] = ()
    """The mail domains that rely on it (the rows of the HTML status grid)."""

    @property
    def service(self) -> str:
        """``host:port``: what people call the endpoint, whatever its addresses."""
        return f"{self.host}:{self.port}"

    @property
    def family(self) -> Literal[4, 6]:
        return 6 if ":" in self.address else 4

    @property
    def label(self) -> str:
        address = f"[{self.address}]" if self.family == 6 else self.address
        return f"{self.host}:{self.port} ({address})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "protocol": self.protocol,
            "tls": self.tls,
            "names": list(self.names),
            "roles": list(self.roles),
            "domains": list(self.domains),
        }


ErrorKind = Literal[
    "connect", "no-route", "timeout", "refused-service", "starttls", "handshake", "protocol"
]
"""Why no TLS session was made: ``no-route`` (this host cannot reach that address family),
``refused-service`` (a 421 / greylisting / "try later" answer: the server is busy, not broken),
``starttls`` (STARTTLS not offered or refused), ``handshake`` (TLS failed), ``protocol`` (the
server spoke something else)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What one connection to one endpoint saw. Made by the scanner, read by the checks."""

    endpoint: Endpoint
    error: str | None = None
    """One line when no TLS session was made; None when the handshake succeeded."""
    error_kind: ErrorKind | None = None
    tls_version: str | None = None
    cipher: str | None = None
    chain: tuple[bytes, ...] = ()
    """DER certificates as the server sent them, leaf first (not verified: checks do that)."""
    staple: bytes | None = None
    """The DER OCSP response the server stapled, or None."""
    capabilities_before_tls: tuple[str, ...] = ()
    """IMAP CAPABILITY / POP3 CAPA / SMTP EHLO keywords before STARTTLS (upper case)."""
    mechanisms_before_tls: tuple[str, ...] = ()
    mechanisms: tuple[str, ...] = ()
    """SASL mechanisms offered after TLS (upper case)."""
    capabilities_after_tls: tuple[str, ...] | None = None
    """The capability keywords after TLS; None when they could not be read (then an empty
    ``mechanisms`` means "unknown", not "none offered")."""
    plaintext_auth_before_tls: tuple[str, ...] = ()
    """What would send a password in clear before TLS (``AUTH=PLAIN``, ``LOGIN``, ``USER``…)."""
    legacy_versions: tuple[str, ...] = ()
    """Protocol versions below TLS 1.2 the server still accepts (``TLSv1``, ``TLSv1.1``)."""
    legacy_probed: bool = False
    """Whether TLS 1.0 and 1.1 were tried at all (``--no-legacy`` skips them)."""
    ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """A certificate as the reports show it (the expiry timeline, the JSON)."""

    subject: str
    issuer: str
    not_after: str
    """ISO 8601, UTC."""
    days_left: float
    sha256: str
    key: str
    """``RSA 2048``, ``EC secp256r1``…"""
    signature_hash: str
    position: int
    """0 for the leaf, 1 for the first intermediate…"""

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": self.not_after,
            "days_left": round(self.days_left, 2),
            "sha256": self.sha256,
            "key": self.key,
            "signature_hash": self.signature_hash,
            "position": self.position,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check concluded about one endpoint (one address, or all of a host:port), or,
    for a site-wide check (``audit/sitewide/``), about a ``subject``: a mail domain, an
    outbound address, the virus scanner."""

    check: str
    """The check's name (``chain``, ``expiry``, ``spf``, ``dnsbl``…)."""
    endpoint: Endpoint | None
    """The endpoint judged; None for a site-wide check."""
    findings: tuple[Finding, ...] = ()
    detail: str = ""
    """One line for the report when all is well (``valid until 2027-03-01, 88 days``)."""
    subject: str = ""
    """What a site-wide result is about (``example.edu``, ``192.0.2.25``, ``clamd``)."""

    @property
    def severity(self) -> Severity:
        return worst(self.findings)

    @property
    def about(self) -> str:
        """The endpoint's label, else the subject."""
        return self.endpoint.label if self.endpoint is not None else self.subject

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "endpoint": self.endpoint.label if self.endpoint is not None else None,
            "subject": self.about,
            "severity": self.severity.value if self.findings else "ok",
            "detail": self.detail,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True, slots=True, repr=False)
class AuditReport:
    started: str
    """ISO 8601, UTC."""
    seconds: float
    site: str
    """The site file audited."""
    endpoints: tuple[Endpoint, ...]
    observations: tuple[Observation, ...]
    results: tuple[CheckResult, ...]
    certificates: dict[str, tuple[CertificateInfo, ...]] = field(default_factory=dict)
    """Per endpoint label, the chain it presented."""
    notes: tuple[str, ...] = ()
    general: tuple[Finding, ...] = ()
    """Findings about no single endpoint (a host without an address, unreadable MX records)."""
    warn_days: int = 30
    critical_days: int = 14
    """The expiry thresholds the audit used (the reports show them, Nagios perfdata needs them)."""

    def findings(self) -> list[Finding]:
        """Every finding, worst first."""
        found = [*self.general, *(f for r in self.results for f in r.findings)]
        return sorted(found, key=lambda f: -f.severity.rank)

    @property
    def exit_status(self) -> int:
        return exit_status(self.findings())

    def __repr__(self) -> str:
        """Short: the full repr runs to hundreds of kilobytes, and Python 3.11 builds it twice
        whenever ``asyncio.run`` returns a report (restoring the SIGINT handler, ``signal``
        formats its own error message with the repr of the main task and so of its result)."""
        return (
            f"AuditReport(site={self.site!r}, started={self.started!r}, "
            f"endpoints={len(self.endpoints)}, results={len(self.results)}, "
            f"exit_status={self.exit_status})"
        )
