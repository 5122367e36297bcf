"""Does the server staple an OCSP response, and what does the staple say?

Stapling spares HTTPS clients a lookup at the CA and hides their browsing from it, so its absence
on the autoconfig/autodiscover hosts is worth a note. On mail ports it is normal: Postfix,
Dovecot and sendmail cannot staple, and mail clients do not ask. Two cases are serious anywhere:
a must-staple certificate (RFC 7633) served without a usable staple, which clients that honour
the extension refuse, and a staple that says the certificate is revoked. A staple is judged with
the same rules as a fetched OCSP answer (:func:`mailwarden.audit.revocation.verify_staple`).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from mailwarden.audit import revocation as lookup
from mailwarden.audit.checks.base import CheckContext, finding
from mailwarden.audit.checks.certificates import find_issuer, parse_chain
from mailwarden.audit.model import CheckResult, Observation
from mailwarden.discovery.mailcaps import shorten
from mailwarden.findings import Finding, Severity

NAME = "stapling"

CODES: dict[str, str] = {
    "TLS-NO-STAPLE": (
        "The HTTPS server does not staple an OCSP response to its handshake. Clients then ask "
        "the CA's responder themselves (slower, and it tells the CA which host they visit) or "
        "skip the check. A note, not a fault: enable stapling (nginx ssl_stapling on; "
        "ssl_stapling_verify on; with a resolver; Apache SSLUseStapling on). For a certificate "
        "with only a CRL (Let's Encrypt since 2025) there is nothing to staple."
    ),
    "TLS-MUST-STAPLE-MISSING": (
        "The certificate carries the TLS Feature extension with status_request ('OCSP "
        "Must-Staple', RFC 7633), but the server sends no stapled OCSP response. Clients that "
        "honour the extension (Firefox, and others for mail) refuse the connection. Enable "
        "stapling on this server — Postfix, Dovecot and sendmail cannot staple, so mail ports "
        "need a certificate without must-staple — or have the certificate reissued without it."
    ),
    "TLS-MUST-STAPLE-INVALID": (
        "The certificate demands a stapled OCSP response (must-staple), and the server staples "
        "one that cannot be used: unreadable, badly signed, stale, or 'unknown'. Clients that "
        "honour must-staple refuse the connection. Let the server fetch fresh responses "
        "(nginx: ssl_stapling on with a resolver; or refresh ssl_stapling_file before its "
        "nextUpdate)."
    ),
}
MAX_STAPLE = lookup.MAX_OCSP_BYTES

_MAIL_NOTE = (
    "no stapled OCSP response (normal on mail ports: Postfix, Dovecot and sendmail do not staple)"
)


def _verify(
    staple: bytes, leaf: x509.Certificate, issuer: x509.Certificate, context: CheckContext
) -> lookup.Revocation:
    """:func:`~mailwarden.audit.revocation.verify_staple`, which turns what it knows of
    malformed responses into a verdict; anything else ``cryptography`` raises on a hostile
    response becomes an unusable staple here, never a traceback."""
    try:
        return lookup.verify_staple(staple, leaf, issuer, now=context.now)
    except Exception as exc:
        message = f"unreadable stapled response ({shorten(str(exc), 80) or type(exc).__name__})"
        failure = lookup.SourceFailure("staple", "invalid", message)
        return lookup.Revocation("unavailable", "staple", message, failures=(failure,))


def _judge(observation: Observation, context: CheckContext) -> CheckResult | None:
    if not observation.ok:
        return None
    parsed = parse_chain(observation.chain)
    leaf = parsed.leaf
    if leaf is None:
        return None
    endpoint = observation.endpoint
    https = endpoint.protocol == "https"
    findings: list[Finding] = []
    if observation.staple is None:
        if leaf.must_staple:
            findings.append(
                finding(
                    Severity.ERROR,
                    "TLS-MUST-STAPLE-MISSING",
                    endpoint,
                    "the certificate is must-staple, but the server staples no OCSP response",
                    "enable OCSP stapling here, or use a certificate without must-staple"
                    + ("" if https else " (mail daemons cannot staple)"),
                )
            )
        elif https:
            findings.append(
                finding(
                    Severity.INFO,
                    "TLS-NO-STAPLE",
                    endpoint,
                    "the server does not staple an OCSP response",
                    "enable OCSP stapling (nginx: ssl_stapling on; ssl_stapling_verify on)",
                )
            )
        detail = "no stapled OCSP response" if https else _MAIL_NOTE
        return CheckResult(NAME, endpoint, tuple(findings), detail)
    issuer = find_issuer(parsed, context.trust)
    if len(observation.staple) > MAX_STAPLE:
        verdict = None
        message = f"the stapled response is larger than {MAX_STAPLE // 1024} KiB"
        findings.append(
            finding(
                Severity.WARNING,
                "TLS-STAPLE-INVALID",
                endpoint,
                message,
                "let the server fetch fresh OCSP responses to staple",
            )
        )
        detail = message
    elif issuer is None:
        verdict = None
        detail = "stapled OCSP response not verified: the leaf's issuer is unknown (see chain)"
    else:
        verdict = _verify(observation.staple, leaf.certificate, issuer, context)
        findings.extend(lookup.revocation_findings(verdict, endpoint))
        detail = verdict.detail
    usable = verdict is not None and verdict.status in ("good", "revoked")
    if leaf.must_staple and not usable and issuer is not None:
        findings.append(
            finding(
                Severity.ERROR,
                "TLS-MUST-STAPLE-INVALID",
                endpoint,
                f"the certificate is must-staple, and the stapled response is not usable: {detail}",
                "let the server fetch fresh OCSP responses to staple",
            )
        )
    return CheckResult(NAME, endpoint, tuple(findings), detail)


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address with a readable leaf."""
    results = (_judge(observation, context) for observation in observations)
    return [result for result in results if result is not None]
