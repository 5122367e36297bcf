"""Signing Apple profiles: CMS (PKCS#7) SignedData, DER, with the plist embedded.

Devices show a signed profile as "Verified" when the signer chains to a root they trust, so the
intermediates travel inside the signature (protocols.md §4.3). :func:`load_signer` is the I/O
edge, run once at start-up so that a bad key stops the server loudly instead of every download
failing; :meth:`Signer.sign` is pure and costs one private-key operation per profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from mailwarden.errors import ConfigError
from mailwarden.site.model import ProfileSettings

MAX_PEM_FILE = 1024 * 1024

SignerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Signer:
    """A certificate, its private key and the intermediates that lead to a trusted root."""

    certificate: x509.Certificate
    key: SignerKey
    chain: tuple[x509.Certificate, ...] = ()

    def sign(self, data: bytes) -> bytes:
        """``data`` wrapped in DER SignedData: embedded (not detached), SHA-256, binary mode so
        that line endings of the plist are signed exactly as they are."""
        builder = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(self.certificate, self.key, hashes.SHA256())
        )
        for certificate in self.chain:
            builder = builder.add_certificate(certificate)
        return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the profile {what}: {exc.strerror}") from None
    if len(data) > MAX_PEM_FILE:
        raise ConfigError(f"{path}: the profile {what} is larger than 1 MiB")
    return data


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(_read(path, what))
    except ValueError:
        found = []
    if not found:
        raise ConfigError(f"{path}: no PEM certificate in the profile {what}")
    return found


def load_signer(settings: ProfileSettings) -> Signer | None:
    """The signer configured in ``[profiles]``, or None when profiles are served unsigned."""
    if settings.signing_certificate is None or settings.signing_key is None:
        return None
    certs = _certificates(settings.signing_certificate, "signing certificate")
    certificate, extra = certs[0], certs[1:]  # a full-chain file carries the intermediates
    key_path = settings.signing_key
    try:
        key = serialization.load_pem_private_key(_read(key_path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{key_path}: not an unencrypted PEM private key ({exc}); "
            "decrypt it with 'openssl pkey -in KEY -out KEY.plain'"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: profiles can be signed with RSA or EC keys only")
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ConfigError(
            f"{key_path}: this key does not belong to the certificate in "
            f"{settings.signing_certificate}"
        )
    if settings.signing_chain is not None:
        extra += _certificates(settings.signing_chain, "signing chain")
    chain: list[x509.Certificate] = []
    for cert in extra:  # a full-chain file and a chain file often repeat each other
        if cert != certificate and cert not in chain:
            chain.append(cert)
    return Signer(certificate, key, tuple(chain))
