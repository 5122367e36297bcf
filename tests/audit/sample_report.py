"""A fixed audit of a small university, built by hand, for testing the reports.

Three mail domains (example.edu, its alias uni-example.de, the institute's physics.example.org),
IMAPS and IMAP-STARTTLS, submission, an MX for all three, the autoconfig host (no mail domain of
its own: the grid's "other" row) and the physics institute's own IMAP server. IPv4 and IPv6;
one finding of every severity and one about no endpoint; certificates that expired, expire
soon, are fine or lie beyond the timeline, and one intermediate shared by several endpoints.
The expectations in the tests are written out from this file, not taken from a renderer.
"""

from __future__ import annotations

from mailwarden.audit.model import (
    AuditReport,
    CertificateInfo,
    CheckResult,
    Endpoint,
    Observation,
)
from mailwarden.findings import Finding, Severity

MAIN = ("example.edu", "uni-example.de")
ALL = ("example.edu", "physics.example.org", "uni-example.de")

IMAPS_4 = Endpoint(
    "imap.example.edu", "192.0.2.10", 993, "imap", "implicit",
    ("imap.example.edu",), ("IMAP server of campus",), MAIN,
)  # fmt: skip
IMAPS_6 = Endpoint(
    "imap.example.edu", "2001:db8:10::10", 993, "imap", "implicit",
    ("imap.example.edu",), ("IMAP server of campus",), MAIN,
)  # fmt: skip
IMAP_STARTTLS = Endpoint(
    "imap.example.edu", "192.0.2.10", 143, "imap", "starttls",
    ("imap.example.edu",), ("IMAP server of campus",), MAIN,
)  # fmt: skip
SUBMISSION_4 = Endpoint(
    "smtp.example.edu", "192.0.2.20", 587, "smtp", "starttls",
    ("smtp.example.edu",), ("SMTP submission of campus",), MAIN,
)  # fmt: skip
SUBMISSION_6 = Endpoint(
    "smtp.example.edu", "2001:db8:10::20", 587, "smtp", "starttls",
    ("smtp.example.edu",), ("SMTP submission of campus",), MAIN,
)  # fmt: skip
MX_4 = Endpoint(
    "mx1.example.edu", "192.0.2.25", 25, "smtp", "starttls",
    ("mx1.example.edu",),
    ("MX of example.edu", "MX of uni-example.de", "MX of physics.example.org"), ALL,
)  # fmt: skip
MX_6 = Endpoint(
    "mx1.example.edu", "2001:db8:10::25", 25, "smtp", "starttls",
    ("mx1.example.edu",),
    ("MX of example.edu", "MX of uni-example.de", "MX of physics.example.org"), ALL,
)  # fmt: skip
AUTOCONFIG_4 = Endpoint(
    "autoconfig.example.edu", "192.0.2.80", 443, "https", "implicit",
    ("autoconfig.example.edu", "autodiscover.example.edu"), ("autoconfig host",), (),
)  # fmt: skip
AUTOCONFIG_6 = Endpoint(
    "autoconfig.example.edu", "2001:db8:10::80", 443, "https", "implicit",
    ("autoconfig.example.edu", "autodiscover.example.edu"), ("autoconfig host",), (),
)  # fmt: skip
PHYSICS = Endpoint(
    "mail.physics.example.org", "198.51.100.7", 993, "imap", "implicit",
    ("mail.physics.example.org",), ("IMAP server of physics",), ("physics.example.org",),
)  # fmt: skip

ENDPOINTS = (
    IMAPS_4, IMAPS_6, IMAP_STARTTLS, SUBMISSION_4, SUBMISSION_6,
    MX_4, MX_6, AUTOCONFIG_4, AUTOCONFIG_6, PHYSICS,
)  # fmt: skip
SERVICES = (
    "imap.example.edu:993",
    "imap.example.edu:143",
    "smtp.example.edu:587",
    "mx1.example.edu:25",
    "autoconfig.example.edu:443",
    "mail.physics.example.org:993",
)


def _cert(
    subject: str, issuer: str, not_after: str, days: float, sha: str, pos: int
) -> CertificateInfo:
    return CertificateInfo(
        subject=subject,
        issuer=issuer,
        not_after=not_after,
        days_left=days,
        sha256=sha * 64,
        key="RSA 2048" if pos else "EC secp256r1",
        signature_hash="sha256",
        position=pos,
    )


LE = "CN=R11,O=Let's Encrypt,C=US"
R11 = _cert(LE, "CN=ISRG Root X1", "2027-03-12T23:59:59+00:00", 463.5, "1", 1)
IMAP_LEAF = _cert("CN=imap.example.edu", LE, "2026-12-25T06:00:00+00:00", 20.4, "a", 0)
SMTP_LEAF = _cert("CN=smtp.example.edu", LE, "2027-02-28T10:00:00+00:00", 85.2, "b", 0)
MX_LEAF = _cert("CN=mx1.example.edu", LE, "2027-01-23T21:36:00+00:00", 48.9, "c", 0)
AUTOCONFIG_LEAF = _cert("CN=autoconfig.example.edu", LE, "2027-06-22T00:00:00+00:00", 200.0, "d", 0)
PHYSICS_LEAF = _cert(
    "CN=mail.physics.example.org,O=Physics",
    "CN=Physics CA,O=Physics",
    "2026-12-01T12:00:00+00:00",
    -3.2,
    "e",
    0,
)
PHYSICS_CA = _cert(
    "CN=Physics CA,O=Physics",
    "CN=Physics CA,O=Physics",
    "2029-08-31T00:00:00+00:00",
    1000.0,
    "f",
    1,
)

CHAINS: dict[Endpoint, tuple[CertificateInfo, ...]] = {
    IMAPS_4: (IMAP_LEAF, R11),
    IMAPS_6: (IMAP_LEAF, R11),
    IMAP_STARTTLS: (IMAP_LEAF, R11),
    SUBMISSION_4: (SMTP_LEAF, R11),
    SUBMISSION_6: (SMTP_LEAF, R11),
    MX_4: (MX_LEAF, R11),
    AUTOCONFIG_4: (AUTOCONFIG_LEAF, R11),
    AUTOCONFIG_6: (AUTOCONFIG_LEAF, R11),
    PHYSICS: (PHYSICS_LEAF, PHYSICS_CA),
}
DISTINCT_CERTIFICATES = 7
LEAF_DAYS = {  # per service, the soonest leaf of its addresses
    "imap.example.edu:993": 20.4,
    "imap.example.edu:143": 20.4,
    "smtp.example.edu:587": 85.2,
    "mx1.example.edu:25": 48.9,
    "autoconfig.example.edu:443": 200.0,
    "mail.physics.example.org:993": -3.2,
}

EXPIRED = Finding(
    Severity.ERROR, "TLS-EXPIRED", "mail.physics.example.org:993",
    "The certificate expired on 2026-12-01 (3 days ago).",
    "Renew the certificate and reload the IMAP server.",
)  # fmt: skip
AAAA_DOWN = Finding(
    Severity.ERROR, "DUALSTACK-V6-BROKEN", MX_6.label,
    "mx1.example.edu has an AAAA record, but nothing answers on port 25 there.",
    "Make the MTA listen on IPv6 (inet_protocols = all) or remove the AAAA record.",
)  # fmt: skip
PLAIN_AUTH = Finding(
    Severity.ERROR, "AUTH-PLAINTEXT-BEFORE-TLS", "imap.example.edu:143",
    "AUTH=PLAIN and LOGIN are offered before STARTTLS: passwords can travel in clear.",
    "Dovecot: disable_plaintext_auth = yes (ssl = required).",
)  # fmt: skip
EXPIRES_SOON = Finding(
    Severity.WARNING, "TLS-EXPIRES-SOON", "imap.example.edu:993",
    "The certificate expires on 2026-12-25, in 20 days.",
    "Check that the automatic renewal runs.",
)  # fmt: skip
LEGACY = Finding(
    Severity.WARNING, "TLS-LEGACY-VERSION", SUBMISSION_4.label,
    "TLS 1.0 is still accepted.",
    "Postfix: smtpd_tls_protocols = >=TLSv1.2",
)  # fmt: skip
NO_ADDRESS = Finding(
    Severity.WARNING, "ENDPOINT-NO-ADDRESS", "pop.example.edu",
    "pop.example.edu (POP3 server of campus) has no A or AAAA record.",
    "Publish its address records, or remove the server from the site file.",
)  # fmt: skip
OCSP_UNREACHABLE = Finding(
    Severity.UNKNOWN, "TLS-REVOCATION-UNAVAILABLE", "autoconfig.example.edu:443",
    "The OCSP responder did not answer within 10 s; the CRL could not be fetched either.",
    "",
)  # fmt: skip
MECHANISMS = Finding(
    Severity.INFO, "AUTH-CRAM-MD5", "smtp.example.edu:587",
    "CRAM-MD5 is offered (needs password equivalents on the server)",
    "remove CRAM-MD5 from the offered mechanisms; PLAIN inside TLS or SCRAM-SHA-256 instead",
)  # fmt: skip


def _observation(endpoint: Endpoint) -> Observation:
    if endpoint is MX_6:
        return Observation(endpoint, error="no answer within 10 s", error_kind="timeout", ms=10000)
    chain = b"x" * 10, b"y" * 10
    if endpoint.protocol == "https":
        return Observation(endpoint, tls_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                           chain=chain, staple=b"ocsp", ms=31.0)  # fmt: skip
    before = ("AUTH=PLAIN", "LOGIN") if endpoint is IMAP_STARTTLS else ()
    return Observation(
        endpoint,
        tls_version="TLSv1.2" if endpoint is PHYSICS else "TLSv1.3",
        cipher="ECDHE-RSA-AES256-GCM-SHA384" if endpoint is PHYSICS else "TLS_AES_128_GCM_SHA256",
        chain=chain,
        mechanisms=("PLAIN", "LOGIN", "CRAM-MD5")
        if endpoint is SUBMISSION_4
        else ("PLAIN", "LOGIN"),
        mechanisms_before_tls=("PLAIN", "LOGIN") if before else (),
        plaintext_auth_before_tls=before,
        legacy_versions=("TLSv1",) if endpoint is SUBMISSION_4 else (),
        ms=42.5,
    )


def _results() -> tuple[CheckResult, ...]:
    results = [
        CheckResult("handshake", e, detail="TLS session made") for e in ENDPOINTS if e is not MX_6
    ]
    results += [
        CheckResult("dualstack", MX_6, (AAAA_DOWN,)),
        CheckResult("expiry", PHYSICS, (EXPIRED,)),
        CheckResult("auth", IMAP_STARTTLS, (PLAIN_AUTH,)),
        CheckResult("expiry", IMAPS_4, (EXPIRES_SOON,)),
        CheckResult("expiry", SUBMISSION_4, detail="valid until 2027-02-28, 85 days"),
        CheckResult("protocols", SUBMISSION_4, (LEGACY,)),
        CheckResult("revocation", AUTOCONFIG_4, (OCSP_UNREACHABLE,)),
        CheckResult("auth", SUBMISSION_4, (MECHANISMS,), detail="after TLS: PLAIN LOGIN CRAM-MD5"),
    ]
    return tuple(results)


def sample_report() -> AuditReport:
    return AuditReport(
        started="2026-12-04T09:30:00+00:00",
        seconds=3.2,
        site="/etc/mailwarden/site.toml",
        endpoints=ENDPOINTS,
        observations=tuple(_observation(e) for e in ENDPOINTS),
        results=_results(),
        certificates={e.label: chain for e, chain in CHAINS.items()},
        notes=("IPv6 route present: AAAA addresses were audited.",),
        general=(NO_ADDRESS,),
        warn_days=30,
        critical_days=14,
    )
