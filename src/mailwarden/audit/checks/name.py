"""Does the leaf certificate cover every name that leads clients to this endpoint?

Clients compare the name they were configured with (from autoconfig, an MX or SRV record, or
typed by the user) with the certificate's subjectAltName, as RFC 6125 (and its successor RFC
9525) says: case-insensitive, a trailing dot ignored, a wildcard only as the whole leftmost label
and matching exactly one label (``*.example.edu`` covers ``imap.example.edu``, neither
``example.edu`` nor ``a.imap.example.edu``), IP addresses only against IP entries. The subject's
CN is not consulted: current clients ignore it once a certificate has a subjectAltName, and
browsers ignore it altogether.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from mailwarden.audit.checks.base import CheckContext, finding, listed
from mailwarden.audit.checks.certificates import Cert, parse_chain
from mailwarden.audit.model import CheckResult, Observation
from mailwarden.findings import Severity

NAME = "name"

CODES: dict[str, str] = {
    "TLS-NAME-MISMATCH": (
        "A name that clients use for this endpoint (the host name in the site file, an MX "
        "record, an SRV target, an autoconfig/autodiscover name) is not in the certificate's "
        "subjectAltName. Clients configured with that name refuse the connection or warn; "
        "MTAs that verify (DANE, MTA-STS) do not deliver. Wildcards cover exactly one leftmost "
        "label, and the subject's CN does not count. Add the name to the certificate, or point "
        "the name at a server whose certificate covers it."
    ),
}


def _normal(name: str) -> str:
    return name.strip().rstrip(".").lower()


def wildcard_matches(pattern: str, name: str) -> bool:
    """RFC 6125 §6.4: ``pattern`` (a dNSName entry) covers the host ``name``."""
    pattern, name = _normal(pattern), _normal(name)
    if not pattern or not name:
        return False
    if "*" not in pattern:
        return pattern == name
    labels = pattern.split(".")
    if labels[0] != "*" or any("*" in label for label in labels[1:]) or len(labels) < 3:
        # Partial ("f*.example.edu"), non-leftmost and top-level ("*.edu") wildcards match
        # nothing: RFC 9525 allows only the complete leftmost label under at least two more.
        return False
    host = name.split(".")
    return len(host) == len(labels) and bool(host[0]) and host[1:] == labels[1:]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def covers(cert: Cert, name: str) -> bool:
    """The certificate is valid for ``name`` (a host name or an IP address literal)."""
    address = _ip(_normal(name).strip("[]"))
    if address is not None:
        return any(_ip(entry) == address for entry in cert.ip_addresses)
    return any(wildcard_matches(pattern, name) for pattern in cert.dns_names or ())


def _wanted(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(_normal(n) for n in names if _normal(n)))


def _what_it_names(cert: Cert) -> str:
    if cert.dns_names is None:
        cn = f"; its CN {cert.common_name} does not count" if cert.common_name else ""
        return f"it has no subjectAltName{cn}"
    entries = [*cert.dns_names, *cert.ip_addresses]
    if not entries:
        return "its subjectAltName holds no host name"
    return f"it names {listed(entries)}"


def _judge(observation: Observation) -> CheckResult | None:
    if not observation.ok:
        return None
    leaf = parse_chain(observation.chain).leaf
    if leaf is None:
        return None
    endpoint = observation.endpoint
    names = _wanted(endpoint.names or (endpoint.host,))
    missing = [name for name in names if not covers(leaf, name)]
    findings = tuple(
        finding(
            Severity.ERROR,
            "TLS-NAME-MISMATCH",
            endpoint,
            f"the certificate does not cover {name}: {_what_it_names(leaf)}",
            f"add {name} to the certificate's subjectAltName, or point {name} at a server whose "
            "certificate covers it",
        )
        for name in missing
    )
    covered = [n for n in names if n not in missing]
    detail = f"covers {listed(covered)}" if covered else "covers none of the names"
    if missing:
        detail += f"; not {listed(missing)}"
    return CheckResult(NAME, endpoint, findings, detail)


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address with a readable leaf: one finding per name not covered."""
    results = (_judge(observation) for observation in observations)
    return [result for result in results if result is not None]
