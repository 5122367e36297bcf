"""The certificates a server sent, read once into plain values every check can trust.

``cryptography`` parses lazily: a certificate that loads may still raise on its extensions, its
key or its signature algorithm when a check touches them. A hostile or broken server must not
turn that into a traceback, so :func:`parse_chain` touches everything the checks need up front
and turns each failure into a one-line problem (reported once, by the chain check, as
``TLS-BAD-CERTIFICATE``); the checks then read :class:`Cert` fields only.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from mailwarden.audit.checks.base import fingerprint
from mailwarden.discovery.mailcaps import shorten

MAX_CERTIFICATES = 16
"""Certificates read from one chain. Real chains hold two to four; OpenSSL's default depth
limit is far above, so this only bounds the work a hostile chain can cause."""

MAX_NAMES = 1000
"""Subject alternative names kept from one certificate (CDN certificates list a few hundred)."""

_PARSE_ERRORS = (Exception,)
"""What reading a hostile certificate may raise. ``cryptography`` documents ValueError,
UnsupportedAlgorithm, DuplicateExtension and a few more, raised lazily at first use, but its
Python layer also leaks others (a TLS Feature value it has no name for raises KeyError), so at
this boundary every exception means "unreadable"."""


@dataclass(frozen=True, slots=True)
class Cert:
    """One readable certificate of a chain, with what the checks look at."""

    position: int
    """Its place in the chain as sent: 0 the leaf, 1 the next…"""
    der: bytes
    certificate: x509.Certificate
    subject: str
    """RFC 4514 text of the subject name."""
    issuer: str
    common_name: str
    """The subject's CN (or the whole subject when it has none): a short name for messages."""
    not_before: datetime
    not_after: datetime
    sha256: str
    key_type: str
    """``RSA``, ``EC``, ``DSA``, ``Ed25519``, ``Ed448`` or ``unknown``."""
    key_bits: int
    """RSA/DSA modulus or EC field size in bits; 0 when not applicable or unknown."""
    key: str
    """For people: ``RSA 2048``, ``EC secp256r1``, ``Ed25519``…"""
    signature_hash: str
    """``sha256``, ``sha1``, ``md5``…; ``none`` for Ed25519/Ed448, ``unknown`` when unsupported."""
    self_issued: bool
    """Subject equals issuer."""
    self_signed: bool
    """Self-issued and its signature verifies with its own key: a root (or a lone leaf)."""
    is_ca: bool
    dns_names: tuple[str, ...] | None
    """The dNSName entries of the subjectAltName, lower case; None when it has no SAN at all."""
    ip_addresses: tuple[str, ...]
    must_staple: bool
    """TLS Feature extension with status_request (RFC 7633, "OCSP Must-Staple")."""

    @property
    def label(self) -> str:
        """``the leaf (mail.example.edu)`` or ``certificate 2 (R11)`` for messages."""
        where = "the leaf" if self.position == 0 else f"certificate {self.position}"
        return f"{where} ({self.common_name})"


@dataclass(frozen=True, slots=True)
class ParsedChain:
    certs: tuple[Cert, ...]
    """The readable certificates, in the order sent."""
    problems: tuple[str, ...]
    """One line per certificate that could not be read, and for a chain cut short."""
    sent: int
    """How many certificates the server sent."""

    @property
    def leaf(self) -> Cert | None:
        """The leaf, when it was readable."""
        return self.certs[0] if self.certs and self.certs[0].position == 0 else None

    @property
    def others(self) -> tuple[Cert, ...]:
        """Every readable certificate after the leaf."""
        return tuple(c for c in self.certs if c.position > 0)


def _name_text(name: x509.Name) -> str:
    try:
        return shorten(name.rfc4514_string(), 200)
    except _PARSE_ERRORS:
        return "(unreadable name)"


def _common_name(name: x509.Name, fallback: str) -> str:
    try:
        values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        if values and isinstance(values[0].value, str):
            return shorten(values[0].value, 80)
    except _PARSE_ERRORS:
        pass
    return fallback


def _describe_key(certificate: x509.Certificate) -> tuple[str, int, str]:
    try:
        key = certificate.public_key()
    except _PARSE_ERRORS:
        return "unknown", 0, "unsupported key"
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size, f"EC {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, f"DSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, "Ed448"
    return "unknown", 0, type(key).__name__


def _signature_hash(certificate: x509.Certificate) -> str:
    try:
        algorithm = certificate.signature_hash_algorithm
    except _PARSE_ERRORS:
        return "unknown"
    return "none" if algorithm is None else algorithm.name


@lru_cache(maxsize=4096)
def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer``'s name and key issued ``certificate`` (names match, signature verifies).

    Cached: a site's hundred endpoints send one intermediate, and finding the issuer, the
    revocation look-up and the chain check would each verify the same signature again.
    """
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return False
    except _PARSE_ERRORS:
        # Also what it raises for SHA-1 and MD5 signatures, which it does not verify.
        return _legacy_signature_valid(certificate, issuer)
    return True


def _legacy_signature_valid(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``verify_directly_issued_by`` refuses SHA-1 and MD5 signatures outright; telling who
    signed such a certificate still matters (the keys check reports the hash, the chain check
    must not mistake it for a missing issuer)."""
    try:
        algorithm = certificate.signature_hash_algorithm
        key = issuer.public_key()
        if algorithm is None:
            return False
        if isinstance(key, rsa.RSAPublicKey):
            scheme = certificate.signature_algorithm_parameters
            pad = scheme if isinstance(scheme, padding.PSS) else padding.PKCS1v15()
            key.verify(certificate.signature, certificate.tbs_certificate_bytes, pad, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(
                certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(algorithm)
            )
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(certificate.signature, certificate.tbs_certificate_bytes, algorithm)
        else:
            return False
    except _PARSE_ERRORS:  # InvalidSignature included
        return False
    return True


def signed_by(cert: Cert, issuer: x509.Certificate) -> bool:
    return _signed_by(cert.certificate, issuer)


def _is_word(text: str) -> bool:
    return bool(text) and len(text) <= 253 and all("!" <= c <= "~" for c in text)


def _san(extensions: x509.Extensions) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None, ()
    # A dNSName with spaces or control characters matches no host name; dropping it keeps
    # such bytes out of messages.
    dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)[:MAX_NAMES] if _is_word(n)]
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)[:MAX_NAMES]]
    return tuple(dns), tuple(ips)


def _is_ca(extensions: x509.Extensions) -> bool:
    try:
        return extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _must_staple(extensions: x509.Extensions) -> bool:
    try:
        features = extensions.get_extension_for_class(x509.TLSFeature).value
    except x509.ExtensionNotFound:
        return False
    return x509.TLSFeatureType.status_request in list(features)


@lru_cache(maxsize=1024)
def _read(position: int, der: bytes) -> Cert:
    """Raises one of ``_PARSE_ERRORS`` with the reason when the certificate is not usable.

    Cached by the bytes: the intermediate every endpoint of a site sends is read once.
    """
    with warnings.catch_warnings():
        # A non-positive serial number or an overlong country code only make cryptography
        # warn; the certificate is still judged, and the report is where the problem shows.
        warnings.simplefilter("ignore")
        certificate = x509.load_der_x509_certificate(der)
        subject = _name_text(certificate.subject)
        extensions = certificate.extensions
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
        key_type, key_bits, key = _describe_key(certificate)
        dns_names, ip_addresses = _san(extensions)
        return Cert(
            position=position,
            der=der,
            certificate=certificate,
            subject=subject,
            issuer=_name_text(certificate.issuer),
            common_name=_common_name(certificate.subject, subject or "no subject"),
            not_before=not_before,
            not_after=not_after,
            sha256=fingerprint(der),
            key_type=key_type,
            key_bits=key_bits,
            key=key,
            signature_hash=_signature_hash(certificate),
            self_issued=certificate.subject == certificate.issuer,
            self_signed=certificate.subject == certificate.issuer
            and _signed_by(certificate, certificate),
            is_ca=_is_ca(extensions),
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            must_staple=_must_staple(extensions),
        )


def _reason(exc: Exception) -> str:
    text = shorten(str(exc), 160) or type(exc).__name__
    return text


@lru_cache(maxsize=512)
def _parse(chain: tuple[bytes, ...]) -> ParsedChain:
    certs: list[Cert] = []
    problems: list[str] = []
    for position, der in enumerate(chain[:MAX_CERTIFICATES]):
        where = "the leaf" if position == 0 else f"certificate {position}"
        try:
            certs.append(_read(position, der))
        except _PARSE_ERRORS as exc:
            problems.append(f"{where} is not a readable X.509 certificate: {_reason(exc)}")
    if len(chain) > MAX_CERTIFICATES:
        problems.append(
            f"the server sent {len(chain)} certificates; only the first {MAX_CERTIFICATES} "
            "were read (a real chain holds two to four)"
        )
    return ParsedChain(tuple(certs), tuple(problems), len(chain))


def parse_chain(chain: Sequence[bytes]) -> ParsedChain:
    """The certificates of ``chain`` (DER, leaf first, as sent). Never raises."""
    return _parse(tuple(bytes(der) for der in chain))


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def find_issuer(parsed: ParsedChain, trust: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The certificate that signed the leaf: one the server sent, else a trusted one; None when
    neither (then neither OCSP nor a staple can be verified)."""
    leaf = parsed.leaf
    if leaf is None:
        return None
    issuer = leaf.certificate.issuer
    for cert in parsed.others:
        if cert.certificate.subject == issuer and signed_by(leaf, cert.certificate):
            return cert.certificate
    for anchor in trust:
        if anchor.subject == issuer and signed_by(leaf, anchor):
            return anchor
    return None


def leaf_and_issuer(
    chain: Sequence[bytes], trust: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, x509.Certificate] | None:
    """What a revocation lookup needs for the chain a server sent, or None when the leaf is
    unreadable or its issuer is neither sent nor trusted."""
    parsed = parse_chain(chain)
    issuer = find_issuer(parsed, trust)
    if parsed.leaf is None or issuer is None:
        return None
    return parsed.leaf.certificate, issuer
