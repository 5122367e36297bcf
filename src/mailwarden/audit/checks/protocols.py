"""Which TLS versions the server accepts: TLS 1.0 and 1.1 are deprecated (RFC 8996).

Offering them besides TLS 1.2 or 1.3 breaks no client, which is why it is a warning: the risk is
a downgrade for old clients and a failed compliance scan. A server that *negotiated* an old
version with a client that offered TLS 1.2 and 1.3 has nothing newer, and current clients
(which refuse TLS < 1.2) cannot connect: an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailwarden.audit.checks.base import CheckContext, finding, listed
from mailwarden.audit.model import CheckResult, Observation
from mailwarden.discovery.mailcaps import shorten
from mailwarden.findings import Severity

NAME = "protocols"

LEGACY = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1"})

CODES: dict[str, str] = {
    "TLS-LEGACY-VERSION": (
        "Besides TLS 1.2 or 1.3, the server still accepts TLS 1.0 or 1.1 (or SSL 3). RFC 8996 "
        "deprecated both in 2021; they lack modern cipher suites and keep old, unpatched "
        "clients in use. Nothing current needs them. Postfix: smtpd_tls_protocols = >=TLSv1.2 "
        "(and smtpd_tls_mandatory_protocols); Dovecot: ssl_min_protocol = TLSv1.2; nginx: "
        "ssl_protocols TLSv1.2 TLSv1.3."
    ),
    "TLS-LEGACY-ONLY": (
        "The server negotiated TLS 1.0 or 1.1 although TLS 1.2 and 1.3 were offered: it has "
        "nothing newer. Current clients (and OpenSSL 3 at its default security level) refuse "
        "to connect. Update the TLS library or the server software, and enable TLS 1.2 and 1.3."
    ),
}


def _judge(observation: Observation) -> CheckResult | None:
    if not observation.ok:
        return None
    endpoint = observation.endpoint
    findings = []
    if observation.tls_version in LEGACY:
        findings.append(
            finding(
                Severity.ERROR,
                "TLS-LEGACY-ONLY",
                endpoint,
                f"the server negotiated {observation.tls_version}: it offers nothing newer",
                "enable TLS 1.2 and 1.3 (update the TLS library or the server)",
            )
        )
    legacy = list(dict.fromkeys(shorten(v, 20) for v in observation.legacy_versions))
    if legacy:
        findings.append(
            finding(
                Severity.WARNING,
                "TLS-LEGACY-VERSION",
                endpoint,
                f"the server still accepts {listed(legacy)} (deprecated by RFC 8996)",
                "allow only TLS 1.2 and 1.3 (Postfix smtpd_tls_protocols = >=TLSv1.2, Dovecot "
                "ssl_min_protocol = TLSv1.2, nginx ssl_protocols TLSv1.2 TLSv1.3)",
            )
        )
    negotiated = shorten(observation.tls_version or "", 20) or "unknown version"
    if legacy:
        accepted = f"; also accepts {listed(legacy)}"
    elif observation.legacy_probed:
        accepted = "; nothing below TLS 1.2"
    else:
        accepted = "; TLS 1.0/1.1 not tried"
    return CheckResult(NAME, endpoint, tuple(findings), f"negotiated {negotiated}{accepted}")


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address that completed a handshake."""
    results = (_judge(observation) for observation in observations)
    return [result for result in results if result is not None]
