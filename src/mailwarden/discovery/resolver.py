"""DNS look-ups for discovery and audit: one adapter around dnspython's asyncio resolver.

Every answer is a value (:class:`DnsAnswer`), failures included: a timeout, SERVFAIL, NXDOMAIN or
an empty answer become a status the caller reports as one clear step, never an exception. Each
query has a timeout; the resolver is the system's (``/etc/resolv.conf``) or the one given with
``--resolver IP[:PORT]``, so a team can ask its own internal or a test server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, replace
from enum import Enum

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver

from mailwarden.errors import InputError

DEFAULT_TIMEOUT = 3.0
MAX_CNAME_HOPS = 8


class DnsStatus(Enum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    """The name does not exist."""
    NODATA = "nodata"
    """The name exists, but has no record of this type."""
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    ERROR = "error"

    @property
    def failed(self) -> bool:
        """The resolver could not say (as opposed to: it said there is nothing)."""
        return self in (DnsStatus.SERVFAIL, DnsStatus.TIMEOUT, DnsStatus.ERROR)


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One query and what came back, records in presentation form (names absolute, lower case)."""

    name: str
    rdtype: str
    status: DnsStatus
    records: tuple[str, ...] = ()
    cname_chain: tuple[str, ...] = ()
    """Aliases followed on the way, in order (``autoconfig.example.org. → web.example.org.``)."""
    ttl: int | None = None
    authenticated: bool = False
    """The resolver set the AD bit (it validated the answer with DNSSEC)."""
    ms: float = 0.0
    detail: str = ""

    @property
    def canonical(self) -> str:
        """The name the records belong to: the end of the CNAME chain, or the name itself."""
        return self.cname_chain[-1] if self.cname_chain else absolute(self.name)

    def summary(self) -> str:
        if self.status is DnsStatus.OK:
            via = f" (via CNAME {' → '.join(self.cname_chain)})" if self.cname_chain else ""
            return ", ".join(self.records) + via
        via = f" (via CNAME {' → '.join(self.cname_chain)})" if self.cname_chain else ""
        text = {
            DnsStatus.NXDOMAIN: "no such name (NXDOMAIN)",
            DnsStatus.NODATA: f"no {self.rdtype} record",
            DnsStatus.SERVFAIL: "the resolver failed (SERVFAIL)",
            DnsStatus.TIMEOUT: "no answer in time",
            DnsStatus.ERROR: "error",
        }[self.status] + via
        return f"{text}: {self.detail}" if self.detail else text


def absolute(name: str) -> str:
    """``Example.ORG`` → ``example.org.``: how names are compared throughout discovery."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


@dataclass(frozen=True, slots=True)
class NameServer:
    address: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def parse_nameserver(text: str) -> NameServer:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address, as given to ``--resolver``."""
    value = text.strip()
    port = 53
    host = value
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InputError(f"--resolver {text!r}: expected [IPv6]:PORT")
        if rest:
            port = _port(rest[1:], text)
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = _port(port_text, text)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise InputError(
            f"--resolver {text!r}: {host!r} is not an IP address (give IP or IP:PORT, "
            "e.g. 127.0.0.1:5353 or [::1]:5353)"
        ) from None
    return NameServer(address, port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(f"--resolver {whole!r}: {text!r} is not a port number (1-65535)")
    return int(text)


class Resolver:
    """Asks one name server (or the system's) with a timeout per query; never raises."""

    def __init__(
        self, nameserver: NameServer | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.nameserver = nameserver
        self.timeout = timeout
        if nameserver is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = ["127.0.0.1"]
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [nameserver.address]
            resolver.port = nameserver.port
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = None
        resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver = resolver

    def describe(self) -> str:
        if self.nameserver is None:
            return "system resolver (" + ", ".join(str(n) for n in self._resolver.nameservers) + ")"
        return f"resolver {self.nameserver}"

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """``name``'s records of ``rdtype``, following a CNAME chain the server left unfinished.

        An authoritative server answers a CNAME into another zone with the CNAME alone; a
        recursive one follows it. Either way the caller gets the end of the chain.
        """
        started = time.perf_counter()
        answer = await self._ask(absolute(name), rdtype)
        for _ in range(MAX_CNAME_HOPS):
            chain = answer.cname_chain
            if answer.status is not DnsStatus.NODATA or not chain or rdtype == "CNAME":
                break
            if chain[-1] in chain[:-1] or chain[-1] == answer.name:
                break  # a loop: leave it as the server said it
            more = await self._ask(chain[-1], rdtype)
            answer = replace(
                more,
                name=answer.name,
                cname_chain=chain + more.cname_chain,
                authenticated=answer.authenticated and more.authenticated,
            )
        return replace(answer, ms=(time.perf_counter() - started) * 1000)

    async def _ask(self, qname: str, rdtype: str) -> DnsAnswer:
        started = time.perf_counter()

        def done(status: DnsStatus, detail: str = "") -> DnsAnswer:
            ms = (time.perf_counter() - started) * 1000
            return DnsAnswer(qname, rdtype, status, ms=ms, detail=detail)

        try:
            answer = await self._resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            # A signed zone's denial of existence is validated too: DANE needs to know.
            responses = exc.kwargs.get("responses") or {}
            signed = any(bool(r.flags & dns.flags.AD) for r in responses.values())
            return replace(done(DnsStatus.NXDOMAIN), authenticated=signed)
        except dns.resolver.NoNameservers as exc:
            return done(DnsStatus.SERVFAIL, _servfail_detail(exc))
        except (TimeoutError, dns.exception.Timeout):
            return done(DnsStatus.TIMEOUT, f"after {self.timeout:g} s from {self.describe()}")
        except dns.resolver.LifetimeTimeout:
            return done(DnsStatus.TIMEOUT, f"after {self.timeout:g} s from {self.describe()}")
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return done(DnsStatus.ERROR, str(exc) or type(exc).__name__)
        response = answer.response
        chain = _cname_chain(response, qname)
        authenticated = bool(response.flags & dns.flags.AD)
        ms = (time.perf_counter() - started) * 1000
        if answer.rrset is None:
            return DnsAnswer(
                qname,
                rdtype,
                DnsStatus.NODATA,
                cname_chain=chain,
                authenticated=authenticated,
                ms=ms,
            )
        return DnsAnswer(
            qname,
            rdtype,
            DnsStatus.OK,
            records=tuple(sorted(_text(rdata, rdtype) for rdata in answer.rrset)),
            cname_chain=chain,
            ttl=answer.rrset.ttl,
            authenticated=authenticated,
            ms=ms,
        )

    async def addresses(self, host: str) -> tuple[DnsAnswer, DnsAnswer]:
        """The A and AAAA answers for ``host``, asked at the same time."""
        a, aaaa = await asyncio.gather(self.query(host, "A"), self.query(host, "AAAA"))
        return a, aaaa


def _text(rdata: dns.rdata.Rdata, rdtype: str) -> str:
    """Presentation form; lower case (names compare without case) except TXT, whose strings
    are data: a DKIM key is base64, an MTA-STS id is case-sensitive."""
    text: str = rdata.to_text()
    return text if rdtype == "TXT" else text.lower()


def _cname_chain(response: dns.message.Message, qname: str) -> tuple[str, ...]:
    chain: list[str] = []
    current = dns.name.from_text(qname)
    for _ in range(16):
        for rrset in response.answer:
            if rrset.name == current and rrset.rdtype == dns.rdatatype.CNAME:
                current = rrset[0].target
                chain.append(current.to_text().lower())
                break
        else:
            break
    return tuple(chain)


def _servfail_detail(exc: dns.resolver.NoNameservers) -> str:
    errors = exc.kwargs.get("errors") or []
    for _server, _tcp, _port, error in ((e[0], e[1], e[2], e[3]) for e in errors if len(e) >= 4):
        return str(error)
    return ""
