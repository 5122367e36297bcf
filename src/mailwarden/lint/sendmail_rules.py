"""The sendmail dual-stack rules: from port options to predictions and findings (S1…S8).

What sendmail 8.17 on Linux does, which the rules encode:

* ``Addr=`` with a host name is resolved once, when the configuration is read, for that
  daemon's (or client's) ``Family`` only, and only the first address is used. With no address of
  that family sendmail ≥ 8.15 stops at start-up (``host "…" unknown``, exit 70); older builds get
  an IPv4-mapped address from the resolver instead.
* sendmail never sets ``IPV6_V6ONLY``: ``net.ipv6.bindv6only`` decides whether an inet6 socket
  also takes IPv4. All daemons are bound, then all put to listen; one that cannot listen is
  retried ten times, 5 s apart, and then the whole MTA exits (71) — unless it has ``M=O``, which
  keeps the MTA up and silently drops that daemon.
* ``M=b`` makes the delivery use the interface the message came in on, which fails whenever the
  destination is reachable over the other family only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailwarden.lint.addresses import Address, Family, mapped_address, parse_literal
from mailwarden.lint.binding import BindStatus, Endpoint, simulate
from mailwarden.lint.findings import Finding, LintReport, Outcome, Prediction, Severity
from mailwarden.lint.resolution import Resolver
from mailwarden.lint.sendmail import PortKind, PortOptions, SendmailConfig

GETHOSTBYNAME2_SINCE = (8, 15)

WEDGED = (
    "sendmail logs `cannot listen`, then `cannot bind: Address already in use` ten times, 5 s "
    "apart, then `server SMTP socket wedged: exiting`: the whole MTA exits (71) after ~50 s, "
    "even though its other daemons were fine"
)
WEDGED_AT_ONCE = (
    "sendmail does not retry an error that is not transient: it logs `server SMTP socket "
    "wedged: exiting` and the whole MTA exits (71) at once, even though its other daemons "
    "were fine"
)


@dataclass(frozen=True)
class _Resolved:
    """An options line with the address sendmail would use (None: wildcard-less client)."""

    options: PortOptions
    address: Address | None
    fatal: bool


def _version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _where(options: PortOptions) -> str:
    return f"line {options.line}" if options.line else "cf.m4 default"


def _subject(options: PortOptions) -> str:
    return f"{options.kind.value} {options.name}"


def _finding(
    severity: Severity, code: str, options: PortOptions, message: str, fix: str
) -> Finding:
    return Finding(severity, code, _subject(options), message, fix, options.file, options.line)


def _literal_for(family: Family, name: str | None, resolver: Resolver) -> str:
    """The literal to recommend: the name's own address of that family, else a placeholder."""
    if name is not None:
        for text in resolver.lookup(name, family):
            literal = parse_literal(text)
            if literal is not None and literal.mapped is None:
                return f"IPv6:{literal.text}" if family is Family.INET6 else literal.text
    return "IPv6:<IPv6 address of this host>" if family is Family.INET6 else "<IPv4 address>"


def _resolve(
    options: PortOptions, resolver: Resolver, version: tuple[int, int], findings: list[Finding]
) -> _Resolved:
    """The address sendmail binds for ``options``; S3 findings for names and wrong literals."""
    family = options.family
    value = options.addr
    if value is None:
        default = Address(family, family.wildcard) if options.kind is PortKind.DAEMON else None
        return _Resolved(options, default, False)
    literal = parse_literal(value)
    if literal is not None and literal.family is family:
        return _Resolved(options, literal, False)
    if literal is not None and literal.family is Family.INET6:
        moved = options.with_value("Family", "inet6").with_value("Addr", f"IPv6:{literal.text}")
        findings.append(
            _finding(
                Severity.FATAL,
                "S3",
                options,
                f"Addr={value} is an IPv6 address but this {options.kind.value} has "
                f"Family={options.family_text}: sendmail looks it up as an IPv4 host name and "
                f'stops at start-up with `host "{value}" unknown` (exit 70).',
                moved.text(),
            )
        )
        return _Resolved(options, None, True)
    ipv4 = [literal.text] if literal is not None else list(resolver.lookup(value, Family.INET))
    addresses = [] if literal is not None else list(resolver.lookup(value, family))
    fix = options.with_value("Addr", _literal_for(family, value, resolver)).text()
    kind = options.kind.value
    what = "an IPv4 address" if literal is not None else "a host name"
    if addresses:
        first = parse_literal(addresses[0])
        assert first is not None  # the resolver returns literals only
        several = (
            f" It has {len(addresses)} {family.label} addresses ({', '.join(addresses)}); only the "
            "first is used."
            if len(addresses) > 1
            else ""
        )
        findings.append(
            _finding(
                Severity.WARNING,
                "S3",
                options,
                f"Addr={value} is a host name: sendmail resolves it once, when it reads the "
                f"configuration, for Family={options.family_text} only, and binds the first "
                f"address ({first.text}).{several} If the name loses its {family.label} address "
                "(or a resolver answers with an IPv4-mapped one) the next restart fails; an "
                "address literal cannot change under the MTA.",
                fix,
            )
        )
        return _Resolved(options, first, False)
    if family is Family.INET6 and ipv4 and version < GETHOSTBYNAME2_SINCE:
        mapped = mapped_address(ipv4[0])
        findings.append(
            _finding(
                Severity.WARNING,
                "S3",
                options,
                f"Addr={value} is {what} with no IPv6 address; sendmail "
                f"{_version_text(version)} (older than 8.15) then gets the IPv4-mapped address "
                f"{mapped.text} and the {kind} is really an IPv4 one (see S2).",
                fix,
            )
        )
        return _Resolved(options, mapped, False)
    findings.append(
        _finding(
            Severity.FATAL,
            "S3",
            options,
            f"Addr={value} is {what} with no {family.label} address, and sendmail resolves it "
            f"for this {kind}'s Family={options.family_text} only: sendmail "
            f'{_version_text(version)} stops at start-up with `host "{value}" unknown` '
            "(exit 70). It may work on a host whose resolver answers differently (e.g. from "
            "/etc/hosts), which is how it passes a test box and fails in production.",
            fix,
        )
    )
    return _Resolved(options, None, True)


def _endpoint(item: _Resolved, bindv6only: bool) -> Endpoint | None:
    if item.address is None or not item.options.tcp or item.fatal:
        return None
    return Endpoint(item.options.family, item.address, item.options.port, bindv6only)


def _listens(endpoint: Endpoint, bindv6only: bool) -> str:
    where = endpoint.address.endpoint(endpoint.port)
    if endpoint.family is Family.INET6 and endpoint.address.is_wildcard:
        both = "IPv6 only: bindv6only=1" if bindv6only else "IPv4 too: bindv6only=0"
        return f"listens on {where} ({both})"
    if endpoint.address.mapped:
        return f"listens on {where}, i.e. IPv4 {endpoint.address.mapped}:{endpoint.port} only"
    return f"listens on {where}"


def _conflict_finding(
    failing: _Resolved,
    blocker: _Resolved | None,
    status: BindStatus,
    bindv6only: bool,
    resolver: Resolver,
) -> Finding:
    """The finding for a daemon that cannot listen, placed on the line that should change."""
    f_opts = failing.options
    assert failing.address is not None
    port = f_opts.port
    optional = f_opts.optional
    consequence = (
        f"It has M=O, so sendmail keeps running without it: nothing answers for {f_opts.name} "
        "and the log line is the only trace."
        if optional
        else (WEDGED_AT_ONCE if status is BindStatus.INVALID else WEDGED) + "."
    )
    if status is BindStatus.INVALID:
        code = "S2"
        culprit = f_opts
        text = (
            f"{f_opts.name} (Family=inet6) would bind the IPv4-mapped address "
            f"{failing.address.text}; with net.ipv6.bindv6only=1 an inet6 socket cannot take "
            f"IPv4, so bind fails at once with `Invalid argument`."
        )
    else:
        assert blocker is not None
        assert blocker.address is not None
        b_opts = blocker.options
        mapped = [item for item in (failing, blocker) if item.address and item.address.mapped]
        if mapped:
            code = "S2"
            culprit = mapped[0].options
            other = b_opts if culprit is f_opts else f_opts
            culprit_address = mapped[0].address
            assert culprit_address is not None
            text = (
                f"{culprit.name} (Family=inet6) gets the IPv4-mapped address "
                f"{culprit_address.text}; with net.ipv6.bindv6only=0 that is the IPv4 socket "
                f"{culprit_address.mapped}:{port}, which overlaps {other.name} "
                f"({_where(other)}). {f_opts.name} is set up later and cannot listen."
            )
        elif f_opts.family is not b_opts.family:
            code = "S1"
            inet = blocker if f_opts.family is Family.INET6 else failing
            culprit = f_opts if inet is blocker else b_opts
            assert inet.address is not None
            text = (
                f"{culprit.name} is a Family=inet6 daemon without an address (::) on port {port}, "
                "and with net.ipv6.bindv6only=0 its socket takes IPv4 too, so it collides with "
                f"the inet daemon {inet.options.name} ({_where(inet.options)}, "
                f"{inet.address.endpoint(port)}). {f_opts.name} is set up later and cannot listen."
            )
        else:
            code = "S6"
            culprit = f_opts
            text = (
                f"{f_opts.name} ({failing.address.endpoint(port)}) overlaps {b_opts.name} "
                f"({_where(b_opts)}, {blocker.address.endpoint(port)}): on Linux a wildcard and "
                "a specific address of one family cannot both listen on a port, nor can one "
                f"address twice. {f_opts.name} is set up later and cannot listen."
            )
    fix = _conflict_fix(code, culprit, resolver)
    if optional:
        return _finding(
            Severity.WARNING,
            "S5",
            f_opts,
            f"M=O hides an {code} collision: {text} {consequence}",
            fix,
        )
    return _finding(Severity.FATAL, code, culprit, f"{text} {consequence}", fix)


def _conflict_fix(code: str, culprit: PortOptions, resolver: Resolver) -> str:
    if code == "S1":
        specific = culprit.with_value("Addr", _literal_for(Family.INET6, None, resolver))
        return (
            f"{specific.text()}\n"
            "(or keep this one inet6 daemon without Addr and remove the inet daemons on "
            f"port {culprit.port}: with bindv6only=0 it serves both families)"
        )
    if code == "S2":
        value = _literal_for(Family.INET6, culprit.addr, resolver)
        return culprit.with_value("Addr", value).text()
    return (
        f"{culprit.with_value('Addr', '<an address no other daemon on this port uses>').text()}\n"
        "(or remove this line)"
    )


def _dual_stack(resolved: list[_Resolved], v6only: bool) -> bool:
    """Both families in play: daemons/clients of each, or a dual-stack inet6 wildcard daemon."""
    families = {item.options.family for item in resolved if item.options.tcp}
    if {Family.INET, Family.INET6} <= families:
        return True
    return not v6only and any(
        item.options.kind is PortKind.DAEMON
        and item.address is not None
        and item.address.family is Family.INET6
        and item.address.is_wildcard
        for item in resolved
    )


def _s4_sources(resolved: list[_Resolved], resolver: Resolver) -> dict[Family, str]:
    """The ``Addr=`` each family's suggested client should use: the first specific daemon
    address of that family, else a placeholder. Computed once per report, not per S4 finding."""
    sources: dict[Family, str] = {}
    for r in resolved:
        address = r.address
        if (
            r.options.kind is PortKind.DAEMON
            and address is not None
            and not address.is_wildcard
            and address.mapped is None
            and address.family not in sources
        ):
            text = address.text
            sources[address.family] = f"IPv6:{text}" if address.family is Family.INET6 else text
    for family in (Family.INET, Family.INET6):
        if family not in sources:
            sources[family] = _literal_for(family, None, resolver)
    return sources


def _s4(item: _Resolved, sources: dict[Family, str]) -> Finding:
    options = item.options
    modifiers = (options.get("Modifiers") or "").replace("b", "")
    fixed = options.with_value("Modifiers", modifiers if modifiers.strip() else None)
    clients = []
    for family in (Family.INET, Family.INET6):
        name = f"MSA-{'v4' if family is Family.INET else 'v6'}"
        client = PortOptions(PortKind.CLIENT, (), options.file, 0, options.form, options.dnl)
        client = client.with_value("Name", name).with_value("Family", family.value)
        clients.append(client.with_value("Addr", sources[family]).text())
    return _finding(
        Severity.WARNING,
        "S4",
        options,
        f"M=b on {options.name} makes each delivery leave through the interface the message came "
        "in on. In a dual-stack setup, mail received over IPv4 for an IPv6-only destination "
        "bounces with `5.1.2 Host unknown`, and mail received over IPv6 for an IPv4-only "
        "destination makes the delivery process spin at 100 % CPU while the message stays "
        "locked in the queue.",
        "\n".join([fixed.text(), *clients]),
    )


def check_sendmail(
    config: SendmailConfig,
    resolver: Resolver,
    *,
    bindv6only: bool,
    version: tuple[int, int],
) -> LintReport:
    """Predict what ``config`` does at start-up and explain every problem found."""
    findings: list[Finding] = []
    items = [
        _resolve(options, resolver, version, findings)
        for options in (*config.daemons, *config.clients)
        if options.tcp
    ]
    daemons = [item for item in items if item.options.kind is PortKind.DAEMON]
    endpoints = [_endpoint(item, bindv6only) for item in daemons]
    results = simulate(endpoints)
    # Ports with a listening inet daemon: an inet6 wildcard there has its IPv4 partner (S7).
    inet_ports = {
        other.port
        for other, res in zip(endpoints, results, strict=True)
        if other is not None
        and other.family is Family.INET
        and res is not None
        and res.status is BindStatus.OK
    }
    predictions: list[Prediction] = []
    for item, endpoint, result in zip(daemons, endpoints, results, strict=True):
        options = item.options
        if result is None or endpoint is None:
            predictions.append(_prediction(item, Outcome.FATAL_AT_STARTUP, "host unknown"))
            continue
        if result.status is not BindStatus.OK:
            blocker = None if result.blocker is None else daemons[result.blocker]
            findings.append(_conflict_finding(item, blocker, result.status, bindv6only, resolver))
            cause = (
                "bind: Invalid argument"
                if result.status is BindStatus.INVALID
                else f"{endpoint.address.endpoint(endpoint.port)} already taken by "
                f"{blocker.options.name if blocker else '?'}"
            )
            if options.optional:
                outcome = Outcome.SILENTLY_DISABLED
            elif result.status is BindStatus.INVALID:
                outcome = Outcome.MTA_EXITS_AT_ONCE
            else:
                outcome = Outcome.MTA_EXITS
            predictions.append(_prediction(item, outcome, cause))
            continue
        detail = _listens(endpoint, bindv6only)
        if (
            endpoint.family is Family.INET6
            and endpoint.address.is_wildcard
            and bindv6only
            and endpoint.port not in inet_ports
        ):
            predictions.append(_prediction(item, Outcome.IPV4_REFUSED, detail))
            v4 = options.with_value("Name", f"{options.name}-v4").with_value("Family", "inet")
            findings.append(
                _finding(
                    Severity.WARNING,
                    "S7",
                    options,
                    f"{options.name} is the only daemon on port {endpoint.port} and listens on "
                    "[::] without an IPv4 partner; with net.ipv6.bindv6only=1 its socket is "
                    "IPv6-only, so IPv4 clients are refused and nothing is logged.",
                    f"{v4.with_value('Addr', None).text()}\n"
                    "(add this IPv4 daemon, or run with net.ipv6.bindv6only=0)",
                )
            )
            continue
        if endpoint.address.mapped and not bindv6only:
            findings.append(
                _finding(
                    Severity.WARNING,
                    "S2",
                    options,
                    f"{options.name} (Family=inet6) listens on the IPv4-mapped address "
                    f"{endpoint.address.text}: that is IPv4 {endpoint.address.mapped} only, so "
                    "this daemon serves no IPv6 at all.",
                    options.with_value(
                        "Addr", _literal_for(Family.INET6, options.addr, resolver)
                    ).text(),
                )
            )
        predictions.append(_prediction(item, Outcome.BINDS, detail))
    if _dual_stack(items, bindv6only):
        bound = [item for item in daemons if "b" in item.options.modifiers]
        if bound:
            sources = _s4_sources(items, resolver)
            findings.extend(_s4(item, sources) for item in bound)
    findings.extend(_same_names(config.daemons))
    for item in items:
        if item.options.kind is PortKind.CLIENT:
            predictions.append(_client_prediction(item, findings, resolver))
    # A fatal error stops sendmail before any daemon serves (an unknown host while reading the
    # configuration, a bind error that is not retried): the others are not started.
    stops = (Outcome.FATAL_AT_STARTUP, Outcome.MTA_EXITS_AT_ONCE)
    if any(p.outcome in stops for p in predictions):
        predictions = [
            p
            if p.outcome in stops
            else replace(
                p,
                outcome=Outcome.NOT_STARTED,
                detail=f"once the fatal error is fixed: {p.detail}",
            )
            for p in predictions
        ]
    predictions.insert(0, _mta_prediction(config, predictions))
    findings.sort(key=lambda f: (f.line == 0, f.line, -f.severity.rank, f.code))
    return LintReport("sendmail", config.file, tuple(predictions), tuple(findings))


def _same_names(daemons: tuple[PortOptions, ...]) -> list[Finding]:
    """S8: a daemon named like an earlier one. sendmail accepts it, but its log lines, the
    ``{daemon_name}`` macro (rulesets, milters) and this report can no longer tell them apart."""
    findings: list[Finding] = []
    seen: dict[str, PortOptions] = {}
    taken = {d.name.casefold() for d in daemons}
    # The last -N tried per name: the search for a free name resumes there, so a thousand
    # daemons of one name cost a thousand probes, not half a million.
    tried: dict[str, int] = {}
    for options in daemons:
        if not options.get("Name"):
            continue
        name = options.name
        first = seen.setdefault(name.casefold(), options)
        if first is options:
            continue
        suffix = "v6" if options.family is Family.INET6 and first.family is Family.INET else "2"
        new = f"{name}-{suffix}"
        if new.casefold() in taken:
            n = tried.get(name.casefold(), 2)
            while True:
                n += 1
                new = f"{name}-{n}"
                if new.casefold() not in taken:
                    break
            tried[name.casefold()] = n
        taken.add(new.casefold())
        findings.append(
            _finding(
                Severity.INFO,
                "S8",
                options,
                f"the daemon at {_where(options)} has the name {options.name!r} of the daemon at "
                f"{_where(first)}: sendmail accepts this, but its log lines and the "
                "{daemon_name} macro (seen by rulesets and milters) cannot tell the two apart.",
                options.with_value("Name", new).text(),
            )
        )
    return findings


def _prediction(item: _Resolved, outcome: Outcome, detail: str) -> Prediction:
    options = item.options
    return Prediction(options.name, options.kind.value, outcome, detail, options.file, options.line)


def _client_prediction(item: _Resolved, findings: list[Finding], resolver: Resolver) -> Prediction:
    options = item.options
    family = options.family
    if item.fatal:
        return _prediction(item, Outcome.FATAL_AT_STARTUP, "host unknown")
    if item.address is None:
        return _prediction(
            item, Outcome.BINDS, f"connects over {family.label}; the kernel picks the source"
        )
    if item.address.mapped:
        findings.append(
            _finding(
                Severity.FATAL,
                "S2",
                options,
                f"{options.name} (Family=inet6) binds its outgoing connections to the "
                f"IPv4-mapped address {item.address.text}: an IPv6 connection cannot leave from "
                "an IPv4 address, so every delivery over IPv6 fails.",
                options.with_value(
                    "Addr", _literal_for(Family.INET6, options.addr, resolver)
                ).text(),
            )
        )
        return _prediction(item, Outcome.DELIVERY_FAILS, f"bound to {item.address.text}")
    return _prediction(
        item, Outcome.BINDS, f"connects over {family.label} from {item.address.text}"
    )


def _mta_prediction(config: SendmailConfig, predictions: list[Prediction]) -> Prediction:
    def first(outcome: Outcome) -> Prediction | None:
        return next((p for p in predictions if p.outcome is outcome), None)

    fatal = first(Outcome.FATAL_AT_STARTUP)
    if fatal is not None:
        outcome, detail = (
            Outcome.FATAL_AT_STARTUP,
            (f"exits 70 while reading the configuration ({fatal.kind} {fatal.subject})"),
        )
    elif (invalid := first(Outcome.MTA_EXITS_AT_ONCE)) is not None:
        # Every daemon is bound before any listens: a bind error comes first and is not retried.
        outcome, detail = (
            Outcome.MTA_EXITS_AT_ONCE,
            f"exits 71 at once: daemon {invalid.subject}: {invalid.detail}",
        )
    elif (wedged := first(Outcome.MTA_EXITS)) is not None:
        outcome, detail = (
            Outcome.MTA_EXITS,
            (f"exits 71 after ~50 s: daemon {wedged.subject}: {wedged.detail}"),
        )
    else:
        count = sum(1 for p in predictions if p.kind == "daemon" and p.ok)
        outcome, detail = Outcome.STARTS, f"starts with {count} listening daemon(s)"
    return Prediction("sendmail", "mta", outcome, detail, config.file, 0)
