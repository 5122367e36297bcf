"""Are the leaf and every intermediate the server sends valid now, and for how long?

Intermediates count as much as the leaf: when one expires, every leaf under it fails although
its own date is fine, and renewing the leaf does not help if the server keeps sending the old
intermediate (the chain file is often copied once and forgotten).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailwarden.audit.checks.base import CheckContext, days_text, finding
from mailwarden.audit.checks.certificates import Cert, parse_chain
from mailwarden.audit.model import CertificateInfo, CheckResult, Observation
from mailwarden.findings import Finding, Severity

NAME = "expiry"

CODES: dict[str, str] = {
    "TLS-EXPIRED": (
        "A certificate the server sends (the leaf or an intermediate) is past its notAfter "
        "date. Every client refuses the connection or warns; MTAs that verify stop delivering. "
        "Renew the certificate (or fetch the current intermediate from the CA), install the "
        "full chain and reload the daemon (Postfix and Dovecot read certificates only at "
        "start or reload)."
    ),
    "TLS-EXPIRES-SOON": (
        "A certificate the server sends (the leaf or an intermediate) expires within the "
        "warning period (default 30 days: a warning) or the critical period (default 14 days: "
        "an error). Automated renewal (e.g. Let's Encrypt) renews at 30 days left, so a "
        "certificate this close to its end usually means renewal or the reload after it "
        "failed. Renew, install and reload now; check the renewal job's log."
    ),
    "TLS-NOT-YET-VALID": (
        "A certificate the server sends is not valid yet (its notBefore is in the future). "
        "Clients refuse it. Either a certificate was installed before its start date, or a "
        "clock is wrong: compare the auditing host's and the CA's time."
    ),
}

SECONDS_PER_DAY = 86400.0


def days_left(cert: Cert, now: datetime) -> float:
    return (cert.not_after - now).total_seconds() / SECONDS_PER_DAY


def _date(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def certificate_infos(chain: Sequence[bytes], now: datetime) -> tuple[CertificateInfo, ...]:
    """The readable certificates of ``chain`` (DER, leaf first) for the reports; unreadable
    ones are left out (the chain check reports them)."""
    return tuple(
        CertificateInfo(
            subject=cert.subject,
            issuer=cert.issuer,
            not_after=f"{cert.not_after:%Y-%m-%dT%H:%M:%SZ}",
            days_left=days_left(cert, now),
            sha256=cert.sha256,
            key=cert.key,
            signature_hash=cert.signature_hash,
            position=cert.position,
        )
        for cert in parse_chain(chain).certs
    )


def _judge_cert(cert: Cert, observation: Observation, context: CheckContext) -> Finding | None:
    endpoint = observation.endpoint
    now = context.now
    renew = (
        "renew the certificate, install it with its chain and reload the service"
        if cert.position == 0
        else "install the CA's current intermediate in the chain file and reload the service"
    )
    if now < cert.not_before:
        ahead = (cert.not_before - now).total_seconds() / SECONDS_PER_DAY
        return finding(
            Severity.ERROR,
            "TLS-NOT-YET-VALID",
            endpoint,
            f"{cert.label} is valid only from {_date(cert.not_before)} (in {days_text(ahead)})",
            "install a certificate that is valid now, and check the clocks",
        )
    left = days_left(cert, now)
    if left < 0:
        return finding(
            Severity.ERROR,
            "TLS-EXPIRED",
            endpoint,
            f"{cert.label} expired on {_date(cert.not_after)} ({days_text(-left)} ago)",
            renew,
        )
    if left <= context.critical_days or left <= context.warn_days:
        severity = Severity.ERROR if left <= context.critical_days else Severity.WARNING
        return finding(
            severity,
            "TLS-EXPIRES-SOON",
            endpoint,
            f"{cert.label} expires on {_date(cert.not_after)}, in {days_text(left)}",
            renew + "; check the renewal job",
        )
    return None


def _until(cert: Cert, now: datetime, what: str) -> str:
    left = days_left(cert, now)
    if left < 0:
        return f"{what}: expired on {_date(cert.not_after)} ({days_text(-left)} ago)"
    return f"{what} until {_date(cert.not_after)} ({days_text(left)})"


def _judge(observation: Observation, context: CheckContext) -> CheckResult | None:
    if not observation.ok:
        return None
    certs = parse_chain(observation.chain).certs
    if not certs:
        return None
    found = (_judge_cert(cert, observation, context) for cert in certs)
    findings = tuple(f for f in found if f is not None)
    soonest = min(certs, key=lambda c: c.not_after)
    leaf = certs[0] if certs[0].position == 0 else None
    parts = []
    if leaf is not None:
        parts.append(_until(leaf, context.now, "valid"))
    if soonest is not leaf:
        parts.append(_until(soonest, context.now, soonest.label))
    return CheckResult(NAME, observation.endpoint, findings, "; ".join(parts))


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address with a readable certificate; a finding per certificate."""
    results = (_judge(observation, context) for observation in observations)
    return [result for result in results if result is not None]
