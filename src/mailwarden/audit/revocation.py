"""Is a server's certificate revoked? OCSP first, the CRL when OCSP cannot say, verified by hand.

``cryptography`` parses OCSP responses and CRLs but verifies neither, and its path validation
ignores revocation altogether, so every signature, signer and date is checked here:

* OCSP (RFC 6960) when the certificate names a responder: a request with a SHA-1 CertID (what
  responders index by) and a nonce, POSTed; the answer for this serial and issuer, signed by the
  issuer or by a responder certificate the issuer issued directly for OCSP signing, current
  (thisUpdate not in the future, nextUpdate not passed), the nonce echoed when it comes back.
* The CRL (RFC 5280) from the CRL distribution point, when the certificate has no responder or
  the responder failed (unreachable, malformed, badly signed, stale, or "unknown"): signed by the
  issuer, nextUpdate not passed, the serial looked up. A certificate with only a CRL is normal
  (Let's Encrypt stopped OCSP in 2025).

An unreachable responder and CRL make the verdict ``unavailable``: the audit cannot tell, which is
never a reason for a critical alert. The network is reached only through the injected
:data:`Fetch`, so the runner and the tests decide how.
"""

from __future__ import annotations

import asyncio
import base64
import os
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    SignatureAlgorithmOID,
)

from mailwarden.audit.model import Endpoint
from mailwarden.discovery.http import HttpFailure, request
from mailwarden.discovery.net import Network
from mailwarden.findings import Finding, Severity

Status = Literal["good", "revoked", "unknown", "unavailable", "not-checkable"]
Source = Literal["ocsp", "crl", "staple", "none"]
FailureKind = Literal["unavailable", "invalid", "stale", "unknown"]
"""``unavailable``: no answer (unreachable, HTTP error, responder busy); ``invalid``: an answer
that cannot be trusted (malformed, bad signature, wrong signer, not about this certificate);
``stale``: a valid answer past its nextUpdate (or not yet valid); ``unknown``: the responder
does not know the certificate."""

Fetch = Callable[[str, str, bytes | None, str], Awaitable[tuple[int, bytes]]]
"""``(method, url, body, content_type) -> (HTTP status, body)``; raises :class:`FetchError` (or
any exception: each becomes ``unavailable``) when no answer came."""

MAX_CRL_BYTES = 10 * 1024 * 1024
"""Large public CAs shard their CRLs to a few MB at most; a bigger body is refused."""

MAX_OCSP_BYTES = 64 * 1024
"""An OCSP response is a few kB even with the responder's certificate chain."""

CLOCK_SKEW = timedelta(minutes=5)
"""Tolerance for the responder's, the CRL issuer's and our clock."""

MAX_AGE_WITHOUT_NEXT_UPDATE = timedelta(days=7)
"""An answer without nextUpdate ("newer information is always available") is taken as current
for this long after its thisUpdate, as browsers do for CRLs and OCSP."""

MAX_REDIRECTS = 3
NONCE_BYTES = 16


class FetchError(Exception):
    """No answer: the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """Why one source (a responder, a CRL, a staple) gave no usable verdict."""

    source: Literal["ocsp", "crl", "staple"]
    kind: FailureKind
    message: str
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "message": self.message, "url": self.url}


@dataclass(frozen=True, slots=True)
class Revocation:
    """The revocation verdict about one certificate and where it came from."""

    status: Status
    """``good`` / ``revoked``: a verified answer says so; ``unknown``: the responder does not
    know the certificate and no CRL settled it; ``unavailable``: no source gave a usable answer;
    ``not-checkable``: the certificate names neither a responder nor a CRL."""
    source: Source
    """What the verdict rests on (``none`` when nothing answered)."""
    detail: str
    """One line for people: the verdict, the source, who signed it, until when it holds."""
    reason: str | None = None
    """The revocation reason (RFC 5280 name, e.g. ``keyCompromise``) when revoked and given."""
    revoked_at: str | None = None
    """ISO 8601, UTC."""
    this_update: str | None = None
    """ISO 8601, UTC, of the answer the verdict rests on."""
    next_update: str | None = None
    url: str | None = None
    """The responder or CRL that answered."""
    failures: tuple[SourceFailure, ...] = ()
    """Every source that failed on the way, in the order tried (also when another answered)."""
    serial: str = ""
    """The certificate's serial number, upper-case hex."""
    subject: str = ""
    """The certificate's subject (RFC 4514), for messages."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "source": self.source,
            "detail": self.detail,
            "reason": self.reason,
            "revoked_at": self.revoked_at,
            "this_update": self.this_update,
            "next_update": self.next_update,
            "url": self.url,
            "failures": [f.to_dict() for f in self.failures],
            "serial": self.serial,
            "subject": self.subject,
        }


class _Rejected(Exception):
    """An answer that gives no verdict; ``kind`` says why (see :data:`FailureKind`)."""

    def __init__(self, kind: FailureKind, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.http_status = http_status


_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    InvalidSignature,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)
"""What ``cryptography`` raises, often lazily at first access, on malformed input."""


# ------------------------------------------------------------------------------ fetching


def http_fetch(network: Network, *, timeout: float = 10.0, max_body: int = MAX_CRL_BYTES) -> Fetch:
    """A :data:`Fetch` over :func:`mailwarden.discovery.http.request`: our resolver, bounded in
    time and size, redirects of GET requests followed (CRLs often sit behind a CDN redirect)."""

    async def fetch(
        method: str, url: str, body: bytes | None, content_type: str
    ) -> tuple[int, bytes]:
        headers = [("User-Agent", "mailwarden-audit")]
        if body is not None and content_type:
            headers.append(("Content-Type", content_type))
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await request(
                    network,
                    method,
                    url,
                    headers=headers,
                    body=body,
                    timeout=timeout,
                    max_body=max_body,
                )
            except HttpFailure as exc:
                raise FetchError(exc.message) from None
            location = response.location
            if method != "GET" or response.status not in (301, 302, 303, 307, 308) or not location:
                return response.status, response.body
            url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise FetchError(f"redirected to {_short(url)}, not an HTTP URL")
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    return fetch


async def _get(
    fetch: Fetch, method: str, url: str, body: bytes | None, content_type: str, timeout: float
) -> bytes:
    """The body of a 200 answer, or :class:`_Rejected` (``unavailable``) saying why not."""
    try:
        async with asyncio.timeout(timeout):
            status, data = await fetch(method, url, body, content_type)
    except TimeoutError:
        raise _Rejected("unavailable", f"no answer within {timeout:g} s") from None
    except FetchError as exc:
        raise _Rejected("unavailable", str(exc)) from None
    except Exception as exc:  # an injected fetcher's own failure is still only "no answer"
        raise _Rejected("unavailable", f"{type(exc).__name__}: {exc}") from None
    if status != 200:
        raise _Rejected("unavailable", f"HTTP status {status}", http_status=status)
    return data


# ------------------------------------------------------------------------------ certificate


def _urls(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    """HTTP(S) OCSP responder and CRL URLs of ``leaf`` (LDAP and other schemes are skipped:
    mail servers' clients do not use them either)."""
    ocsp_urls: list[str] = []
    crl_urls: list[str] = []
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp_urls = [
            d.access_location.value
            for d in aia
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        ]
    except x509.ExtensionNotFound:
        pass
    try:
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        for point in points:
            for name in point.full_name or ():
                if isinstance(name, x509.UniformResourceIdentifier):
                    crl_urls.append(name.value)
    except x509.ExtensionNotFound:
        pass
    return _http_only(ocsp_urls), _http_only(crl_urls)


def _http_only(urls: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for url in urls:
        if url.lower().startswith(("http://", "https://")) and url not in seen:
            seen.append(url)
    return seen


def _serial(certificate: x509.Certificate) -> str:
    try:
        return format(certificate.serial_number, "X")
    except _PARSE_ERRORS:
        return "?"


def _subject(certificate: x509.Certificate) -> str:
    try:
        return certificate.subject.rfc4514_string()
    except _PARSE_ERRORS:
        return "(unreadable subject)"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


# ------------------------------------------------------------------------------ OCSP


@dataclass(frozen=True, slots=True)
class _Answer:
    """A verified answer: good, revoked or unknown."""

    status: Literal["good", "revoked", "unknown"]
    signer: str
    this_update: datetime
    next_update: datetime | None
    revoked_at: datetime | None = None
    reason: str | None = None


def _verify_with(
    public_key: Any, signature: bytes, data: bytes, algorithm_oid: Any, hash_algorithm: Any
) -> None:
    """Verify ``signature`` over ``data``; raises InvalidSignature or :class:`_Rejected`."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if hash_algorithm is None:
            raise _Rejected("invalid", "RSA signature without a hash algorithm")
        if algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
            pad: padding.AsymmetricPadding = padding.PSS(
                padding.MGF1(hash_algorithm), padding.PSS.AUTO
            )
        else:
            pad = padding.PKCS1v15()
        public_key.verify(signature, data, pad, hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if hash_algorithm is None:
            raise _Rejected("invalid", "ECDSA signature without a hash algorithm")
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, data)
    else:
        raise _Rejected("invalid", f"unsupported signer key {type(public_key).__name__}")


def _verify_signer(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> str:
    """Check who signed ``response`` and that the signature holds; return who, for people.

    RFC 6960 4.2.2.2: the issuer itself, or a responder certificate the issuer issued directly
    with id-kp-OCSPSigning (and valid now). Any other signer is refused, even a valid one.
    """
    by_name = response.responder_name
    by_key = None if by_name is not None else response.responder_key_hash

    def is_signer(candidate: x509.Certificate) -> bool:
        if by_name is not None:
            return candidate.subject == by_name
        key_id = x509.SubjectKeyIdentifier.from_public_key(candidate.public_key())
        return key_id.digest == by_key

    if is_signer(issuer):
        signer, who = issuer, "the issuer"
    else:
        signer_found = next((c for c in response.certificates if is_signer(c)), None)
        if signer_found is None:
            raise _Rejected(
                "invalid", "signed neither by the issuer nor by a responder certificate it carries"
            )
        signer = signer_found
        try:
            signer.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, x509.InvalidVersion):
            raise _Rejected(
                "invalid",
                f"responder certificate {_subject(signer)} is not issued by the certificate's "
                "issuer",
            ) from None
        try:
            usage = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usage:
            raise _Rejected(
                "invalid", f"responder certificate {_subject(signer)} lacks id-kp-OCSPSigning"
            )
        if not signer.not_valid_before_utc - CLOCK_SKEW <= now <= signer.not_valid_after_utc:
            raise _Rejected(
                "invalid",
                f"responder certificate {_subject(signer)} is not valid now (valid "
                f"{_day(signer.not_valid_before_utc)} to {_day(signer.not_valid_after_utc)})",
            )
        who = f"delegated responder {_subject(signer)}"
    try:
        _verify_with(
            signer.public_key(),
            response.signature,
            response.tbs_response_bytes,
            response.signature_algorithm_oid,
            response.signature_hash_algorithm,
        )
    except InvalidSignature:
        raise _Rejected("invalid", f"signature does not verify with the key of {who}") from None
    return who


_REFUSALS: dict[ocsp.OCSPResponseStatus, tuple[FailureKind, str]] = {
    ocsp.OCSPResponseStatus.TRY_LATER: ("unavailable", "the responder asks to try later"),
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: (
        "unavailable",
        "the responder reports an internal error",
    ),
    ocsp.OCSPResponseStatus.UNAUTHORIZED: (
        "unknown",
        "the responder is not authorised for this certificate",
    ),
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: (
        "invalid",
        "the responder calls the request malformed",
    ),
    ocsp.OCSPResponseStatus.SIG_REQUIRED: ("invalid", "the responder demands signed requests"),
}


def _judge(
    der: bytes,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
    nonce: bytes | None,
) -> _Answer:
    """:func:`_judge_response`, with every parse error of hostile bytes made a rejection."""
    try:
        with warnings.catch_warnings():
            # cryptography warns (UserWarning, deprecations) about odd but parseable names and
            # serials; the verdict says what matters.
            warnings.simplefilter("ignore")
            return _judge_response(der, leaf, issuer, now, nonce)
    except _PARSE_ERRORS as exc:
        raise _Rejected("invalid", f"unreadable response ({_short(str(exc), 80)})") from None


def _judge_response(
    der: bytes,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
    nonce: bytes | None,
) -> _Answer:
    """Verify one DER OCSP response about ``leaf``; raises :class:`_Rejected` when it gives no
    trustworthy verdict."""
    if not der:
        raise _Rejected("invalid", "empty response")
    if len(der) > MAX_OCSP_BYTES:
        raise _Rejected("invalid", f"response of {len(der)} bytes, over {MAX_OCSP_BYTES}")
    try:
        response = ocsp.load_der_ocsp_response(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise _Rejected("invalid", f"not an OCSP response ({_short(str(exc), 80)})") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        kind, why = _REFUSALS.get(
            response.response_status, ("invalid", str(response.response_status.name))
        )
        raise _Rejected(kind, why)
    single = _single_for(response, leaf, issuer)
    signer = _verify_signer(response, issuer, now)
    if nonce is not None:
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None  # a pre-signed or cached answer: allowed (RFC 5019), dates decide
        if echoed is not None and echoed != nonce:
            raise _Rejected("invalid", "the nonce in the response is not the one sent")
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise _Rejected("stale", f"thisUpdate {_day(this_update)} is in the future")
    if next_update is not None and now >= next_update + CLOCK_SKEW:
        raise _Rejected("stale", f"nextUpdate {_day(next_update)} has passed")
    if next_update is None and now > this_update + MAX_AGE_WITHOUT_NEXT_UPDATE:
        raise _Rejected(
            "stale", f"thisUpdate {_day(this_update)} is old and no nextUpdate is given"
        )
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason
        return _Answer(
            "revoked",
            signer,
            this_update,
            next_update,
            single.revocation_time_utc,
            None if reason is None else reason.value,
        )
    if status == ocsp.OCSPCertStatus.GOOD:
        return _Answer("good", signer, this_update, next_update)
    return _Answer("unknown", signer, this_update, next_update)


def _single_for(
    response: ocsp.OCSPResponse, leaf: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    """The SingleResponse about ``leaf`` (serial and issuer hashes, in the hash the responder
    used): a response may carry several, and one about another certificate proves nothing."""
    serial = leaf.serial_number
    expected: dict[str, tuple[bytes, bytes]] = {}
    for single in response.responses:
        if single.serial_number != serial:
            continue
        algorithm = single.hash_algorithm
        if algorithm.name not in expected:
            try:
                request_ = (
                    ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm).build()
                )
            except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
                continue
            expected[algorithm.name] = (request_.issuer_name_hash, request_.issuer_key_hash)
        if (single.issuer_name_hash, single.issuer_key_hash) == expected[algorithm.name]:
            return single
    raise _Rejected("invalid", "the response holds no answer about this certificate")


def _ocsp_request(leaf: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """A DER request with a SHA-1 CertID (what responders, RFC 5019, index by) and a nonce."""
    nonce = os.urandom(NONCE_BYTES)
    built = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, issuer, hashes.SHA1())  # noqa: S303 - the CertID, not security
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
    )
    return built.public_bytes(serialization.Encoding.DER), nonce


def _get_url(url: str, der: bytes) -> str:
    """RFC 6960 A.1 GET form: the base64 request, URL-encoded, after the responder URL."""
    return url.rstrip("/") + "/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")


async def _ask_responder(
    url: str,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    fetch: Fetch,
    now: datetime,
    timeout: float,
) -> _Answer:
    try:
        der, nonce = _ocsp_request(leaf, issuer)
    except _PARSE_ERRORS as exc:  # an issuer key or serial cryptography cannot hash
        raise _Rejected("unavailable", f"cannot build a request ({_short(str(exc), 80)})") from None
    try:
        body = await _get(fetch, "POST", url, der, "application/ocsp-request", timeout)
    except _Rejected as exc:
        if exc.http_status != 405:  # a responder that takes only GET (RFC 6960 A.1 allows it)
            raise
        body = await _get(fetch, "GET", _get_url(url, der), None, "", timeout)
    return _judge(body, leaf, issuer, now, nonce)


# ------------------------------------------------------------------------------ CRL


@dataclass(frozen=True, slots=True)
class _CrlAnswer:
    status: Literal["good", "revoked"]
    this_update: datetime
    next_update: datetime | None
    revoked_at: datetime | None = None
    reason: str | None = None
    stale: str | None = None
    """Why the CRL is past its time, when it is but still lists the certificate."""


def _parse_crl(body: bytes) -> x509.CertificateRevocationList:
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(body)
        return x509.load_der_x509_crl(body)
    except (ValueError, x509.InvalidVersion) as exc:  # a damaged version field is not a ValueError
        raise _Rejected("invalid", f"not a CRL ({_short(str(exc), 80)})") from None


def _judge_crl(
    crl: x509.CertificateRevocationList,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
) -> _CrlAnswer:
    if crl.issuer != issuer.subject:
        raise _Rejected("invalid", f"issued by {crl.issuer.rfc4514_string()}, not by the issuer")
    try:
        signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        signed = False
    if not signed:
        raise _Rejected("invalid", "signature does not verify with the issuer's key")
    try:
        scope = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        scope = None
    if scope is not None and (scope.only_contains_ca_certs or scope.only_contains_attribute_certs):
        raise _Rejected("invalid", "the CRL covers only CA or attribute certificates")
    this_update, next_update = crl.last_update_utc, crl.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise _Rejected("stale", f"thisUpdate {_day(this_update)} is in the future")
    stale = None
    if next_update is not None and now >= next_update + CLOCK_SKEW:
        stale = f"nextUpdate {_day(next_update)} has passed"
    elif next_update is None and now > this_update + MAX_AGE_WITHOUT_NEXT_UPDATE:
        stale = f"thisUpdate {_day(this_update)} is old and no nextUpdate is given"
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    if entry is None:
        if stale is not None:
            # An old CRL that does not list the certificate proves nothing about today.
            raise _Rejected("stale", stale)
        return _CrlAnswer("good", this_update, next_update)
    try:
        reason: str | None = entry.extensions.get_extension_for_class(
            x509.CRLReason
        ).value.reason.value
    except x509.ExtensionNotFound:
        reason = None
    # A revocation stays true however old the list that records it.
    return _CrlAnswer("revoked", this_update, next_update, entry.revocation_date_utc, reason, stale)


class CrlCache:
    """Each CRL fetched and parsed once per audit: one CA's CRL answers for every certificate it
    issued, and the big public ones take a while to download and parse. Safe for concurrent use
    within one event loop: the first caller fetches, the others wait for the same result."""

    def __init__(self) -> None:
        self._loads: dict[str, asyncio.Task[x509.CertificateRevocationList]] = {}

    async def load(self, url: str, fetch: Fetch, timeout: float) -> x509.CertificateRevocationList:
        task = self._loads.get(url)
        if task is None:
            task = asyncio.ensure_future(_load_crl(url, fetch, timeout))
            self._loads[url] = task
        # Shielded: one caller giving up must not cancel the download the others wait for.
        return await asyncio.shield(task)


async def _load_crl(url: str, fetch: Fetch, timeout: float) -> x509.CertificateRevocationList:
    body = await _get(fetch, "GET", url, None, "", timeout)
    if len(body) > MAX_CRL_BYTES:
        raise _Rejected("invalid", f"CRL of {len(body)} bytes, over {MAX_CRL_BYTES}")
    return _parse_crl(body)


async def _consult_crl(
    url: str,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    fetch: Fetch,
    now: datetime,
    timeout: float,
    cache: CrlCache | None,
) -> _CrlAnswer:
    if cache is not None:
        crl = await cache.load(url, fetch, timeout)
    else:
        crl = await _load_crl(url, fetch, timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _judge_crl(crl, leaf, issuer, now)
    except _PARSE_ERRORS as exc:
        raise _Rejected("invalid", f"unreadable CRL ({_short(str(exc), 80)})") from None


# ------------------------------------------------------------------------------ the verdict


async def check_revocation(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    fetch: Fetch,
    *,
    now: datetime,
    timeout: float,
    crl_cache: CrlCache | None = None,
) -> Revocation:
    """The revocation status of ``leaf`` (issued by ``issuer``): OCSP, else the CRL.

    Each request is bounded by ``timeout`` seconds. Never raises: every failure is recorded in
    :attr:`Revocation.failures` and, when nothing answered, gives ``unavailable``.
    """
    now = _utc(now)
    serial, subject = _serial(leaf), _subject(leaf)
    try:
        ocsp_urls, crl_urls = _urls(leaf)
    except _PARSE_ERRORS as exc:
        return Revocation(
            "not-checkable",
            "none",
            f"the certificate's extensions cannot be read ({_short(str(exc), 80)})",
            serial=serial,
            subject=subject,
        )
    if not ocsp_urls and not crl_urls:
        return Revocation(
            "not-checkable",
            "none",
            "the certificate names no OCSP responder and no CRL",
            serial=serial,
            subject=subject,
        )
    base = Revocation("unavailable", "none", "", serial=serial, subject=subject)
    failures: list[SourceFailure] = []
    unknown_at: str | None = None
    for url in ocsp_urls:
        try:
            answer = await _ask_responder(url, leaf, issuer, fetch, now, timeout)
        except _Rejected as exc:
            failures.append(SourceFailure("ocsp", exc.kind, str(exc), url))
            continue
        if answer.status == "unknown":
            unknown_at = url
            failures.append(
                SourceFailure("ocsp", "unknown", "the responder does not know the certificate", url)
            )
            continue
        return replace(
            base,
            status=answer.status,
            source="ocsp",
            detail=_ocsp_detail(answer, url),
            reason=answer.reason,
            revoked_at=_iso(answer.revoked_at),
            this_update=_iso(answer.this_update),
            next_update=_iso(answer.next_update),
            url=url,
            failures=tuple(failures),
        )
    for url in crl_urls:
        try:
            listed = await _consult_crl(url, leaf, issuer, fetch, now, timeout, crl_cache)
        except _Rejected as exc:
            failures.append(SourceFailure("crl", exc.kind, str(exc), url))
            continue
        if listed.stale is not None:
            failures.append(SourceFailure("crl", "stale", listed.stale, url))
        return replace(
            base,
            status=listed.status,
            source="crl",
            detail=_crl_detail(listed, url, bool(ocsp_urls)),
            reason=listed.reason,
            revoked_at=_iso(listed.revoked_at),
            this_update=_iso(listed.this_update),
            next_update=_iso(listed.next_update),
            url=url,
            failures=tuple(failures),
        )
    why = "; ".join(f"{f.source} {f.url}: {f.message}" for f in failures)
    if unknown_at is not None:
        return replace(
            base,
            status="unknown",
            source="ocsp",
            detail=f"the responder does not know the certificate and no CRL settles it ({why})",
            url=unknown_at,
            failures=tuple(failures),
        )
    return replace(base, detail=f"no source answered ({why})", failures=tuple(failures))


def _ocsp_detail(answer: _Answer, url: str) -> str:
    until = f", next update {_day(answer.next_update)}" if answer.next_update else ""
    if answer.status == "revoked":
        when = f" since {_day(answer.revoked_at)}" if answer.revoked_at else ""
        because = f" ({answer.reason})" if answer.reason else ""
        return f"revoked{when}{because} per OCSP {url}, signed by {answer.signer}"
    return f"good per OCSP {url}, signed by {answer.signer}{until}"


def _crl_detail(answer: _CrlAnswer, url: str, after_ocsp: bool) -> str:
    fallback = " (the OCSP responder gave no answer)" if after_ocsp else ""
    if answer.status == "revoked":
        when = f" since {_day(answer.revoked_at)}" if answer.revoked_at else ""
        because = f" ({answer.reason})" if answer.reason else ""
        return f"revoked{when}{because} per the CRL {url}{fallback}"
    until = f", next update {_day(answer.next_update)}" if answer.next_update else ""
    return f"not listed in the CRL {url}{until}{fallback}"


def verify_staple(
    der: bytes, leaf: x509.Certificate, issuer: x509.Certificate, *, now: datetime
) -> Revocation:
    """Judge a stapled OCSP response with the same rules as a fetched one (source ``staple``).

    Never raises: a staple that cannot be trusted gives ``unavailable`` with the reason in
    :attr:`Revocation.failures`; one saying ``unknown`` gives ``unknown``.
    """
    now = _utc(now)
    base = Revocation("unavailable", "staple", "", serial=_serial(leaf), subject=_subject(leaf))
    try:
        answer = _judge(der, leaf, issuer, now, None)
    except _Rejected as exc:
        failure = SourceFailure("staple", exc.kind, str(exc))
        return replace(base, detail=f"stapled response not usable: {exc}", failures=(failure,))
    if answer.status == "unknown":
        failure = SourceFailure("staple", "unknown", "the stapled response says unknown")
        return replace(
            base,
            status="unknown",
            detail="the stapled response says the responder does not know the certificate",
            this_update=_iso(answer.this_update),
            next_update=_iso(answer.next_update),
            failures=(failure,),
        )
    detail = _ocsp_detail(answer, "staple").replace("per OCSP staple", "per the stapled response")
    return replace(
        base,
        status=answer.status,
        detail=detail,
        reason=answer.reason,
        revoked_at=_iso(answer.revoked_at),
        this_update=_iso(answer.this_update),
        next_update=_iso(answer.next_update),
    )


# ------------------------------------------------------------------------------ findings

CODES: dict[str, str] = {
    "TLS-REVOKED": (
        "The certificate has been revoked by its CA, as a verified OCSP answer, the CA's CRL or "
        "the server's own stapled response says (the message gives the source, the date and "
        "the reason). Clients that check revocation refuse the connection; the others trust a "
        "certificate whose key may be in someone else's hands. Install a newly issued "
        "certificate with a new key and reload the server; find out why it was revoked "
        "(keyCompromise means the old key must be considered stolen)."
    ),
    "TLS-REVOCATION-UNAVAILABLE": (
        "The audit could not learn whether the certificate is revoked: the OCSP responder and "
        "the CRL were unreachable or gave no usable answer (the message lists each attempt). "
        "This is 'unknown', not a fault of the server: it often means the auditing host cannot "
        "reach the CA (firewall, proxy, no route). If clients cannot reach it either, those "
        "that hard-fail reject the certificate. Check that the auditing host can reach the "
        "URLs in the certificate's AIA and CRL distribution point extensions; if they are "
        "down for everyone, tell the CA."
    ),
    "TLS-OCSP-UNAVAILABLE": (
        "The OCSP responder named in the certificate did not answer (connection refused, "
        "timeout, an HTTP error, 'try later'), but the CRL gave the verdict. Clients that only "
        "use OCSP cannot check the certificate and either accept it blindly or refuse it. "
        "Make sure the auditing host and the clients can reach the responder; if it is the "
        "CA's, report the outage to the CA. Stapling (nginx ssl_stapling) spares HTTPS clients "
        "the lookup."
    ),
    "TLS-OCSP-INVALID": (
        "The OCSP responder answered, but the answer cannot be trusted: it is malformed, its "
        "signature does not verify, it is signed by a certificate the issuer did not authorise "
        "for OCSP, it is about another certificate, its nonce is wrong, or it is stale "
        "(nextUpdate passed, thisUpdate in the future). The audit fell back to the CRL. "
        "Clients reject such answers and, depending on their policy, the certificate. For an "
        "internal CA: renew the responder's signing certificate (EKU OCSPSigning, issued by "
        "the same CA), make it re-sign its answers before nextUpdate, and check its clock; for "
        "a public CA, report it to the CA."
    ),
    "TLS-OCSP-UNKNOWN": (
        "The OCSP responder says it does not know the certificate (status 'unknown' or "
        "'unauthorized'): the certificate is not in the CA's database, or the responder serves "
        "another CA. Strict clients treat this like a revocation. Often the certificate was "
        "issued outside the CA's normal process, or the responder's database is out of date. "
        "Fix the responder's index (an internal CA), or ask the CA; the audit used the CRL "
        "when it could."
    ),
    "TLS-CRL-UNAVAILABLE": (
        "A CRL distribution point named in the certificate could not be fetched, while another "
        "source gave the verdict. Clients that rely on CRLs cannot check the certificate. "
        "Make sure the CRL URL is reachable over HTTP from the clients' networks."
    ),
    "TLS-CRL-INVALID": (
        "The CRL was fetched but cannot be used: it is not a CRL, it is too large, it is "
        "issued by another CA, its signature does not verify with the issuer's key, or it only "
        "covers CA certificates. Clients ignore it or reject the certificate. Publish the CRL "
        "the issuing CA signs (DER, as `openssl ca -gencrl` or the CA software writes it) at "
        "the URL in the certificate."
    ),
    "TLS-CRL-STALE": (
        "The CRL is past its nextUpdate (or dated in the future): the CA has not published a "
        "fresh one. A stale CRL that does not list the certificate proves nothing about "
        "today, and clients treat it as unavailable or reject the certificate. Re-issue the "
        "CRL regularly, well before nextUpdate (a cron job running `openssl ca -gencrl`, or the "
        "CA software's CRL publication), and check the CA host's clock."
    ),
    "TLS-STAPLE-INVALID": (
        "The server staples an OCSP response that cannot be trusted: malformed, badly signed, "
        "about another certificate, or stale (nextUpdate passed: the server stopped refreshing "
        "it). Clients reject a bad staple, and with a must-staple certificate the connection "
        "fails. Let the server fetch fresh responses (nginx ssl_stapling on with a resolver, "
        "or refresh the ssl_stapling_file before nextUpdate) and check it can reach the "
        "responder."
    ),
    "TLS-NO-REVOCATION-INFO": (
        "The certificate names neither an OCSP responder (AIA) nor a CRL distribution point, so "
        "nobody can learn that it was revoked. Normal for a self-signed or some internal "
        "certificates, unusual for a public CA. If the certificate comes from an internal CA, "
        "add authorityInfoAccess OCSP and crlDistributionPoints URLs to its issuing profile."
    ),
}

_SOURCE_CODES: dict[tuple[str, FailureKind], str] = {
    ("ocsp", "unavailable"): "TLS-OCSP-UNAVAILABLE",
    ("ocsp", "invalid"): "TLS-OCSP-INVALID",
    ("ocsp", "stale"): "TLS-OCSP-INVALID",
    ("ocsp", "unknown"): "TLS-OCSP-UNKNOWN",
    ("crl", "unavailable"): "TLS-CRL-UNAVAILABLE",
    ("crl", "invalid"): "TLS-CRL-INVALID",
    ("crl", "stale"): "TLS-CRL-STALE",
    ("crl", "unknown"): "TLS-CRL-INVALID",
    ("staple", "unavailable"): "TLS-STAPLE-INVALID",
    ("staple", "invalid"): "TLS-STAPLE-INVALID",
    ("staple", "stale"): "TLS-STAPLE-INVALID",
    ("staple", "unknown"): "TLS-OCSP-UNKNOWN",
}

_FIXES = {
    "TLS-REVOKED": "install a newly issued certificate with a new key and reload the server",
    "TLS-REVOCATION-UNAVAILABLE": (
        "check that this host can reach the OCSP and CRL URLs in the certificate"
    ),
    "TLS-OCSP-UNAVAILABLE": "make the OCSP responder reachable (or report its outage to the CA)",
    "TLS-OCSP-INVALID": (
        "have the responder sign with the issuer or a current OCSPSigning certificate of it, "
        "and refresh its answers before nextUpdate"
    ),
    "TLS-OCSP-UNKNOWN": "enter the certificate in the CA's responder database (or ask the CA)",
    "TLS-CRL-UNAVAILABLE": "publish the CRL at the URL in the certificate",
    "TLS-CRL-INVALID": "publish the CRL signed by the issuing CA at the URL in the certificate",
    "TLS-CRL-STALE": "re-issue the CRL before its nextUpdate (and check the CA host's clock)",
    "TLS-STAPLE-INVALID": "let the server fetch fresh OCSP responses to staple",
    "TLS-NO-REVOCATION-INFO": "add OCSP and CRL distribution point URLs to the issuing profile",
}

_SEVERITY = {
    "TLS-REVOKED": Severity.ERROR,
    "TLS-REVOCATION-UNAVAILABLE": Severity.UNKNOWN,
    "TLS-OCSP-UNAVAILABLE": Severity.WARNING,
    "TLS-OCSP-INVALID": Severity.WARNING,
    "TLS-OCSP-UNKNOWN": Severity.WARNING,
    "TLS-CRL-UNAVAILABLE": Severity.WARNING,
    "TLS-CRL-INVALID": Severity.WARNING,
    "TLS-CRL-STALE": Severity.WARNING,
    "TLS-STAPLE-INVALID": Severity.WARNING,
    "TLS-NO-REVOCATION-INFO": Severity.INFO,
}
SEVERITIES: dict[str, Severity] = dict(_SEVERITY)
"""The severity each code is reported with (documentation and tests read it)."""


def _finding(code: str, endpoint: Endpoint, message: str) -> Finding:
    return Finding(_SEVERITY[code], code, endpoint.label, message, _FIXES[code])


def revocation_findings(r: Revocation, endpoint: Endpoint) -> list[Finding]:
    """The findings a verdict gives for the certificate ``endpoint`` presented.

    Unreachable sources are folded into one ``unknown`` finding when nothing answered (the
    audit cannot tell; never critical), and reported as warnings when another source answered.
    Answers that could not be trusted (bad signature, stale, unknown certificate) are warnings
    in every case: they are faults of the CA's services, whatever the verdict.
    """
    certificate = f"certificate {r.subject or '(no subject)'} (serial {r.serial or '?'})"
    found: list[Finding] = []
    if r.status == "revoked":
        when = f" since {r.revoked_at}" if r.revoked_at else ""
        because = f", reason {r.reason}" if r.reason else ""
        where = {
            "ocsp": f"the OCSP responder {r.url}",
            "crl": f"the CRL {r.url}",
            "staple": "the server's stapled OCSP response",
        }.get(r.source, "its CA")
        found.append(
            _finding(
                "TLS-REVOKED", endpoint, f"{certificate} is revoked{when}{because}, says {where}"
            )
        )
    elif r.status == "not-checkable":
        found.append(
            _finding(
                "TLS-NO-REVOCATION-INFO",
                endpoint,
                f"{certificate} names no OCSP responder and no CRL: "
                "its revocation cannot be checked",
            )
        )
    answered = r.status in ("good", "revoked")
    for failure in r.failures:
        code = _SOURCE_CODES[(failure.source, failure.kind)]
        if failure.kind == "unavailable" and failure.source != "staple" and not answered:
            continue  # folded into TLS-REVOCATION-UNAVAILABLE below
        where = f" {failure.url}" if failure.url else ""
        what = {"ocsp": "OCSP responder", "crl": "CRL", "staple": "stapled OCSP response"}[
            failure.source
        ]
        found.append(_finding(code, endpoint, f"{what}{where}: {failure.message}"))
    if r.source != "staple" and r.status in ("unknown", "unavailable"):
        found.append(
            _finding(
                "TLS-REVOCATION-UNAVAILABLE",
                endpoint,
                f"cannot tell whether {certificate} is revoked: {r.detail}",
            )
        )
    return found
