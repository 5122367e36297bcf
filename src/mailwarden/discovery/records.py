"""The DNS records mail clients look up for a site, derived from the site file alone (no I/O).

For every served domain and alias domain: the names Thunderbird and Outlook ask
(``autoconfig.<d>``, ``autodiscover.<d>``), Outlook's one-certificate SRV route
(``_autodiscover._tcp.<d>``), and the RFC 6186 / RFC 8314 SRV records of each mail protocol
(protocols.md §1.5, §2.2, §5). ``mailwarden dns records`` renders them as zone-file text or
JSON; ``mailwarden dns check`` compares them with what a resolver answers.

Decisions the RFCs leave to the publisher, made once here:

* **Priorities.** Lower is preferred (RFC 2782). Incoming protocols share one priority scale,
  because RFC 6186 lets clients compare priorities across access protocols: every record of the
  service set's ``incoming_first`` protocol comes before every record of the other. Within one
  protocol, implicit TLS comes before STARTTLS (RFC 8314 §5.1), and within one TLS mode the
  site's order of servers is kept. Submission has its own scale (implicit TLS, then STARTTLS).
  Priorities are spaced by 10 so that a hand-made record fits in between; weights are 0 (no
  load balancing: every priority value is used once).
* **Not offered.** A label with no server gets ``0 0 0 .``, "decidedly not available"
  (RFC 2782), so that an SRV-using client does not look further for it.
* **No TLS.** A server with ``tls = "none"`` gets no SRV record: RFC 8314 declares cleartext
  obsolete and SRV-using clients expect TLS; if it was the only server of its label, the label
  is published as not available, and the block says why.
* **Moved domains** (``moved_to``) keep the names that serve the redirect (``autoconfig.``,
  ``autodiscover.``, ``_autodiscover._tcp``): the autoconfig host answers them with a redirect
  to the new domain. They get **no** RFC 6186 records: an SRV record cannot carry "use another
  address", so it could only send clients to the old platform, where the accounts are gone.
  ``dns check`` warns about SRV records still left there.
* **The autoconfig host** is ``[server] public_host``, or ``autodiscover.<primary_domain>``
  when unset. ``autoconfig.<d>`` and ``autodiscover.<d>`` are CNAMEs to it, or A/AAAA records
  when ``[server] public_addresses`` is set. The public host's own name never gets a CNAME (a
  CNAME to itself is a loop): it gets the addresses, or a comment that it must have them.
* ``autodiscover = false`` drops ``autodiscover.<d>`` and ``_autodiscover._tcp.<d>``: Outlook
  gets error 601 there anyway, and the names may belong to another Autodiscover service.
"""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import idna

from mailwarden.errors import InputError
from mailwarden.site.model import Domain, Server, ServiceKind, ServiceSet, Site

RecordType = Literal["A", "AAAA", "CNAME", "SRV"]
RecordRole = Literal["autoconfig", "autodiscover", "autodiscover-srv", "mail-srv", "host"]
"""What a record is for: ``host`` is an address record of the autoconfig host itself."""
DomainKind = Literal["domain", "alias", "moved"]
Strategy = Literal["per-domain", "srv", "plain-http"]

MAX_TTL = 2_147_483_647
"""RFC 2181 §8: TTLs are 31-bit unsigned values."""
MAX_NAME = 253
"""Longest host name in presentation form without the final dot (255 octets on the wire)."""
PRIORITY_STEP = 10

MailLabel = Literal["imaps", "imap", "pop3s", "pop3", "submissions", "submission"]


@dataclass(frozen=True, slots=True)
class SrvLabel:
    label: MailLabel
    kind: Literal["imap", "pop3", "smtp"]
    tls: Literal["implicit", "starttls"]
    title: str


SRV_LABELS: tuple[SrvLabel, ...] = (
    SrvLabel("imaps", "imap", "implicit", "IMAP over implicit TLS (RFC 8314)"),
    SrvLabel("imap", "imap", "starttls", "IMAP with STARTTLS"),
    SrvLabel("pop3s", "pop3", "implicit", "POP3 over implicit TLS (RFC 8314)"),
    SrvLabel("pop3", "pop3", "starttls", "POP3 with STLS"),
    SrvLabel("submissions", "smtp", "implicit", "submission over implicit TLS (RFC 8314)"),
    SrvLabel("submission", "smtp", "starttls", "submission with STARTTLS"),
)
"""The six RFC 6186 / RFC 8314 labels (``_<label>._tcp.<domain>``)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record in presentation form: ``name`` absolute (trailing dot, A-labels)."""

    name: str
    rtype: RecordType
    ttl: int
    data: str
    comment: str = ""
    role: RecordRole = "mail-srv"

    def line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rtype} {self.data}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.rtype,
            "ttl": self.ttl,
            "data": self.data,
            "comment": self.comment,
            "role": self.role,
        }


@dataclass(frozen=True, slots=True)
class Srv:
    """The data of an SRV record; ``target`` is absolute, ``.`` means not available."""

    priority: int
    weight: int
    port: int
    target: str

    @property
    def available(self) -> bool:
        return self.target != "."

    def text(self) -> str:
        return f"{self.priority} {self.weight} {self.port} {self.target}"


def parse_srv(data: str) -> Srv | None:
    """``"0 0 993 imap.example.org."`` → :class:`Srv`; None for anything else."""
    parts = data.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    target = parts[3].lower()
    return Srv(
        int(parts[0]),
        int(parts[1]),
        int(parts[2]),
        target if target.endswith(".") else target + ".",
    )


@dataclass(frozen=True, slots=True)
class DomainRecords:
    """Everything one served name needs in DNS."""

    domain: str
    """The served name (A-label, no trailing dot)."""
    kind: DomainKind
    canonical: str
    """The ``[domains]`` key it belongs to (the domain itself unless an alias)."""
    services: str
    """The name of its service set."""
    public_host: str
    """The autoconfig host, absolute."""
    autodiscover: bool
    moved_to: str | None
    records: tuple[Record, ...]
    needs_address: tuple[str, ...] = ()
    """Absolute names that must have A/AAAA records the site file does not know (the public
    host, when ``[server] public_addresses`` is empty)."""
    notes: tuple[str, ...] = ()

    @property
    def unicode(self) -> str:
        return to_unicode(self.domain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "unicode": self.unicode,
            "kind": self.kind,
            "canonical": self.canonical,
            "services": self.services,
            "autodiscover": self.autodiscover,
            "moved_to": self.moved_to,
            "records": [r.to_dict() for r in self.records],
            "needs_address": list(self.needs_address),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class CertificatePlan:
    """The names the autoconfig host's certificate needs under one publishing strategy."""

    strategy: Strategy
    names: tuple[str, ...]
    """subjectAltName DNS names of the autoconfig host's certificate."""
    elsewhere: tuple[str, ...]
    """Names whose HTTPS usually belongs to another server (the bare domain: the web site)."""
    plain_http: tuple[str, ...]
    """Names clients then reach over plain HTTP only (no certificate needed)."""
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "names": list(self.names),
            "elsewhere": list(self.elsewhere),
            "plain_http": list(self.plain_http),
            "note": self.note,
        }


def to_unicode(domain: str) -> str:
    """The U-label form for people; the A-label form itself when it cannot be decoded."""
    try:
        return idna.decode(domain.rstrip("."))
    except (idna.IDNAError, UnicodeError):
        return domain.rstrip(".")


def absolute(name: str) -> str:
    return name.lower() if name.endswith(".") else name.lower() + "."


def check_ttl(value: int) -> int:
    if not 0 <= value <= MAX_TTL:
        raise InputError(f"--ttl {value}: a TTL is 0 to {MAX_TTL} seconds (e.g. 3600)")
    return value


def public_host(site: Site) -> str:
    """The autoconfig host: ``[server] public_host`` or ``autodiscover.<primary_domain>``."""
    return absolute(site.server.public_host or f"autodiscover.{site.primary_domain}")


def _fits(name: str) -> bool:
    bare = name.rstrip(".")
    return len(bare) <= MAX_NAME and all(0 < len(label) <= 63 for label in bare.split("."))


def _address_records(
    name: str, addresses: Sequence[str], ttl: int, comment: str, role: RecordRole
) -> list[Record]:
    records = []
    for text in addresses:
        rtype: RecordType = "AAAA" if ipaddress.ip_address(text).version == 6 else "A"
        records.append(Record(name, rtype, ttl, text, comment, role))
    return records


class _Builder:
    """Collects one domain's records and notes, refusing names DNS cannot carry."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.records: list[Record] = []
        self.notes: list[str] = []
        self.needs_address: list[str] = []

    def add(self, name: str, rtype: RecordType, data: str, comment: str, role: RecordRole) -> None:
        if not _fits(name):
            self.notes.append(f"{name} is longer than DNS allows (253 characters): not published")
            return
        self.records.append(Record(name, rtype, self.ttl, data, comment, role))

    def extend(self, records: Iterable[Record]) -> None:
        for record in records:
            self.add(record.name, record.rtype, record.data, record.comment, record.role)


def _host_records(builder: _Builder, site: Site, host: str, role_comment: str) -> None:
    """The autoconfig host's own name: its addresses, or a note that it must have some."""
    addresses = site.server.public_addresses
    if addresses:
        builder.extend(
            _address_records(
                host,
                addresses,
                builder.ttl,
                f"{role_comment}: [server] public_addresses (no CNAME: this is the host "
                "every other name points at)",
                "host",
            )
        )
    else:
        builder.needs_address.append(host)


def _autoconfig_names(
    builder: _Builder, site: Site, domain: str, config: Domain, host: str, owns_host: bool
) -> None:
    addresses = site.server.public_addresses
    names: list[tuple[str, RecordRole, str]] = [
        (
            f"autoconfig.{domain}.",
            "autoconfig",
            "Thunderbird autoconfig (HTTPS, then plain HTTP)",
        ),
    ]
    if config.autodiscover:
        names.append(
            (
                f"autodiscover.{domain}.",
                "autodiscover",
                "Outlook Autodiscover (POX); Thunderbird asks it too",
            )
        )
    for name, role, comment in names:
        if name == host:
            if owns_host:
                _host_records(builder, site, host, f"{comment}; the autoconfig host itself")
            continue
        if addresses:
            builder.extend(
                _address_records(
                    name, addresses, builder.ttl, f"{comment} ([server] public_addresses)", role
                )
            )
        else:
            builder.add(name, "CNAME", host, f"{comment} (the autoconfig host)", role)


def _autodiscover_srv(builder: _Builder, domain: str, host: str) -> None:
    builder.add(
        f"_autodiscover._tcp.{domain}.",
        "SRV",
        f"0 0 443 {host}",
        "one certificate for all domains: Outlook asks the user once before following it; "
        "Thunderbird uses it too, ignoring port and priority",
        "autodiscover-srv",
    )


def _incoming_order(services: ServiceSet) -> tuple[Literal["imap", "pop3"], ...]:
    return ("imap", "pop3") if services.incoming_first == "imap" else ("pop3", "imap")


def _srv_plan(services: ServiceSet) -> dict[MailLabel, list[tuple[int, Server]]]:
    """(priority, server) per label, priorities as explained in the module docstring."""
    plan: dict[MailLabel, list[tuple[int, Server]]] = {label.label: [] for label in SRV_LABELS}
    scales: tuple[tuple[ServiceKind, ...], ...] = (_incoming_order(services), ("smtp",))
    for kinds in scales:
        position = 0
        for kind in kinds:
            for label in (x for x in SRV_LABELS if x.kind == kind):
                seen: set[tuple[str, int]] = set()
                for server in services.servers(kind):
                    key = (server.host, server.port_for(kind))
                    if server.tls == label.tls and key not in seen:
                        seen.add(key)
                        plan[label.label].append((position * PRIORITY_STEP, server))
                        position += 1
    return plan


def _mail_srv(builder: _Builder, domain: str, services: ServiceSet) -> None:
    plan = _srv_plan(services)
    for label in SRV_LABELS:
        name = f"_{label.label}._tcp.{domain}."
        mine = plan[label.label]
        for rank, (priority, server) in enumerate(mine):
            comment = label.title
            if len(mine) > 1:
                comment += f", choice {rank + 1} of {len(mine)}"
            port = server.port_for(label.kind)
            builder.add(name, "SRV", f"{priority} 0 {port} {server.host}.", comment, "mail-srv")
        if mine:
            continue
        plain = [
            s for s in services.servers(label.kind) if s.tls == "none" and label.tls == "starttls"
        ]
        why = "not offered"
        if plain:
            hosts = ", ".join(f"{s.host}:{s.port_for(label.kind)}" for s in plain)
            why = f"{hosts} runs without TLS: not published (RFC 8314: cleartext is obsolete)"
            builder.notes.append(f"{label.title}: {why}")
        builder.add(
            name,
            "SRV",
            "0 0 0 .",
            f"{label.title}: {why} ('.' = decidedly not available, RFC 2782)",
            "mail-srv",
        )


def _host_owner(site: Site, host: str) -> str:
    """The served name under which the public host's own records are listed."""
    for name in site.served_names():
        if host in (f"autoconfig.{name}.", f"autodiscover.{name}."):
            return name
    return site.primary_domain


def wanted_records(site: Site, *, ttl: int = 3600) -> tuple[DomainRecords, ...]:
    """What DNS should hold for ``site``: one block per served name, primary domain first, then
    each domain followed by its aliases."""
    check_ttl(ttl)
    host = public_host(site)
    owner = _host_owner(site, host)
    ordered = [site.primary_domain, *(d for d in site.domains if d != site.primary_domain)]
    result: list[DomainRecords] = []
    for canonical in ordered:
        config = site.domains[canonical]
        services = site.services[config.services]
        for name in (canonical, *config.aliases):
            builder = _Builder(ttl)
            owns_host = name == owner
            _autoconfig_names(builder, site, name, config, host, owns_host)
            if (
                owns_host
                and not any(r.role == "host" for r in builder.records)
                and (host not in builder.needs_address)
            ):
                _host_records(builder, site, host, "the autoconfig host ([server] public_host)")
            if config.autodiscover:
                _autodiscover_srv(builder, name, host)
            kind: DomainKind = "domain" if name == canonical else "alias"
            if config.moved_to is not None:
                kind = "moved"
                builder.notes.append(
                    f"moved to {config.moved_to}: the autoconfig host answers these names with a "
                    "redirect there; no RFC 6186 SRV records (they cannot carry the new address): "
                    "remove any left from before the move"
                )
            else:
                _mail_srv(builder, name, services)
            result.append(
                DomainRecords(
                    domain=name,
                    kind=kind,
                    canonical=canonical,
                    services=config.services,
                    public_host=host,
                    autodiscover=config.autodiscover,
                    moved_to=config.moved_to,
                    records=tuple(builder.records),
                    needs_address=tuple(builder.needs_address),
                    notes=tuple(builder.notes),
                )
            )
    return tuple(result)


def srv_targets(blocks: Sequence[DomainRecords]) -> tuple[str, ...]:
    """Every host an SRV record points at, in first-seen order (each needs A/AAAA, no CNAME)."""
    seen: dict[str, None] = {}
    for block in blocks:
        for record in block.records:
            srv = parse_srv(record.data) if record.rtype == "SRV" else None
            if srv is not None and srv.available:
                seen.setdefault(srv.target)
    return tuple(seen)


def certificate_plans(blocks: Sequence[DomainRecords]) -> tuple[CertificatePlan, ...]:
    """The autoconfig host's certificate names for each way of publishing (choose one)."""
    if not blocks:
        return ()
    host = blocks[0].public_host.rstrip(".")
    per_domain = [host]
    bare: list[str] = []
    http_names: list[str] = []
    for block in blocks:
        names = [f"autoconfig.{block.domain}"]
        if block.autodiscover:
            names.append(f"autodiscover.{block.domain}")
        per_domain.extend(n for n in names if n not in per_domain)
        http_names.extend(n for n in names if n != host and n not in http_names)
        bare.append(block.domain)
    return (
        CertificatePlan(
            "per-domain",
            tuple(per_domain),
            tuple(bare),
            (),
            "every HTTPS URL of every client works. The bare domains are asked too "
            "(Thunderbird's https://<d>/.well-known/autoconfig/..., Outlook's first POST to "
            "https://<d>/autodiscover/autodiscover.xml), but they usually point at the "
            "institution's web server: let it forward those two paths to the autoconfig host, "
            "or leave them (clients move on; a wrong certificate there makes Outlook warn).",
        ),
        CertificatePlan(
            "srv",
            (host,),
            (),
            tuple(n for n in http_names if n.startswith("autoconfig.")),
            "one certificate: Outlook follows _autodiscover._tcp to the autoconfig host after "
            "asking the user once; Thunderbird's Autodiscover does too, but its autoconfig "
            "falls back to http://autoconfig.<d> (the draft requires the user to confirm "
            "configurations fetched over HTTP). autodiscover.<d> must then not answer HTTPS "
            "with a certificate lacking its name (Outlook shows a warning before trying SRV).",
        ),
        CertificatePlan(
            "plain-http",
            (host,),
            (),
            tuple(http_names),
            "no certificate for autoconfig.<d>: Thunderbird fetches "
            "http://autoconfig.<d>/mail/config-v1.1.xml (the draft requires the user to "
            "confirm it); Outlook's GET http://autodiscover.<d>/autodiscover/autodiscover.xml "
            "gets a 302 to the autoconfig host, which Outlook follows after a warning.",
        ),
    )


def _comment(text: str) -> str:
    return " ".join(text.split())


def _wrapped(text: str, indent: str = "") -> list[str]:
    return [
        f";{indent} {line}" if line else ";"
        for line in textwrap.wrap(
            _comment(text), width=96 - len(indent), break_on_hyphens=False, break_long_words=False
        )
        or [""]
    ]


def _block(block: DomainRecords) -> list[str]:
    title = block.domain
    if block.unicode != block.domain:
        title += f" ({block.unicode})"
    what = {
        "domain": f"domain, service set {block.services!r}",
        "alias": f"alias of {block.canonical}, service set {block.services!r}",
        "moved": f"moved to {block.moved_to}",
    }[block.kind]
    if not block.autodiscover:
        what += "; autodiscover = false: no Autodiscover names"
    lines = [f"; ==== {title} ====", *_wrapped(what)]
    for note in block.notes:
        lines.extend(_wrapped(f"note: {note}"))
    for name in block.needs_address:
        lines.extend(
            _wrapped(
                f"{name} is the autoconfig host ([server] public_host): give it A/AAAA records "
                "here (or set [server] public_addresses to have them written); it cannot be a "
                "CNAME to itself."
            )
        )
    width = max((len(r.name) for r in block.records), default=0)
    for record in block.records:
        line = f"{record.name:<{width}} {record.ttl} IN {record.rtype:<5} {record.data}"
        if record.comment:
            line += f" ; {_comment(record.comment)}"
        lines.append(line)
    return lines


def render_zone(blocks: Sequence[DomainRecords]) -> str:
    """Zone-file text: absolute names, an explicit TTL on every record, comments per domain and
    per record. Each record belongs in the zone that holds its name."""
    lines = [
        "; DNS records for mail client discovery, from the mailwarden site file.",
        "; Names are absolute: put each record into the zone that holds its name.",
    ]
    if blocks:
        lines.append(f"; The autoconfig host ([server] public_host) is {blocks[0].public_host}")
    targets = srv_targets(blocks)
    if targets:
        lines.extend(
            _wrapped(
                "SRV targets need A/AAAA records of their own, never a CNAME (RFC 2782): "
                + ", ".join(targets)
            )
        )
    plans = certificate_plans(blocks)
    if plans:
        lines.append("; Certificate of the autoconfig host, by strategy (choose one):")
        for plan in plans:
            lines.extend(_wrapped(f"{plan.strategy}: {', '.join(plan.names)}", "  "))
            if plan.elsewhere:
                lines.extend(
                    _wrapped(
                        "bare domains (usually the web server): " + ", ".join(plan.elsewhere),
                        "    ",
                    )
                )
            if plan.plain_http:
                lines.extend(_wrapped("plain HTTP only: " + ", ".join(plan.plain_http), "    "))
            lines.extend(_wrapped(plan.note, "    "))
    for block in blocks:
        lines.append("")
        lines.extend(_block(block))
    return "\n".join(lines) + "\n"


def to_json(blocks: Sequence[DomainRecords]) -> dict[str, Any]:
    return {
        "public_host": blocks[0].public_host if blocks else None,
        "srv_targets": list(srv_targets(blocks)),
        "certificates": [p.to_dict() for p in certificate_plans(blocks)],
        "domains": [b.to_dict() for b in blocks],
    }
