"""The m4 scanner, the .mc/.cf/Postfix/hosts parsers: what they accept, and that bad input only
ever raises the project's error with a file and line (property tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.lint.addresses import Family
from mailwarden.lint.errors import LintInputError
from mailwarden.lint.m4 import scan
from mailwarden.lint.postfix import expand, parse_main, parse_master
from mailwarden.lint.resolution import StaticResolver, parse_hosts, parse_resolve_option
from mailwarden.lint.sendmail import PortKind, parse_cf, parse_mc, parse_options
from tests.lint.tools import m4_cf

WANTED = frozenset({"DAEMON_OPTIONS", "CLIENT_OPTIONS"})


def test_m4_quotes_comments_and_dnl() -> None:
    text = (
        "divert(-1)\n"
        "# DAEMON_OPTIONS(`Name=commented') is a comment\n"
        "dnl DAEMON_OPTIONS(`Name=dnl-ed')\n"
        "`DAEMON_OPTIONS(Name=quoted)'\n"
        "divert(0)dnl\n"
        "DAEMON_OPTIONS(`Name=a, Addr=`nested', M=b')dnl\n"
        "XDAEMON_OPTIONS(`Name=not-this')\n"
        "DAEMON_OPTIONS(  `Name=b'  ,  `ignored')\n"
    )
    calls = list(scan(text, "t.mc", WANTED))
    assert [(c.line, c.args, c.dnl) for c in calls] == [
        (6, ("Name=a, Addr=`nested', M=b",), True),
        (8, ("Name=b  ", "ignored"), False),
    ]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("OSTYPE(`linux')\n\nDAEMON_OPTIONS(`Name=x)\n", 3, "unbalanced m4 quotes"),
        ("DAEMON_OPTIONS(`Name=x'\nMAILER(smtp)\n", 1, "never closed"),
        ("DAEMON_OPTIONS(Name=x')\n", 1, "unbalanced m4 quotes"),
        ("\nchangequote([,])\n", 2, "changequote"),
        ("DAEMON_OPTIONS(`Name=x, Bind=1.2.3.4')\n", 1, "unknown key 'Bind'"),
        ("DAEMON_OPTIONS(`Name=x, Family=inet7')\n", 1, "unknown Family=inet7"),
        ("DAEMON_OPTIONS(`Port=smtpx')\n", 1, 'service "smtpx" unknown'),
        ("CLIENT_OPTIONS(`Family')\n", 1, "is not KEY=VALUE"),
    ],
)
def test_malformed_mc_names_file_and_line(text: str, line: int, what: str) -> None:
    with pytest.raises(LintInputError) as caught:
        parse_mc(text, "site.mc")
    assert caught.value.message.startswith(f"site.mc:{line}: ")
    assert what in caught.value.message


def test_cf_lines_continuations_and_version() -> None:
    text = (
        "V10/Berkeley\nDZ8.15.2\n"
        "O DaemonPortOptions=Name=MTA,\n\tAddr=127.0.0.1\n"
        "#O ClientPortOptions=Family=inet, Address=0.0.0.0\n"
        "O ClientPortOptions=Family=inet6, Addr=::1\n"
    )
    config = parse_cf(text, "s.cf")
    assert config.version == (8, 15)
    assert [(d.line, d.name, d.addr) for d in config.daemons] == [(3, "MTA", "127.0.0.1")]
    assert [(c.line, c.family, c.addr) for c in config.clients] == [(6, Family.INET6, "::1")]
    with pytest.raises(LintInputError, match=r"s\.cf:2: DaemonPortOptions needs '='"):
        parse_cf("V10\nO DaemonPortOptions\n", "s.cf")


def test_mc_defaults_follow_cf_m4(tmp_path: Path) -> None:
    """No DAEMON_OPTIONS: the MTA and MSA defaults, exactly as the real m4 writes them."""
    mc = tmp_path / "d.mc"
    mc.write_text("OSTYPE(`linux')dnl\nMAILER(`smtp')dnl\n", encoding="utf-8")
    from_mc = parse_mc(mc.read_text(encoding="utf-8"), str(mc))
    from_cf = parse_cf(m4_cf(mc).read_text(encoding="utf-8"), "d.cf")
    assert [d.text().split("=", 1)[1] for d in from_cf.daemons] == [
        "Name=MTA",
        "Port=587, Name=MSA, M=E",
    ]
    assert [(d.name, d.port, d.modifiers) for d in from_mc.daemons] == [
        (d.name, d.port, d.modifiers) for d in from_cf.daemons
    ]


def test_options_keys_by_first_letter_and_rewriting() -> None:
    options = parse_options(
        "Name=MTA-v6, Family=inet6, address=host.example, Modifiers=fhb",
        PortKind.DAEMON,
        "x.mc",
        4,
        "mc",
    )
    assert (options.addr, options.modifiers, options.family) == (
        "host.example",
        "fhb",
        Family.INET6,
    )
    fixed = options.with_value("Addr", "IPv6:2001:db8::1").with_value("Modifiers", None)
    assert fixed.text() == "DAEMON_OPTIONS(`Name=MTA-v6, Family=inet6, address=IPv6:2001:db8::1')"


def test_postfix_main_master_and_expansion() -> None:
    main = parse_main(
        "# comment\nmyhostname = mx.example.test\ninet_interfaces = $myhostname,\n"
        "    127.0.0.1\nbad_idea = ${myhostname?{yes}} ${nothing:no}\n",
        "main.cf",
    )
    assert main["inet_interfaces"].line == 3
    values = {name: p.value for name, p in main.items()}
    assert expand(values["inet_interfaces"], values) == "mx.example.test, 127.0.0.1"
    assert expand(values["bad_idea"], values) == "{yes} no"
    services = parse_master(
        "smtp inet n - y - - smtpd\nrelay unix - - y - - smtp\n  -o smtp_bind_address=192.0.2.1"
        "\n  -o { smtp_helo_name = x y }\n[2001:db8::1]:2525 inet n - y - - smtpd\n",
        "master.cf",
    )
    assert [(s.name, s.line, s.host) for s in services] == [
        ("smtp", 1, None),
        ("relay", 2, None),
        ("[2001:db8::1]:2525", 5, "2001:db8::1"),
    ]
    assert services[1].overrides["smtp_bind_address"].value == "192.0.2.1"
    assert services[1].overrides["smtp_helo_name"].value == "x y"
    assert services[2].port_text == "2525"
    with pytest.raises(LintInputError, match=r"master\.cf:1: a service needs 8 fields"):
        parse_master("smtp inet n - y\n", "master.cf")
    with pytest.raises(LintInputError, match=r"main\.cf:2: missing '='"):
        parse_main("a = b\nfoo bar\n", "main.cf")


def test_hosts_and_resolve_options() -> None:
    table = parse_hosts("# x\n192.0.2.1 a.example a\n2001:db8::1 a.example\n", "hosts")
    resolver = StaticResolver(table, "hosts")
    assert resolver.lookup("A.example.", Family.INET) == ("192.0.2.1",)
    assert resolver.lookup("a", Family.INET6) == ()
    assert resolver.lookup("a.example", Family.INET6) == ("2001:db8::1",)
    assert parse_resolve_option("b.example=192.0.2.2,::ffff:192.0.2.2") == (
        "b.example",
        ("192.0.2.2", "::ffff:192.0.2.2"),
    )
    with pytest.raises(LintInputError, match=r"hosts:1: 'nonsense' is not an IP address"):
        parse_hosts("nonsense name\n", "hosts")
    with pytest.raises(LintInputError, match="--resolve"):
        parse_resolve_option("b.example")


# --- property tests: any input → a config or the project's error, never anything else ----------

M4_TOKENS = st.sampled_from(
    ["`", "'", "(", ")", ",", "#", "\n", " ", "dnl", "DAEMON_OPTIONS", "CLIENT_OPTIONS",
     "FEATURE", "define", "Name=", "Family=inet6", "A=", "Port=", "M=", "x", "=", "Bogus=",
     "`no_default_msa'", "_NETINET6_", "::1", "IPv6:", "changequote", "Port=99999"]
)  # fmt: skip
FREE_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_project_errors(parse: Callable[[str, str], object], text: str, file: str) -> None:
    error: LintInputError | None = None
    try:
        parse(text, file)
    except LintInputError as exc:
        error = exc
    if error is not None:
        assert error.message.startswith(file)
        assert error.line >= 0


@SETTINGS
@given(st.lists(M4_TOKENS, max_size=40).map("".join))
def test_mc_parser_raises_only_its_own_error_on_m4_like_input(text: str) -> None:
    _only_project_errors(parse_mc, text, "p.mc")


@SETTINGS
@given(FREE_TEXT)
def test_mc_parser_raises_only_its_own_error_on_any_text(text: str) -> None:
    _only_project_errors(parse_mc, text, "p.mc")


CF_LINES = st.lists(
    st.one_of(
        st.sampled_from(["O DaemonPortOptions", "O ClientPortOptions=", "DZ8.", "\t", "#"]),
        st.text(alphabet="=,:AFMNPabfhO6inet. 0123456789", max_size=30),
    ),
    max_size=12,
).map("".join)


@SETTINGS
@given(st.lists(st.one_of(CF_LINES, FREE_TEXT), max_size=6).map("\n".join))
def test_cf_parser_raises_only_its_own_error(text: str) -> None:
    _only_project_errors(parse_cf, text, "p.cf")


@SETTINGS
@given(st.lists(st.one_of(CF_LINES, FREE_TEXT), max_size=6).map("\n".join))
def test_postfix_and_hosts_parsers_raise_only_their_own_error(text: str) -> None:
    _only_project_errors(parse_main, text, "main.cf")
    _only_project_errors(parse_master, text, "master.cf")
    _only_project_errors(parse_hosts, text, "hosts")


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Name", "Addr", "Family", "Port", "M", "A", "N"]),
            st.text(alphabet="abcxyz-.:0123456789", min_size=1, max_size=12),
        ),
        max_size=6,
    )
)
def test_options_round_trip_through_their_corrected_text(pairs: list[tuple[str, str]]) -> None:
    text = ", ".join(f"{k}={v}" for k, v in pairs)
    try:
        options = parse_options(text, PortKind.DAEMON, "r.mc", 1, "mc")
    except LintInputError:
        return
    again = parse_mc(options.text(), "r.mc").daemons[0]
    assert [(p.key, p.value) for p in again.parts] == [(p.key, p.value) for p in options.parts]
