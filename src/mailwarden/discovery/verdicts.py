"""What a failed step means for the mail team: the findings a client replay reports.

A failed step is often normal (the bare domain has no autoconfig, a name is not published);
it is a finding only when the server answered wrongly, or a host that is meant to serve mail
clients could not be used. ``CODES`` explains every code the probe reports.
"""

from __future__ import annotations

from mailwarden.discovery.steps import Step
from mailwarden.findings import Finding, Severity

CODES: dict[str, str] = {
    "PROBE-NO-SETTINGS": "The client ends with no settings at all for the address: every way it "
    "looks failed. Users of that client must type server names by hand.",
    "PROBE-HTTP-ONLY": "Thunderbird found its settings only over plain HTTP. Anyone on the path "
    "can change them, and the autoconfig draft says the user must confirm such a configuration. "
    "Serve https://autoconfig.<domain>/ with a certificate for that name.",
    "PROBE-TLS": "An HTTPS URL a client asks failed TLS: the certificate was not accepted "
    "(expired, wrong name, untrusted chain) or the handshake failed (plain HTTP on the TLS port, "
    "no TLS version in common). Thunderbird skips the URL; Outlook shows the user a certificate "
    "warning.",
    "PROBE-NO-HTTPS": "A host refused TLS for this name (it has no certificate for it). That is "
    "right for a one-certificate autoconfig host (the SRV or plain-HTTP strategy of "
    "'mailwarden dns records'): clients move on without a warning.",
    "PROBE-CONTENT-TYPE": "An autoconfig URL answered 200 with a content type that is not XML. "
    "Thunderbird then reads the body as text and fails with 'no emailProvider'.",
    "PROBE-BAD-DOCUMENT": "A URL answered 200, but the body is not a document the client can use "
    "(not well-formed, wrong root element, no incoming or outgoing server).",
    "PROBE-TIMEOUT": "A server did not accept the connection, or accepted it and did not answer, "
    "in time. The client "
    "waits that long before it tries the next way.",
    "PROBE-TOO-LARGE": "The answer was larger than any autoconfig document should be; it was "
    "not read.",
    "PROBE-HTTP-PROTOCOL": "The server's answer was not valid HTTP.",
    "PROBE-DNS": "A DNS query in the client's lookup failed (SERVFAIL or no answer in time), so "
    "the client could not tell whether the name exists.",
    "PROBE-REDIRECT-LOOP": "Redirects lead back to a URL already asked (or go on for more than 10 "
    "hops); the client gives up on that URL.",
    "PROBE-DOWNGRADE": "An HTTPS URL redirects to plain HTTP. Outlook does not follow it; "
    "Thunderbird does, and the answer can then be read and changed on the way.",
    "PROBE-REDIRECT-ELSEWHERE": "Outlook reached its settings through a redirect or the "
    "_autodiscover._tcp SRV record to another host; it asks the user once before it uses them.",
    "PROBE-AUTODISCOVER-ERROR": "The Autodiscover endpoint answered with an Error element (e.g. "
    "600 invalid request, 500 address not found). Outlook does not show it: it goes on guessing.",
    "PROBE-REDIRECT-ADDRESS": "The Autodiscover answer sends the client to another address "
    "(redirectAddr): the client starts over with that address.",
    "PROBE-DISAGREE": "Two clients end with different settings for the same address.",
    "PROBE-SITE-DIFFERS": "A client ends with settings that differ from what the site file says "
    "it should get (another server is answering, an old document is cached, or the site file is "
    "not the one deployed).",
    "PROBE-DEADLINE": "The whole probe ran out of time (--deadline); the steps still running "
    "were stopped.",
}


def step_findings(label: str, step: Step, *, meant_for_clients: bool) -> list[Finding]:
    """Findings for a failed step; ``meant_for_clients``: the host is one that should serve
    mail clients (autoconfig./autodiscover./an SRV target), so failures there are errors."""
    serious = Severity.ERROR if meant_for_clients else Severity.WARNING
    # A bare domain's web server answering 200 with its own page is common and harmless:
    # clients move on. Only the hosts meant for clients must answer with a document.
    wrong_answer = Severity.ERROR if meant_for_clients else Severity.INFO
    failure = step.failure
    where = step.target
    if failure == "tls":
        return [
            Finding(
                serious,
                "PROBE-TLS",
                where,
                f"{label}: {step.detail}",
                "install a certificate that covers this name and is signed by a public CA "
                "(or the --ca-file CA), with its intermediates",
            )
        ]
    if failure == "tls-handshake":
        return [
            Finding(
                Severity.WARNING,
                "PROBE-TLS",
                where,
                f"{label}: {step.detail}",
                "speak TLS 1.2 or newer on port 443 for this name, or refuse the connection",
            )
        ]
    if failure == "tls-refused":
        return [Finding(Severity.INFO, "PROBE-NO-HTTPS", where, f"{label}: {step.detail}")]
    if failure == "timeout":
        return [Finding(Severity.WARNING, "PROBE-TIMEOUT", where, f"{label}: {step.detail}")]
    if failure == "too-large":
        return [Finding(Severity.WARNING, "PROBE-TOO-LARGE", where, f"{label}: {step.detail}")]
    if failure == "protocol":
        return [Finding(Severity.WARNING, "PROBE-HTTP-PROTOCOL", where, f"{label}: {step.detail}")]
    if failure == "content-type":
        return [
            Finding(
                wrong_answer,
                "PROBE-CONTENT-TYPE",
                where,
                f"{label}: {step.detail}",
                "serve the document as text/xml; charset=utf-8",
            )
        ]
    if failure == "document":
        return [Finding(wrong_answer, "PROBE-BAD-DOCUMENT", where, f"{label}: {step.detail}")]
    if failure == "dns" and ("SERVFAIL" in step.detail or "in time" in step.detail):
        return [Finding(Severity.WARNING, "PROBE-DNS", where, f"{label}: {step.detail}")]
    return []
