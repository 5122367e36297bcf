"""Site-wide check ``mta-sts``: each served domain's MTA-STS (RFC 8461) as a sender sees it.

A sender that supports MTA-STS looks up ``_mta-sts.DOMAIN`` TXT, fetches
``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` with a checked certificate and no redirect,
and then, in ``enforce`` mode, delivers only to MX hosts the policy's ``mx`` patterns name and
that present a valid certificate. So this check does the same, and compares the patterns with
the domain's real MX records: an MX the policy forgets is an MX enforcing senders refuse.
Everything read is bounded (64 KiB of policy, the TXT length) and every failure is a finding.
"""

from __future__ import annotations

import asyncio

from mailwarden.audit.model import CheckResult
from mailwarden.audit.sitewide.base import SiteContext, site_result
from mailwarden.audit.sitewide.dnstxt import txt_texts
from mailwarden.audit.sitewide.stspolicy import (
    MAX_AGE_SHORT,
    MAX_POLICY_BYTES,
    StsPolicy,
    is_sts_record,
    mx_matches,
    parse_policy,
    parse_sts_record,
)
from mailwarden.discovery.http import HttpFailure, HttpResponse, request
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus
from mailwarden.findings import Finding, Severity

NAME = "mta-sts"
AFTER_SCAN = False

CODES: dict[str, str] = {
    "MTA-STS-NONE": (
        "The domain publishes no MTA-STS (no _mta-sts TXT record, no policy). Senders then "
        "deliver to it over TLS only if nobody strips STARTTLS on the way, and accept any "
        "certificate. Publish a policy (mode testing first, then enforce) and the TXT record "
        "that announces it, or use DANE if the zone is signed."
    ),
    "MTA-STS-DNS": (
        "A DNS look-up the check needs (the _mta-sts TXT record or the MX records) failed: "
        "timeout or SERVFAIL. Nothing could be judged; senders that hit the same failure "
        "treat the domain as having no policy. Check the name servers of the domain."
    ),
    "MTA-STS-TXT-INVALID": (
        "The _mta-sts TXT record is malformed (not v=STSv1 first, no id, or an id that is "
        "not 1 to 32 letters and digits). Senders ignore a malformed record, so the policy "
        "is not used. Publish exactly: v=STSv1; id=YYYYMMDDHHMMSS; and change the id with "
        "every policy change."
    ),
    "MTA-STS-TXT-MULTIPLE": (
        "More than one TXT record at _mta-sts begins with v=STSv1. RFC 8461 makes senders "
        "then assume there is no policy at all. Keep one record and remove the others."
    ),
    "MTA-STS-TXT-MISSING": (
        "A policy is served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt but no "
        "_mta-sts TXT record announces it. Senders look for the TXT record first and never "
        "fetch the policy, so it protects nothing. Publish _mta-sts.DOMAIN TXT "
        '"v=STSv1; id=..." (or remove the policy if it is not meant to be used).'
    ),
    "MTA-STS-POLICY-UNREACHABLE": (
        "The TXT record announces a policy, but it cannot be fetched: mta-sts.DOMAIN has no "
        "address, refuses the connection, or does not answer 200. Senders then keep a policy "
        "they cached or have none; a domain switching to MTA-STS gets no protection. Serve "
        "the policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt. When the fetch "
        "timed out, the severity is unknown (this host may be what is cut off)."
    ),
    "MTA-STS-POLICY-TLS": (
        "The policy host's certificate was not accepted (expired, not for mta-sts.DOMAIN, "
        "untrusted chain) or the TLS handshake failed. RFC 8461 requires a valid "
        "certificate: senders reject the policy. Install a certificate naming "
        "mta-sts.DOMAIN from a public CA, with its intermediates."
    ),
    "MTA-STS-POLICY-REDIRECT": (
        "The policy URL answers with an HTTP redirect. RFC 8461 3.3 forbids senders to "
        "follow redirects, so they find no policy. Serve the file directly at "
        "https://mta-sts.DOMAIN/.well-known/mta-sts.txt (a CNAME to a hosting service is "
        "fine, a 301/302 is not)."
    ),
    "MTA-STS-POLICY-TOO-LARGE": (
        "The policy is larger than 64 KiB. Senders may refuse it (RFC 8461 names 64 KiB as "
        "the limit); a real policy is a few hundred bytes. Serve the policy file itself, "
        "not a page."
    ),
    "MTA-STS-POLICY-CONTENT-TYPE": (
        "The policy is not served as text/plain. RFC 8461 3.2 names text/plain; strict "
        "senders reject other types (an HTML error page served with 200 is the usual "
        "cause). Configure the web server to send Content-Type: text/plain for the file."
    ),
    "MTA-STS-POLICY-INVALID": (
        "The policy file has a syntax error senders reject it for: no version: STSv1, no or "
        "an unknown mode, a max_age that is not a number or is over 31557600, an mx pattern "
        "that is not a host name, or no mx line in enforce/testing mode. Then the domain "
        "has no policy. Fix the lines named in the message."
    ),
    "MTA-STS-POLICY-SYNTAX": (
        "The policy has lines senders tolerate but that are likely mistakes: a field given "
        "twice (only the first counts), or more lines than any policy needs. Clean up the "
        "file so it says what is meant."
    ),
    "MTA-STS-MAX-AGE-SHORT": (
        "The policy's max_age is under a day. Senders keep a policy only this long, so an "
        "attacker who blocks the policy fetch for a while disables it. RFC 8461 suggests "
        "weeks: use at least 604800 (one week), 31557600 once the policy is settled."
    ),
    "MTA-STS-MODE-TESTING": (
        "The policy is in testing mode: senders report failures (TLS-RPT) but still deliver "
        "without TLS when it fails. A good first step; switch to mode: enforce once the "
        "reports are clean, and change the TXT id."
    ),
    "MTA-STS-MODE-NONE": (
        "The policy's mode is none: senders drop any policy they cached and protect nothing. "
        "That is the way to withdraw MTA-STS; if it is not meant, set mode testing or "
        "enforce and change the TXT id."
    ),
    "MTA-STS-MX-UNCOVERED": (
        "An MX host of the domain matches no mx pattern of the policy. In enforce mode "
        "senders refuse to deliver to it (error); in testing mode they report it (warning). "
        "Add an mx line for it (a *. pattern covers one leftmost label) and change the TXT "
        "id, or remove the MX record."
    ),
}

WELL_KNOWN = "/.well-known/mta-sts.txt"


async def run(context: SiteContext) -> list[CheckResult]:
    """One result per served domain, looked at concurrently."""
    return list(await asyncio.gather(*(_domain(context, d) for d in context.domains)))


async def _domain(context: SiteContext, domain: str) -> CheckResult:
    findings: list[Finding] = []
    txt_name = f"_mta-sts.{domain}"
    txt = await context.resolver.query(txt_name, "TXT")
    record_id: str | None = None
    announced = False
    if txt.status.failed:
        findings.append(_dns_failure(txt_name, txt))
    elif txt.status is DnsStatus.OK:
        sts = [text for text in txt_texts(txt.records) if is_sts_record(text)]
        announced = bool(sts)
        if len(sts) > 1:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "MTA-STS-TXT-MULTIPLE",
                    txt_name,
                    f"{len(sts)} TXT records begin with v=STSv1; senders then assume no policy",
                    "keep exactly one v=STSv1 record",
                )
            )
        elif sts:
            record = parse_sts_record(sts[0])
            record_id = record.id
            if not record.valid:
                findings.append(
                    Finding(
                        Severity.ERROR,
                        "MTA-STS-TXT-INVALID",
                        txt_name,
                        f"the TXT record {sts[0][:80]!r} is malformed: "
                        + "; ".join(record.problems),
                        'publish "v=STSv1; id=YYYYMMDDHHMMSS;"',
                    )
                )
    url = f"https://mta-sts.{domain}{WELL_KNOWN}"
    policy, fetched = await _fetch(context, url, announced, findings)
    if policy is None:
        if not announced and not findings:
            findings.append(
                Finding(
                    Severity.INFO,
                    "MTA-STS-NONE",
                    domain,
                    f"no MTA-STS: no v=STSv1 TXT record at {txt_name} and no policy at {url}",
                    "publish an MTA-STS policy (mode: testing first) and its TXT record",
                )
            )
            return site_result(NAME, domain, findings, "not published")
        return site_result(NAME, domain, findings, fetched)
    if not announced and not txt.status.failed:
        findings.append(
            Finding(
                Severity.WARNING,
                "MTA-STS-TXT-MISSING",
                txt_name,
                f"a policy is served at {url} but no v=STSv1 TXT record announces it: "
                "senders never fetch it",
                f'publish {txt_name} TXT "v=STSv1; id=YYYYMMDDHHMMSS;"',
            )
        )
    findings += _policy_findings(policy, url)
    covered = ""
    if policy.valid and policy.mode in ("enforce", "testing"):
        covered = await _coverage(context, domain, policy, findings)
    detail = f"mode {policy.mode}, max_age {policy.max_age}"
    if record_id:
        detail += f", id {record_id}"
    if covered:
        detail += f", {covered}"
    return site_result(NAME, domain, findings, detail)


def _dns_failure(name: str, answer: DnsAnswer) -> Finding:
    return Finding(
        Severity.UNKNOWN,
        "MTA-STS-DNS",
        name,
        f"{answer.rdtype} look-up failed: {answer.summary()}",
        "check the domain's name servers",
    )


async def _fetch(
    context: SiteContext, url: str, announced: bool, findings: list[Finding]
) -> tuple[StsPolicy | None, str]:
    """The policy at ``url``, or None (with findings when one was announced or seen)."""
    try:
        response = await request(
            context.network,
            "GET",
            url,
            headers=[("User-Agent", "mailwarden-audit")],
            timeout=context.timeout,
            max_body=MAX_POLICY_BYTES,
        )
    except HttpFailure as exc:
        if announced:
            findings.append(_fetch_failure(url, exc))
        return None, f"policy not fetched: {exc.message}"
    if not announced:
        # Nothing announced: only a real policy counts (a wildcard web host's page, redirect
        # or certificate is not this domain's MTA-STS).
        policy = parse_policy(response.body) if response.status == 200 else None
        if policy is None or policy.version != "STSv1":
            return None, ""
        _content_type(response, findings)
        return policy, ""
    if 300 <= response.status < 400:
        where = response.location or "no Location"
        findings.append(
            Finding(
                Severity.ERROR,
                "MTA-STS-POLICY-REDIRECT",
                url,
                f"answers {response.status} redirect to {where[:200]}; senders do not follow "
                "redirects (RFC 8461 3.3)",
                "serve the policy file at this URL itself",
            )
        )
        return None, "policy URL redirects"
    if response.status != 200:
        findings.append(
            Finding(
                Severity.ERROR,
                "MTA-STS-POLICY-UNREACHABLE",
                url,
                f"the TXT record announces a policy, but {url} answers {response.status}",
                "serve the policy at this URL",
            )
        )
        return None, f"policy URL answers {response.status}"
    _content_type(response, findings)
    return parse_policy(response.body), ""


def _fetch_failure(url: str, exc: HttpFailure) -> Finding:
    if exc.kind == "too-large":
        return Finding(
            Severity.ERROR,
            "MTA-STS-POLICY-TOO-LARGE",
            url,
            f"{exc.message}: senders may refuse it",
            "serve the policy file itself (a few hundred bytes)",
        )
    if exc.kind in ("tls", "tls-refused", "tls-handshake"):
        return Finding(
            Severity.ERROR,
            "MTA-STS-POLICY-TLS",
            url,
            f"{exc.message.rstrip('.')}; senders reject a policy they cannot fetch over valid TLS",
            f"install a valid certificate for {url.split('/')[2]}",
        )
    severity = Severity.UNKNOWN if exc.kind == "timeout" else Severity.ERROR
    return Finding(
        severity,
        "MTA-STS-POLICY-UNREACHABLE",
        url,
        f"the TXT record announces a policy, but it cannot be fetched: {exc.message}",
        "serve the policy at this URL (and an A/AAAA record for its host)",
    )


def _content_type(response: HttpResponse, findings: list[Finding]) -> None:
    kind = response.content_type.split(";")[0].strip().lower()
    if kind != "text/plain":
        findings.append(
            Finding(
                Severity.WARNING,
                "MTA-STS-POLICY-CONTENT-TYPE",
                response.url,
                f"served as {kind[:80] or 'no content type'}, not text/plain",
                "send Content-Type: text/plain for the policy file",
            )
        )


def _policy_findings(policy: StsPolicy, url: str) -> list[Finding]:
    findings: list[Finding] = []
    if policy.errors:
        findings.append(
            Finding(
                Severity.ERROR,
                "MTA-STS-POLICY-INVALID",
                url,
                "senders reject the policy: " + "; ".join(policy.errors[:8]),
                "fix the policy file (version: STSv1, mode, mx, max_age lines)",
            )
        )
    if policy.warnings:
        findings.append(
            Finding(
                Severity.WARNING,
                "MTA-STS-POLICY-SYNTAX",
                url,
                "; ".join(policy.warnings[:8]),
                "give each field once",
            )
        )
    if policy.max_age is not None and policy.max_age < MAX_AGE_SHORT and policy.valid:
        findings.append(
            Finding(
                Severity.WARNING,
                "MTA-STS-MAX-AGE-SHORT",
                url,
                f"max_age {policy.max_age} s is under a day: a cached policy lapses quickly",
                "use max_age 604800 (a week) or more",
            )
        )
    if policy.mode == "testing" and policy.valid:
        findings.append(
            Finding(
                Severity.INFO,
                "MTA-STS-MODE-TESTING",
                url,
                "mode testing: failures are reported, mail is still delivered without TLS",
                "switch to mode: enforce when TLS reports are clean, and change the TXT id",
            )
        )
    if policy.mode == "none" and policy.valid:
        findings.append(
            Finding(
                Severity.WARNING,
                "MTA-STS-MODE-NONE",
                url,
                "mode none: senders drop their cached policy; MTA-STS protects nothing",
                "set mode testing or enforce (and change the TXT id), unless withdrawing",
            )
        )
    return findings


async def _coverage(
    context: SiteContext, domain: str, policy: StsPolicy, findings: list[Finding]
) -> str:
    """Compare the real MX hosts with the policy's patterns; a short note for the detail."""
    answer = await context.resolver.query(domain, "MX")
    if answer.status.failed:
        findings.append(_dns_failure(domain, answer))
        return ""
    hosts = mx_hosts(answer, domain)
    if not hosts:
        return "null MX"
    missing = [h for h in hosts if not any(mx_matches(p, h) for p in policy.mx)]
    if missing:
        enforce = policy.mode == "enforce"
        findings.append(
            Finding(
                Severity.ERROR if enforce else Severity.WARNING,
                "MTA-STS-MX-UNCOVERED",
                domain,
                f"MX {', '.join(missing[:10])} not covered by the policy's mx "
                f"{', '.join(policy.mx[:10])}: "
                + (
                    "senders that enforce MTA-STS refuse to deliver there"
                    if enforce
                    else "senders report failures there (testing mode)"
                ),
                "add an mx line for each MX host and change the TXT id",
            )
        )
    return f"{len(hosts) - len(missing)} of {len(hosts)} MX covered"


def mx_hosts(answer: DnsAnswer, domain: str, *, implicit: bool = True) -> list[str]:
    """The MX host names of an MX answer (no trailing dot); with ``implicit``, the domain itself
    when it has no MX record (RFC 5321 5.1, as senders deliver); none for a null MX (RFC 7505)."""
    if answer.status is not DnsStatus.OK:
        return [domain.rstrip(".").lower()] if implicit else []
    hosts: list[str] = []
    for record in answer.records[:64]:
        parts = record.split()
        if len(parts) != 2:
            continue
        host = parts[1].rstrip(".").lower()
        if host and host not in hosts:
            hosts.append(host)
    return hosts
