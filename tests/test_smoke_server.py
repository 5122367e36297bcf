"""The example site through the real server: each endpoint answers as a client expects."""

from __future__ import annotations

import httpx
import pytest

from mailwarden.server.metrics import FLUSH_INTERVAL
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow  # starts mailwarden serve


def test_autoconfig_alias_gets_directory_login(example_server: str) -> None:
    r = httpx.get(
        f"{example_server}/mail/config-v1.1.xml", params={"emailaddress": "Demo.User@Example.EDU"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/xml")
    assert "<username>u0001</username>" in r.text
    assert "<password>" not in r.text


def test_healthz_and_metrics(example_server: str) -> None:
    assert httpx.get(f"{example_server}/healthz").text == "ok\n"
    httpx.get(f"{example_server}/mail/config-v1.1.xml", params={"emailaddress": "x@example.edu"})
    sample = 'mailwarden_http_requests_total{endpoint="autoconfig",status="200"}'
    # the other worker writes its counts within FLUSH_INTERVAL
    wait_until(
        lambda: sample in httpx.get(f"{example_server}/metrics").text,
        10,
        interval=FLUSH_INTERVAL,
        what=f"{sample} in /metrics",
    )
