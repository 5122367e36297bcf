"""Typed, validated configuration objects.

The model is immutable once loaded: the server, the renderers and the CLI all read the same
objects and none of them can change the site behind another's back. Field names are the
site.toml keys (see docs/site-reference.md); validation messages name what is expected.

Sections owned by a part of mailwarden live with that part and are composed here: the
directory backends' ``[directory]`` in :mod:`mailwarden.directory.config`, the ``[guard]`` in
:mod:`mailwarden.guard.config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    model_validator,
)

from mailwarden.address import AddressError, normalise_domain
from mailwarden.configmodel import FrozenModel as _Model
from mailwarden.configmodel import KeyedValueError
from mailwarden.console.config import ConsoleConfig
from mailwarden.directory.config import DirectoryConfig, EmbeddedConfig
from mailwarden.guard.config import GuardConfig

TlsMode = Literal["implicit", "starttls", "none"]
LoginRule = Literal["address", "localpart", "directory"]
UnknownAddressPolicy = Literal["as-address", "generic", "reject"]
AuthMethod = Literal[
    "password-cleartext",
    "password-encrypted",
    "OAuth2",
    "NTLM",
    "GSSAPI",
    "TLS-client-cert",
    "client-IP-address",
    "none",
]
ServiceKind = Literal["imap", "pop3", "smtp"]


DEFAULT_PORTS: dict[tuple[str, str], int] = {
    ("imap", "implicit"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "implicit"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
    ("smtp", "implicit"): 465,
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 587,
}


def _hostname(value: str) -> str:
    try:
        return normalise_domain(value)
    except AddressError as exc:
        raise ValueError(f"{value!r} is not a valid host name ({exc})") from None


Hostname = Annotated[str, AfterValidator(_hostname)]

LOGIN_PLACEHOLDERS = ("%EMAILADDRESS%", "%EMAILLOCALPART%", "%EMAILDOMAIN%")
_TEMPLATE_RE = re.compile(r"(?:[^%\s]|%EMAIL(?:ADDRESS|LOCALPART|DOMAIN)%){1,128}")


def _login_template(value: str) -> str:
    """At least one placeholder, only known ones, no white space: anything else is a typo."""
    if not _TEMPLATE_RE.fullmatch(value) or not any(p in value for p in LOGIN_PLACEHOLDERS):
        raise ValueError(
            f"{value!r} is not a login template: use %EMAILADDRESS%, %EMAILLOCALPART% and "
            "%EMAILDOMAIN% with other characters, no spaces (e.g. '%EMAILLOCALPART%.%EMAILDOMAIN%')"
        )
    return value


LoginTemplate = Annotated[str, AfterValidator(_login_template)]


class Organisation(_Model):
    name: str = Field(min_length=1, max_length=200)
    short_name: str = Field(min_length=1, max_length=60)
    support_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    logo_url: str | None = Field(default=None, pattern=r"^(https?://|/)\S+$")


class Server(_Model):
    """One endpoint a client connects to (``[[services.NAME.imap]]`` and friends)."""

    host: Hostname
    port: int = Field(default=0, ge=0, le=65535)
    tls: TlsMode = "implicit"
    auth: tuple[AuthMethod, ...] = Field(default=("password-cleartext",), min_length=1)
    login: LoginRule | None = None
    """Overrides the domain's login rule for this endpoint (some sites log in to SMTP with the
    full address but to IMAP with the user ID)."""
    login_template: LoginTemplate | None = None
    """A user name built from the address, for hosters whose login is neither the address nor
    the local part (e.g. ``%EMAILLOCALPART%.%EMAILDOMAIN%``); overrides ``login``."""
    allow_unusual_port: bool = False
    """Accept implicit TLS on a port normally used for STARTTLS (some providers really run
    implicit TLS on 587). STARTTLS on 993/995/465 stays refused: Outlook fails on it."""

    def port_for(self, kind: str) -> int:
        return self.port or DEFAULT_PORTS[(kind, self.tls)]


_IMPLICIT_PORTS = {993, 995, 465}
_STARTTLS_PORTS = {143, 110, 587, 25}


def _check_tls_port(kind: str, servers: tuple[Server, ...]) -> None:
    """Refuse the TLS/port pairs that make every client fail (protocols.md §7 item 11)."""
    for index, server in enumerate(servers):
        port = server.port_for(kind)
        if server.tls == "starttls" and port in _IMPLICIT_PORTS:
            raise KeyedValueError(
                f"tls = 'starttls' on port {port}, which is an implicit-TLS "
                "port; use tls = 'implicit' (or a STARTTLS port such as 143/110/587)",
                (kind, index, "tls"),
                server.tls,
            )
        if server.tls == "implicit" and port in _STARTTLS_PORTS and not server.allow_unusual_port:
            raise KeyedValueError(
                f"tls = 'implicit' on port {port}, which is a STARTTLS port; "
                "use tls = 'starttls' (or an implicit-TLS port such as 993/995/465), or set "
                "allow_unusual_port = true if the server really works that way",
                (kind, index, "tls"),
                server.tls,
            )


class ServiceSet(_Model):
    """The servers of one mail platform, in order of preference within each protocol."""

    imap: tuple[Server, ...] = ()
    pop3: tuple[Server, ...] = ()
    smtp: tuple[Server, ...] = Field(min_length=1)
    pop3_keep_days: int = Field(default=14, ge=0, le=3650)
    """POP3 clients leave messages on the server for this many days (0: delete at once)."""
    incoming_first: Literal["imap", "pop3"] = "imap"
    """The incoming protocol clients offer first (some providers prefer POP3)."""

    @model_validator(mode="after")
    def _needs_incoming(self) -> ServiceSet:
        if not self.imap and not self.pop3:
            raise ValueError("a service set needs at least one imap or pop3 server")
        for kind in ("imap", "pop3", "smtp"):
            _check_tls_port(kind, self.servers(kind))
        return self

    def servers(self, kind: ServiceKind) -> tuple[Server, ...]:
        result: tuple[Server, ...] = getattr(self, kind)
        return result


class Domain(_Model):
    """A mail domain the site serves (``[domains."example.org"]``)."""

    services: str = "default"
    display_name: str | None = Field(default=None, max_length=60)
    display_short_name: str | None = Field(default=None, max_length=20)
    aliases: tuple[Hostname, ...] = ()
    login: LoginRule = "address"
    autodiscover: bool = True
    moved_to: Hostname | None = None
    unknown_address: UnknownAddressPolicy = "as-address"
    documentation_url: str | None = Field(default=None, pattern=r"^https?://\S+$")


def _ip_network(value: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network") from None
    return value


def _ip_address(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


class ServerSettings(_Model):
    """HTTP front settings (``[server]``)."""

    public_host: Hostname | None = None
    """Host name under which the POX endpoint is reachable over HTTPS; the v2 JSON endpoint
    points clients there. Default: ``autodiscover.<domain>``."""
    public_addresses: tuple[Annotated[str, AfterValidator(_ip_address)], ...] = ()
    """IPv4/IPv6 addresses of the autoconfig host. With them ``mailwarden dns records``
    publishes A/AAAA records for every ``autoconfig.``/``autodiscover.`` name; without them,
    CNAMEs to ``public_host``."""
    max_body_bytes: int = Field(default=16384, ge=512, le=1_048_576)
    trusted_proxies: tuple[Annotated[str, AfterValidator(_ip_network)], ...] = (
        "127.0.0.1",
        "::1",
    )
    """Peers (IPs or networks) whose ``X-Forwarded-For`` names the real client; the default is
    a reverse proxy on the same machine. ``[]``: ignore the header from everyone."""
    lookup_rate: float = Field(default=10.0, ge=0, le=1_000_000)
    """Directory lookups per second each client IP may start on average (0: no limit)."""
    lookup_burst: int = Field(default=60, ge=1, le=1_000_000)
    """Lookups a client IP may start at once before the rate applies."""
    lookup_rate_exempt: tuple[Annotated[str, AfterValidator(_ip_network)], ...] = (
        "127.0.0.0/8",
        "::1",
    )
    """Clients never limited: by default this machine itself (monitoring, local tests). Behind
    a reverse proxy, clients are the addresses it names in ``X-Forwarded-For``."""
    max_request_line_bytes: int = Field(default=8192, ge=1024, le=65536)
    """Longest request line (method, URL, version); longer: 414. Apache's and nginx's 8 KiB."""
    max_header_bytes: int = Field(default=16384, ge=4096, le=1_048_576)
    """Longest request head (request line and every header); longer: 431 and close."""
    header_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds from a head's first byte (a connection's opening) until it must be complete."""
    body_timeout: float = Field(default=20.0, gt=0, le=600)
    """Seconds from the head until the body must be complete; also how long an unread
    answer may wait for the client."""
    idle_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a keep-alive connection may idle between requests."""
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    """Connections each worker process holds at once; one more is answered 503."""

    @model_validator(mode="after")
    def _line_within_head(self) -> ServerSettings:
        if self.max_request_line_bytes > self.max_header_bytes:
            raise KeyedValueError(
                f"max_request_line_bytes ({self.max_request_line_bytes}) cannot exceed "
                f"max_header_bytes ({self.max_header_bytes}): the request line is part of the head",
                ("max_request_line_bytes",),
                self.max_request_line_bytes,
            )
        return self


class ProfileSettings(_Model):
    """Apple configuration profiles (``[profiles]``).

    Without a signing certificate profiles are served unsigned, which devices install after a
    "Not Verified" warning; with one they are CMS SignedData. Relative paths resolve against the
    site file's folder.
    """

    identifier: str | None = Field(
        default=None, max_length=120, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
    )
    """Reverse-DNS prefix of every PayloadIdentifier (default: primary domain reversed +
    ``.mail``). Changing it makes devices install a second profile instead of replacing one."""
    signing_certificate: Path | None = None
    signing_key: Path | None = None
    """PEM private key of the signing certificate, unencrypted: readable by the server only."""
    signing_chain: Path | None = None
    """PEM intermediates, so that devices can build the path to a trusted root."""

    @model_validator(mode="after")
    def _complete(self) -> ProfileSettings:
        if (self.signing_certificate is None) != (self.signing_key is None):
            raise ValueError("signing_certificate and signing_key must be given together")
        if self.signing_chain is not None and self.signing_certificate is None:
            raise ValueError("signing_chain needs signing_certificate and signing_key")
        return self


class AuditEndpoint(_Model):
    """An endpoint the site file does not otherwise name (``[[audit.endpoints]]``): a webmail
    host, an outbound relay, a second MX pool."""

    host: Hostname
    port: int = Field(ge=1, le=65535)
    protocol: Literal["https", "imap", "pop3", "smtp"]
    tls: Literal["implicit", "starttls"] = "implicit"


_SELECTOR = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$"
)


def _dkim_selector(value: str) -> str:
    if len(value) > 200 or not _SELECTOR.match(value):
        raise ValueError(f"{value!r} is not a DKIM selector (labels of letters, digits, - and _)")
    return value.lower()


DkimSelector = Annotated[str, AfterValidator(_dkim_selector)]


class OutboundMta(_Model):
    """An address the site's mail leaves from (``[[audit.outbound]]``): SPF must permit it, no
    block list may list it, its reverse DNS must confirm forward."""

    address: Annotated[str, AfterValidator(_ip_address)]
    helo: Hostname | None = None
    """The name the MTA gives in HELO/EHLO and its banner; its PTR and A/AAAA must agree."""
    banner_port: int | None = Field(default=None, ge=1, le=65535)
    """Read the 220 greeting on this port of ``address`` (25 as a rule) and compare its name
    with ``helo``; unset, the banner is not read (the audit host may not reach the MTA)."""


class DnsblList(_Model):
    """One DNS block list (``[[audit.dnsbl]]``), RFC 5782."""

    zone: Hostname
    weight: int = Field(default=1, ge=0, le=1000)
    """How much a listing counts; the weights of the lists that list an address add up."""
    test_point: Annotated[str, AfterValidator(_ip_address)] = "127.0.0.2"
    """An address the list always lists (RFC 5782 section 5): until it answers as listed, the
    list's other answers do not count."""
    errors: tuple[Annotated[str, AfterValidator(_ip_network)], ...] = ()
    """Answers in 127.0.0.0/8 that mean "refused" or "error", not "listed" (Spamhaus answers
    127.255.255.252-255 to public and blocked resolvers)."""
    ipv6: bool = False
    """The list answers for IPv6 addresses too (RFC 5782 section 2.4)."""


class AntivirusDataDir(_Model):
    """A virus engine's data directory that must stay fresh (``[[audit.antivirus.data_dirs]]``),
    for engines without a protocol to ask (Sophos SAVI, …)."""

    name: str = Field(min_length=1, max_length=100)
    path: Path
    max_age_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    """The newest file in it must be younger than this."""


class AntivirusSettings(_Model):
    """The virus scanner the MTA relies on (``[audit.antivirus]``)."""

    clamd: str | None = None
    """clamd's socket: ``unix:/run/clamav/clamd.ctl`` or ``tcp:HOST:PORT``."""
    warn_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    """Signatures older than this are a warning ..."""
    critical_hours: float = Field(default=72.0, gt=0, le=24 * 365)
    """... older than this, critical."""
    timeout: float = Field(default=10.0, gt=0, le=300)
    data_dirs: tuple[AntivirusDataDir, ...] = ()

    @model_validator(mode="after")
    def _valid(self) -> AntivirusSettings:
        if self.clamd is not None:
            kind, _, rest = self.clamd.partition(":")
            port = rest.rpartition(":")[2]
            if not (
                (kind == "unix" and rest.startswith("/"))
                or (
                    kind == "tcp"
                    and rest.rpartition(":")[0]
                    and port.isdigit()
                    and 0 < int(port) < 65536
                )
            ):
                raise KeyedValueError(
                    f"{self.clamd!r} is not unix:/PATH or tcp:HOST:PORT", ("clamd",), self.clamd
                )
        if self.critical_hours <= self.warn_hours:
            raise KeyedValueError(
                f"critical_hours ({self.critical_hours:g}) must be above warn_hours "
                f"({self.warn_hours:g})",
                ("critical_hours",),
                self.critical_hours,
            )
        return self


class AuditDomain(_Model):
    """Per-domain settings of the audit (``[audit.domains."example.org"]``)."""

    dkim_selectors: tuple[DkimSelector, ...] | None = None
    """The selectors this domain signs with (instead of ``[audit] dkim_selectors``)."""


class AuditSettings(_Model):
    """``mailwarden audit`` (``[audit]``): what else to look at, thresholds and manners."""

    endpoints: tuple[AuditEndpoint, ...] = ()
    mx: bool = True
    """Audit the MX hosts of every served domain (port 25, STARTTLS), as found in DNS."""
    warn_days: int = Field(default=30, ge=1, le=3650)
    """A certificate (leaf or intermediate) that expires within this many days is a warning."""
    critical_days: int = Field(default=14, ge=0, le=3650)
    """... within this many days, critical."""
    ca_file: Path | None = None
    """PEM roots to trust instead of the system store (an internal CA)."""
    connections_per_server: int = Field(default=2, ge=1, le=16)
    """At most this many connections to one server address at a time."""
    timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds one connection (dialogue and handshake) may take."""
    deadline: float = Field(default=300.0, gt=0, le=3600)
    """Seconds the whole audit may take; what is not done by then is reported as unknown."""
    ehlo_name: Hostname | None = None
    """The name the audit gives in SMTP EHLO (default: this machine's fully qualified name)."""
    legacy_versions: bool = True
    """Also try TLS 1.0 and 1.1 (one extra handshake each per endpoint)."""
    outbound: tuple[OutboundMta, ...] = ()
    """The addresses the site's mail leaves from (SPF, block lists, reverse DNS)."""
    dkim_selectors: tuple[DkimSelector, ...] = ()
    """The DKIM selectors every served domain signs with (``[audit.domains]`` overrides)."""
    domains: dict[Hostname, AuditDomain] = Field(default_factory=dict)
    """Per served domain: what differs from the defaults above."""
    dnsbl: tuple[DnsblList, ...] | None = None
    """The block lists to ask about ``outbound``; None: the built-in choice (docs/audit.md)."""
    dnsbl_threshold: int = Field(default=10, ge=1, le=100_000)
    """A listed address whose lists' weights add up to this is critical; below, a warning."""
    dnsbl_rate: float = Field(default=20.0, gt=0, le=10_000)
    """Block-list queries per second at most (public lists throttle and ban heavy askers)."""
    antivirus: AntivirusSettings | None = None

    @model_validator(mode="after")
    def _thresholds(self) -> AuditSettings:
        if self.critical_days >= self.warn_days:
            raise KeyedValueError(
                f"critical_days ({self.critical_days}) must be below warn_days ({self.warn_days})",
                ("critical_days",),
                self.critical_days,
            )
        return self


class DomainView:
    """A served name (canonical domain or alias) resolved to its configuration."""

    __slots__ = ("config", "name", "served", "services")

    def __init__(self, served: str, name: str, config: Domain, services: ServiceSet) -> None:
        self.served = served
        """The name that was asked for (the canonical domain or one of its aliases)."""
        self.name = name
        """The canonical domain (the key in ``[domains]``)."""
        self.config = config
        self.services = services

    @property
    def is_alias(self) -> bool:
        return self.served != self.name

    def needs_directory(self) -> bool:
        """Whether a per-user document for this domain needs the directory's login name."""
        if self.config.login == "directory":
            return True
        services = self.services
        return any(s.login == "directory" for s in (*services.imap, *services.pop3, *services.smtp))


class Site(_Model):
    organisation: Organisation
    primary_domain: Hostname
    services: dict[str, ServiceSet] = Field(min_length=1)
    domains: dict[Hostname, Domain] = Field(min_length=1)
    directory: DirectoryConfig = Field(default_factory=EmbeddedConfig)
    server: ServerSettings = Field(default_factory=ServerSettings)
    profiles: ProfileSettings = Field(default_factory=ProfileSettings)
    guard: GuardConfig | None = None
    console: ConsoleConfig | None = None
    audit: AuditSettings = Field(default_factory=AuditSettings)

    _index: dict[str, DomainView] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _cross_check(self) -> Site:
        if self.primary_domain not in self.domains:
            raise KeyedValueError(
                f"primary_domain {self.primary_domain!r} is not one of the [domains] "
                f"({', '.join(sorted(self.domains))})",
                ("primary_domain",),
            )
        seen: dict[str, str] = {}
        for name, domain in self.domains.items():
            if domain.services not in self.services:
                raise KeyedValueError(
                    f"{domain.services!r} is not a defined service "
                    f"set (defined: {', '.join(sorted(self.services))})",
                    ("domains", name, "services"),
                )
            for served in (name, *domain.aliases):
                if served in seen:
                    where = ("domains", name) if served == name else ("domains", name, "aliases")
                    raise KeyedValueError(
                        f"domain {served!r} is served twice (by {seen[served]!r} and {name!r})",
                        where,
                    )
                seen[served] = name
            if domain.moved_to is not None and domain.moved_to == name:
                raise KeyedValueError(
                    "moved_to points to the domain itself", ("domains", name, "moved_to")
                )
        for name in self.audit.domains:
            if name not in seen:
                raise KeyedValueError(
                    f"{name!r} is not a served domain (served: {', '.join(sorted(seen))})",
                    ("audit", "domains", name),
                )
        return self

    def mail_domains(self) -> tuple[str, ...]:
        """Every served mail domain, canonical names and aliases, each once, in file order."""
        names = [n for name, d in self.domains.items() for n in (name, *d.aliases)]
        return tuple(dict.fromkeys(names))

    def dkim_selectors(self, domain: str) -> tuple[str, ...]:
        """The DKIM selectors the audit looks up under ``domain`` (a served name)."""
        override = self.audit.domains.get(domain)
        if override is not None and override.dkim_selectors is not None:
            return override.dkim_selectors
        return self.audit.dkim_selectors

    def model_post_init(self, context: object, /) -> None:
        index: dict[str, DomainView] = {}
        for name, domain in self.domains.items():
            # Runs before the model validators: an undefined set is reported by _cross_check.
            services = self.services.get(domain.services)
            if services is None:
                continue
            index[name] = DomainView(name, name, domain, services)
            for alias in domain.aliases:
                index[alias] = DomainView(alias, name, domain, services)
        self._index = index

    def domain(self, ascii_name: str) -> DomainView | None:
        """The configuration serving ``ascii_name`` (a lowercase A-label), or None."""
        # Asked on every request: the private-attribute storage directly, not pydantic's
        # attribute hook (which costs more than the lookup itself).
        private = self.__pydantic_private__
        assert private is not None  # set by model_post_init
        index: dict[str, DomainView] = private["_index"]
        return index.get(ascii_name)

    def served_names(self) -> list[str]:
        return sorted(self._index)
