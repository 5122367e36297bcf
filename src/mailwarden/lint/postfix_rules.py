"""The Postfix dual-stack rules: from main.cf/master.cf to predictions and findings (P1…P7).

Postfix sets ``IPV6_V6ONLY`` on its inet6 sockets, so ``0.0.0.0:25`` beside ``[::]:25`` is
fine (unlike sendmail). What does go wrong, and what the rules flag:

* P1 — two listeners overlap on one port (a same-family wildcard beside a specific address, or
  one address twice): ``master`` dies at start-up with ``bind … Address already in use``.
* P2 — a host name (in ``inet_interfaces`` or a master.cf service) with no address: fatal.
* P3 — an address that is not on this host: fatal at start-up.
* P4 — a host name in ``inet_interfaces`` without an AAAA (or A) record while that protocol is
  enabled: no listener for that family, and nothing says so.
* P5 — a host name in ``smtp_bind_address``/``smtp_bind_address6``: every delivery dies.
* P6 — a value of the wrong family there: every delivery over that family dies.
* P7 — ``inet_protocols`` leaves out a family that the configuration otherwise uses.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from pathlib import PurePath

from mailwarden.lint.addresses import Address, Family, parse_literal
from mailwarden.lint.binding import BindStatus, Endpoint, simulate
from mailwarden.lint.errors import LintInputError
from mailwarden.lint.findings import Finding, LintReport, Outcome, Prediction, Severity
from mailwarden.lint.postfix import (
    DEFAULTS,
    SERVICE_PORTS,
    Parameter,
    PostfixConfig,
    Service,
    expand,
    split_list,
)
from mailwarden.lint.resolution import Resolver


@dataclass(frozen=True)
class _Listener:
    service: Service
    address: Address
    port: int


class _Context:
    """The parameters as one service sees them (main.cf, then its -o overrides)."""

    def __init__(
        self, config: PostfixConfig, myhostname: str, service: Service | None = None
    ) -> None:
        self.config = config
        self.values: dict[str, str] = {**DEFAULTS, "myhostname": myhostname}
        self.values["mydomain"] = myhostname.partition(".")[2] or "localdomain"
        self.params: dict[str, Parameter] = dict(config.parameters)
        if service is not None:
            self.params.update(service.overrides)
        self.values.update({name: p.value for name, p in self.params.items()})

    def get(self, name: str) -> str:
        return expand(self.values.get(name, ""), self.values)

    def where(self, name: str) -> tuple[str, int]:
        param = self.params.get(name)
        return (param.file, param.line) if param else (self.config.main_file, 0)

    def protocols(self) -> frozenset[Family]:
        value = self.get("inet_protocols").lower()
        found: set[Family] = set()
        for item in split_list(value):
            if item == "all":
                found |= {Family.INET, Family.INET6}
            elif item == "ipv4":
                found.add(Family.INET)
            elif item == "ipv6":
                found.add(Family.INET6)
            else:
                file, line = self.where("inet_protocols")
                raise LintInputError(
                    file, line, f"inet_protocols: unknown value {item!r} (all, ipv4, ipv6)"
                )
        return frozenset(found)


def _port(service: Service) -> int:
    text = service.port_text.lower()
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    if text in SERVICE_PORTS:
        return SERVICE_PORTS[text]
    raise LintInputError(service.file, service.line, f"unknown service port {service.port_text!r}")


class _Checker:
    def __init__(
        self,
        config: PostfixConfig,
        resolver: Resolver,
        local: Set[str] | None,
        myhostname: str,
    ) -> None:
        self.config = config
        self.resolver = resolver
        self.local = local
        self.myhostname = myhostname
        self.main = _Context(config, myhostname)
        self.findings: list[Finding] = []
        self.fatal: list[tuple[Service | None, str]] = []
        self.seen: set[tuple[str, int, str]] = set()
        self.families_used: dict[Family, str] = {}

    def add(self, severity: Severity, code: str, subject: str, message: str, fix: str,
            file: str, line: int) -> None:  # fmt: skip
        key = (file, line, code + subject)
        if key not in self.seen:
            self.seen.add(key)
            self.findings.append(Finding(severity, code, subject, message, fix, file, line))

    def addresses(
        self, item: str, origin: str, file: str, line: int, protocols: frozenset[Family]
    ) -> list[Address] | None:
        """What one inet_interfaces entry or service host means; None when Postfix dies on it."""
        lowered = item.lower()
        if lowered == "all":
            return [Address(f, f.wildcard) for f in (Family.INET, Family.INET6) if f in protocols]
        if lowered == "loopback-only":
            loop = {Family.INET: "127.0.0.1", Family.INET6: "::1"}
            return [Address(f, loop[f]) for f in (Family.INET, Family.INET6) if f in protocols]
        literal = parse_literal(item)
        if literal is not None:
            self.families_used.setdefault(literal.family, f"{origin} {item}")
            if literal.family not in protocols:
                return []
            return self._local([literal], item, origin, file, line)
        found: list[Address] = []
        missing: list[Family] = []
        for family in (Family.INET, Family.INET6):
            if family not in protocols:
                continue
            answers = self.resolver.lookup(item, family)
            if answers:
                self.families_used.setdefault(family, f"{origin} {item} ({answers[0]})")
            else:
                missing.append(family)
            found.extend(Address(family, a) for a in answers if parse_literal(a) is not None)
        if not found:
            self.add(
                Severity.FATAL,
                "P2",
                f"{origin} {item}",
                f"{item!r} in {origin} is a host name with no address of an enabled protocol "
                f"(inet_protocols); Postfix stops at start-up: `host not found: {item}`.",
                f"{origin}: use this host's address literal(s) instead of {item!r}",
                file,
                line,
            )
            self.fatal.append((None, f"{origin}: host not found: {item}"))
            return None
        if missing and origin == "inet_interfaces":
            labels = " or ".join(f.label for f in missing)
            self.add(
                Severity.WARNING,
                "P4",
                f"{origin} {item}",
                f"{item!r} has no {labels} address, so Postfix opens no {labels} listener for "
                "it, although inet_protocols enables that protocol — silently: nothing is logged "
                f"and {labels} clients are refused.",
                "inet_interfaces = "
                + ", ".join(
                    [a.text if a.family is Family.INET else f"[{a.text}]" for a in found]
                    + [f"<{f.label} address of this host>" for f in missing]
                ),
                file,
                line,
            )
        return self._local(found, item, origin, file, line)

    def _local(
        self, found: list[Address], item: str, origin: str, file: str, line: int
    ) -> list[Address] | None:
        if self.local is None:
            return found
        foreign = [a for a in found if not a.is_wildcard and a.text not in self.local]
        if not foreign:
            return found
        texts = ", ".join(a.text for a in foreign)
        self.add(
            Severity.FATAL,
            "P3",
            f"{origin} {item}",
            f"{item!r} in {origin} means {texts}, which is not an address of this host: "
            f"Postfix stops at start-up (`no local interface found for {foreign[0].text}` / "
            "`bind: Cannot assign requested address`).",
            f"{origin}: use an address this host has (or add {texts} to an interface first)",
            file,
            line,
        )
        self.fatal.append((None, f"{origin}: {texts} is not local"))
        return None

    def listeners(self) -> tuple[list[_Listener], list[Prediction]]:
        protocols = self.main.protocols()
        file, line = self.main.where("inet_interfaces")
        interfaces: list[Address] | None = []
        for item in split_list(self.main.get("inet_interfaces")):
            got = self.addresses(item, "inet_interfaces", file, line, protocols)
            if got is None or interfaces is None:
                interfaces = None
            else:
                interfaces.extend(got)
        listeners: list[_Listener] = []
        predictions: list[Prediction] = []
        for service in self.config.services:
            if service.type != "inet":
                continue
            port = _port(service)
            host = service.host
            if host is not None:
                got = self.addresses(host, "master.cf", service.file, service.line, protocols)
            else:
                got = interfaces
            if got is None:
                predictions.append(
                    Prediction(
                        service.name,
                        "listener",
                        Outcome.FATAL_AT_STARTUP,
                        "its address cannot be used (see findings)",
                        service.file,
                        service.line,
                    )
                )
                continue
            listeners.extend(_Listener(service, address, port) for address in got)
        return listeners, predictions

    def clients(self) -> list[Prediction]:
        predictions: list[Prediction] = []
        for service in self.config.services:
            if service.type != "unix" or service.command not in ("smtp", "lmtp"):
                continue
            context = _Context(self.config, self.myhostname, service)
            protocols = context.protocols()
            prefix = service.command
            details: list[str] = []
            failed = False
            for family, param in (
                (Family.INET, f"{prefix}_bind_address"),
                (Family.INET6, f"{prefix}_bind_address6"),
            ):
                if family not in protocols:
                    continue
                value = context.get(param)
                if not value:
                    details.append(f"{family.label} (source chosen by the kernel)")
                    continue
                file, line = context.where(param)
                literal = parse_literal(value)
                if literal is None:
                    failed = True
                    self.add(
                        Severity.FATAL,
                        "P5",
                        param,
                        f"{param} = {value} is a host name; Postfix requires a numeric address "
                        "here, and every delivery attempt dies with a fatal error (mail stays "
                        "deferred in the queue).",
                        f"{param} = <{family.label} address of this host>",
                        file,
                        line,
                    )
                    continue
                self.families_used.setdefault(literal.family, f"{param} {value}")
                if literal.family is not family:
                    failed = True
                    right = (
                        "smtp_bind_address6"
                        if literal.family is Family.INET6
                        else ("smtp_bind_address")
                    )
                    right = right.replace("smtp", prefix, 1)
                    self.add(
                        Severity.FATAL,
                        "P6",
                        param,
                        f"{param} = {value} is an {literal.family.label} address, but {param} is "
                        f"for {family.label} connections: every {family.label} delivery dies "
                        "with a fatal error.",
                        f"{param} =\n{right} = {value}",
                        file,
                        line,
                    )
                    continue
                details.append(f"{family.label} from {literal.text}")
            predictions.append(
                Prediction(
                    service.name,
                    "client",
                    Outcome.DELIVERY_FAILS if failed else Outcome.BINDS,
                    "connects over " + "; ".join(details) if details else "no usable protocol",
                    service.file,
                    service.line,
                )
            )
        return predictions

    def protocols_finding(self) -> None:
        protocols = self.main.protocols()
        for value in split_list(self.main.get("mynetworks")):
            literal = parse_literal(value.split("/", 1)[0])
            if literal is not None and not literal.is_wildcard:
                self.families_used.setdefault(literal.family, f"mynetworks {value}")
        contexts = [self.main] + [
            _Context(self.config, self.myhostname, service)
            for service in self.config.services
            if service.type == "unix" and service.command in ("smtp", "lmtp")
        ]
        for context in contexts:
            for param in ("smtp_bind_address", "smtp_bind_address6"):
                literal = parse_literal(context.get(param))
                if literal is not None:
                    self.families_used.setdefault(literal.family, f"{param} {literal.text}")
        if "myhostname" in self.config.parameters:
            for family in (Family.INET, Family.INET6):
                answers = self.resolver.lookup(self.main.get("myhostname"), family)
                if answers:
                    self.families_used.setdefault(
                        family, f"myhostname {self.main.get('myhostname')} ({answers[0]})"
                    )
        missing = [f for f in (Family.INET, Family.INET6) if f in self.families_used]
        missing = [f for f in missing if f not in protocols]
        if not missing or len(self.families_used) < 2:
            return
        file, line = self.main.where("inet_protocols")
        for family in missing:
            self.add(
                Severity.WARNING,
                "P7",
                "inet_protocols",
                f"inet_protocols = {self.main.get('inet_protocols')} leaves out {family.label}, "
                f"but this is a dual-stack setup ({self.families_used[family]}): Postfix "
                f"neither listens nor delivers over {family.label}, and {family.label} "
                "addresses in the configuration are ignored.",
                "inet_protocols = all",
                file,
                line,
            )


def check_postfix(
    config: PostfixConfig,
    resolver: Resolver,
    *,
    local_addresses: Set[str] | None,
    myhostname: str,
) -> LintReport:
    """Predict what Postfix does at start-up with ``config`` and explain every problem."""
    checker = _Checker(config, resolver, local_addresses, myhostname)
    listeners, predictions = checker.listeners()
    endpoints: list[Endpoint | None] = [
        Endpoint(item.address.family, item.address, item.port, True) for item in listeners
    ]
    results = simulate(endpoints)
    for item, result in zip(listeners, results, strict=True):
        assert result is not None
        where = item.address.endpoint(item.port)
        if result.status is BindStatus.OK:
            predictions.append(
                Prediction(
                    item.service.name,
                    "listener",
                    Outcome.BINDS,
                    f"listens on {where}",
                    item.service.file,
                    item.service.line,
                )
            )
            continue
        blocker = listeners[result.blocker] if result.blocker is not None else None
        other = (
            f"{blocker.service.name} ({blocker.address.endpoint(blocker.port)}, "
            f"{blocker.service.file}:{blocker.service.line})"
            if blocker
            else "another listener"
        )
        shown = item.address.text
        checker.add(
            Severity.FATAL,
            "P1",
            f"{item.service.name} {where}",
            f"{item.service.name} wants {where}, which overlaps {other}: on Linux a wildcard "
            "and a specific address of one family cannot both listen on a port (nor one address "
            f"twice), so master stops at start-up with `fatal: bind {shown} port {item.port}: "
            "Address already in use`.",
            _p1_fix(item, blocker),
            item.service.file,
            item.service.line,
        )
        checker.fatal.append((item.service, f"bind {where}: Address already in use"))
        predictions.append(
            Prediction(
                item.service.name,
                "listener",
                Outcome.FATAL_AT_STARTUP,
                f"{where}: Address already in use",
                item.service.file,
                item.service.line,
            )
        )
    predictions.sort(key=lambda p: p.line)
    predictions.extend(checker.clients())
    checker.protocols_finding()
    if checker.fatal:
        mta = Prediction(
            "postfix",
            "mta",
            Outcome.FATAL_AT_STARTUP,
            f"master stops at start-up ({checker.fatal[0][1]})",
            config.main_file,
            0,
        )
    else:
        count = sum(1 for p in predictions if p.kind == "listener" and p.ok)
        mta = Prediction(
            "postfix",
            "mta",
            Outcome.STARTS,
            f"starts with {count} listener(s)",
            config.main_file,
            0,
        )
    findings = sorted(
        checker.findings, key=lambda f: (f.file, f.line == 0, f.line, -f.severity.rank, f.code)
    )
    return LintReport(
        "postfix", str(PurePath(config.main_file).parent), (mta, *predictions), tuple(findings)
    )


def _p1_fix(item: _Listener, blocker: _Listener | None) -> str:
    wildcard = item if item.address.is_wildcard else blocker
    if wildcard is None or not wildcard.address.is_wildcard:
        return (
            f"{item.service.file}:{item.service.line}: remove this service "
            "or give it another address"
        )
    service = wildcard.service
    if service.host is None:
        return (
            f"inet_interfaces = <the specific addresses {service.name} should serve>\n"
            f"(or in master.cf: replace '{service.name}' by '<address>:{service.port_text}' on "
            f"line {service.line}, one line per address)"
        )
    return f"{service.file}:{service.line}: replace {service.name} by <address>:{service.port_text}"
