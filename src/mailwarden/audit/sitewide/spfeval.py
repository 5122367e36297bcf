"""SPF policy evaluation over loaded DNS data: pure, so every rule is testable without a network.

The ``spf`` check loads a domain's record and everything it points to into :class:`SpfData`;
this module judges that data as receivers would (RFC 7208): :func:`tally` walks the whole
include/redirect tree for the worst case the look-up limits must hold for, :func:`check_host`
evaluates the policy for one client address with the limits counted in evaluation order.
What depends on the message or the connecting host (``exists``, ``ptr``, macros other than
``%{d}``/``%{o}``) is ``unknown``, never a guess.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from mailwarden.audit.sitewide.authrecords import (
    Mechanism,
    RecordSyntaxError,
    SpfRecord,
    is_spf,
    parse_spf,
    trivial_target,
)
from mailwarden.audit.sitewide.dnstxt import txt_texts
from mailwarden.discovery.resolver import DnsAnswer, DnsStatus

MAX_LOOKUPS = 10
"""RFC 7208 4.6.4: DNS-querying terms one evaluation may use."""
MAX_VOID = 2
"""RFC 7208 4.6.4: look-ups without an answer allowed before permerror."""
MAX_MX = 10
"""RFC 7208 4.6.4: MX hosts an mx mechanism may name."""
MAX_DEPTH = 12
"""Nested include/redirect levels followed (the look-up limit stops receivers at 10)."""
MAX_COUNTED = 60
"""Look-ups counted in the worst-case walk before it stops (loops and fan-out stay bounded)."""

Result = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror", "unknown"]
_QUALIFIED: dict[str, Result] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- what the look-ups found -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    """The SPF record at one name, or why there is none to use."""

    status: Literal["ok", "none", "multiple", "syntax", "failed"]
    record: SpfRecord | None = None
    detail: str = ""
    void: bool = False
    """The name does not exist or has no TXT record (a void look-up)."""


@dataclass(frozen=True, slots=True)
class Hosts:
    """The A and AAAA answers of one name, as ``a``/``mx``/``exists`` terms use them."""

    v4: tuple[ipaddress.IPv4Address, ...] = ()
    v6: tuple[ipaddress.IPv6Address, ...] = ()
    failed4: str = ""
    failed6: str = ""
    """Why the look-up failed (empty: it did not)."""

    @property
    def void(self) -> bool:
        return not self.v4 and not self.v6 and not self.failed4 and not self.failed6


@dataclass(frozen=True, slots=True)
class MxHosts:
    names: tuple[str, ...] = ()
    failed: str = ""

    @property
    def void(self) -> bool:
        return not self.names and not self.failed


@dataclass(slots=True)
class SpfData:
    """Everything loaded for one domain's policy, keyed by lower-case name without a dot."""

    records: dict[str, Fetched] = field(default_factory=dict)
    hosts: dict[str, Hosts] = field(default_factory=dict)
    mx: dict[str, MxHosts] = field(default_factory=dict)


# --- pure: reading a TXT answer --------------------------------------------------------------


def fetched_from(answer: DnsAnswer) -> Fetched:
    """The SPF record in a TXT answer (RFC 7208 4.5: exactly one ``v=spf1`` record)."""
    if answer.status.failed:
        return Fetched("failed", detail=answer.summary())
    if answer.status is not DnsStatus.OK:
        return Fetched("none", detail=answer.summary(), void=True)
    texts = [text for text in txt_texts(answer.records) if is_spf(text)]
    if not texts:
        return Fetched("none", detail="no TXT record begins with v=spf1")
    if len(texts) > 1:
        return Fetched("multiple", detail=f"{len(texts)} records begin with v=spf1")
    try:
        return Fetched("ok", parse_spf(texts[0]), detail=texts[0])
    except RecordSyntaxError as exc:
        return Fetched("syntax", detail=str(exc))


# --- pure: the worst-case walk ---------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """What the walk through the whole include/redirect tree found."""

    lookups: int = 0
    truncated: bool = False
    void: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    ptr: list[str] = field(default_factory=list)
    many_mx: list[str] = field(default_factory=list)
    pass_all: list[str] = field(default_factory=list)
    broken: list[tuple[str, Fetched]] = field(default_factory=list)
    """Included/redirected names whose record is missing, multiple or malformed."""
    failed: list[str] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)
    """Targets not followed: macros, or not loaded (depth or query budget)."""


def tally(data: SpfData, domain: str) -> Tally:
    """Count look-ups, void look-ups and the rest through every include and redirect.

    This is the worst case a receiver can meet (every term evaluated, as for a sender that
    matches none), which is what the limits must hold for.
    """
    result = Tally()
    _walk(data, domain, (), result)
    return result


def _walk(data: SpfData, domain: str, path: tuple[str, ...], out: Tally) -> None:
    fetched = data.records.get(domain)
    if fetched is None:
        out.uncounted.append(domain)
        return
    if fetched.status == "failed":
        out.failed.append(f"{domain} TXT: {fetched.detail}")
        return
    if fetched.record is None:
        if path:
            out.broken.append((domain, fetched))
            if fetched.void:
                out.void.append(f"include:{domain}")
        return
    record = fetched.record
    here = (*path, domain)
    if record.all is not None and record.all.qualifier == "+":
        out.pass_all.append(domain)
    for term in record.mechanisms:
        if term.lookups:
            out.lookups += 1
            if out.lookups > MAX_COUNTED:
                out.truncated = True
                return
        if term.name == "ptr":
            out.ptr.append(domain)
        if not term.lookups or term.name == "ptr":
            continue
        target = trivial_target(term.domain, domain, here[0])
        if target is None:
            out.uncounted.append(str(term))
            continue
        if term.name == "include":
            if target in here:
                out.loops.append(" → ".join([*here, target]))
            else:
                _walk(data, target, here, out)
        elif term.name == "mx":
            _walk_mx(data, target, out)
        else:
            _walk_hosts(data, f"{term.name}:{target}", target, out)
        if out.truncated:
            return
    target_spec = record.redirect
    if target_spec is not None:
        out.lookups += 1
        target = trivial_target(target_spec, domain, here[0])
        if target is None:
            out.uncounted.append(f"redirect={target_spec}")
        elif target in here:
            out.loops.append(" → ".join([*here, target]))
        else:
            _walk(data, target, here, out)


def _walk_hosts(data: SpfData, term: str, target: str, out: Tally) -> None:
    hosts = data.hosts.get(target)
    if hosts is None:
        out.uncounted.append(term)
    elif hosts.failed4 or hosts.failed6:
        out.failed.append(f"{target} A/AAAA: {hosts.failed4 or hosts.failed6}")
    elif hosts.void:
        out.void.append(term)


def _walk_mx(data: SpfData, target: str, out: Tally) -> None:
    mx = data.mx.get(target)
    if mx is None:
        out.uncounted.append(f"mx:{target}")
    elif mx.failed:
        out.failed.append(f"{target} MX: {mx.failed}")
    elif mx.void:
        out.void.append(f"mx:{target}")
    elif len(mx.names) > MAX_MX:
        out.many_mx.append(f"mx:{target} ({len(mx.names)} MX hosts)")
    else:
        for name in mx.names:
            hosts = data.hosts.get(name)
            if hosts is not None and (hosts.failed4 or hosts.failed6):
                out.failed.append(f"{name} A/AAAA: {hosts.failed4 or hosts.failed6}")


def effective_all(data: SpfData, domain: str) -> tuple[Mechanism | None, str]:
    """The ``all`` that ends the policy, following ``redirect=`` (and the name it is in)."""
    seen: set[str] = set()
    while domain not in seen and len(seen) < MAX_DEPTH:
        seen.add(domain)
        fetched = data.records.get(domain)
        if fetched is None or fetched.record is None:
            return None, domain
        record = fetched.record
        if record.all is not None or record.redirect is None:
            return record.all, domain
        target = trivial_target(record.redirect, domain, domain)
        if target is None:
            return None, domain
        domain = target
    return None, domain


# --- pure: check_host() for one address --------------------------------------------------------


@dataclass(slots=True)
class _State:
    lookups: int = 0
    void: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    result: Result
    why: str = ""


def check_host(ip: IPAddress, domain: str, data: SpfData) -> Verdict:
    """The result a receiver gets for mail from ``ip`` with a sender in ``domain`` (RFC 7208 4),
    over what was loaded; ``unknown`` where that depends on more than the address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return _check(ip, domain, domain, data, _State(), 0)


def _check(
    ip: IPAddress, domain: str, sender: str, data: SpfData, state: _State, depth: int
) -> Verdict:
    if depth > MAX_DEPTH:
        return Verdict("permerror", "include/redirect nested too deep")
    fetched = data.records.get(domain)
    if fetched is None:
        return Verdict("unknown", f"{domain} was not looked up (query budget)")
    if fetched.status == "failed":
        return Verdict("temperror", f"{domain}: {fetched.detail}")
    if fetched.record is None:
        if fetched.status == "none":
            if fetched.void:
                state.void += 1
            return Verdict("none", f"{domain} has no SPF record")
        return Verdict("permerror", f"{domain}: {fetched.detail}")
    record = fetched.record
    for term in record.mechanisms:
        if term.lookups:
            state.lookups += 1
            if state.lookups > MAX_LOOKUPS:
                return Verdict("permerror", f"more than {MAX_LOOKUPS} DNS look-ups (at {term})")
        matched = _matches(ip, term, domain, sender, data, state, depth)
        if isinstance(matched, Verdict):
            return matched
        if matched:
            return Verdict(_QUALIFIED[term.qualifier], f"matched {term} in {domain}")
    if record.redirect is not None:
        state.lookups += 1
        if state.lookups > MAX_LOOKUPS:
            return Verdict("permerror", f"more than {MAX_LOOKUPS} DNS look-ups (at redirect)")
        target = trivial_target(record.redirect, domain, sender)
        if target is None:
            return Verdict("unknown", f"redirect={record.redirect} depends on the message")
        verdict = _check(ip, target, sender, data, state, depth + 1)
        if verdict.result == "none":
            return Verdict("permerror", f"redirect to {target}, which has no SPF record")
        return verdict
    return Verdict("neutral", f"no term in {domain} matched (the default is neutral)")


def _matches(
    ip: IPAddress,
    term: Mechanism,
    domain: str,
    sender: str,
    data: SpfData,
    state: _State,
    depth: int,
) -> bool | Verdict:
    name = term.name
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        assert term.address is not None
        prefix = term.cidr4 if name == "ip4" else term.cidr6
        return term.address.version == ip.version and ip in ipaddress.ip_network(
            f"{term.address}/{prefix if prefix is not None else term.address.max_prefixlen}",
            strict=False,
        )
    if name in ("ptr", "exists"):
        return Verdict("unknown", f"{term} in {domain} depends on the connecting host or message")
    target = trivial_target(term.domain, domain, sender)
    if target is None:
        return Verdict("unknown", f"{term} in {domain} uses macros that depend on the message")
    if name == "include":
        verdict = _check(ip, target, sender, data, state, depth + 1)
        if verdict.result == "pass":
            return True
        if verdict.result in ("fail", "softfail", "neutral"):
            return False
        if verdict.result == "none":
            return Verdict("permerror", f"include:{target} has no SPF record")
        return verdict
    if name == "a":
        return _host_matches(ip, term, target, data, state)
    mx = data.mx.get(target)
    if mx is None:
        return Verdict("unknown", f"mx:{target} was not looked up (query budget)")
    if mx.failed:
        return Verdict("temperror", f"{target} MX: {mx.failed}")
    if mx.void:
        state.void += 1
        if state.void > MAX_VOID:
            return Verdict("permerror", f"more than {MAX_VOID} void look-ups (at {term})")
        return False
    if len(mx.names) > MAX_MX:
        return Verdict("permerror", f"{target} has more than {MAX_MX} MX hosts")
    for host in mx.names:
        matched = _host_matches(ip, term, host, data, state, count_void=False)
        if matched is not False:
            return matched
    return False


def _host_matches(
    ip: IPAddress,
    term: Mechanism,
    name: str,
    data: SpfData,
    state: _State,
    count_void: bool = True,
) -> bool | Verdict:
    hosts = data.hosts.get(name)
    if hosts is None:
        return Verdict("unknown", f"{name} was not looked up (query budget)")
    failed = hosts.failed4 if ip.version == 4 else hosts.failed6
    if failed:
        return Verdict("temperror", f"{name}: {failed}")
    addresses: tuple[IPAddress, ...] = hosts.v4 if ip.version == 4 else hosts.v6
    if not addresses:
        if count_void:
            state.void += 1
            if state.void > MAX_VOID:
                return Verdict("permerror", f"more than {MAX_VOID} void look-ups (at {term})")
        return False
    prefix = term.cidr4 if ip.version == 4 else term.cidr6
    for address in addresses:
        length = prefix if prefix is not None else address.max_prefixlen
        if ip in ipaddress.ip_network(f"{address}/{length}", strict=False):
            return True
    return False
