"""``mailwarden dns check``: what a resolver answers, compared with what the site needs.

The wanted records come from :func:`mailwarden.discovery.records.wanted_records`; every query
runs at once (bounded by the resolver's timeout and :data:`CONCURRENCY`), and every difference
becomes a :class:`Finding` with a stable code from :data:`CODES`.

Names are judged by what clients end up with, not by their form: an ``autoconfig.<d>`` that
has the autoconfig host's addresses of its own instead of a CNAME works, and is only noted.
Severities follow what a user would suffer:

* **error**: a client fails or talks to the wrong server. An ``autoconfig.``/``autodiscover.``
  name (or the autoconfig host) that does not exist or leads elsewhere, a second
  ``_autodiscover._tcp`` target (Outlook may send the password there), a mail server host
  without an address (every client fails, not only SRV-using ones).
* **warning**: something is off but most clients do not notice: RFC 6186 SRV records (few
  clients use them: Thunderbird does not), a missing ``_autodiscover._tcp`` (Outlook's last
  resort), an SRV target that is a CNAME (forbidden by RFC 2782, tolerated by most resolvers),
  and a resolver that does not answer (nothing can be told, which is not the same as wrong).
* **info**: it works, but differs from what ``dns records`` writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailwarden.discovery.records import (
    MAX_NAME,
    SRV_LABELS,
    DomainRecords,
    RecordRole,
    Srv,
    parse_srv,
    srv_targets,
    wanted_records,
)
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus, Resolver
from mailwarden.findings import Finding, Severity, exit_status
from mailwarden.site.model import Site

CONCURRENCY = 32
"""Queries in flight at once: enough to finish a large site in a few round trips, few enough
not to look like a flood to a resolver."""

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

CODES: dict[str, str] = {
    "DNS-MISSING": (
        "A record the site needs is not published: the name does not exist (NXDOMAIN) or has "
        "no record of that type (NODATA). An error for autoconfig./autodiscover. names and the "
        "autoconfig host (Thunderbird and Outlook fail to find the settings there), a warning "
        "for _autodiscover._tcp and RFC 6186 SRV records, a note for a missing '0 0 0 .' record."
    ),
    "DNS-DIFFERENT": (
        "The name is published, but with other data than the site needs: another SRV target, "
        "port or priority, an SRV saying 'not available' for a service the site offers, or an "
        "autoconfig name lacking one of the autoconfig host's addresses (e.g. no AAAA). An "
        "error when _autodiscover._tcp points at another host; a note when only the form "
        "differs (own A records instead of a CNAME) and clients reach the same addresses."
    ),
    "DNS-CONFLICT": (
        "Besides the wanted records the name has others that compete with them: a second "
        "_autodiscover._tcp or mail SRV record, or addresses on an autoconfig name or the "
        "autoconfig host that are not the autoconfig host's. Clients pick one of them at random "
        "or by priority, so some of them reach the wrong server."
    ),
    "DNS-SRV-TARGET-CNAME": (
        "An SRV record points at a name that is an alias (CNAME). RFC 2782 requires the target "
        "to have A/AAAA records itself; many clients cope, some do not. Point the SRV record at "
        "the canonical host name."
    ),
    "DNS-SRV-TARGET-NO-ADDRESS": (
        "An SRV record points at a host that has neither A nor AAAA records. For one of the "
        "site's own mail server hosts this is an error: the autoconfig documents name the same "
        "host, so every client fails to connect."
    ),
    "DNS-AUTOCONFIG-ELSEWHERE": (
        "autoconfig.<d> or autodiscover.<d> resolves, but to addresses that are not the "
        "autoconfig host's (often the web server's). Clients ask that server for their settings "
        "and get a 404, a wrong certificate or someone else's answer."
    ),
    "DNS-UNAVAILABLE": (
        "The resolver failed (SERVFAIL), did not answer in time or gave an unusable answer: "
        "whether the record is published cannot be told. A warning, not an error: run the check "
        "again, or against another resolver (--resolver)."
    ),
    "DNS-NOT-OFFERED-PUBLISHED": (
        "An SRV record advertises a protocol the site does not offer for this domain (e.g. POP3) "
        "and points at a host that has an address. SRV-using clients connect there; publish "
        "'0 0 0 .' (decidedly not available) instead. A note when the target has no address."
    ),
    "DNS-MOVED-SRV": (
        "A domain that moved (moved_to) still publishes RFC 6186 SRV records pointing at a host. "
        "Clients that use them skip the redirect to the new domain and log in to the old "
        "platform; remove them."
    ),
}


@dataclass(frozen=True, slots=True)
class CheckReport:
    findings: tuple[Finding, ...]
    answers_checked: int
    """Queries the resolver answered (NXDOMAIN and NODATA included) and that were compared."""
    resolver: str

    @property
    def exit_status(self) -> int:
        return exit_status(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolver": self.resolver,
            "answers_checked": self.answers_checked,
            "exit_status": self.exit_status,
            "findings": [f.to_dict() for f in self.findings],
        }


class _Answers:
    """Asks each (name, type) once, many at a time, and keeps the answers."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.known: dict[tuple[str, str], DnsAnswer] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def ask(self, questions: Iterable[tuple[str, str]]) -> None:
        todo = list(dict.fromkeys(q for q in questions if q not in self.known))
        answers = await asyncio.gather(*(self._one(name, rtype) for name, rtype in todo))
        self.known.update(zip(todo, answers, strict=True))

    async def _one(self, name: str, rtype: str) -> DnsAnswer:
        async with self._limit:
            try:
                # The resolver bounds each query itself; this only guards against a stuck one.
                async with asyncio.timeout(self.resolver.timeout * 2 + 1):
                    return await self.resolver.query(name, rtype)
            except TimeoutError:
                return DnsAnswer(
                    name,
                    rtype,
                    DnsStatus.TIMEOUT,
                    detail=f"no answer from {self.resolver.describe()}",
                )

    def __getitem__(self, key: tuple[str, str]) -> DnsAnswer:
        return self.known[key]

    def failed(self, *keys: tuple[str, str]) -> bool:
        return any(self.known[k].status.failed for k in keys)

    def addresses(self, name: str) -> tuple[frozenset[str], tuple[str, ...], bool]:
        """(A and AAAA records, CNAME chain, name exists) of an asked name."""
        a, aaaa = self.known[(name, "A")], self.known[(name, "AAAA")]
        records = frozenset(
            r for ans in (a, aaaa) if ans.status is DnsStatus.OK for r in ans.records
        )
        chain = a.cname_chain or aaaa.cname_chain
        exists = not (a.status is DnsStatus.NXDOMAIN and aaaa.status is DnsStatus.NXDOMAIN)
        return records, chain, exists


def _both(name: str) -> tuple[tuple[str, str], tuple[str, str]]:
    return (name, "A"), (name, "AAAA")


def _listed(items: Iterable[str], limit: int = 4) -> str:
    values = sorted(items)
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


@dataclass
class _Wanted:
    """The site's records regrouped by name for comparison."""

    host: str
    host_addresses: frozenset[str]
    """``[server] public_addresses``; empty: whatever the host resolves to."""
    names: dict[str, tuple[RecordRole, str | None, frozenset[str]]] = field(default_factory=dict)
    """autoconfig./autodiscover. name → (role, wanted CNAME target, wanted addresses)."""
    srv: dict[str, tuple[RecordRole, tuple[Srv, ...]]] = field(default_factory=dict)
    own_targets: frozenset[str] = frozenset()
    moved_srv: list[tuple[str, str]] = field(default_factory=list)
    """(SRV name, moved_to) of moved domains, checked for leftovers."""
    autodiscover_srv: bool = False

    @classmethod
    def of(cls, site: Site, blocks: Sequence[DomainRecords]) -> _Wanted:
        host = blocks[0].public_host
        wanted = cls(host, frozenset(site.server.public_addresses))
        wanted.own_targets = frozenset(srv_targets(blocks))
        for block in blocks:
            srv: dict[str, list[Srv]] = {}
            roles: dict[str, RecordRole] = {}
            for record in block.records:
                if record.role in ("autoconfig", "autodiscover") and record.name != host:
                    role, target, addresses = wanted.names.get(
                        record.name, (record.role, None, frozenset())
                    )
                    if record.rtype == "CNAME":
                        target = record.data
                    else:
                        addresses = addresses | {record.data}
                    wanted.names[record.name] = (role, target, addresses)
                elif record.rtype == "SRV":
                    parsed = parse_srv(record.data)
                    if parsed is not None:
                        srv.setdefault(record.name, []).append(parsed)
                        roles[record.name] = record.role
            for name, values in srv.items():
                wanted.srv[name] = (roles[name], tuple(values))
                wanted.autodiscover_srv |= roles[name] == "autodiscover-srv"
            if block.kind == "moved":
                wanted.moved_srv.extend(
                    (name, block.moved_to or "")
                    for name in (f"_{label.label}._tcp.{block.domain}." for label in SRV_LABELS)
                    if len(name) <= MAX_NAME + 1
                )
        return wanted

    def questions(self) -> list[tuple[str, str]]:
        asked = [*_both(self.host)]
        for name in self.names:
            asked.extend(_both(name))
        for name, (_role, values) in self.srv.items():
            asked.append((name, "SRV"))
            for value in values:
                if value.available:
                    asked.extend(_both(value.target))
        asked.extend((name, "SRV") for name, _ in self.moved_srv)
        return asked


def _dangling_alias(name: str, answers: _Answers) -> str | None:
    """The CNAME target of ``name`` when the name is an alias of a name that does not exist.

    The resolver reports such an answer as NXDOMAIN without the alias (the rcode is about the
    end of the chain), so the CNAME is asked for separately."""
    answer = answers.known.get((name, "CNAME"))
    if answer is None or answer.status is not DnsStatus.OK or not answer.records:
        return None
    return answer.records[0]


def _host_findings(wanted: _Wanted, answers: _Answers) -> tuple[list[Finding], frozenset[str]]:
    """The autoconfig host itself; returns the addresses every autoconfig name should have."""
    host = wanted.host
    if answers.failed(*_both(host)):
        return [], wanted.host_addresses
    got, chain, _exists = answers.addresses(host)
    findings: list[Finding] = []
    if not got:
        via = f" (it is an alias of {chain[-1]}, which has none)" if chain else ""
        findings.append(
            Finding(
                ERROR,
                "DNS-MISSING",
                host,
                f"the autoconfig host ([server] public_host) has no A/AAAA records{via}: every "
                "autoconfig./autodiscover. name and _autodiscover._tcp record leads nowhere",
                "publish its addresses"
                + (" ([server] public_addresses)" if wanted.host_addresses else ""),
            )
        )
        return findings, wanted.host_addresses
    want = wanted.host_addresses
    if want:
        missing, extra = want - got, got - want
        if missing:
            findings.append(
                Finding(
                    WARNING,
                    "DNS-MISSING",
                    host,
                    f"the autoconfig host lacks {_listed(missing)} ([server] public_addresses): "
                    "clients that use only that address family cannot reach it",
                    "publish every address in [server] public_addresses",
                )
            )
        if extra:
            findings.append(
                Finding(
                    ERROR,
                    "DNS-CONFLICT",
                    host,
                    f"the autoconfig host also resolves to {_listed(extra)}, not in [server] "
                    "public_addresses: some clients reach another server",
                    "remove those addresses, or add them to [server] public_addresses",
                )
            )
    return findings, want or got


def _name_findings(
    name: str,
    role: RecordRole,
    target: str | None,
    reference: frozenset[str],
    wanted: _Wanted,
    answers: _Answers,
) -> list[Finding]:
    """One autoconfig./autodiscover. name, judged by the addresses clients end up at."""
    if answers.failed(*_both(name)):
        return []
    client = "Thunderbird" if role == "autoconfig" else "Outlook"
    got, chain, exists = answers.addresses(name)
    want_text = f"a CNAME to {target}" if target else f"A/AAAA {_listed(reference)}"
    if not exists:
        alias = _dangling_alias(name, answers)
        if alias is not None and alias == wanted.host and not reference:
            return []  # an alias of the autoconfig host, whose own finding says it is missing
        what = (
            f"is an alias of {alias}, which does not exist"
            if alias is not None
            else "does not exist (NXDOMAIN)"
        )
        return [
            Finding(
                ERROR,
                "DNS-MISSING",
                name,
                f"{what}: {client} cannot find the settings here",
                f"publish {want_text}",
            )
        ]
    if not got:
        if chain and chain[0] == wanted.host and not reference:
            return []  # the autoconfig host's own finding says it
        via = f" (alias of {chain[-1]}, which has none)" if chain else ""
        return [
            Finding(
                ERROR,
                "DNS-MISSING",
                name,
                f"has no A/AAAA records{via}: {client} cannot reach the autoconfig host",
                f"publish {want_text}",
            )
        ]
    where = f" (via {' → '.join(chain)})" if chain else ""
    if not reference:
        if target and (not chain or chain[0] != target):
            return [
                Finding(
                    WARNING,
                    "DNS-DIFFERENT",
                    name,
                    f"resolves to {_listed(got)}{where}, not through a CNAME to {target}, whose "
                    "addresses are unknown: cannot tell whether clients reach the autoconfig host",
                    f"publish {want_text}",
                )
            ]
        return []
    if not got & reference:
        return [
            Finding(
                ERROR,
                "DNS-AUTOCONFIG-ELSEWHERE",
                name,
                f"resolves to {_listed(got)}{where}, not to the autoconfig host "
                f"({_listed(reference)}): {client} asks another server for the settings",
                f"publish {want_text}",
            )
        ]
    if got - reference:
        return [
            Finding(
                ERROR,
                "DNS-CONFLICT",
                name,
                f"resolves to {_listed(got - reference)} besides the autoconfig host's "
                f"addresses{where}: some clients ask another server",
                f"publish only {want_text}",
            )
        ]
    if reference - got:
        return [
            Finding(
                WARNING,
                "DNS-DIFFERENT",
                name,
                f"lacks {_listed(reference - got)}, which the autoconfig host has{where}: "
                "clients using only that address family cannot reach it",
                f"publish {want_text}",
            )
        ]
    if target and (not chain or chain[0] != target):
        how = f"is an alias of {chain[0]}" if chain else "has A/AAAA records of its own"
        return [
            Finding(
                INFO,
                "DNS-DIFFERENT",
                name,
                f"{how}, not a CNAME to {target}; same addresses, so it works, but it does not "
                "follow the host's address changes by itself",
                f"publish {want_text}",
            )
        ]
    if not target and chain:
        return [
            Finding(
                INFO,
                "DNS-DIFFERENT",
                name,
                f"is an alias of {chain[0]} instead of carrying [server] public_addresses; same "
                "addresses, so it works",
                f"publish {want_text}",
            )
        ]
    return []


@dataclass
class _Targets:
    """SRV targets to look at once all SRV answers are in: target → the SRV names using it."""

    used: dict[str, list[str]] = field(default_factory=dict)
    not_offered: dict[str, list[str]] = field(default_factory=dict)
    moved: dict[str, list[str]] = field(default_factory=dict)

    def questions(self) -> list[tuple[str, str]]:
        names = {*self.used, *self.not_offered}
        return [q for name in sorted(names) for q in _both(name)]


def _srv_text(values: Iterable[Srv]) -> str:
    return ", ".join(v.text() for v in values)


def _srv_findings(
    name: str, role: RecordRole, want: tuple[Srv, ...], answers: _Answers, targets: _Targets
) -> list[Finding]:
    answer = answers[(name, "SRV")]
    if answer.status.failed:
        return []
    got = [s for s in (parse_srv(r) for r in answer.records) if s is not None]
    autodiscover = role == "autodiscover-srv"
    what = "Outlook's SRV route" if autodiscover else "RFC 6186"
    offered = [w for w in want if w.available]
    if not got:
        if not offered:
            return [
                Finding(
                    INFO,
                    "DNS-MISSING",
                    name,
                    "not published: SRV-using clients cannot tell the service is decidedly not "
                    "available here",
                    f"publish SRV {_srv_text(want)}",
                )
            ]
        return [
            Finding(
                WARNING,
                "DNS-MISSING",
                name,
                f"no SRV record ({what}): clients that use it will not find "
                + ("the autoconfig host" if autodiscover else "the server"),
                f"publish SRV {_srv_text(want)}",
            )
        ]
    real = [g for g in got if g.available]
    if not offered:
        for value in real:
            targets.not_offered.setdefault(value.target, []).append(name)
        return []  # judged with the targets' addresses
    for value in real:
        targets.used.setdefault(value.target, []).append(name)
    if not real:
        return [
            Finding(
                ERROR if autodiscover else WARNING,
                "DNS-DIFFERENT",
                name,
                "says the service is not available ('.'), but the site offers it",
                f"publish SRV {_srv_text(want)}",
            )
        ]
    wanted_by_key = {(w.target, w.port): w for w in offered}
    got_by_key = {(g.target, g.port): g for g in real}
    present = [k for k in wanted_by_key if k in got_by_key]
    if not present:
        other_host = all(g.target not in {w.target for w in offered} for g in real)
        return [
            Finding(
                ERROR if autodiscover and other_host else WARNING,
                "DNS-DIFFERENT",
                name,
                f"points at {_srv_text(real)}, not at {_srv_text(offered)}",
                f"publish SRV {_srv_text(want)}",
            )
        ]
    findings: list[Finding] = []
    missing = [w for k, w in wanted_by_key.items() if k not in got_by_key]
    if missing:
        findings.append(
            Finding(
                WARNING,
                "DNS-MISSING",
                name,
                f"lacks {_srv_text(missing)} (has {_srv_text(got)})",
                f"publish SRV {_srv_text(want)}",
            )
        )
    if not autodiscover:
        for key in present:
            have, need = got_by_key[key], wanted_by_key[key]
            if have.priority != need.priority:
                findings.append(
                    Finding(
                        WARNING,
                        "DNS-DIFFERENT",
                        name,
                        f"{key[0]}:{key[1]} has priority {have.priority}, the site's order "
                        f"gives {need.priority}: clients may prefer another server or protocol",
                        f"publish SRV {_srv_text(want)}",
                    )
                )
    extra = [g for k, g in got_by_key.items() if k not in wanted_by_key]
    if len(got) > len(real):
        extra.append(Srv(0, 0, 0, "."))
    if extra:
        findings.append(
            Finding(
                ERROR if autodiscover else WARNING,
                "DNS-CONFLICT",
                name,
                f"also has {_srv_text(extra)} beside {_srv_text(offered)}: "
                + (
                    "Outlook and Thunderbird may send the user's password to the other target"
                    if autodiscover
                    else "clients may pick the other one"
                ),
                f"publish only SRV {_srv_text(want)}",
            )
        )
    return findings


def _moved_findings(wanted: _Wanted, answers: _Answers) -> list[Finding]:
    findings = []
    for name, moved_to in wanted.moved_srv:
        answer = answers[(name, "SRV")]
        if answer.status.failed:
            continue
        real = [s for s in (parse_srv(r) for r in answer.records) if s is not None and s.available]
        if real:
            findings.append(
                Finding(
                    WARNING,
                    "DNS-MOVED-SRV",
                    name,
                    f"the domain moved to {moved_to}, but this still points at "
                    f"{_srv_text(real)}: SRV-using clients skip the redirect",
                    "remove the record (or publish SRV 0 0 0 .)",
                )
            )
    return findings


def _target_findings(wanted: _Wanted, targets: _Targets, answers: _Answers) -> list[Finding]:
    findings: list[Finding] = []
    for target, names in targets.used.items():
        if answers.failed(*_both(target)):
            continue
        got, chain, _exists = answers.addresses(target)
        used_by = f"target of {_listed(dict.fromkeys(names), 3)}"
        if chain:
            findings.append(
                Finding(
                    WARNING,
                    "DNS-SRV-TARGET-CNAME",
                    target,
                    f"{used_by}, is an alias (CNAME to {chain[-1]}); RFC 2782 requires SRV "
                    "targets to have A/AAAA records themselves",
                    f"point the SRV records at {chain[-1]}, or give {target} A/AAAA records",
                )
            )
        if not got and target != wanted.host:
            own = target in wanted.own_targets
            findings.append(
                Finding(
                    ERROR if own else WARNING,
                    "DNS-SRV-TARGET-NO-ADDRESS",
                    target,
                    f"{used_by}, has no A/AAAA records"
                    + (": the site's mail server cannot be reached at all" if own else ""),
                    f"publish A/AAAA records for {target}",
                )
            )
    for target, names in targets.not_offered.items():
        if answers.failed(*_both(target)):
            continue
        got, _chain, _exists = answers.addresses(target)
        for name in dict.fromkeys(names):
            findings.append(
                Finding(
                    WARNING if got else INFO,
                    "DNS-NOT-OFFERED-PUBLISHED",
                    name,
                    f"the site does not offer this service here, but the record points at {target}"
                    + (
                        f" ({_listed(got)}): SRV-using clients connect there"
                        if got
                        else ", which has no address"
                    ),
                    "publish SRV 0 0 0 . (decidedly not available) instead",
                )
            )
    return findings


def _unavailable(answers: _Answers) -> list[Finding]:
    failed = [a for a in answers.known.values() if a.status.failed]
    if not failed:
        return []
    if len(failed) == len(answers.known):
        return [
            Finding(
                WARNING,
                "DNS-UNAVAILABLE",
                answers.resolver.describe(),
                f"none of {len(failed)} queries got a usable answer ({failed[0].summary()}): "
                "nothing could be checked",
                "check that the resolver is reachable, or pass --resolver IP[:PORT]",
            )
        ]
    return [
        Finding(
            WARNING,
            "DNS-UNAVAILABLE",
            a.name,
            f"{a.rdtype}: {a.summary()}; cannot tell whether it is published",
            "run the check again, or against another resolver (--resolver)",
        )
        for a in failed
    ]


async def check_published(site: Site, resolver: Resolver, *, ttl: int = 3600) -> CheckReport:
    """Ask ``resolver`` for every record :func:`wanted_records` lists and report differences."""
    blocks = wanted_records(site, ttl=ttl)
    wanted = _Wanted.of(site, blocks)
    answers = _Answers(resolver)
    await answers.ask(wanted.questions())
    await answers.ask(
        (name, "CNAME")
        for name in wanted.names
        if answers[(name, "A")].status is DnsStatus.NXDOMAIN
    )
    findings, reference = _host_findings(wanted, answers)
    for name, (role, target, addresses) in wanted.names.items():
        findings.extend(_name_findings(name, role, target, addresses or reference, wanted, answers))
    targets = _Targets()
    for name, (role, values) in wanted.srv.items():
        findings.extend(_srv_findings(name, role, values, answers, targets))
    findings.extend(_moved_findings(wanted, answers))
    await answers.ask(targets.questions())
    findings.extend(_target_findings(wanted, targets, answers))
    findings.extend(_unavailable(answers))
    findings.sort(key=lambda f: -f.severity.rank)
    answered = sum(1 for a in answers.known.values() if not a.status.failed)
    return CheckReport(tuple(findings), answered, resolver.describe())
