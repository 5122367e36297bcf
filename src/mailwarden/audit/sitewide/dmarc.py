"""Site-wide check ``dmarc``: each served domain's DMARC policy (RFC 7489), as receivers find it.

A receiver looks up ``_dmarc.DOMAIN`` TXT and, when the domain has none, the record of its
organisational domain (the name one label below its public suffix, from the public suffix
list), whose ``sp=`` (or ``p=``) then applies. So an alias ``lists.example.edu`` without its own
record is covered by ``example.edu``'s, and is judged with it. The record must be exactly one
TXT beginning ``v=DMARC1`` with a ``p=``; ``p=none`` only monitors. Report addresses in another
organisational domain receive reports only if that domain agrees
(``POLICYDOMAIN._report._dmarc.DEST`` TXT ``v=DMARC1``, RFC 7489 7.1); otherwise receivers drop
the reports without a word, and the mail team believes all is well. Look-ups of all domains run
at once, bounded (:class:`BoundedDns`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.authrecords import RecordSyntaxError, parse_tags
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.dnsquery import BoundedDns
from mailwarden.audit.sitewide.dnstxt import txt_texts
from mailwarden.audit.sitewide.tlsrpt import uri_problem
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus
from mailwarden.findings import Finding, Severity
from mailwarden.psl import public_suffix_list

NAME = "dmarc"
AFTER_SCAN = False

CODES: dict[str, str] = {
    "DMARC-NONE": (
        "Neither the domain nor its organisational domain publishes a DMARC record "
        "(_dmarc TXT). Receivers then apply no policy to mail failing SPF and DKIM, forged "
        "mail in the domain's name is not rejected, and the site gets no reports; large "
        'mailbox providers expect DMARC from every sender. Start with "v=DMARC1; p=none; '
        'rua=mailto:dmarc-reports@DOMAIN", read the reports, then move to quarantine and reject.'
    ),
    "DMARC-LOOKUP-FAILED": (
        "A DMARC look-up failed (timeout or SERVFAIL): the _dmarc record, the organisational "
        "domain's record or a report destination's authorisation record. Receivers meeting "
        "the same failure apply no policy. Check the name servers of the name in the message."
    ),
    "DMARC-MULTIPLE": (
        "More than one TXT record at _dmarc begins with v=DMARC1. RFC 7489 6.6.3 makes "
        "receivers then apply no DMARC at all. Keep one record."
    ),
    "DMARC-SYNTAX": (
        "The DMARC record is malformed: not a tag=value list, a tag given twice, v=DMARC1 "
        "not the first tag, or p= missing or not none, quarantine or reject. Receivers ignore "
        'it (at best act as if p=none). Publish e.g. "v=DMARC1; p=quarantine; '
        'rua=mailto:dmarc-reports@DOMAIN".'
    ),
    "DMARC-POLICY-NONE": (
        "The policy that applies to the domain is p=none (or sp=none for a subdomain): "
        "monitoring only, receivers deliver mail failing DMARC as usual, so forgeries of the "
        "domain are not stopped. Once the aggregate reports show the site's own mail passing, "
        "move to p=quarantine, then p=reject."
    ),
    "DMARC-SUBDOMAIN-NONE": (
        "The record sets sp=none while p= is stricter: subdomains without their own record "
        "(including names that do not exist, favourites of phishers) get no protection. Unless "
        "a subdomain's mail is still being brought in line, drop sp= or set it like p=."
    ),
    "DMARC-PCT": (
        "The record has pct below 100: the policy applies to only that share of the failing "
        "mail, the rest is treated one step milder. Fine while rolling out; set pct=100 (or "
        "remove it) when done."
    ),
    "DMARC-TAG-INVALID": (
        "A tag of the record has a value receivers do not understand (sp, pct, adkim, aspf, "
        "fo, rf or ri): they ignore it and use the default. Correct the value the message "
        "names."
    ),
    "DMARC-URI": (
        "A rua= or ruf= entry is not a usable report address: not a mailto: URI, a malformed "
        "address or size suffix (!10m), or an empty entry. Receivers skip it. Use "
        "comma-separated mailto:user@domain URIs."
    ),
    "DMARC-NO-RUA": (
        "The record has no rua= address: nobody receives aggregate reports, so the site cannot "
        "see which of its own servers fail SPF or DKIM before tightening the policy. Add "
        "rua=mailto:dmarc-reports@DOMAIN."
    ),
    "DMARC-REPORT-UNAUTHORISED": (
        "A report address is in another organisational domain, and that domain does not "
        "authorise receiving reports for this one: POLICYDOMAIN._report._dmarc.DESTDOMAIN has "
        "no TXT record beginning v=DMARC1 (RFC 7489 7.1). Receivers then silently drop the "
        "reports. Ask the destination's operator (a report service) to publish it, publish it "
        'yourself if the destination is the site\'s too (TXT "v=DMARC1"), or use an address '
        "in the domain."
    ),
}

POLICIES = ("none", "quarantine", "reject")
MAX_URIS = 10
"""Report URIs read per tag; more is no sane record."""

_SELECT = re.compile(r"\Av[ \t]*=[ \t]*dmarc1[ \t]*(;|\Z)", re.IGNORECASE)
_SIZE = re.compile(r"\A(.*)!([0-9]{1,15})([kmgt]?)\Z", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class ReportUri:
    """One rua/ruf entry: ``mailto:user@domain`` with an optional ``!size``."""

    uri: str
    domain: str
    """The address's domain, lower case: where the reports go."""
    size: str = ""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A DMARC record receivers use; ``problems`` are tags and URIs they ignore."""

    policy: str
    subdomain_policy: str | None = None
    pct: int = 100
    rua: tuple[ReportUri, ...] = ()
    ruf: tuple[ReportUri, ...] = ()
    problems: tuple[str, ...] = ()
    uri_problems: tuple[str, ...] = ()

    @property
    def effective_subdomain_policy(self) -> str:
        return self.subdomain_policy or self.policy


def is_dmarc(text: str) -> bool:
    """Whether a TXT text is meant as a DMARC record (``v=DMARC1`` first, any case, so a near
    miss is judged rather than ignored)."""
    return _SELECT.match(text.lstrip(" \t")) is not None


def parse_uris(value: str) -> tuple[tuple[ReportUri, ...], tuple[str, ...]]:
    """``mailto:a@example.org!10m, mailto:b@example.net`` → the usable URIs and the problems."""
    uris: list[ReportUri] = []
    problems: list[str] = []
    entries = value.split(",")
    if len(entries) > MAX_URIS:
        problems.append(f"{len(entries)} report URIs; only the first {MAX_URIS} were read")
    for entry in entries[:MAX_URIS]:
        entry = entry.strip(" \t\r\n")
        if not entry:
            problems.append("an empty entry")
            continue
        uri, size = entry, ""
        match = _SIZE.match(entry)
        if match:
            uri, size = match.group(1), match.group(2) + match.group(3).lower()
        scheme, _, rest = uri.partition(":")
        if scheme.lower() != "mailto":
            problems.append(f"{entry[:80]!r} is not a mailto: URI")
            continue
        problem = uri_problem(uri)
        if problem is not None:
            problems.append(problem)
            continue
        domain = rest.split("?", 1)[0].rpartition("@")[2].lower().rstrip(".")
        uris.append(ReportUri(uri, domain, size))
    return tuple(uris), tuple(problems)


def parse_dmarc(text: str) -> DmarcRecord:
    """The record as receivers read it, or :class:`RecordSyntaxError` when they would not use it."""
    tags = parse_tags(text, case="lower")
    if not tags or tags[0] != ("v", "DMARC1"):
        raise RecordSyntaxError("it does not begin with v=DMARC1")
    values = dict(tags)
    policy = values.get("p", "").lower()
    if policy not in POLICIES:
        given = f"p={values['p'][:20]}" if "p" in values else "no p= tag"
        raise RecordSyntaxError(f"{given}: p= must be none, quarantine or reject")
    problems: list[str] = []
    subdomain_policy: str | None = None
    if "sp" in values:
        if values["sp"].lower() in POLICIES:
            subdomain_policy = values["sp"].lower()
        else:
            problems.append(f"sp={values['sp'][:20]} is not none, quarantine or reject")
    pct = 100
    if "pct" in values:
        if re.fullmatch(r"[0-9]{1,3}", values["pct"]) and int(values["pct"]) <= 100:
            pct = int(values["pct"])
        else:
            problems.append(f"pct={values['pct'][:20]} is not a number from 0 to 100")
    for tag, allowed in (("adkim", r"[rs]"), ("aspf", r"[rs]"), ("rf", r"afrf")):
        if tag in values and not re.fullmatch(allowed, values[tag], re.IGNORECASE):
            problems.append(f"{tag}={values[tag][:20]} is not valid")
    if "fo" in values and not re.fullmatch(r"[01ds](:[01ds])*", values["fo"].replace(" ", "")):
        problems.append(f"fo={values['fo'][:20]} is not a colon list of 0, 1, d, s")
    if "ri" in values and not re.fullmatch(r"[0-9]{1,10}", values["ri"]):
        problems.append(f"ri={values['ri'][:20]} is not a number of seconds")
    rua, rua_problems = parse_uris(values["rua"]) if "rua" in values else ((), ())
    ruf, ruf_problems = parse_uris(values["ruf"]) if "ruf" in values else ((), ())
    return DmarcRecord(
        policy,
        subdomain_policy,
        pct,
        rua,
        ruf,
        tuple(problems),
        tuple(f"rua: {p}" for p in rua_problems) + tuple(f"ruf: {p}" for p in ruf_problems),
    )


def organisational_domain(domain: str) -> str:
    """The name one label below the public suffix (RFC 7489 3.2); the name itself when it is
    a public suffix or shorter."""
    name = domain.rstrip(".").lower()
    found = public_suffix_list().privatesuffix(name)
    return found if isinstance(found, str) else name


# --- the look-ups ----------------------------------------------------------------------------


def _records(answer: DnsAnswer) -> list[str]:
    if answer.status is not DnsStatus.OK:
        return []
    return [text for text in txt_texts(answer.records) if is_dmarc(text)]


def _failed(name: str, answer: DnsAnswer) -> Finding:
    return Finding(
        Severity.UNKNOWN,
        "DMARC-LOOKUP-FAILED",
        name,
        f"TXT look-up failed: {answer.summary()}",
        "check the name servers",
    )


async def run(context: SiteContext) -> list[CheckResult]:
    """One result per served domain; every domain looked up at once."""
    dns = BoundedDns(context.resolver)
    return list(await asyncio.gather(*(_domain(dns, d) for d in context.domains)))


async def _domain(dns: BoundedDns, domain: str) -> CheckResult:
    domain = domain.rstrip(".").lower()
    policy_domain = domain
    name = f"_dmarc.{domain}"
    answer = await dns.query(name, "TXT")
    if answer.status.failed:
        return site_result(NAME, domain, [_failed(name, answer)])
    texts = _records(answer)
    organisational = organisational_domain(domain)
    if not texts and organisational != domain:
        policy_domain = organisational
        name = f"_dmarc.{organisational}"
        answer = await dns.query(name, "TXT")
        if answer.status.failed:
            return site_result(NAME, domain, [_failed(name, answer)])
        texts = _records(answer)
    if not texts:
        finding = Finding(
            Severity.WARNING,
            "DMARC-NONE",
            f"_dmarc.{domain}",
            "no DMARC record"
            + (f" (nor at _dmarc.{organisational})" if organisational != domain else ""),
            f'publish _dmarc.{domain} TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"',
        )
        return site_result(NAME, domain, [finding], "no DMARC record")
    if len(texts) > 1:
        finding = Finding(
            Severity.ERROR,
            "DMARC-MULTIPLE",
            name,
            f"{len(texts)} TXT records begin with v=DMARC1: receivers apply no DMARC",
            "keep one record",
        )
        return site_result(NAME, domain, [finding])
    try:
        record = parse_dmarc(texts[0])
    except RecordSyntaxError as exc:
        finding = Finding(
            Severity.ERROR,
            "DMARC-SYNTAX",
            name,
            f"{texts[0][:100]!r}: {exc}",
            '"v=DMARC1; p=quarantine; rua=mailto:ADDRESS"',
        )
        return site_result(NAME, domain, [finding])
    findings = judge(domain, policy_domain, name, record)
    findings += await _authorised(dns, policy_domain, record)
    inherited = policy_domain != domain
    applies = record.effective_subdomain_policy if inherited else record.policy
    detail = f"p={applies}" + (f" (from _dmarc.{policy_domain})" if inherited else "")
    if record.rua:
        detail += ", reports to " + ", ".join(u.uri for u in record.rua[:3])
    return site_result(NAME, domain, findings, detail)


def judge(domain: str, policy_domain: str, name: str, record: DmarcRecord) -> list[Finding]:
    """The findings about a valid record found at ``name`` for ``domain``."""
    findings: list[Finding] = []
    inherited = policy_domain != domain
    applies = record.effective_subdomain_policy if inherited else record.policy
    if applies == "none":
        tag = "sp" if inherited and record.subdomain_policy else "p"
        via = f" (the organisational domain {policy_domain}'s record)" if inherited else ""
        findings.append(
            Finding(
                Severity.WARNING,
                "DMARC-POLICY-NONE",
                name,
                f"{tag}=none{via}: monitoring only, failing mail is delivered",
                "move to p=quarantine, then p=reject, once the reports are clean",
            )
        )
    elif not inherited and record.subdomain_policy == "none":
        findings.append(
            Finding(
                Severity.INFO,
                "DMARC-SUBDOMAIN-NONE",
                name,
                f"sp=none while p={record.policy}: subdomains are not protected",
                "remove sp= or set it like p=",
            )
        )
    if record.pct < 100:
        findings.append(
            Finding(
                Severity.INFO,
                "DMARC-PCT",
                name,
                f"pct={record.pct}: the policy applies to {record.pct}% of failing mail",
                "set pct=100 when the roll-out is done",
            )
        )
    if record.problems:
        findings.append(
            Finding(
                Severity.WARNING,
                "DMARC-TAG-INVALID",
                name,
                "receivers ignore: " + "; ".join(record.problems[:6]),
                "correct the values",
            )
        )
    if record.uri_problems:
        findings.append(
            Finding(
                Severity.WARNING,
                "DMARC-URI",
                name,
                "receivers skip: " + "; ".join(record.uri_problems[:6]),
                "use comma-separated mailto:user@domain URIs",
            )
        )
    if not record.rua:
        findings.append(
            Finding(
                Severity.INFO,
                "DMARC-NO-RUA",
                name,
                "no (usable) rua= address: nobody receives aggregate reports",
                f"add rua=mailto:dmarc-reports@{policy_domain}",
            )
        )
    return findings


def external_destinations(policy_domain: str, record: DmarcRecord) -> list[str]:
    """The report domains outside ``policy_domain``'s organisational domain, each once."""
    own = organisational_domain(policy_domain)
    domains = [uri.domain for uri in (*record.rua, *record.ruf)]
    return [d for d in dict.fromkeys(domains) if organisational_domain(d) != own]


async def _authorised(dns: BoundedDns, policy_domain: str, record: DmarcRecord) -> list[Finding]:
    destinations = external_destinations(policy_domain, record)
    names = [f"{policy_domain}._report._dmarc.{d}" for d in destinations]
    answers = await asyncio.gather(*(dns.query(name, "TXT") for name in names))
    findings: list[Finding] = []
    for destination, name, answer in zip(destinations, names, answers, strict=True):
        if answer.status.failed:
            findings.append(_failed(name, answer))
        elif not _records(answer):
            findings.append(
                Finding(
                    Severity.WARNING,
                    "DMARC-REPORT-UNAUTHORISED",
                    name,
                    f"reports to {destination} are not authorised by it ({answer.summary()}): "
                    "receivers drop them",
                    f'have {destination} publish {name} TXT "v=DMARC1"',
                )
            )
    return findings
