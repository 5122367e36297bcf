"""Query-string parsing: cached, yet indistinguishable from parsing every time."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwarden.server.http import MAX_QUERY_FIELDS, QueryTooLong, query_params


def _reference(raw: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in parse_qsl(
        raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace"
    ):
        params.setdefault(key.lower(), value)
    return params


@given(st.binary(max_size=200).filter(lambda b: b.count(b"&") < MAX_QUERY_FIELDS))
def test_same_answer_as_parsing_every_time(raw: bytes) -> None:
    for _ in range(2):  # second call is answered from the cache
        assert query_params({"query_string": raw}) == _reference(raw)


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
