"""The SPF term parser and the tag-list parser: examples from the RFCs and real records, and
Hypothesis properties (any text is parsed or refused with RecordSyntaxError, never anything
else; what is rendered parses back to the same terms)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailwarden.audit.sitewide.authrecords import (
    Mechanism,
    Modifier,
    RecordSyntaxError,
    check_domain_spec,
    is_spf,
    parse_spf,
    parse_tags,
    parse_term,
    render_tags,
    trivial_target,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", Mechanism("+", "all")),
        ("-all", Mechanism("-", "all")),
        ("~ALL", Mechanism("~", "all")),
        ("include:_spf.google.com", Mechanism("+", "include", "_spf.google.com")),
        ("a", Mechanism("+", "a")),
        ("a/24", Mechanism("+", "a", cidr4=24)),
        ("mx:example.org//64", Mechanism("+", "mx", "example.org", cidr6=64)),
        ("?mx:example.org/28//64", Mechanism("?", "mx", "example.org", None, 28, 64)),
        (
            "ip4:192.0.2.1/24",
            Mechanism("+", "ip4", address=ipaddress.IPv4Address("192.0.2.1"), cidr4=24),
        ),
        ("ip6:2001:db8::1", Mechanism("+", "ip6", address=ipaddress.IPv6Address("2001:db8::1"))),
        ("ptr", Mechanism("+", "ptr")),
        ("exists:%{ir}.%{l1r+-}._spf.%{d}", Mechanism("+", "exists", "%{ir}.%{l1r+-}._spf.%{d}")),
        ("redirect=_spf.example.org", Modifier("redirect", "_spf.example.org")),
        ("exp=explain._spf.%{d}", Modifier("exp", "explain._spf.%{d}")),
        ("x-foo=anything%%", Modifier("x-foo", "anything%%")),
    ],
)
def test_valid_terms(text: str, expected: Mechanism | Modifier) -> None:
    assert parse_term(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "foo",  # unknown mechanism
        "include",  # needs a domain
        "include:localhost",  # a domain-spec ends in .toplabel
        "include:example.123",  # a toplabel is not all digits
        "ip4:192.0.2.300",
        "ip4:01.2.3.4",  # leading zero
        "ip4:192.0.2.0/33",
        "ip4:192.0.2.0/024",
        "ip6:fe80::1%eth0",
        "ip6:2001:db8::/129",
        "a:example.org/",
        "a/33",
        "mx//129",
        "ptr/24",
        "all:example.org",
        "-all/0",
        "exists:%{x}.example.org",  # no such macro letter
        "exists:%{c}.example.org",  # c is only for explanation text
        "exists:%{i0}.example.org",  # zero labels
        "a:%{d",  # unterminated macro
        "redirect=",
        "a:foo..example.org",
        "a:" + "x" * 64 + ".example.org",
        "=x",
        "",
    ],
)
def test_invalid_terms(text: str) -> None:
    with pytest.raises(RecordSyntaxError):
        parse_term(text)


def test_record_collects_all_bad_terms_and_modifier_counts() -> None:
    with pytest.raises(RecordSyntaxError) as caught:
        parse_spf("v=spf1 ip4:192.0.2.0/33 foo redirect=a.example redirect=b.example")
    message = str(caught.value)
    assert "ip4:192.0.2.0/33" in message
    assert "'foo'" in message
    assert "redirect= given 2 times" in message


def test_record_reading() -> None:
    record = parse_spf("v=spf1  mx include:_spf.example.org  ~all redirect=x.example.org ")
    assert [str(m) for m in record.mechanisms] == ["mx", "include:_spf.example.org", "~all"]
    assert record.redirect is None  # ignored beside all
    assert record.modifier("redirect") == "x.example.org"
    assert parse_spf("v=spf1 redirect=x.example.org").redirect == "x.example.org"
    assert str(record) == "v=spf1 mx include:_spf.example.org ~all redirect=x.example.org"


@pytest.mark.parametrize(
    ("text", "spf"),
    [("v=spf1", True), ("V=SPF1 -all", True), ("v=spf10 -all", False), ("spf1", False)],
)
def test_is_spf(text: str, spf: bool) -> None:
    assert is_spf(text) is spf


def test_trivial_targets() -> None:
    assert trivial_target(None, "a.example", "b.example") == "a.example"
    assert trivial_target("_spf.%{d}", "a.example", "b.example") == "_spf.a.example"
    assert trivial_target("%{o}.", "a.example", "b.example") == "b.example"
    assert trivial_target("%{i}.example.org", "a.example", "b.example") is None
    assert trivial_target("Mail.Example.ORG.", "a.example", "b.example") == "mail.example.org"


# --- properties ------------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9_]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_toplabel = st.from_regex(r"[a-z]{2,6}", fullmatch=True)
_domain = st.builds(
    lambda labels, top: ".".join([*labels, top]),
    st.lists(_label, min_size=1, max_size=3),
    _toplabel,
)
_macro = st.sampled_from(["%{d}", "%{i}", "%{ir}", "%{l1r-}", "%{o}", "%{s}", "%{h}", "%{v}"])
_spec = st.one_of(
    _domain,
    st.builds(lambda m, d: f"{m}.{d}", _macro, _domain),
    st.builds(lambda d, m: f"{d}.{m}", _domain, _macro),
)
_qualifier = st.sampled_from("+-~?")
_mechanism = st.one_of(
    st.builds(Mechanism, _qualifier, st.just("all")),
    st.builds(Mechanism, _qualifier, st.just("include"), _spec),
    st.builds(Mechanism, _qualifier, st.just("exists"), _spec),
    st.builds(Mechanism, _qualifier, st.just("ptr"), st.none() | _spec),
    st.builds(
        Mechanism,
        _qualifier,
        st.sampled_from(["a", "mx"]),
        st.none() | _spec,
        st.none(),
        st.none() | st.integers(0, 32),
        st.none() | st.integers(0, 128),
    ),
    st.builds(
        lambda q, a, p: Mechanism(q, "ip4", address=a, cidr4=p),
        _qualifier,
        st.ip_addresses(v=4),
        st.none() | st.integers(0, 32),
    ),
    st.builds(
        lambda q, a, p: Mechanism(q, "ip6", address=a, cidr6=p),
        _qualifier,
        st.ip_addresses(v=6),
        st.none() | st.integers(0, 128),
    ),
)
_modifier = st.one_of(
    st.builds(Modifier, st.sampled_from(["redirect", "exp"]), _spec),
    st.builds(Modifier, st.from_regex(r"x-[a-z0-9._-]{0,8}", fullmatch=True), _label),
)


@given(_mechanism)
def test_rendered_mechanisms_parse_back(mechanism: Mechanism) -> None:
    assert parse_term(str(mechanism)) == mechanism


@given(st.lists(st.one_of(_mechanism, _modifier), max_size=12))
def test_rendered_records_parse_back(terms: list[Mechanism | Modifier]) -> None:
    counts = [t.name for t in terms if isinstance(t, Modifier)]
    text = " ".join(["v=spf1", *(str(t) for t in terms)])
    if counts.count("redirect") > 1 or counts.count("exp") > 1:
        with pytest.raises(RecordSyntaxError):
            parse_spf(text)
    else:
        assert parse_spf(text).terms == tuple(terms)


_spfish = st.text(
    alphabet=st.sampled_from(list("v=spf1 :./%{}-+~?!aimxpl46dsr_0123456789\t\"'\\éλ\x00")),
    max_size=120,
)


@given(st.one_of(st.text(max_size=200), _spfish.map(lambda s: "v=spf1 " + s)))
@example("v=spf1 a:%{d")
@example("v=spf1 ip6:::ffff:1.2.3.4/129")
@example("v=spf1 a:x.example/24//64//1")
@example("v=spf1 mx:%{d}/24")
@example("v=spf1 include:a.example\n")
def test_any_text_is_parsed_or_refused(text: str) -> None:
    try:
        record = parse_spf(text)
    except RecordSyntaxError:
        return
    assert parse_spf(str(record)) == record  # what parses renders to the same record


@given(st.text(max_size=80))
def test_any_domain_spec_is_judged(spec: str) -> None:
    try:
        check_domain_spec(spec)
    except RecordSyntaxError:
        return
    assert spec
    assert " " not in spec


# --- tag lists -------------------------------------------------------------------------------


def test_tag_lists() -> None:
    assert parse_tags("v=DKIM1; k=rsa; p=MIGf MA0=;") == (
        ("v", "DKIM1"),
        ("k", "rsa"),
        ("p", "MIGf MA0="),
    )
    assert parse_tags(" V = DMARC1 ;; P=none ", case="lower") == (("v", "DMARC1"), ("p", "none"))
    assert parse_tags("") == ()
    assert parse_tags("p=") == (("p", ""),)
    for bad in ("v=DKIM1; p", "1x=2", "a=1; a=2", "a=b\x00c", "a=é"):
        with pytest.raises(RecordSyntaxError):
            parse_tags(bad)
    with pytest.raises(RecordSyntaxError):
        parse_tags("p=none; P=reject", case="lower")


_tag_name = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True)
_tag_value = st.from_regex(
    r"([\x21-\x3a\x3c-\x7e]{1,12}( [\x21-\x3a\x3c-\x7e]{1,12}){0,2})?", fullmatch=True
)


@given(st.dictionaries(_tag_name, _tag_value, max_size=8))
def test_rendered_tag_lists_parse_back(tags: dict[str, str]) -> None:
    pairs = tuple(tags.items())
    assert parse_tags(render_tags(pairs)) == pairs


@given(st.text(max_size=200))
@example("a=1;;b=2")
@example("=;=")
@example("a=\r\n b")
def test_any_text_is_a_tag_list_or_refused(text: str) -> None:
    try:
        pairs = parse_tags(text)
    except RecordSyntaxError:
        return
    assert parse_tags(render_tags(pairs)) == pairs
    assert len({name for name, _ in pairs}) == len(pairs)
