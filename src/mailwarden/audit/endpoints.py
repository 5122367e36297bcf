"""Which endpoints the audit looks at: every name × address × port the site depends on.

From the site file: every IMAP/POP3/SMTP server of every service set, the autoconfig host
(``[server] public_host``, HTTPS) and ``[[audit.endpoints]]``; from DNS: the MX hosts of every
served domain (port 25, STARTTLS) and the A and AAAA addresses of every host. One host:port named
by several sources is one service whose roles, names and domains are merged, then one endpoint
per address. A host without any address is a finding, not an endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailwarden.audit.model import Endpoint, Protocol, TlsMode
from mailwarden.discovery.records import public_host
from mailwarden.discovery.resolver import DnsStatus, Resolver
from mailwarden.findings import Finding, Severity
from mailwarden.site.model import Site

CODES = {
    "ENDPOINT-NO-ADDRESS": "A host the site depends on (a mail server, the autoconfig host, an MX) "
    "has no A or AAAA record, so nobody can connect to it. Publish its addresses, or remove it "
    "from the site file.",
    "ENDPOINT-CLEARTEXT": 'A server of the site file has tls = "none": passwords travel in '
    "clear (RFC 8314 calls cleartext obsolete). It is not audited; offer implicit TLS or "
    "STARTTLS.",
    "ENDPOINT-MX-UNKNOWN": "The MX records of a domain could not be read (SERVFAIL or no answer "
    "in time), so its MX hosts were not audited.",
}


@dataclass
class _Service:
    host: str
    port: int
    protocol: Protocol
    tls: TlsMode
    names: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)

    def add(self, *, role: str, domains: Iterable[str] = (), names: Iterable[str] = ()) -> None:
        pairs = [(role, self.roles)]
        pairs += [(domain, self.domains) for domain in domains]
        pairs += [(name, self.names) for name in names]
        for item, into in pairs:
            if item not in into:
                into.append(item)


@dataclass
class Discovered:
    endpoints: list[Endpoint]
    findings: list[Finding]


def _served_names(site: Site, domain: str) -> list[str]:
    return [domain, *site.domains[domain].aliases]


async def find_endpoints(site: Site, resolver: Resolver) -> Discovered:
    services: dict[tuple[str, int, str, str], _Service] = {}
    findings: list[Finding] = []

    def service(host: str, port: int, protocol: Protocol, tls: TlsMode) -> _Service:
        key = (host, port, protocol, tls)
        found = services.get(key)
        if found is None:
            found = services[key] = _Service(host, port, protocol, tls, names=[host])
        return found

    for set_name, services_set in site.services.items():
        users = [d for d, config in site.domains.items() if config.services == set_name]
        served = [name for d in users for name in _served_names(site, d)]
        for kind in ("imap", "pop3", "smtp"):
            for server in services_set.servers(kind):
                port = server.port_for(kind)
                if server.tls == "none":
                    findings.append(
                        Finding(
                            Severity.WARNING,
                            "ENDPOINT-CLEARTEXT",
                            f"{server.host}:{port}",
                            f"{kind.upper()} server of service set {set_name!r} has tls = "
                            '"none"; it is not audited',
                            "offer implicit TLS (or STARTTLS) and set tls accordingly",
                        )
                    )
                    continue
                label = "submission" if kind == "smtp" else kind.upper()
                service(server.host, port, kind, server.tls).add(
                    role=f"{label} server of {set_name!r}", domains=served
                )
    host = public_host(site).rstrip(".")
    service(host, 443, "https", "implicit").add(
        role="autoconfig host", domains=[n for d in site.domains for n in _served_names(site, d)]
    )
    for extra in site.audit.endpoints:
        service(extra.host, extra.port, extra.protocol, extra.tls).add(role="[audit] endpoint")
    if site.audit.mx:
        names = [n for d in site.domains for n in _served_names(site, d)]
        answers = await asyncio.gather(*(resolver.query(n, "MX") for n in names))
        for name, answer in zip(names, answers, strict=True):
            if answer.status.failed:
                findings.append(
                    Finding(
                        Severity.UNKNOWN,
                        "ENDPOINT-MX-UNKNOWN",
                        name,
                        f"the MX records of {name} could not be read: {answer.summary()}",
                    )
                )
            for record in answer.records:
                parts = record.split()
                if len(parts) == 2 and parts[1] != ".":
                    mx = parts[1].rstrip(".")
                    service(mx, 25, "smtp", "starttls").add(role=f"MX of {name}", domains=[name])
    hosts = sorted({s.host for s in services.values()})
    resolved = await asyncio.gather(*(resolver.addresses(h) for h in hosts))
    addresses: dict[str, list[str]] = {}
    for name, (a, aaaa) in zip(hosts, resolved, strict=True):
        addresses[name] = list(a.records) + list(aaaa.records)
        if not addresses[name]:
            worst = a if a.status.failed or a.status is DnsStatus.NXDOMAIN else aaaa
            severity = Severity.UNKNOWN if worst.status.failed else Severity.ERROR
            findings.append(
                Finding(
                    severity,
                    "ENDPOINT-NO-ADDRESS",
                    name,
                    f"{name} has no address: {worst.summary()}",
                    f"publish A/AAAA records for {name}",
                )
            )
    endpoints = [
        Endpoint(
            s.host,
            address,
            s.port,
            s.protocol,
            s.tls,
            tuple(s.names),
            tuple(s.roles),
            tuple(s.domains),
        )
        for s in services.values()
        for address in addresses.get(s.host, [])
    ]
    return Discovered(endpoints, findings)
