"""The audit's checks as pure functions: observations built here, certificates made here.

Every code has a test that makes it appear and the good case has a test that it does not.
Expected values come from the certificates the test made (their dates, keys, names), never from
the checks' own output. Chains come from :class:`TestCA` (the same CA the server fixtures use,
so its certificates must pass) or, for shapes it cannot make, from :func:`make_cert`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.audit.checks import (
    CHECK_CODES,
    CHECKS,
    CODES,
    CheckContext,
    auth,
    certificate_infos,
    chain,
    dualstack,
    expiry,
    fingerprint,
    handshake,
    keys,
    leaf_and_issuer,
    load_trust,
    name,
    protocols,
    revocation,
    run_checks,
    stapling,
)
from mailwarden.audit.model import (
    CheckResult,
    Endpoint,
    ErrorKind,
    Observation,
    Protocol,
    TlsMode,
)
from mailwarden.audit.revocation import Revocation, SourceFailure
from mailwarden.findings import Finding, Severity
from tests.fixtures.tls_ca import TestCA, _resign

HOST = "mail.example.test"
V4 = "192.0.2.10"
V6 = "2001:db8::10"
DER = serialization.Encoding.DER


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A CA whose root and intermediate outlive every test date (400 days)."""
    return TestCA(tmp_path_factory.mktemp("ca"), ca_days=400)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A second CA with the same names as the first and other keys."""
    return TestCA(tmp_path_factory.mktemp("other-ca"), ca_days=400)


def pem_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def ders(*certificates: x509.Certificate) -> tuple[bytes, ...]:
    return tuple(c.public_bytes(DER) for c in certificates)


def chain_of(path: Path) -> tuple[bytes, ...]:
    """The DER chain a server configured with the PEM file ``path`` sends."""
    return ders(*pem_certs(path))


def root_of(ca: TestCA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.root.read_bytes())


def endpoint(
    *,
    address: str = V4,
    port: int = 993,
    protocol: Protocol = "imap",
    names: Sequence[str] = (HOST,),
    roles: Sequence[str] = (),
    host: str = HOST,
) -> Endpoint:
    tls: TlsMode = "starttls" if port in (25, 587, 143, 110) else "implicit"
    return Endpoint(host, address, port, protocol, tls, tuple(names), tuple(roles))


def seen(chain: Sequence[bytes] = (), **fields: Any) -> Observation:
    """A successful handshake that presented ``chain``; ``fields``: endpoint keywords and
    Observation fields."""
    endpoint_keys = {"address", "port", "protocol", "names", "roles", "host"}
    where = endpoint(**{k: v for k, v in fields.items() if k in endpoint_keys})
    rest = {k: v for k, v in fields.items() if k not in endpoint_keys}
    rest.setdefault("tls_version", "TLSv1.3")
    rest.setdefault("cipher", "TLS_AES_256_GCM_SHA384")
    return Observation(where, chain=tuple(chain), **rest)


def failed(kind: ErrorKind, error: str = "it failed", **where: Any) -> Observation:
    return Observation(endpoint(**where), error=error, error_kind=kind)


def context(*trusted: x509.Certificate, now: datetime | None = None, **kw: Any) -> CheckContext:
    return CheckContext(now=now or datetime.now(UTC), trust=trusted, **kw)


def findings(results: Sequence[CheckResult]) -> list[Finding]:
    return [f for r in results for f in r.findings]


def codes(results: Sequence[CheckResult]) -> list[str]:
    return [f.code for f in findings(results)]


def only(results: Sequence[CheckResult], code: str) -> Finding:
    """The one finding with ``code``; fails when there are none or several."""
    found = [f for f in findings(results) if f.code == code]
    assert len(found) == 1, f"{code}: {findings(results)}"
    return found[0]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: str | None = None,
    issuer_key: CertificateIssuerPrivateKeyTypes | None = None,
    ca: bool = False,
    sans: Sequence[str] | None = (HOST,),
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
    key_usage: bool = True,
    basic_constraints: bool = True,
    path_length: int | None = None,
    must_staple: bool = False,
    start: datetime | None = None,
    days: float = 90,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    """Any certificate shape :class:`TestCA` does not make (self-issued when no ``issuer``)."""
    now = datetime.now(UTC)
    begin = start or now - timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + timedelta(days=days))
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
        )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if sans is not None and not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    if eku is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if must_staple:
        builder = builder.add_extension(
            x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False
        )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


# ------------------------------------------------------------------------------ handshake


def test_handshake_that_succeeded_has_no_finding() -> None:
    results = handshake.check(
        [seen(tls_version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")], context()
    )
    assert codes(results) == []
    assert "TLSv1.3" in results[0].detail
    assert "TLS_AES_128_GCM_SHA256" in results[0].detail


@pytest.mark.parametrize(
    ("kind", "code", "severity"),
    [
        ("connect", "ENDPOINT-UNREACHABLE", Severity.ERROR),
        ("timeout", "ENDPOINT-TIMEOUT", Severity.ERROR),
        ("refused-service", "ENDPOINT-BUSY", Severity.UNKNOWN),
        ("no-route", "ENDPOINT-NO-ROUTE", Severity.UNKNOWN),
        ("starttls", "ENDPOINT-STARTTLS", Severity.ERROR),
        ("handshake", "TLS-HANDSHAKE", Severity.ERROR),
        ("protocol", "ENDPOINT-PROTOCOL", Severity.ERROR),
    ],
)
def test_handshake_failure_kinds(kind: ErrorKind, code: str, severity: Severity) -> None:
    reason = f"{kind}: what the scanner saw"
    results = handshake.check([failed(kind, reason)], context())
    found = only(results, code)
    assert found.severity is severity
    assert found.message == reason
    assert found.subject == f"{HOST}:993 ({V4})"


def test_handshake_message_from_a_hostile_server_is_one_bounded_line() -> None:
    banner = "421 " + "x" * 5000 + "\r\n\x1b[31mgotcha"
    results = handshake.check([failed("protocol", banner)], context())
    message = only(results, "ENDPOINT-PROTOCOL").message
    assert len(message) <= 300
    assert message.isprintable()


# ------------------------------------------------------------------------------ chain


def test_chain_from_the_test_ca_is_trusted(ca: TestCA) -> None:
    """No authority key identifier, as in many internal CAs: trusted all the same."""
    issued = ca.issue("good-chain.example.test")
    results = chain.check([seen(chain_of(issued.chain))], context(root_of(ca)))
    assert codes(results) == []
    assert results[0].detail.startswith("trusted")
    assert "Mail Test Root" in results[0].detail


def test_chain_that_includes_the_root_is_trusted(ca: TestCA) -> None:
    issued = ca.issue("with-root.example.test")
    sent = chain_of(issued.chain) + ders(root_of(ca))
    assert codes(chain.check([seen(sent)], context(root_of(ca)))) == []


def test_missing_intermediate_is_an_incomplete_chain(ca: TestCA) -> None:
    issued = ca.issue("leaf-only.example.test")
    results = chain.check([seen(chain_of(issued.leaf))], context(root_of(ca)))
    found = only(results, "TLS-CHAIN-INCOMPLETE")
    assert found.severity is Severity.ERROR
    assert "Mail Test Issuing CA" in found.message


def test_intermediate_found_only_in_the_ca_file_is_an_incomplete_chain(ca: TestCA) -> None:
    """Clients have the root, not the intermediate the audit was given."""
    issued = ca.issue("borrowed.example.test")
    intermediate = x509.load_pem_x509_certificate(ca.intermediate.read_bytes())
    results = chain.check([seen(chain_of(issued.leaf))], context(root_of(ca), intermediate))
    assert "Mail Test Issuing CA" in only(results, "TLS-CHAIN-INCOMPLETE").message


def test_wrong_intermediate_of_the_same_name(ca: TestCA, other_ca: TestCA) -> None:
    issued = ca.issue("wrong-inter.example.test")
    stale = x509.load_pem_x509_certificate(other_ca.intermediate.read_bytes())
    sent = chain_of(issued.leaf) + ders(stale)
    found = only(chain.check([seen(sent)], context(root_of(ca))), "TLS-CHAIN-INCOMPLETE")
    assert "did not sign it" in found.message


def test_unknown_root_is_untrusted(ca: TestCA, other_ca: TestCA) -> None:
    issued = ca.issue("unknown-root.example.test")
    results = chain.check([seen(chain_of(issued.chain))], context(root_of(other_ca)))
    found = only(results, "TLS-UNTRUSTED")
    assert found.severity is Severity.ERROR
    assert "Mail Test Root" in found.message


def test_sent_root_that_is_not_trusted_is_untrusted(ca: TestCA, other_ca: TestCA) -> None:
    issued = ca.issue("sent-root.example.test")
    sent = chain_of(issued.chain) + ders(root_of(ca))
    found = only(chain.check([seen(sent)], context(root_of(other_ca))), "TLS-UNTRUSTED")
    assert "ends at the root Mail Test Root" in found.message


def test_nothing_trusted_is_untrusted(ca: TestCA) -> None:
    issued = ca.issue("no-trust.example.test")
    results = chain.check([seen(chain_of(issued.chain))], context())
    assert codes(results) == ["TLS-UNTRUSTED"]


def test_self_signed_leaf() -> None:
    key = new_key()
    leaf = make_cert(HOST, key)
    found = only(chain.check([seen(ders(leaf))], context()), "TLS-SELF-SIGNED")
    assert found.severity is Severity.ERROR
    assert HOST in found.message


def test_self_signed_leaf_in_the_ca_file_is_trusted() -> None:
    leaf = make_cert(HOST, new_key())
    assert codes(chain.check([seen(ders(leaf))], context(leaf))) == []


def test_internal_root_made_like_openssl_req_is_trusted() -> None:
    """No keyUsage, basicConstraints not critical, no key identifiers: OpenSSL, NSS and
    Windows accept such a root, so the audit must too."""
    root_key, leaf_key = new_key(), new_key()
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("Campus Root"))
        .issuer_name(_name("Campus Root"))
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    leaf = make_cert(HOST, leaf_key, issuer="Campus Root", issuer_key=root_key, key_usage=False)
    assert codes(chain.check([seen(ders(leaf))], context(root))) == []


def test_leaf_not_meant_for_servers_is_untrusted() -> None:
    root_key = new_key()
    root = make_cert("EKU Root", root_key, ca=True)
    leaf = make_cert(
        HOST,
        new_key(),
        issuer="EKU Root",
        issuer_key=root_key,
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    found = only(chain.check([seen(ders(leaf))], context(root)), "TLS-UNTRUSTED")
    assert "serverAuth" in found.message


def test_path_length_violation_is_untrusted() -> None:
    keys_ = [new_key() for _ in range(4)]
    root = make_cert("PL Root", keys_[0], ca=True)
    first = make_cert(
        "PL One", keys_[1], issuer="PL Root", issuer_key=keys_[0], ca=True, path_length=0
    )
    second = make_cert("PL Two", keys_[2], issuer="PL One", issuer_key=keys_[1], ca=True)
    leaf = make_cert(HOST, keys_[3], issuer="PL Two", issuer_key=keys_[2])
    found = only(chain.check([seen(ders(leaf, second, first))], context(root)), "TLS-UNTRUSTED")
    assert "path length" in found.message


def test_sha1_leaf_is_untrusted_and_named(ca: TestCA) -> None:
    issued = ca.issue("sha1-chain.example.test", signature="sha1")
    found = only(chain.check([seen(chain_of(issued.chain))], context(root_of(ca))), "TLS-UNTRUSTED")
    assert "SHA1" in found.message
    assert "sha1-chain.example.test" in found.message


def test_weak_intermediate_key_is_untrusted_and_named(tmp_path: Path) -> None:
    weak = TestCA(tmp_path / "weak", ca_days=400, intermediate_rsa_bits=1024)
    issued = weak.issue("weak-inter.example.test")
    results = chain.check([seen(chain_of(issued.chain))], context(root_of(weak)))
    assert "RSA 1024" in only(results, "TLS-UNTRUSTED").message


def test_expired_leaf_is_left_to_the_expiry_check(ca: TestCA) -> None:
    issued = ca.issue("expired-chain.example.test", expired=True)
    results = chain.check([seen(chain_of(issued.chain))], context(root_of(ca)))
    assert codes(results) == []
    assert "Mail Test Root" in results[0].detail


def test_no_certificate_and_garbage_are_bad_certificates(ca: TestCA) -> None:
    assert codes(chain.check([seen(())], context())) == ["TLS-BAD-CERTIFICATE"]
    results = chain.check([seen((b"\x30\x03garbage",))], context(root_of(ca)))
    found = only(results, "TLS-BAD-CERTIFICATE")
    assert found.severity is Severity.ERROR
    assert "the leaf" in found.message


def test_garbage_intermediate_is_reported_with_its_position(ca: TestCA) -> None:
    issued = ca.issue("garbage-inter.example.test")
    sent = (*chain_of(issued.leaf), b"not a certificate")
    results = chain.check([seen(sent)], context(root_of(ca)))
    assert "certificate 1" in only(results, "TLS-BAD-CERTIFICATE").message
    assert "TLS-CHAIN-INCOMPLETE" in codes(results)


def test_malformed_extension_is_a_bad_certificate_for_every_check() -> None:
    """The certificate loads; its subjectAltName raises only when read."""
    broken_san = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x82\x05a"
    )
    leaf = make_cert(HOST, new_key(), sans=None, extensions=[broken_san])
    observation = seen(ders(leaf))
    results = run_checks([observation], context())
    assert only(results, "TLS-BAD-CERTIFICATE").severity is Severity.ERROR
    assert "subject_alternative_name" in only(results, "TLS-BAD-CERTIFICATE").message


def test_unknown_tls_feature_is_a_bad_certificate_not_a_crash() -> None:
    """cryptography raises KeyError (not ValueError) for a TLS Feature value it has no name
    for: found by mutating certificates."""
    feature_57 = x509.UnrecognizedExtension(ExtensionOID.TLS_FEATURE, bytes.fromhex("3003020139"))
    leaf = make_cert(HOST, new_key(), extensions=[feature_57])
    results = run_checks([seen(ders(leaf))], context())
    assert codes(results).count("TLS-BAD-CERTIFICATE") == 1


def test_too_many_certificates_are_not_all_read(ca: TestCA) -> None:
    issued = ca.issue("long-chain.example.test")
    sent = chain_of(issued.chain) * 20
    results = chain.check([seen(sent)], context(root_of(ca)))
    assert "40 certificates" in only(results, "TLS-BAD-CERTIFICATE").message


def test_failed_handshake_gets_no_certificate_results() -> None:
    observation = failed("timeout")
    for check_name in ("chain", "name", "expiry", "keys", "protocols", "stapling", "auth"):
        assert CHECKS[check_name]([observation], context()) == [], check_name


# ------------------------------------------------------------------------------ name


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("imap.example.edu", "imap.example.edu", True),
        ("IMAP.Example.EDU", "imap.example.edu.", True),
        ("*.example.edu", "imap.example.edu", True),
        ("*.example.edu", "example.edu", False),
        ("*.example.edu", "a.imap.example.edu", False),
        ("f*.example.edu", "foo.example.edu", False),
        ("*o.example.edu", "foo.example.edu", False),
        ("imap.*.edu", "imap.example.edu", False),
        ("*.*.example.edu", "a.b.example.edu", False),
        ("*.edu", "example.edu", False),
        ("*", "localhost", False),
        ("imap.example.edu", "imap.example.edu.evil", False),
    ],
)
def test_wildcard_rules_of_rfc_6125(pattern: str, host: str, expected: bool) -> None:
    assert name.wildcard_matches(pattern, host) is expected


def test_every_name_covered_has_no_finding(ca: TestCA) -> None:
    issued = ca.issue(HOST, "imap.example.test", "smtp.example.test")
    observation = seen(
        chain_of(issued.chain), names=(HOST, "imap.example.test", "SMTP.example.test.")
    )
    results = name.check([observation], context())
    assert codes(results) == []


def test_each_uncovered_name_is_a_mismatch(ca: TestCA) -> None:
    issued = ca.issue("only-one.example.test")
    wanted = ("only-one.example.test", "imap.example.test", "pop.example.test")
    results = name.check([seen(chain_of(issued.chain), names=wanted)], context())
    found = findings(results)
    assert [f.code for f in found] == ["TLS-NAME-MISMATCH"] * 2
    assert all(f.severity is Severity.ERROR for f in found)
    assert "imap.example.test" in found[0].message
    assert "pop.example.test" in found[1].message
    assert "only-one.example.test" in found[0].message  # what the certificate does name


def test_wildcard_certificate_covers_one_label_only(ca: TestCA) -> None:
    issued = ca.issue("*.wild.example.test")
    wanted = ("imap.wild.example.test", "wild.example.test", "a.b.wild.example.test")
    results = name.check([seen(chain_of(issued.chain), names=wanted)], context())
    missing = [f.message.split(":")[0] for f in findings(results)]
    assert missing == [
        "the certificate does not cover wild.example.test",
        "the certificate does not cover a.b.wild.example.test",
    ]


def test_ip_address_names_match_ip_entries_only(ca: TestCA) -> None:
    issued = ca.issue("ip.example.test", "192.0.2.7")
    results = name.check(
        [seen(chain_of(issued.chain), names=("192.0.2.7", "192.0.2.8"))], context()
    )
    assert [f.message.split(":")[0] for f in findings(results)] == [
        "the certificate does not cover 192.0.2.8"
    ]


def test_certificate_without_san_covers_nothing() -> None:
    leaf = make_cert(HOST, new_key(), sans=None)
    found = only(name.check([seen(ders(leaf))], context()), "TLS-NAME-MISMATCH")
    assert "no subjectAltName" in found.message


# ------------------------------------------------------------------------------ expiry


def leaf_of(path: Path) -> x509.Certificate:
    return pem_certs(path)[0]


def test_long_valid_chain_has_no_finding(ca: TestCA) -> None:
    issued = ca.issue("long-valid.example.test", days=90)
    leaf = leaf_of(issued.chain)
    now = leaf.not_valid_after_utc - timedelta(days=60, hours=1)
    results = expiry.check([seen(chain_of(issued.chain))], context(now=now))
    assert codes(results) == []
    assert f"{leaf.not_valid_after_utc:%Y-%m-%d}" in results[0].detail
    assert "(60 days)" in results[0].detail


@pytest.mark.parametrize(
    ("days_before_end", "severity"),
    [(29.5, Severity.WARNING), (15, Severity.WARNING), (14, Severity.ERROR), (2, Severity.ERROR)],
)
def test_expires_soon(ca: TestCA, days_before_end: float, severity: Severity) -> None:
    issued = ca.issue(f"soon-{days_before_end}.example.test", days=90)
    leaf = leaf_of(issued.chain)
    now = leaf.not_valid_after_utc - timedelta(days=days_before_end)
    results = expiry.check([seen(chain_of(issued.chain))], context(now=now))
    found = only(results, "TLS-EXPIRES-SOON")
    assert found.severity is severity
    assert f"in {int(days_before_end)} day" in found.message
    assert "the leaf" in found.message


def test_expiry_limits_come_from_the_context(ca: TestCA) -> None:
    issued = ca.issue("limits.example.test", days=90)
    now = leaf_of(issued.chain).not_valid_after_utc - timedelta(days=45)
    sent = chain_of(issued.chain)
    assert codes(expiry.check([seen(sent)], context(now=now))) == []
    warned = expiry.check([seen(sent)], context(now=now, warn_days=60))
    assert only(warned, "TLS-EXPIRES-SOON").severity is Severity.WARNING
    critical = expiry.check([seen(sent)], context(now=now, warn_days=60, critical_days=50))
    assert only(critical, "TLS-EXPIRES-SOON").severity is Severity.ERROR


def test_expired_leaf(ca: TestCA) -> None:
    issued = ca.issue("expired.example.test", expired=True)
    leaf = leaf_of(issued.chain)
    now = datetime.now(UTC)
    ago = int((now - leaf.not_valid_after_utc).total_seconds() // 86400)
    found = only(expiry.check([seen(chain_of(issued.chain))], context(now=now)), "TLS-EXPIRED")
    assert found.severity is Severity.ERROR
    assert (
        f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({ago} days ago)"
        in found.message
    )


def test_not_yet_valid_leaf(ca: TestCA) -> None:
    issued = ca.issue("future.example.test", not_yet_valid=True)
    leaf = leaf_of(issued.chain)
    found = only(expiry.check([seen(chain_of(issued.chain))], context()), "TLS-NOT-YET-VALID")
    assert found.severity is Severity.ERROR
    assert f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M}" in found.message


def test_expiring_intermediate_is_reported_apart_from_the_leaf(tmp_path: Path) -> None:
    short = TestCA(tmp_path / "short", ca_days=400, intermediate_days=10)
    issued = short.issue("short-inter.example.test", days=200)
    intermediate = pem_certs(issued.chain)[1]
    results = expiry.check([seen(chain_of(issued.chain))], context())
    found = only(results, "TLS-EXPIRES-SOON")
    assert found.severity is Severity.ERROR
    assert "certificate 1 (Mail Test Issuing CA)" in found.message
    assert f"{intermediate.not_valid_after_utc:%Y-%m-%d}" in found.message


def test_certificate_infos_describe_each_certificate(tmp_path: Path) -> None:
    rsa_ca = TestCA(tmp_path / "rsa", ca_days=400, intermediate_rsa_bits=2048)
    issued = rsa_ca.issue("infos.example.test", days=50, signature="sha1")
    leaf, intermediate = pem_certs(issued.chain)
    now = leaf.not_valid_after_utc - timedelta(days=12, hours=12)
    infos = certificate_infos(chain_of(issued.chain), now)
    assert [i.position for i in infos] == [0, 1]
    first, second = infos
    assert first.subject == leaf.subject.rfc4514_string()
    assert first.issuer == intermediate.subject.rfc4514_string()
    assert first.not_after == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first.days_left == pytest.approx(12.5)
    assert first.sha256 == hashlib.sha256(leaf.public_bytes(DER)).hexdigest()
    assert first.key == "EC secp256r1"
    assert first.signature_hash == "sha1"
    assert second.key == "RSA 2048"
    assert second.signature_hash == "sha256"


def test_certificate_infos_skip_unreadable_certificates(ca: TestCA) -> None:
    issued = ca.issue("infos-garbage.example.test")
    infos = certificate_infos((b"junk", *chain_of(issued.chain)), datetime.now(UTC))
    assert [i.position for i in infos] == [1, 2]


# ------------------------------------------------------------------------------ keys


def test_current_keys_and_hashes_have_no_finding(ca: TestCA) -> None:
    for issued in (ca.issue("ec.example.test"), ca.issue("rsa.example.test", rsa_bits=2048)):
        results = keys.check([seen(chain_of(issued.chain))], context())
        assert codes(results) == []


def test_rsa_1024_leaf_is_a_weak_key(ca: TestCA) -> None:
    issued = ca.issue("rsa1024.example.test", rsa_bits=1024)
    found = only(keys.check([seen(chain_of(issued.chain))], context()), "TLS-WEAK-KEY")
    assert found.severity is Severity.ERROR
    assert "the leaf" in found.message
    assert "RSA 1024" in found.message


def test_small_curve_is_a_weak_key(ca: TestCA) -> None:
    issued = ca.issue("p192.example.test", curve=ec.SECP192R1())
    found = only(keys.check([seen(chain_of(issued.chain))], context()), "TLS-WEAK-KEY")
    assert "secp192r1" in found.message


def test_weak_intermediate_key_is_named(tmp_path: Path) -> None:
    weak = TestCA(tmp_path / "weak-inter", ca_days=400, intermediate_rsa_bits=1024)
    issued = weak.issue("under-weak.example.test")
    found = only(keys.check([seen(chain_of(issued.chain))], context()), "TLS-WEAK-KEY")
    assert "certificate 1 (Mail Test Issuing CA)" in found.message


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_legacy_signature_on_the_leaf(tmp_path: Path, digest: str) -> None:
    rsa_ca = TestCA(tmp_path / digest, ca_days=400, intermediate_rsa_bits=2048)
    issued = rsa_ca.issue(f"{digest}.example.test", signature=digest)  # type: ignore[arg-type]
    found = only(keys.check([seen(chain_of(issued.chain))], context()), "TLS-WEAK-SIGNATURE")
    assert found.severity is Severity.ERROR
    assert digest.upper() in found.message
    assert "the leaf" in found.message


def test_sha1_signed_intermediate(tmp_path: Path) -> None:
    old = TestCA(tmp_path / "sha1-inter", ca_days=400, intermediate_signature="sha1")
    issued = old.issue("under-sha1.example.test")
    found = only(keys.check([seen(chain_of(issued.chain))], context()), "TLS-WEAK-SIGNATURE")
    assert "certificate 1" in found.message


def test_sha1_self_signature_of_a_sent_root_does_not_count(ca: TestCA) -> None:
    root_key = new_key()
    root = _resign(make_cert("Old Root", root_key, ca=True), root_key, "sha1")
    assert root.signature_hash_algorithm is not None
    assert root.signature_hash_algorithm.name == "sha1"
    leaf = make_cert(HOST, new_key(), issuer="Old Root", issuer_key=root_key)
    assert codes(keys.check([seen(ders(leaf, root))], context())) == []


# ------------------------------------------------------------------------------ protocols


def test_only_current_versions_have_no_finding() -> None:
    results = protocols.check([seen(tls_version="TLSv1.2")], context())
    assert codes(results) == []
    assert "TLSv1.2" in results[0].detail


def test_legacy_versions_still_accepted() -> None:
    results = protocols.check([seen(legacy_versions=("TLSv1", "TLSv1.1"))], context())
    found = only(results, "TLS-LEGACY-VERSION")
    assert found.severity is Severity.WARNING
    assert "TLSv1 and TLSv1.1" in found.message
    assert "RFC 8996" in found.message


def test_legacy_version_negotiated() -> None:
    results = protocols.check(
        [seen(tls_version="TLSv1.1", legacy_versions=("TLSv1.1",))], context()
    )
    assert only(results, "TLS-LEGACY-ONLY").severity is Severity.ERROR


# ------------------------------------------------------------------------------ revocation


def test_revoked_verdict(ca: TestCA) -> None:
    issued = ca.issue("revoked.example.test")
    sent = chain_of(issued.chain)
    verdict = Revocation(
        "revoked",
        "ocsp",
        "revoked per OCSP",
        reason="keyCompromise",
        revoked_at="2026-01-02T03:04:05Z",
        url="http://ocsp.example.test/",
    )
    results = revocation.check([seen(sent)], context(revocation={fingerprint(sent[0]): verdict}))
    found = only(results, "TLS-REVOKED")
    assert found.severity is Severity.ERROR
    assert "keyCompromise" in found.message
    assert "http://ocsp.example.test/" in found.message


def test_good_verdict_has_no_finding(ca: TestCA) -> None:
    issued = ca.issue("not-revoked.example.test")
    sent = chain_of(issued.chain)
    verdict = Revocation("good", "crl", "not listed in the CRL http://crl.example.test/x.crl")
    results = revocation.check([seen(sent)], context(revocation={fingerprint(sent[0]): verdict}))
    assert codes(results) == []
    assert results[0].detail == verdict.detail


def test_unreachable_sources_are_unknown(ca: TestCA) -> None:
    issued = ca.issue("unreachable.example.test")
    sent = chain_of(issued.chain)
    failure = SourceFailure(
        "ocsp", "unavailable", "connection refused", "http://ocsp.example.test/"
    )
    verdict = Revocation("unavailable", "none", "no source answered", failures=(failure,))
    results = revocation.check([seen(sent)], context(revocation={fingerprint(sent[0]): verdict}))
    assert only(results, "TLS-REVOCATION-UNAVAILABLE").severity is Severity.UNKNOWN


def test_leaf_without_verdict_gets_no_result(ca: TestCA) -> None:
    issued = ca.issue("no-verdict.example.test")
    assert revocation.check([seen(chain_of(issued.chain))], context()) == []


def test_leaf_and_issuer_for_the_lookup(ca: TestCA) -> None:
    issued = ca.issue("lookup.example.test")
    leaf, intermediate = pem_certs(issued.chain)
    assert leaf_and_issuer(chain_of(issued.chain), ()) == (leaf, intermediate)
    assert leaf_and_issuer(chain_of(issued.leaf), ()) is None
    assert leaf_and_issuer(chain_of(issued.leaf), (intermediate,)) == (leaf, intermediate)
    assert leaf_and_issuer((b"junk",), ()) is None


# ------------------------------------------------------------------------------ stapling


class DirectPki:
    """A root that issues leaves directly and signs OCSP responses about them itself."""

    def __init__(self) -> None:
        self.key = new_key()
        self.root = make_cert("Staple Root", self.key, ca=True, days=400)

    def leaf(self, *, must_staple: bool = False) -> x509.Certificate:
        return make_cert(
            HOST, new_key(), issuer="Staple Root", issuer_key=self.key, must_staple=must_staple
        )

    def staple(
        self,
        leaf: x509.Certificate,
        status: ocsp.OCSPCertStatus,
        *,
        impostor: bool = False,
    ) -> bytes:
        """An OCSP response about ``leaf`` signed by the root, or by a key the root never
        authorised (``impostor``)."""
        now = datetime.now(UTC)
        revoked = status is ocsp.OCSPCertStatus.REVOKED
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=leaf,
            issuer=self.root,
            algorithm=hashes.SHA1(),  # noqa: S303 - the CertID hash responders index by
            cert_status=status,
            this_update=now - timedelta(hours=1),
            next_update=now + timedelta(days=3),
            revocation_time=now - timedelta(days=1) if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        )
        signer, key = self.root, self.key
        if impostor:
            key = new_key()
            signer = make_cert("Staple Root", key, ca=True)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
        return builder.sign(key, hashes.SHA256()).public_bytes(DER)


def test_https_without_staple_is_a_note() -> None:
    pki = DirectPki()
    observation = seen(ders(pki.leaf()), port=443, protocol="https")
    found = only(stapling.check([observation], context(pki.root)), "TLS-NO-STAPLE")
    assert found.severity is Severity.INFO


def test_mail_port_without_staple_is_normal() -> None:
    pki = DirectPki()
    results = stapling.check([seen(ders(pki.leaf()))], context(pki.root))
    assert codes(results) == []
    assert "Dovecot" in results[0].detail


@pytest.mark.parametrize(("port", "protocol"), [(443, "https"), (993, "imap"), (25, "smtp")])
def test_must_staple_without_staple_is_an_error_anywhere(port: int, protocol: Protocol) -> None:
    pki = DirectPki()
    observation = seen(ders(pki.leaf(must_staple=True)), port=port, protocol=protocol)
    results = stapling.check([observation], context(pki.root))
    assert codes(results) == ["TLS-MUST-STAPLE-MISSING"]
    assert findings(results)[0].severity is Severity.ERROR


def test_must_staple_from_the_test_ca(ca: TestCA) -> None:
    issued = ca.issue("must.example.test", must_staple=True)
    results = stapling.check([seen(chain_of(issued.chain))], context(root_of(ca)))
    assert codes(results) == ["TLS-MUST-STAPLE-MISSING"]


def test_good_staple_has_no_finding() -> None:
    pki = DirectPki()
    leaf = pki.leaf(must_staple=True)
    observation = seen(
        ders(leaf), port=443, protocol="https", staple=pki.staple(leaf, ocsp.OCSPCertStatus.GOOD)
    )
    results = stapling.check([observation], context(pki.root))
    assert codes(results) == []
    assert "good" in results[0].detail


def test_staple_saying_revoked_is_an_error() -> None:
    pki = DirectPki()
    leaf = pki.leaf()
    staple = pki.staple(leaf, ocsp.OCSPCertStatus.REVOKED)
    observation = seen(ders(leaf), port=443, protocol="https", staple=staple)
    found = only(stapling.check([observation], context(pki.root)), "TLS-REVOKED")
    assert found.severity is Severity.ERROR
    assert "stapled" in found.message


def test_badly_signed_staple_on_a_must_staple_certificate() -> None:
    pki = DirectPki()
    leaf = pki.leaf(must_staple=True)
    staple = pki.staple(leaf, ocsp.OCSPCertStatus.GOOD, impostor=True)
    observation = seen(ders(leaf), port=443, protocol="https", staple=staple)
    results = stapling.check([observation], context(pki.root))
    assert only(results, "TLS-STAPLE-INVALID").severity is Severity.WARNING
    assert only(results, "TLS-MUST-STAPLE-INVALID").severity is Severity.ERROR


def test_oversized_staple_is_not_read() -> None:
    pki = DirectPki()
    observation = seen(ders(pki.leaf()), staple=b"\x30" * (stapling.MAX_STAPLE + 1))
    results = stapling.check([observation], context(pki.root))
    assert "larger than" in only(results, "TLS-STAPLE-INVALID").message


# ------------------------------------------------------------------------------ dual stack


def service_results(*observations: Observation) -> list[CheckResult]:
    return dualstack.check(list(observations), context())


def test_both_families_answering_the_same_has_no_finding(ca: TestCA) -> None:
    sent = chain_of(ca.issue("dual-good.example.test").chain)
    results = service_results(seen(sent), seen(sent, address=V6))
    assert codes(results) == []
    assert len(results) == 1
    assert "same certificate" in results[0].detail


@pytest.mark.parametrize("kind", ["timeout", "connect", "handshake"])
def test_ipv6_not_answering_while_ipv4_does_is_an_error(ca: TestCA, kind: ErrorKind) -> None:
    sent = chain_of(ca.issue(f"v6-{kind}.example.test").chain)
    results = service_results(seen(sent), failed(kind, "no answer in 5 s", address=V6))
    found = only(results, "DUALSTACK-V6-BROKEN")
    assert found.severity is Severity.ERROR
    assert found.subject == f"{HOST}:993"
    assert V6 in found.message
    assert results[0].endpoint is not None
    assert results[0].endpoint.address == V6


def test_ipv4_not_answering_while_ipv6_does_is_an_error(ca: TestCA) -> None:
    sent = chain_of(ca.issue("v4-broken.example.test").chain)
    results = service_results(failed("connect", "refused"), seen(sent, address=V6))
    assert only(results, "DUALSTACK-V4-BROKEN").severity is Severity.ERROR


def test_no_ipv6_route_here_is_unknown_not_broken(ca: TestCA) -> None:
    sent = chain_of(ca.issue("v6-no-route.example.test").chain)
    results = service_results(seen(sent), failed("no-route", "network unreachable", address=V6))
    assert codes(results) == ["DUALSTACK-NO-V6-ROUTE"]
    assert findings(results)[0].severity is Severity.UNKNOWN


def test_no_ipv4_route_here_is_unknown(ca: TestCA) -> None:
    sent = chain_of(ca.issue("v4-no-route.example.test").chain)
    results = service_results(failed("no-route", "network unreachable"), seen(sent, address=V6))
    assert codes(results) == ["DUALSTACK-NO-V4-ROUTE"]


def test_busy_ipv6_is_not_broken(ca: TestCA) -> None:
    sent = chain_of(ca.issue("v6-busy.example.test").chain)
    results = service_results(seen(sent), failed("refused-service", "421 try later", address=V6))
    assert codes(results) == []


def test_both_families_failing_is_not_a_dual_stack_finding() -> None:
    results = service_results(failed("timeout"), failed("timeout", address=V6))
    assert codes(results) == []


def test_different_certificate_per_family(ca: TestCA) -> None:
    old = chain_of(ca.issue("differs.example.test", days=20).chain)  # read before the renewal
    new = chain_of(ca.issue("differs.example.test", "imap.example.test", days=90).chain)
    old_leaf, new_leaf = (x509.load_der_x509_certificate(c[0]) for c in (old, new))
    results = service_results(seen(old), seen(new, address=V6))
    found = only(results, "DUALSTACK-CERT-DIFFERS")
    assert found.severity is Severity.WARNING
    ipv4, ipv6 = found.message.split("; IPv6")
    assert f"{old_leaf.not_valid_after_utc:%Y-%m-%d}" in ipv4
    assert f"{new_leaf.not_valid_after_utc:%Y-%m-%d}" in ipv6


@pytest.mark.parametrize(("address", "family"), [(V4, "IPv4"), (V6, "IPv6")])
def test_one_family_only_is_a_note(ca: TestCA, address: str, family: str) -> None:
    sent = chain_of(ca.issue(f"single-{family}.example.test").chain)
    found = only(service_results(seen(sent, address=address)), "DUALSTACK-SINGLE-FAMILY")
    assert found.severity is Severity.INFO
    assert f"only {family}" in found.message


def test_dualstack_of_nothing_is_nothing() -> None:
    assert dualstack.check([], context()) == []


# ------------------------------------------------------------------------------ auth


def test_mechanisms_after_tls_are_listed() -> None:
    results = auth.check([seen(mechanisms=("PLAIN", "LOGIN", "SCRAM-SHA-256"))], context())
    assert codes(results) == []
    assert results[0].detail == "after TLS: PLAIN, LOGIN and SCRAM-SHA-256"


def test_plaintext_auth_before_tls_is_an_error() -> None:
    observation = seen(
        port=143, mechanisms=("PLAIN",), plaintext_auth_before_tls=("AUTH=PLAIN", "LOGIN")
    )
    found = only(auth.check([observation], context()), "AUTH-PLAINTEXT-BEFORE-TLS")
    assert found.severity is Severity.ERROR
    assert "AUTH=PLAIN and LOGIN" in found.message


@pytest.mark.parametrize(
    ("port", "protocol"), [(587, "smtp"), (465, "smtp"), (993, "imap"), (995, "pop3")]
)
def test_no_mechanism_for_clients_is_a_warning(port: int, protocol: Protocol) -> None:
    # IMAP with LOGINDISABLED and POP3 without USER: no way to log in at all.
    after = ("IMAP4REV1", "LOGINDISABLED") if protocol == "imap" else ("PIPELINING",)
    observation = seen(port=port, protocol=protocol, capabilities_after_tls=after)
    results = auth.check([observation], context())
    assert only(results, "AUTH-NONE").severity is Severity.WARNING


def test_unread_capabilities_are_not_none_offered() -> None:
    results = auth.check([seen(port=993, protocol="imap", capabilities_after_tls=None)], context())
    assert codes(results) == []
    assert "could not be read" in results[0].detail


@pytest.mark.parametrize(("protocol", "after"), [("imap", ("IMAP4REV1",)), ("pop3", ("USER",))])
def test_a_password_command_lets_clients_log_in(protocol: Protocol, after: tuple[str, ...]) -> None:
    results = auth.check(
        [seen(port=993, protocol=protocol, capabilities_after_tls=after)], context()
    )
    assert codes(results) == []
    assert "password command" in results[0].detail


def test_no_auth_on_an_mx_is_normal() -> None:
    for observation in (
        seen(port=25, protocol="smtp"),
        seen(port=2525, protocol="smtp", roles=("MX of example.test",)),
    ):
        results = auth.check([observation], context())
        assert codes(results) == []
        assert "MX" in results[0].detail


@pytest.mark.parametrize(
    ("mechanism", "code"), [("DIGEST-MD5", "AUTH-DIGEST-MD5"), ("CRAM-MD5", "AUTH-CRAM-MD5")]
)
def test_md5_mechanisms_get_a_note(mechanism: str, code: str) -> None:
    results = auth.check([seen(mechanisms=("PLAIN", mechanism))], context())
    found = only(results, code)
    assert found.severity is Severity.INFO
    assert codes(results) == [code]


def test_digest_md5_note_tells_of_outlook() -> None:
    found = only(auth.check([seen(mechanisms=("DIGEST-MD5",))], context()), "AUTH-DIGEST-MD5")
    assert "RFC 6331" in found.message
    assert "SPA" in found.message


def test_https_endpoints_have_no_auth_result() -> None:
    assert auth.check([seen(port=443, protocol="https")], context()) == []


# ------------------------------------------------------------------------------ the registry


def test_checks_in_report_order() -> None:
    assert list(CHECKS) == [
        "handshake",
        "chain",
        "name",
        "expiry",
        "keys",
        "protocols",
        "revocation",
        "stapling",
        "dualstack",
        "auth",
    ]


def test_every_code_is_explained_once() -> None:
    own: dict[str, str] = {}
    for module in (handshake, chain, name, expiry, keys, protocols, stapling, dualstack, auth):
        for code, text in module.CODES.items():
            assert code not in own, f"{code} defined twice"
            own[code] = text
    assert set(own) <= set(CODES)
    assert set(revocation.CODES) <= set(CODES)
    for code, text in CODES.items():
        assert code.split("-")[0] in {"TLS", "AUTH", "DUALSTACK", "ENDPOINT"}, code
        assert len(text) > 80, code
    assert set(CHECK_CODES["stapling"]) == set(stapling.CODES)


def test_run_checks_groups_by_service_and_selects(ca: TestCA) -> None:
    sent = chain_of(ca.issue("grouped.example.test", days=90).chain)
    observations = [
        seen(sent, names=("grouped.example.test",)),
        seen(sent, address=V6, names=("grouped.example.test",)),
        seen(sent, port=995, protocol="pop3", names=("grouped.example.test",)),
    ]
    results = run_checks(observations, context(root_of(ca)), ["dualstack", "chain"])
    assert [(r.check, r.endpoint.port if r.endpoint else None) for r in results] == [
        ("chain", 993),
        ("chain", 993),
        ("dualstack", 993),
        ("chain", 995),
        ("dualstack", 995),
    ]
    with pytest.raises(ValueError, match="unknown check"):
        run_checks(observations, context(), ["chains"])


def test_load_trust_reads_pem_files_and_names_bad_ones(ca: TestCA, tmp_path: Path) -> None:
    system = load_trust()
    assert len(system) > 50  # Debian's ca-certificates
    assert load_trust(None) == system
    assert load_trust(ca.root) == (root_of(ca),)
    intermediate = pem_certs(ca.intermediate)[0]
    assert load_trust(ca.root, ca.intermediate) == (root_of(ca), intermediate)
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(ValueError, match=r"empty\.pem"):
        load_trust(empty)
    with pytest.raises(ValueError, match=r"missing\.pem"):
        load_trust(tmp_path / "missing.pem")


# ------------------------------------------------------------------------------ hostile input


@pytest.fixture(scope="module")
def good_der(ca: TestCA) -> tuple[bytes, ...]:
    """A good chain and its root: material for mutations."""
    issued = ca.issue("hostile.example.test", "imap.example.test")
    return chain_of(issued.chain) + ders(root_of(ca))


def _mutated(data: bytes, position: int, replacement: bytes, cut: int) -> bytes:
    """``data`` with bytes replaced at ``position`` and possibly truncated: DER that often
    still loads and breaks later (in an extension, a name, the key)."""
    at = position % max(len(data), 1)
    changed = data[:at] + replacement + data[at + len(replacement) :]
    return changed[: len(changed) - cut % 64] if cut % 3 == 0 else changed


_text = st.text(max_size=200)
_host_names = st.from_regex(r"[a-z0-9*.-]{1,40}", fullmatch=True)
"""Endpoint names come from the site file and DNS, already checked host names."""
_KINDS: list[ErrorKind | None] = [
    None,
    "connect",
    "no-route",
    "timeout",
    "refused-service",
    "starttls",
    "handshake",
    "protocol",
]
_kinds = st.sampled_from(_KINDS)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_check_raises_on_hostile_observations(
    data: st.DataObject, good_der: tuple[bytes, ...]
) -> None:
    def certificate() -> bytes:
        kind = data.draw(st.sampled_from(["random", "mutated", "good"]))
        if kind == "random":
            return data.draw(st.binary(max_size=600))
        base = good_der[data.draw(st.integers(0, len(good_der) - 1))]
        if kind == "good":
            return base
        return _mutated(
            base,
            data.draw(st.integers(0, 4000)),
            data.draw(st.binary(min_size=1, max_size=8)),
            data.draw(st.integers(0, 200)),
        )

    observations = []
    for address in (V4, V6):
        ok = data.draw(st.booleans())
        chain_ = tuple(certificate() for _ in range(data.draw(st.integers(0, 3))))
        where = endpoint(
            address=address,
            protocol=data.draw(st.sampled_from(["imap", "pop3", "smtp", "https"])),
            names=tuple(data.draw(st.lists(_host_names, max_size=3))),
        )
        observations.append(
            Observation(
                where,
                error=None if ok else data.draw(_text),
                error_kind=None if ok else data.draw(_kinds),
                tls_version=data.draw(st.one_of(st.none(), _text)),
                cipher=data.draw(st.one_of(st.none(), _text)),
                chain=chain_,
                staple=data.draw(st.one_of(st.none(), st.binary(max_size=300))),
                mechanisms=tuple(data.draw(st.lists(_text, max_size=4))),
                plaintext_auth_before_tls=tuple(data.draw(st.lists(_text, max_size=2))),
                legacy_versions=tuple(data.draw(st.lists(_text, max_size=2))),
            )
        )
    now = datetime.now(UTC) + timedelta(days=data.draw(st.integers(-4000, 4000)))
    trust = (x509.load_der_x509_certificate(good_der[-1]),)
    results = run_checks(observations, CheckContext(now=now, trust=trust))
    assert all(isinstance(r, CheckResult) for r in results)
    for result in results:
        assert result.check in CHECKS
        assert result.detail.isprintable(), result.detail
        for found in result.findings:
            assert found.code in CODES, found.code
            assert found.message.isprintable(), found.message
    certificate_infos(observations[0].chain, now)
