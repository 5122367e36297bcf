"""Is the chain complete and does it lead to a trusted root?

Trust alone is judged here; each other cause of a failed verification has its own check, so
one problem makes one finding: names are the ``name`` check's (so the client verifier of
``cryptography`` is used, not the server verifier, which folds a name mismatch into the same
error), validity dates the ``expiry`` check's (an expired chain is judged at a moment when all
its certificates were valid), revocation the ``revocation`` check's (``cryptography`` does not
look at revocation at all).

``cryptography``'s Web PKI policy is stricter than what mail clients enforce: it rejects a
leaf without the authority key identifier, a CA without keyUsage, or basicConstraints not
marked critical — all common in internal CAs built with ``openssl req`` or by hand, and all
accepted by OpenSSL, NSS and Windows. The policies below relax exactly those and
keep the rest (signature algorithms, RSA ≥ 2048 for issuers, name constraints, serverAuth).
``cryptography`` insists on basicConstraints in every CA certificate, so an X.509 v1 root
(no extensions at all) is reported as untrusted although OpenSSL accepts it as an anchor.

When the verifier fails, its message rarely says why in terms an admin can act on ("candidates
exhausted"); :func:`_diagnose` walks the chain as sent to tell a missing intermediate from a
self-signed certificate or an unknown root. Certificates that cannot be read at all are
reported here too (``TLS-BAD-CERTIFICATE``), once; the other checks skip them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
)

from mailwarden.audit.checks.base import CheckContext, finding
from mailwarden.audit.checks.certificates import Cert, ParsedChain, parse_chain, signed_by
from mailwarden.audit.model import CheckResult, Observation
from mailwarden.discovery.mailcaps import shorten
from mailwarden.findings import Severity

NAME = "chain"

MAX_DEPTH = 8
"""Intermediates allowed between leaf and root (``cryptography``'s default too)."""

CODES: dict[str, str] = {
    "TLS-BAD-CERTIFICATE": (
        "The server sent no certificate, or a certificate that cannot be read as X.509 "
        "(malformed DER, malformed extensions, an unsupported version), or an absurdly long "
        "chain. Clients refuse such a server. The message says which certificate and why. "
        "Reinstall the certificate files from the CA: the leaf first, then the intermediates, "
        "all in PEM."
    ),
    "TLS-CHAIN-INCOMPLETE": (
        "The server does not send an intermediate certificate that its leaf needs: the leaf's "
        "issuer is neither in the chain the server sends nor a trusted root (or it is found only "
        "because the audit's CA file holds it, which clients do not have). Browsers often hide "
        "this by fetching the intermediate themselves; mail clients, MTAs and phones do not, "
        "and fail. Configure the full chain file (Postfix smtpd_tls_chain_files or "
        "smtpd_tls_cert_file with the chain, Dovecot ssl_cert = <fullchain.pem, nginx "
        "ssl_certificate fullchain.pem). When the missing issuer is an internal root, pass it "
        "with --ca-file instead."
    ),
    "TLS-UNTRUSTED": (
        "The chain does not lead to a trusted root: it ends at a root that is not in the trust "
        "store (the system's, or the --ca-file given), a certificate's signature does not "
        "verify, or path validation rejects it (a CA key or signature algorithm too weak, "
        "a certificate not meant for TLS servers, a violated name constraint). The message "
        "says which. Clients refuse the connection or show a warning users learn to click "
        "away. Use a certificate from a publicly trusted CA, or distribute the internal root "
        "to every client and audit with --ca-file."
    ),
    "TLS-SELF-SIGNED": (
        "The leaf certificate is self-signed and not in the trust store. Every client warns "
        "or refuses; users who are taught to accept the warning accept an attacker's "
        "certificate just as well. Use a certificate from a public CA (e.g. Let's Encrypt) or "
        "from an internal CA whose root is distributed to the clients."
    ),
}

_SERVER_AUTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)


def _for_servers(
    policy: Policy, certificate: x509.Certificate, usage: x509.ExtendedKeyUsage | None
) -> None:
    """Absent extendedKeyUsage allows any use; present, it must allow TLS servers (as the
    server verifier requires, and as the client verifier would not: it wants clientAuth)."""
    if usage is not None and not any(oid in usage for oid in _SERVER_AUTH):
        raise ValueError("its extendedKeyUsage does not allow TLS servers (no serverAuth)")


def _ca_constraints(
    policy: Policy, certificate: x509.Certificate, constraints: x509.BasicConstraints
) -> None:
    """basicConstraints CA:TRUE, critical or not (RFC 5280 wants it critical; OpenSSL and NSS
    do not insist)."""
    if not constraints.ca:
        raise ValueError("its basicConstraints say it is not a CA")


def _ca_key_usage(
    policy: Policy, certificate: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("its keyUsage does not allow signing certificates")


_AGNOSTIC = Criticality.AGNOSTIC
CA_POLICY = (
    ExtensionPolicy.webpki_defaults_ca()
    .require_present(x509.BasicConstraints, _AGNOSTIC, _ca_constraints)
    .may_be_present(x509.KeyUsage, _AGNOSTIC, _ca_key_usage)
    .may_be_present(x509.ExtendedKeyUsage, _AGNOSTIC, _for_servers)
)
EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.AuthorityKeyIdentifier, _AGNOSTIC, None)
    .may_be_present(x509.SubjectAlternativeName, _AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, _AGNOSTIC, _for_servers)
)

_AT = re.compile(r"\s*\(encountered processing <Certificate\(subject=<Name\((.*?)\)>, \.\.\.\)>\)")
_OTHER_ALGORITHM = re.compile(
    r"AlgorithmIdentifier \{.*?params: Other\(ObjectIdentifier \{ oid: ([\d.]+).*\}"
)
_ALGORITHM = re.compile(r"AlgorithmIdentifier \{.*?params: (\w+).*\}")

ALLOWED_HASHES = frozenset({"sha256", "sha384", "sha512", "none"})
"""Signature hashes the Web PKI policy accepts (``none``: Ed25519)."""


def _reason(exc: Exception, parsed: ParsedChain) -> str:
    """The verifier's message in an admin's terms: which certificate, what is wrong with it."""
    text = str(exc)
    if "Forbidden signature algorithm" in text:
        signed = [c for c in parsed.certs if c.signature_hash not in ALLOWED_HASHES]
        if signed:
            return "; ".join(
                f"{c.label} is signed with {c.signature_hash.upper()}, which is not accepted"
                for c in signed
            )
    if "key is too weak" in text:
        weak = [c for c in parsed.others if c.key_type == "RSA" and c.key_bits < 2048]
        if weak:
            return "; ".join(f"{c.label} signs with a weak key ({c.key})" for c in weak)
    for prefix in (
        "validation failed: ",
        "candidates exhausted: ",
        "Python extension validator failed: ValueError: ",
    ):
        text = text.replace(prefix, "")
    text = _AT.sub(lambda m: f" (at {m.group(1)})", text)
    text = _OTHER_ALGORITHM.sub(lambda m: f"OID {m.group(1)}", text)
    text = _ALGORITHM.sub(lambda m: m.group(1), text)
    return shorten(text, 200) or type(exc).__name__


def _valid_at(certs: Sequence[Cert], moment: datetime) -> bool:
    return all(c.not_before <= moment <= c.not_after for c in certs)


def _moment(certs: Sequence[Cert], now: datetime) -> datetime:
    """``now``, or when ``now`` is outside a certificate's validity a moment inside all of
    them, so that dates (the expiry check's matter) do not hide a trust problem."""
    if _valid_at(certs, now):
        return now
    start = max(c.not_before for c in certs)
    end = min(c.not_after for c in certs)
    return start + (end - start) / 2 if start <= end else now


def verify(
    parsed: ParsedChain, context: CheckContext
) -> tuple[list[x509.Certificate] | None, str, datetime]:
    """The verified path (leaf first, trusted root last) or None and the verifier's reason;
    and the moment it was judged at."""
    leaf = parsed.leaf
    assert leaf is not None
    moment = _moment(parsed.certs, context.now)
    if context.store is None:
        return None, "nothing is trusted (the CA file holds no certificate)", moment
    verifier = (
        PolicyBuilder()
        .store(context.store)
        .time(moment)
        .max_chain_depth(MAX_DEPTH)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf.certificate, [c.certificate for c in parsed.others])
    except Exception as exc:
        # VerificationError as a rule; hostile certificates (and the Python validators above)
        # can make it raise anything else, which means "not verified" all the same.
        return None, _reason(exc, parsed), moment
    return list(verified.chain), "", moment


def _common_name(certificate: x509.Certificate) -> str:
    for attribute in certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        if isinstance(attribute.value, str):
            return shorten(attribute.value, 80)
    return shorten(certificate.subject.rfc4514_string(), 80) or "(no subject)"


def _issuer_name(cert: Cert) -> str:
    for attribute in cert.certificate.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        if isinstance(attribute.value, str):
            return shorten(attribute.value, 80)
    return cert.issuer or "(no issuer name)"


def _trusted_issuer(cert: Cert, context: CheckContext) -> x509.Certificate | None:
    issuer = cert.certificate.issuer
    for anchor in context.trust:
        if anchor.subject == issuer and signed_by(cert, anchor):
            return anchor
    return None


_INCOMPLETE_FIX = (
    "configure the full chain (leaf, then every intermediate) on this port; if the missing "
    "issuer is your internal root, audit with --ca-file"
)
_BAD_FIX = (
    "install the certificate files as the CA issued them: the leaf first, then the "
    "intermediates, in PEM"
)
_UNTRUSTED_FIX = (
    "use a certificate from a publicly trusted CA, or distribute the internal root to every "
    "client and audit with --ca-file"
)


class Diagnosis(NamedTuple):
    code: str
    message: str
    fix: str
    anchor: str | None = None
    """The trusted root the chain as sent leads to, when it does (the verifier refused it for
    another reason: weak keys, dates, extensions)."""


def _diagnose(parsed: ParsedChain, context: CheckContext, reason: str) -> Diagnosis:
    """Why the verifier refused: walk up from the leaf through the certificates as sent."""
    leaf = parsed.leaf
    assert leaf is not None
    path: list[Cert] = [leaf]
    current = leaf
    for _ in range(len(parsed.certs)):
        if current.self_signed:
            if current is leaf:
                return Diagnosis(
                    "TLS-SELF-SIGNED",
                    f"the leaf ({leaf.common_name}) is self-signed and not trusted",
                    "use a certificate from a public CA or from an internal CA whose root the "
                    "clients trust",
                )
            return Diagnosis(
                "TLS-UNTRUSTED",
                f"the chain ends at the root {current.common_name}, which is not in the trust "
                "store",
                _UNTRUSTED_FIX,
            )
        if current.self_issued:
            return Diagnosis(
                "TLS-UNTRUSTED",
                f"{current.label} names itself as issuer, but its signature does not verify",
                _UNTRUSTED_FIX,
            )
        anchor = _trusted_issuer(current, context)
        if anchor is not None:
            root = _common_name(anchor)
            return Diagnosis(
                "TLS-UNTRUSTED",
                f"the chain reaches the trusted root {root}, but path validation rejects it: "
                f"{reason}",
                "replace the certificates path validation rejects (see the keys check for "
                "weak keys and signatures)",
                root,
            )
        parent = next(
            (
                c
                for c in parsed.others
                if all(c is not p for p in path) and signed_by(current, c.certificate)
            ),
            None,
        )
        if parent is None:
            break
        path.append(parent)
        current = parent

    issuer = _issuer_name(current)
    namesake = any(
        c.certificate.subject == current.certificate.issuer and all(c is not p for p in path)
        for c in parsed.others
    )
    wrong = (
        f" (the certificate it sends as {issuer} did not sign it: an outdated or wrong "
        "intermediate)"
        if namesake
        else ""
    )
    if current is leaf:
        return Diagnosis(
            "TLS-CHAIN-INCOMPLETE",
            f"the server does not send the certificate of {issuer}, which issued the leaf, and "
            f"it is not a trusted root{wrong}",
            _INCOMPLETE_FIX,
        )
    return Diagnosis(
        "TLS-UNTRUSTED",
        f"the chain ends at {current.label}, whose issuer {issuer} is neither sent nor a "
        f"trusted root{wrong}: an untrusted root, or a missing intermediate",
        _UNTRUSTED_FIX,
    )


def _path_text(path: Sequence[x509.Certificate]) -> str:
    return " ← ".join(_common_name(c) for c in path)


def _judge(observation: Observation, context: CheckContext) -> CheckResult | None:
    endpoint = observation.endpoint
    if not observation.ok:
        return None
    parsed = parse_chain(observation.chain)
    findings = [
        finding(Severity.ERROR, "TLS-BAD-CERTIFICATE", endpoint, problem, _BAD_FIX)
        for problem in parsed.problems
    ]
    if not observation.chain:
        findings.append(
            finding(
                Severity.ERROR,
                "TLS-BAD-CERTIFICATE",
                endpoint,
                "the server sent no certificate",
                "configure a certificate and its chain on this port",
            )
        )
    leaf = parsed.leaf
    if leaf is None:
        return CheckResult(NAME, endpoint, tuple(findings), "no readable leaf certificate")
    if any(leaf.certificate == anchor for anchor in context.trust):
        detail = f"the leaf itself ({leaf.common_name}) is in the trust store"
        return CheckResult(NAME, endpoint, tuple(findings), detail)
    path, reason, moment = verify(parsed, context)
    if path is None:
        diagnosis = _diagnose(parsed, context, reason)
        if diagnosis.anchor is not None and not _valid_at(parsed.certs, moment):
            # The certificates were never all valid at one moment, so the verifier's refusal may
            # be about dates alone: the expiry check reports those.
            detail = f"leads to the trusted root {diagnosis.anchor} (validity: see expiry)"
            return CheckResult(NAME, endpoint, tuple(findings), detail)
        findings.append(
            finding(Severity.ERROR, diagnosis.code, endpoint, diagnosis.message, diagnosis.fix)
        )
        return CheckResult(NAME, endpoint, tuple(findings), f"not trusted: {diagnosis.message}")
    sent = {c.sha256 for c in parsed.certs}
    # Certificates the path took from the trust store rather than from the server: fine for a
    # root, a missing intermediate for clients that trust only the root (the CA file given to
    # the audit may hold intermediates; clients' stores do not).
    borrowed = [c for c in path[1:] if _fingerprint(c) not in sent and c.subject != c.issuer]
    if borrowed:
        names = ", ".join(_common_name(c) for c in borrowed)
        findings.append(
            finding(
                Severity.ERROR,
                "TLS-CHAIN-INCOMPLETE",
                endpoint,
                f"the server does not send the intermediate {names}: the audit found it in its "
                "CA file, clients that trust only the root will not",
                _INCOMPLETE_FIX,
            )
        )
    when = "" if moment == context.now else f" (judged at {moment:%Y-%m-%d}; dates: see expiry)"
    return CheckResult(NAME, endpoint, tuple(findings), f"trusted: {_path_text(path)}{when}")


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address that completed a handshake."""
    results = (_judge(observation, context) for observation in observations)
    return [result for result in results if result is not None]
