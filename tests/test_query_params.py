"""Query-string parsing: cached, yet indistinguishable from parsing every time; names and
values decoded once, as strict UTF-8."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.server.http import MAX_QUERY_FIELDS, BadRequest, QueryTooLong, query_params


def _reference(raw: bytes) -> dict[str, str]:
    """The standard library's parser, kept byte-exact (Latin-1 both ways), then each name and
    value decoded as strict UTF-8: raises UnicodeDecodeError where the server says 400."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(
        raw.decode("latin-1"), keep_blank_values=True, encoding="latin-1", errors="strict"
    ):
        name = key.encode("latin-1").decode("utf-8")
        params.setdefault(name.lower(), value.encode("latin-1").decode("utf-8"))
    return params


_queries = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-8")),
    st.text(max_size=60).map(lambda t: quote(t, safe="=&+").encode("ascii")),
).filter(lambda b: b.count(b"&") < MAX_QUERY_FIELDS)


@given(_queries)
def test_same_answer_as_parsing_every_time(raw: bytes) -> None:
    try:
        expected: dict[str, str] | None = _reference(raw)
    except UnicodeDecodeError:
        expected = None
    for _ in range(2):  # second call is answered from the cache
        if expected is None:
            with pytest.raises(BadRequest):
                query_params({"query_string": raw})
        else:
            assert query_params({"query_string": raw}) == expected


def test_callers_cannot_change_what_the_next_request_sees() -> None:
    scope = {"query_string": b"emailaddress=a%40example.edu"}
    first = query_params(scope)
    first["emailaddress"] = "tampered"
    assert query_params(scope) == {"emailaddress": "a@example.edu"}


def test_too_many_fields_refused_every_time() -> None:
    scope = {"query_string": b"&".join([b"a=1"] * (MAX_QUERY_FIELDS + 1))}
    for _ in range(2):
        with pytest.raises(QueryTooLong):
            query_params(scope)
