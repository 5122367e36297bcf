"""Site-wide check ``dkim``: the public key of each DKIM selector the site signs with (RFC 6376).

DKIM selectors cannot be discovered from DNS (there is no list of them), so the site names
them: ``[audit] dkim_selectors`` and per domain ``[audit.domains."D"] dkim_selectors``. For
each, ``SELECTOR._domainkey.DOMAIN`` TXT must hold a key record a verifier accepts: a valid
tag list, ``v=DKIM1`` first if present, ``k=rsa`` (the default) or ``ed25519``, a ``p=`` that
decodes to a key of that type. RSA keys under 1024 bits are refused by verifiers (RFC 8301),
under 2048 bits they are breakable by a well-funded attacker; ``t=y`` left on after the test
phase lets verifiers treat failures as passes; ``h=sha1`` alone restricts the key to a hash
RFC 8301 forbids. All names are looked up at once, bounded (:class:`BoundedDns`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.authrecords import RecordSyntaxError, parse_tags
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.dnsquery import BoundedDns
from mailwarden.audit.sitewide.dnstxt import txt_texts
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus
from mailwarden.findings import Finding, Severity

NAME = "dkim"
AFTER_SCAN = False

CODES: dict[str, str] = {
    "DKIM-NOT-CONFIGURED": (
        "No DKIM selector is configured for the domain, so DKIM was not checked (selectors "
        "cannot be found in DNS, the site has to name them). Add the selectors the MTA signs "
        'with: [audit] dkim_selectors = ["2024a"], or per domain under '
        '[audit.domains."DOMAIN"].'
    ),
    "DKIM-LOOKUP-FAILED": (
        "The look-up of SELECTOR._domainkey.DOMAIN TXT failed (timeout, SERVFAIL). Verifiers "
        "meeting the same failure give a temporary error and cannot verify the signature. "
        "Check the domain's name servers."
    ),
    "DKIM-NONE": (
        "A configured selector has no key record: SELECTOR._domainkey.DOMAIN has no TXT "
        "record. Every signature made with it fails verification, and DMARC fails unless SPF "
        "aligns. Publish the key the MTA signs with (opendkim-genkey or rspamadm dkim_keygen "
        "print the record), or correct the selector in the site file."
    ),
    "DKIM-MULTIPLE": (
        "More than one TXT record at the selector name. Verifiers may use either, so "
        "signatures fail at random when they differ. Keep exactly one key record per "
        "selector; publish a new key under a new selector."
    ),
    "DKIM-SYNTAX": (
        "The key record is malformed: not a tag=value list, a tag given twice, v= not first "
        "or not DKIM1, or no p= tag. Verifiers ignore the record and every signature fails. "
        "Publish the record exactly as the key tool printed it."
    ),
    "DKIM-KEY-TYPE": (
        "The key record names a key type (k=) other than rsa or ed25519. Verifiers cannot "
        "use the key and signatures fail. Use k=rsa (2048 bits) or k=ed25519 (with an RSA "
        "selector beside it: not every verifier knows ed25519)."
    ),
    "DKIM-REVOKED": (
        "The key record has an empty p=: the key is revoked (RFC 6376 3.6.1), so signatures "
        "made with this selector fail. If the MTA still signs with it, publish its key or "
        "switch the MTA to a current selector; if it does not, remove the selector from the "
        "site file."
    ),
    "DKIM-KEY-INVALID": (
        "The p= value does not decode to a key of the record's type: broken base64, a "
        "truncated key (often a record split wrongly into strings), or a key of another type. "
        "Verifiers cannot use it and signatures fail. Publish the public key again from the "
        "private key the MTA uses."
    ),
    "DKIM-KEY-TOO-SHORT": (
        "The RSA key has fewer than 1024 bits. RFC 8301 makes verifiers refuse such keys, so "
        "signatures fail, and such keys can be factored. Generate a 2048-bit key under a new "
        "selector, publish it, switch the MTA, then revoke the old one."
    ),
    "DKIM-KEY-WEAK": (
        "The RSA key has fewer than 2048 bits (usually 1024). Verifiers still accept it, but "
        "1024-bit RSA is within reach of well-funded attackers, who could then sign mail as "
        "the domain. Roll over to a 2048-bit key under a new selector."
    ),
    "DKIM-TESTING": (
        "The key record has t=y (testing mode): verifiers may treat failed signatures like "
        "unsigned mail, so DKIM protects nothing. Remove t=y once signing works."
    ),
    "DKIM-SHA1": (
        "The key record restricts the key to sha1 (h=sha1). RFC 8301 forbids rsa-sha1, so "
        "verifiers refuse such signatures, and the key cannot be used with sha256. Remove "
        "the h= tag (or set h=sha256)."
    ),
    "DKIM-NOT-EMAIL": (
        "The key record's service types (s=) include neither email nor *: verifiers must not "
        "use the key for mail, so signatures fail. Remove the s= tag."
    ),
}

WEAK_BITS = 2048
TOO_SHORT_BITS = 1024
MAX_RECORDS = 4
"""TXT records judged at one selector name."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A DKIM key record as read (RFC 6376 3.6.1); ``public_key`` without whitespace."""

    public_key: str
    key_type: str = "rsa"
    version: str | None = None
    hashes: tuple[str, ...] | None = None
    flags: tuple[str, ...] = ()
    services: tuple[str, ...] = ("*",)


def _colon_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip(" \t\r\n") for item in value.split(":") if item.strip(" \t\r\n"))


def parse_dkim_key(text: str) -> DkimKey:
    """The key record, or :class:`RecordSyntaxError` when verifiers would ignore it."""
    tags = parse_tags(text)
    values = dict(tags)
    if "v" in values and (tags[0][0] != "v" or values["v"] != "DKIM1"):
        raise RecordSyntaxError("v= must come first and be DKIM1")
    if "p" not in values:
        raise RecordSyntaxError("no p= tag (the public key)")
    return DkimKey(
        public_key="".join(values["p"].split()),
        key_type=values.get("k", "rsa").lower() or "rsa",
        version=values.get("v"),
        hashes=_colon_list(values["h"]) if "h" in values else None,
        flags=_colon_list(values.get("t", "")),
        services=_colon_list(values["s"]) if "s" in values else ("*",),
    )


def key_bits(key: DkimKey) -> int:
    """The key's size in bits, or :class:`RecordSyntaxError` when ``p=`` is no key of its type.

    RSA: DER SubjectPublicKeyInfo as RFC 6376 intends; a bare PKCS#1 RSAPublicKey is
    accepted too, as OpenDKIM and most verifiers do. Ed25519: the raw 32 bytes (RFC 8463).
    """
    try:
        der = base64.b64decode(key.public_key, validate=True)
    except (binascii.Error, ValueError):
        raise RecordSyntaxError("p= is not valid base64") from None
    if key.key_type == "ed25519":
        if len(der) != 32:
            raise RecordSyntaxError(f"an ed25519 key is 32 bytes, p= holds {len(der)}")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(der)
        except (ValueError, UnsupportedAlgorithm):
            raise RecordSyntaxError("p= is not an ed25519 key") from None
        return 256
    try:
        loaded = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        pem = (
            b"-----BEGIN RSA PUBLIC KEY-----\n"
            + base64.encodebytes(der)
            + b"-----END RSA PUBLIC KEY-----\n"
        )
        try:
            loaded = load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise RecordSyntaxError("p= is not a DER-encoded public key") from None
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise RecordSyntaxError(f"p= holds a {type(loaded).__name__}, not an RSA key")
    return loaded.key_size


def judge_key(name: str, text: str) -> tuple[list[Finding], str]:
    """The findings about one key record at ``name`` and a short description (``rsa 2048``)."""

    def finding(severity: Severity, code: str, message: str, fix: str) -> Finding:
        return Finding(severity, code, name, message, fix)

    try:
        key = parse_dkim_key(text)
    except RecordSyntaxError as exc:
        fix = "publish the record as the key tool printed it"
        return [finding(Severity.ERROR, "DKIM-SYNTAX", f"{text[:80]!r}: {exc}", fix)], "invalid"
    findings: list[Finding] = []
    if key.services and not {"*", "email"} & set(key.services):
        findings.append(
            finding(
                Severity.ERROR,
                "DKIM-NOT-EMAIL",
                f"s={':'.join(key.services)[:40]}: not for email",
                "remove s=",
            )
        )
    if "y" in key.flags:
        findings.append(
            finding(Severity.WARNING, "DKIM-TESTING", "t=y: testing mode is on", "remove t=y")
        )
    if key.hashes is not None and "sha256" not in key.hashes:
        findings.append(
            finding(
                Severity.ERROR,  # RFC 8301: verifiers fail every signature this key can make
                "DKIM-SHA1",
                f"h={':'.join(key.hashes)[:40]}: the key may not be used with sha256",
                "remove h= (or set h=sha256)",
            )
        )
    if key.key_type not in ("rsa", "ed25519"):
        message = f"k={key.key_type[:20]}: not rsa or ed25519"
        findings.append(finding(Severity.ERROR, "DKIM-KEY-TYPE", message, "use k=rsa"))
        return findings, key.key_type[:20]
    if not key.public_key:
        message = "p= is empty: the key is revoked"
        fix = "publish the current key, or remove the selector from the site file"
        findings.append(finding(Severity.ERROR, "DKIM-REVOKED", message, fix))
        return findings, "revoked"
    try:
        bits = key_bits(key)
    except RecordSyntaxError as exc:
        fix = "publish the public key again from the private key"
        findings.append(finding(Severity.ERROR, "DKIM-KEY-INVALID", str(exc), fix))
        return findings, "invalid key"
    if key.key_type == "rsa" and bits < TOO_SHORT_BITS:
        message = f"RSA key of {bits} bits: verifiers refuse keys under {TOO_SHORT_BITS}"
        fix = "roll over to a 2048-bit key under a new selector"
        findings.append(finding(Severity.ERROR, "DKIM-KEY-TOO-SHORT", message, fix))
    elif key.key_type == "rsa" and bits < WEAK_BITS:
        message = f"RSA key of {bits} bits (under {WEAK_BITS})"
        fix = "roll over to a 2048-bit key under a new selector"
        findings.append(finding(Severity.WARNING, "DKIM-KEY-WEAK", message, fix))
    return findings, f"{key.key_type} {bits}" if key.key_type == "rsa" else key.key_type


def judge_selector(domain: str, selector: str, answer: DnsAnswer) -> tuple[list[Finding], str]:
    """The findings about one selector's TXT answer, and its part of the detail line."""
    name = f"{selector}._domainkey.{domain}"
    if answer.status.failed:
        finding = Finding(
            Severity.UNKNOWN,
            "DKIM-LOOKUP-FAILED",
            name,
            f"TXT look-up failed: {answer.summary()}",
            "check the domain's name servers",
        )
        return [finding], f"{selector}: ?"
    texts = txt_texts(answer.records) if answer.status is DnsStatus.OK else []
    if not texts:
        finding = Finding(
            Severity.ERROR,
            "DKIM-NONE",
            name,
            f"no key record: {answer.summary()}",
            f"publish the public key of selector {selector} at {name}",
        )
        return [finding], f"{selector}: none"
    findings: list[Finding] = []
    if len(texts) > 1:
        findings.append(
            Finding(
                Severity.WARNING,
                "DKIM-MULTIPLE",
                name,
                f"{len(texts)} TXT records at the selector name",
                "keep one key record per selector",
            )
        )
    described: list[str] = []
    for text in texts[:MAX_RECORDS]:
        more, description = judge_key(name, text)
        findings += more
        described.append(description)
    return findings, f"{selector}: {', '.join(described)}"


async def run(context: SiteContext) -> list[CheckResult]:
    """One result per served domain; every selector of every domain looked up at once."""
    dns = BoundedDns(context.resolver)
    return list(await asyncio.gather(*(_domain(context, dns, d) for d in context.domains)))


async def _domain(context: SiteContext, dns: BoundedDns, domain: str) -> CheckResult:
    selectors = context.site.dkim_selectors(domain)
    if not selectors:
        finding = Finding(
            Severity.INFO,
            "DKIM-NOT-CONFIGURED",
            domain,
            "no DKIM selector is configured for this domain, so DKIM was not checked",
            'name the selectors the MTA signs with: [audit] dkim_selectors = ["SELECTOR"]',
        )
        return site_result(NAME, domain, [finding], "not checked (no selectors configured)")
    answers = await asyncio.gather(
        *(dns.query(f"{selector}._domainkey.{domain}", "TXT") for selector in selectors)
    )
    findings: list[Finding] = []
    details: list[str] = []
    for selector, answer in zip(selectors, answers, strict=True):
        more, detail = judge_selector(domain, selector, answer)
        findings += more
        details.append(detail)
    return site_result(NAME, domain, findings, "; ".join(details))
