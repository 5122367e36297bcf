"""How a mail endpoint lets users log in: never in clear before TLS, and with what after it.

On port 25 (an MX) no AUTH is normal: other MTAs deliver without logging in. On submission,
IMAP and POP3 a server that offers no SASL mechanism after TLS cannot be used by mail clients.
DIGEST-MD5 and CRAM-MD5 work, but they force the server to keep password equivalents and add
nothing over PLAIN inside TLS; DIGEST-MD5 is obsolete (RFC 6331) and Outlook ("SPA") cannot
negotiate its realm.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailwarden.audit.checks.base import CheckContext, finding, listed
from mailwarden.audit.model import CheckResult, Endpoint, Observation
from mailwarden.discovery.mailcaps import shorten
from mailwarden.findings import Finding, Severity

NAME = "auth"

CODES: dict[str, str] = {
    "AUTH-PLAINTEXT-BEFORE-TLS": (
        "Before STARTTLS the server already offers a way to send a password in clear: IMAP "
        "AUTH=PLAIN or AUTH=LOGIN or the LOGIN command, POP3 USER, SMTP AUTH. A client that "
        "skips STARTTLS, or an attacker on the path who strips it, gets the password. Offer "
        "authentication only after TLS: Dovecot disable_plaintext_auth = yes (2.4: "
        "auth_allow_cleartext = no), Postfix smtpd_tls_auth_only = yes, sendmail "
        "define(`confAUTH_OPTIONS', `p')."
    ),
    "AUTH-NONE": (
        "After TLS the submission, IMAP or POP3 server offers no SASL mechanism, so mail clients "
        "cannot log in (on port 25, where other MTAs deliver without logging in, this is "
        "normal and not reported). Enable authentication on this port (Postfix "
        "smtpd_sasl_auth_enable = yes on 587/465; Dovecot auth_mechanisms)."
    ),
    "AUTH-DIGEST-MD5": (
        "The server offers DIGEST-MD5, which RFC 6331 made obsolete (weak, interoperability "
        "problems) and which requires the server to keep password equivalents. Outlook lists it "
        "as 'Secure Password Authentication' (SPA) but cannot negotiate its realm, so users "
        "who tick SPA fail to log in. Inside TLS, PLAIN (or SCRAM) is the better choice: "
        "remove DIGEST-MD5 from the offered mechanisms (Dovecot auth_mechanisms)."
    ),
    "AUTH-CRAM-MD5": (
        "The server offers CRAM-MD5: it forces the server to store password equivalents, rests "
        "on HMAC-MD5 and protects nothing that TLS does not already. Clients that prefer it "
        "(some pick it automatically when 'encrypted password' is configured) work, but "
        "SCRAM-SHA-256 or PLAIN inside TLS are the current choices."
    ),
}

_LEGACY = {"DIGEST-MD5": "AUTH-DIGEST-MD5", "CRAM-MD5": "AUTH-CRAM-MD5"}
_FIX = {
    "imap": "Dovecot: disable_plaintext_auth = yes (2.4: auth_allow_cleartext = no)",
    "pop3": "Dovecot: disable_plaintext_auth = yes (2.4: auth_allow_cleartext = no)",
    "smtp": "Postfix: smtpd_tls_auth_only = yes; sendmail: confAUTH_OPTIONS with p",
}


def is_mx(endpoint: Endpoint) -> bool:
    """Port 25 or an MX role: where no AUTH is normal."""
    return endpoint.protocol == "smtp" and (
        endpoint.port == 25 or any(role.startswith("MX") for role in endpoint.roles)
    )


def _words(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(shorten(item, 40).upper() for item in items if item))


def _judge(observation: Observation) -> CheckResult | None:
    endpoint = observation.endpoint
    if not observation.ok or endpoint.protocol == "https":
        return None
    findings: list[Finding] = []
    before = _words(observation.plaintext_auth_before_tls)
    if before:
        findings.append(
            finding(
                Severity.ERROR,
                "AUTH-PLAINTEXT-BEFORE-TLS",
                endpoint,
                f"before STARTTLS the server offers {listed(before)}: a password can cross the "
                "network in clear",
                f"offer authentication only after TLS ({_FIX[endpoint.protocol]})",
            )
        )
    mechanisms = _words(observation.mechanisms)
    after = observation.capabilities_after_tls
    # A password command outside SASL also lets clients log in: IMAP LOGIN unless disabled,
    # POP3 USER.
    password_command = after is not None and (
        (endpoint.protocol == "imap" and "LOGINDISABLED" not in after)
        or (endpoint.protocol == "pop3" and "USER" in after)
    )
    if after is not None and not mechanisms and not password_command and not is_mx(endpoint):
        findings.append(
            finding(
                Severity.WARNING,
                "AUTH-NONE",
                endpoint,
                "no SASL mechanism is offered after TLS: mail clients cannot log in here",
                "enable authentication on this port",
            )
        )
    for mechanism, code in _LEGACY.items():
        if mechanism in mechanisms:
            findings.append(
                finding(
                    Severity.INFO,
                    code,
                    endpoint,
                    f"{mechanism} is offered"
                    + (
                        " (obsolete since RFC 6331; Outlook's SPA cannot negotiate its realm)"
                        if mechanism == "DIGEST-MD5"
                        else " (needs password equivalents on the server)"
                    ),
                    f"remove {mechanism} from the offered mechanisms; PLAIN inside TLS or "
                    "SCRAM-SHA-256 instead",
                )
            )
    if mechanisms:
        detail = f"after TLS: {listed(mechanisms, 12)}"
    elif is_mx(endpoint):
        detail = "no AUTH after TLS (normal for an MX)"
    elif after is None:
        detail = "the capabilities after TLS could not be read"
    elif password_command:
        detail = "a password command after TLS (no SASL mechanism)"
    else:
        detail = "no AUTH after TLS"
    if before:
        detail += f"; before TLS: {listed(before)}"
    return CheckResult(NAME, endpoint, tuple(findings), detail)


def check(observations: Sequence[Observation], context: CheckContext) -> list[CheckResult]:
    """One result per IMAP/POP3/SMTP address that completed a handshake."""
    results = (_judge(observation) for observation in observations)
    return [result for result in results if result is not None]
