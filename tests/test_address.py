"""The address parser: the first thing untrusted input meets, so its contract is tested as
properties over generated input, not only examples.

Contract: only :class:`AddressError` ever escapes; a parsed address is within RFC 5321 limits;
normalising twice changes nothing; a valid address round-trips through ``str``; Unicode
domains and their ``xn--`` form are the same domain.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailwarden.address import (
    MAX_ADDRESS,
    MAX_DOMAIN,
    MAX_LOCALPART,
    Address,
    AddressError,
    normalise_domain,
    parse_address,
    unicode_domain,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=12)
localparts = st.lists(atoms, min_size=1, max_size=4).map(".".join).filter(lambda s: len(s) <= 64)
labels = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?\Z").filter(
    lambda s: s[2:4] != "--"  # "ab--" prefixes are reserved for A-labels (IDNA 2008)
)
domains = st.lists(labels, min_size=2, max_size=4).map(".".join)
# any LDH label, "--" in the third and fourth place included (real names such as r3---sn-4g5e)
ldh_labels = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?\Z").filter(
    lambda s: not s.startswith("xn--")
)
IDN_WORDS = ["müller", "bücher", "straße", "日本", "ελ"]
# Text that looks like an address often enough to reach the deep branches of the parser.
address_like = st.one_of(
    st.text(max_size=300),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=80), st.text(max_size=80)),
    st.builds(lambda a, b: f"{a}@{b}", localparts, st.text(max_size=40)),
)


@FAST
@given(address_like)
@example("")
@example("@")
@example("a@b")
@example("a" * 65 + "@example.org")
@example("a@" + "b" * 64 + ".org")
@example("a@xn--.org")
@example("a@.example.org")
@example("a@example..org")
@example("\x00@example.org")
@example("a@exa\u200dmple.org")
@example("a@" + "\u00df" * 300)
@example("<script>@example.org")
def test_only_address_error_escapes(text: str) -> None:
    message = ""
    try:
        address = parse_address(text)
    except AddressError as exc:
        message = str(exc)
        assert message, "every refusal says why"
        return
    assert isinstance(address, Address)


@FAST
@given(address_like)
def test_parsed_addresses_respect_rfc5321_limits(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert 1 <= len(address.localpart.encode()) <= MAX_LOCALPART
    assert len(address.domain) <= MAX_DOMAIN
    assert len(str(address).encode()) <= MAX_ADDRESS
    assert address.domain.isascii()
    assert address.domain == address.domain.lower()
    assert "." in address.domain


@FAST
@given(address_like)
def test_normalisation_is_idempotent(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        return
    again = parse_address(str(address))
    assert again == address
    assert parse_address(address.key).key == address.key
    assert normalise_domain(address.domain) == address.domain


@FAST
@given(localparts, domains)
def test_valid_addresses_round_trip(localpart: str, domain: str) -> None:
    address = parse_address(f"{localpart}@{domain}")
    assert address.localpart == localpart
    assert address.domain == domain
    assert str(address) == f"{localpart}@{domain}"
    upper = parse_address(f"  {localpart}@{domain.upper()}\t")
    assert upper.domain == domain  # the domain is case-insensitive
    assert upper.key == address.key


@FAST
@given(
    localparts,
    st.lists(st.one_of(st.sampled_from(IDN_WORDS), ldh_labels), min_size=1, max_size=3),
)
def test_unicode_domain_equals_its_a_label(localpart: str, words: list[str]) -> None:
    unicode_name = ".".join([*words, "example"])
    address = parse_address(f"{localpart}@{unicode_name}")
    assert address.domain.isascii()
    assert parse_address(f"{localpart}@{address.domain}") == address
    assert normalise_domain(unicode_domain(address.domain)) == address.domain


@FAST
@given(ldh_labels, st.sampled_from(IDN_WORDS))
def test_an_ascii_label_is_judged_the_same_beside_a_unicode_one(label: str, word: str) -> None:
    """``r3---sn.example`` is a valid (if reserved-looking) name; a Unicode neighbour label must
    not change that verdict, nor the ASCII label's spelling."""
    alone = normalise_domain(f"{label}.example")
    mixed = normalise_domain(f"{label}.{word}.example")
    assert mixed.startswith(f"{alone.removesuffix('.example')}.xn--")
    assert unicode_domain(mixed) == f"{label}.{word}.example"


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("Fred@Müller.DE", "xn--mller-kva.de"),
        ("fred@xn--mller-kva.de", "xn--mller-kva.de"),
        ("fred@XN--MLLER-KVA.DE", "xn--mller-kva.de"),
        ("fred@example.org.", "example.org"),
        ("fred@ＥＸＡＭＰＬＥ.org", "example.org"),  # fullwidth letters map under UTS 46
    ],
)
def test_domain_normalisation_examples(text: str, domain: str) -> None:
    assert parse_address(text).domain == domain


@pytest.mark.parametrize(
    "text",
    [
        "no-at-sign",
        "@example.org",
        "fred@",
        "fred@localhost",
        "fred..x@example.org",
        ".fred@example.org",
        "fred.@example.org",
        '"quoted"@example.org',
        "fred smith@example.org",
        "fred@exa mple.org",
        "fred@-example.org",
        "fred@example.org\r\nBcc: x@example.org",
        "a" * 65 + "@example.org",
        "fred@" + ".".join(["a" * 63] * 4) + ".org",
        "x" * 10_000,
    ],
)
def test_refused_examples(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_local_part_case_is_kept_but_lookup_key_folds_it() -> None:
    address = parse_address("John.Doe@Example.EDU")
    assert str(address) == "John.Doe@example.edu"
    assert address.key == "john.doe@example.edu"
