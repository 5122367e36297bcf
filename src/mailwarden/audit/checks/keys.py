"""Key size and signature hash of every certificate the server sends.

Path validation does not catch all of it: ``cryptography`` (like browsers) requires RSA ≥ 2048
only of keys that *sign* certificates, so an RSA-1024 leaf verifies, yet Debian's OpenSSL
(security level 2) refuses it, as current mail clients do. The limits here follow the CA/Browser
Forum baseline and OpenSSL's level 2: RSA and DSA ≥ 2048 bits, EC ≥ 256 bits, no SHA-1 or MD5
signature except on a self-signed root (whose signature nobody checks: it is trusted by
identity).
"""

from __future__ import annotations

from collections.abc import Sequence

from mailwarden.audit.checks.base import CheckContext, finding
from mailwarden.audit.checks.certificates import Cert, parse_chain
from mailwarden.audit.model import CheckResult, Observation
from mailwarden.discovery.mailcaps import shorten
from mailwarden.findings import Finding, Severity

NAME = "keys"

MIN_BITS = {"RSA": 2048, "DSA": 2048, "EC": 256}
WEAK_HASHES = frozenset({"sha1", "md5", "md4", "md2"})

CODES: dict[str, str] = {
    "TLS-WEAK-KEY": (
        "A certificate the server sends has a key too small to resist current attacks: RSA or "
        "DSA below 2048 bits, elliptic curve below 256 bits. Debian's OpenSSL (security level "
        "2), current browsers and mail clients refuse such a chain, and CAs stopped issuing "
        "them in 2013. Generate a new key (RSA 2048+ or EC P-256) and have the certificate "
        "reissued; an intermediate with a weak key must be replaced by the CA's current one."
    ),
    "TLS-WEAK-SIGNATURE": (
        "A certificate the server sends (other than a self-signed root) is signed with SHA-1 "
        "or MD5. Collisions for both are practical, so a forged certificate with the same "
        "signature can be made; clients and OpenSSL 3 reject such signatures. Have the "
        "certificate reissued with SHA-256, or replace the outdated intermediate."
    ),
}


def _judge_cert(cert: Cert, observation: Observation) -> list[Finding]:
    endpoint = observation.endpoint
    findings = []
    minimum = MIN_BITS.get(cert.key_type)
    if minimum is not None and cert.key_bits < minimum:
        findings.append(
            finding(
                Severity.ERROR,
                "TLS-WEAK-KEY",
                endpoint,
                f"{cert.label} has a weak key: {cert.key} (at least {minimum} bits needed)",
                "generate a new key (RSA 2048 or more, or EC P-256) and have the certificate "
                "reissued"
                if cert.position == 0
                else "replace the intermediate with the CA's current one",
            )
        )
    root = cert.self_signed and cert.position > 0
    if cert.signature_hash in WEAK_HASHES and not root:
        findings.append(
            finding(
                Severity.ERROR,
                "TLS-WEAK-SIGNATURE",
                endpoint,
                f"{cert.label} is signed with {cert.signature_hash.upper()}",
                "have the certificate reissued with a SHA-256 signature"
                if cert.position == 0
                else "replace the intermediate with the CA's current one",
            )
        )
    return findings


def _judge(observation: Observation) -> CheckResult | None:
    if not observation.ok:
        return None
    certs = parse_chain(observation.chain).certs
    if not certs:
        return None
    findings = tuple(f for cert in certs for f in _judge_cert(cert, observation))
    detail = shorten("; ".join(f"{c.common_name}: {c.key}, {c.signature_hash}" for c in certs), 300)
    return CheckResult(NAME, observation.endpoint, findings, detail)


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address with a readable certificate; a finding per weakness."""
    results = (_judge(observation) for observation in observations)
    return [result for result in results if result is not None]
