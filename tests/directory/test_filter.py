"""Filter templates: the load-time check accepts only safe templates and never crashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.address import Address
from mailwarden.directory.filter import FilterError, check_template, render_filter


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("mail={address}", "parentheses"),
        ("(mail={address}", "unmatched '('"),
        ("(mail={address}))", "after its closing"),
        ("(mail={adress})", "{adress}"),
        ("(mail={address})(x={})", "{}"),
        ("(mail={address!r})", "{address!r}"),
        ("(mail={address:>9})", "{address:>9}"),
        ("(mail={address}{", "malformed"),
        ("(objectClass=person)", "must use {address}"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace("{", r"\{")):
        check_template(template)


@given(st.text(alphabet="(){}!:=&|*\\adelorss ", max_size=40))
def test_any_template_is_either_refused_or_renders(template: str) -> None:
    try:
        check_template(template)
    except FilterError:
        return
    text = render_filter(template, Address("a*)(b", "example.org"))
    assert text.startswith("(")
    assert text.endswith(")")
    assert "a*)(b" not in text
