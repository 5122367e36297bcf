"""Did a TLS session come about — implicit TLS or STARTTLS, as the endpoint is configured?

Not every failure is the server's fault: a 421 or greylisting answer means "busy, come back",
and an address family the auditing host cannot route says nothing about the server; both are
*unknown*. A server that accepts the connection and never speaks is broken for every client,
so a timeout is an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailwarden.audit.checks.base import CheckContext, finding
from mailwarden.audit.model import CheckResult, ErrorKind, Observation
from mailwarden.discovery.mailcaps import shorten
from mailwarden.findings import Severity

NAME = "handshake"

CODES: dict[str, str] = {
    "ENDPOINT-UNREACHABLE": (
        "No TCP connection could be made to this address and port: the connection was refused "
        "or reset, or the address is unreachable. Clients that pick this address fail. Check "
        "that the service listens on this address (IPv4 and IPv6 are configured separately in "
        "most daemons), the firewall, and that DNS publishes only addresses that serve."
    ),
    "ENDPOINT-TIMEOUT": (
        "The address accepted the connection (or dropped it silently) but no greeting or TLS "
        "handshake came within the time limit. Clients wait, then give up the same way. Common "
        "causes: a hung or overloaded daemon, a load balancer without a healthy back end, a "
        "firewall that drops packets, or a greeting delay longer than clients wait."
    ),
    "ENDPOINT-BUSY": (
        "The server answered, but refused service for now: an SMTP 421 greeting, greylisting, "
        "a connection limit or a 'try again later' reply. That says the server is busy or "
        "cautious, not broken, so the audit could not tell (unknown). Run the audit again "
        "later, or allow the auditing host in the server's rate limits."
    ),
    "ENDPOINT-NO-ROUTE": (
        "The auditing host has no route to this address family (typically: no IPv6 here), so "
        "nothing can be said about the server at this address (unknown). Run the audit from a "
        "host with IPv6 to judge the AAAA addresses."
    ),
    "ENDPOINT-STARTTLS": (
        "The port speaks its mail protocol, but STARTTLS (POP3: STLS) is not offered or is "
        "refused, so no TLS session could be made. Clients configured for STARTTLS stop here; "
        "clients that accept cleartext send passwords unencrypted. Enable STARTTLS with a "
        "certificate on this port (Postfix: smtpd_tls_security_level = may; Dovecot: ssl = yes)."
    ),
    "TLS-HANDSHAKE": (
        "The TLS handshake failed: no protocol version or cipher in common (the audit, like "
        "current clients, requires TLS 1.2 or later), no certificate for the requested name, "
        "plain text on an implicit-TLS port, or the server broke the handshake off. The message "
        "quotes the error. Clients cannot connect at all."
    ),
    "ENDPOINT-PROTOCOL": (
        "The server answered with something that is not the expected protocol (not an IMAP, "
        "POP3 or SMTP greeting, a malformed reply, or a connection closed midway). The message "
        "quotes what was received. Check that the port runs the service the site file says."
    ),
}

_BY_KIND: dict[ErrorKind | None, tuple[Severity, str, str]] = {
    "connect": (
        Severity.ERROR,
        "ENDPOINT-UNREACHABLE",
        "make the service listen on this address, or stop publishing the address in DNS",
    ),
    "timeout": (
        Severity.ERROR,
        "ENDPOINT-TIMEOUT",
        "check the daemon and any firewall or load balancer in front of it",
    ),
    "refused-service": (
        Severity.UNKNOWN,
        "ENDPOINT-BUSY",
        "run the audit again later, or exempt the auditing host from rate limits",
    ),
    "no-route": (
        Severity.UNKNOWN,
        "ENDPOINT-NO-ROUTE",
        "audit from a host that can reach this address family",
    ),
    "starttls": (
        Severity.ERROR,
        "ENDPOINT-STARTTLS",
        "offer STARTTLS with a valid certificate on this port",
    ),
    "handshake": (
        Severity.ERROR,
        "TLS-HANDSHAKE",
        "offer TLS 1.2 or 1.3 with a certificate for this name on this port",
    ),
    "protocol": (
        Severity.ERROR,
        "ENDPOINT-PROTOCOL",
        "check that this port runs the service the site file names",
    ),
    None: (
        Severity.ERROR,
        "ENDPOINT-UNREACHABLE",
        "check that the service runs and answers on this address",
    ),
}


def _judge(observation: Observation) -> CheckResult:
    endpoint = observation.endpoint
    if observation.ok:
        facts = [shorten(f, 60) for f in (observation.tls_version, observation.cipher) if f]
        mode = "STARTTLS" if endpoint.tls == "starttls" else "implicit TLS"
        detail = f"{mode}: {', '.join(facts) or 'session established'}"
        return CheckResult(NAME, endpoint, (), f"{detail} ({observation.ms:.0f} ms)")
    severity, code, fix = _BY_KIND.get(observation.error_kind, _BY_KIND[None])
    reason = shorten(observation.error or "", 300) or "no TLS session"
    return CheckResult(
        NAME, endpoint, (finding(severity, code, endpoint, reason, fix),), f"failed: {reason}"
    )


_FAMILY_FAULTS = ("connect", "timeout", "no-route")
"""Failures the dual-stack check owns when the other address family of the service works."""


def _other_family_works(observation: Observation, observations: Sequence[Observation]) -> bool:
    family = observation.endpoint.family
    return any(o.ok and o.endpoint.family != family for o in observations)


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per address: how the session came about, or why it did not."""
    # One problem, one finding: an address that cannot be reached while the service answers on
    # the other family is DUALSTACK-V6-BROKEN (or -V4-), not also ENDPOINT-UNREACHABLE.
    return [
        _judge(observation)
        for observation in observations
        if not (
            observation.error_kind in _FAMILY_FAULTS
            and _other_family_works(observation, observations)
        )
    ]
