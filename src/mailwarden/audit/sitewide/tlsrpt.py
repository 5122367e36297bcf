"""Site-wide check ``tls-rpt``: each served domain's SMTP TLS reporting record (RFC 8460).

Senders that enforce MTA-STS or DANE send daily reports of failed TLS sessions to the
addresses in ``_smtp._tls.DOMAIN`` TXT (``v=TLSRPTv1; rua=mailto:...,https://...``). Without
the record those failures stay invisible: a broken certificate on one MX is found by the users,
not the mail team. The record only matters where senders enforce something, so a missing one
is a warning when the domain announces MTA-STS and a note otherwise (DANE's TLSA records live
under the MX hosts, which this check does not look up; the ``dane`` check does).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.dnstxt import tag_list, txt_texts
from mailwarden.audit.sitewide.stspolicy import is_sts_record
from mailwarden.discovery.resolver import DnsStatus
from mailwarden.findings import Finding, Severity

NAME = "tls-rpt"
AFTER_SCAN = False

CODES: dict[str, str] = {
    "TLSRPT-NONE": (
        "The domain publishes no TLS-RPT record (_smtp._tls TXT). Senders then cannot tell "
        "the mail team when TLS to its MX hosts fails. A warning when the domain announces "
        "MTA-STS (failures there mean refused mail nobody hears about), a note otherwise. "
        'Publish _smtp._tls.DOMAIN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@DOMAIN".'
    ),
    "TLSRPT-DNS": (
        "The _smtp._tls TXT look-up failed (timeout or SERVFAIL): whether the domain "
        "publishes TLS-RPT could not be told. Senders hitting the same failure send no "
        "reports. Check the domain's name servers."
    ),
    "TLSRPT-INVALID": (
        "The TLS-RPT record is malformed: not v=TLSRPTv1 first, a field that is not "
        "key=value, no rua= field or more than one, or no usable report address. Senders "
        "ignore it and send no reports. Publish "
        '"v=TLSRPTv1; rua=mailto:ADDRESS" with mailto: or https: URIs separated by commas.'
    ),
    "TLSRPT-MULTIPLE": (
        "More than one TXT record at _smtp._tls begins with v=TLSRPTv1. RFC 8460 makes "
        "senders then assume the domain does not do TLS-RPT. Merge them into one record "
        "(rua= takes several URIs, comma separated)."
    ),
    "TLSRPT-URI": (
        "One of the rua= report URIs is unusable (not mailto: or https:, or malformed); "
        "senders skip it and use the others. Fix or remove it."
    ),
}

MAX_URIS = 20
"""rua URIs judged; more is no sane record."""

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_MAILBOX = re.compile(rf"^[^@\s,;!]{{1,64}}@{_LABEL}(\.{_LABEL})+$", re.IGNORECASE)


def is_tlsrpt_record(text: str) -> bool:
    """Whether a TXT text is meant as a TLS-RPT record (begins ``v=TLSRPTv1``, any case: the
    resolver lowers records, and a near miss is better reported than ignored)."""
    return text.lstrip(" \t").lower().startswith("v=tlsrptv1")


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """A TLS-RPT record as read: the usable report URIs, what makes it unusable (``errors``)
    and what senders skip (``warnings``)."""

    uris: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors


def uri_problem(uri: str) -> str | None:
    """Why a rua URI is unusable, or None: mailto:local@domain or https://host/..."""
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "mailto":
        address = rest.split("?", 1)[0]
        return None if _MAILBOX.match(address) else f"{uri[:80]!r} is not mailto:user@domain"
    if scheme == "https":
        try:
            host = urlsplit(uri).hostname
        except ValueError:
            host = None
        return None if host and "." in host else f"{uri[:80]!r} is not https://host/path"
    return f"{uri[:80]!r} is neither mailto: nor https:"


def parse_tlsrpt(text: str) -> TlsRptRecord:
    """``v=TLSRPTv1; rua=mailto:a@example.org,https://r.example.org/tlsrpt`` (RFC 8460 3)."""
    pairs = tag_list(text)
    if pairs is None:
        return TlsRptRecord(errors=("a field is not of the form key=value",))
    errors: list[str] = []
    warnings: list[str] = []
    if not pairs or pairs[0][0].lower() != "v" or pairs[0][1].lower() != "tlsrptv1":
        errors.append("it does not begin with v=TLSRPTv1")
    ruas = [value for key, value in pairs if key.lower() == "rua"]
    uris: list[str] = []
    if not ruas:
        errors.append("it has no rua= field")
    elif len(ruas) > 1:
        errors.append(f"it has {len(ruas)} rua= fields (put all URIs in one, comma separated)")
    else:
        given = [u.strip(" \t") for u in ruas[0].split(",")]
        if len(given) > MAX_URIS:
            warnings.append(f"{len(given)} report URIs; only the first {MAX_URIS} were read")
            given = given[:MAX_URIS]
        for uri in given:
            problem = uri_problem(uri) if uri else "an empty URI"
            if problem is None:
                uris.append(uri)
            else:
                warnings.append(problem)
        if not uris:
            errors.append("no usable report URI (mailto: or https:)")
    return TlsRptRecord(tuple(uris), tuple(errors), tuple(warnings))


async def run(context: SiteContext) -> list[CheckResult]:
    """One result per served domain, looked at concurrently."""
    return list(await asyncio.gather(*(_domain(context, d) for d in context.domains)))


async def _domain(context: SiteContext, domain: str) -> CheckResult:
    name = f"_smtp._tls.{domain}"
    answer, sts = await asyncio.gather(
        context.resolver.query(name, "TXT"), context.resolver.query(f"_mta-sts.{domain}", "TXT")
    )
    if answer.status.failed:
        finding = Finding(
            Severity.UNKNOWN,
            "TLSRPT-DNS",
            name,
            f"TXT look-up failed: {answer.summary()}",
            "check the domain's name servers",
        )
        return site_result(NAME, domain, [finding])
    texts = txt_texts(answer.records) if answer.status is DnsStatus.OK else []
    records = [text for text in texts if is_tlsrpt_record(text)]
    if not records:
        uses_sts = sts.status is DnsStatus.OK and any(
            is_sts_record(t) for t in txt_texts(sts.records)
        )
        why = (
            "the domain announces MTA-STS, but senders cannot report TLS failures to it"
            if uses_sts
            else "senders cannot report TLS failures to the domain"
        )
        finding = Finding(
            Severity.WARNING if uses_sts else Severity.INFO,
            "TLSRPT-NONE",
            name,
            f"no v=TLSRPTv1 TXT record: {why}",
            f'publish {name} TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"',
        )
        return site_result(NAME, domain, [finding], "not published")
    if len(records) > 1:
        finding = Finding(
            Severity.ERROR,
            "TLSRPT-MULTIPLE",
            name,
            f"{len(records)} TXT records begin with v=TLSRPTv1; senders then send no reports",
            "merge them into one record",
        )
        return site_result(NAME, domain, [finding])
    record = parse_tlsrpt(records[0])
    findings: list[Finding] = []
    if record.errors:
        findings.append(
            Finding(
                Severity.ERROR,
                "TLSRPT-INVALID",
                name,
                f"the record {records[0][:100]!r} is unusable: " + "; ".join(record.errors),
                f'publish "v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"',
            )
        )
    if record.warnings:
        findings.append(
            Finding(
                Severity.WARNING,
                "TLSRPT-URI",
                name,
                "senders skip: " + "; ".join(record.warnings[:8]),
                "use mailto:user@domain or https://host/path URIs",
            )
        )
    return site_result(NAME, domain, findings, "reports to " + ", ".join(record.uris[:4]))
