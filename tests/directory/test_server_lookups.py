"""The real server with the LDAP directory: token bucket per client, anti-enumeration."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.directory.helpers import ldap_toml, site_toml
from tests.fixtures.net import free_port
from tests.fixtures.server import running_server
from tests.fixtures.slapd import Slapd

URL = "/mail/config-v1.1.xml"
USERNAME = re.compile(r"<username>([^<]*)</username>")


def _usernames(client: httpx.Client, address: str, forwarded: str | None = None) -> set[str]:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    response = client.get(URL, params={"emailaddress": address}, headers=headers)
    assert response.status_code == 200
    return set(USERNAME.findall(response.text))


def test_token_bucket_per_forwarded_client(slapd: Slapd, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    server = "\n".join(
        [
            "lookup_rate = 0.01",
            "lookup_burst = 3",
            "lookup_rate_exempt = []",
            'trusted_proxies = ["127.0.0.1"]',
        ]
    )
    site.write_text(site_toml(ldap_toml(slapd), server))
    with running_server(site) as base, httpx.Client(base_url=base) as client:
        first = [_usernames(client, "alice@example.com", "203.0.113.5") for _ in range(6)]
        assert first[:3] == [{"ab1234"}] * 3
        assert first[3:] == [{"%EMAILADDRESS%"}] * 3  # throttled: the generic answer
        # Another client behind the same proxy has its own bucket.
        assert _usernames(client, "alice@example.com", "198.51.100.7") == {"ab1234"}
        # The proxy's own chain: the rightmost untrusted address is the client.
        assert _usernames(client, "alice@example.com", "10.9.9.9, 198.51.100.8") == {"ab1234"}
        metrics = client.get("/metrics").text
        assert "mailwarden_directory_throttled_total 3.0" in metrics


def test_forwarded_for_ignored_from_untrusted_peer(slapd: Slapd, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    server = "lookup_rate = 0.01\nlookup_burst = 2\nlookup_rate_exempt = []\ntrusted_proxies = []"
    site.write_text(site_toml(ldap_toml(slapd), server))
    with running_server(site) as base, httpx.Client(base_url=base) as client:
        answers = [_usernames(client, "alice@example.com", f"203.0.113.{i}") for i in range(1, 5)]
        # A spoofed header does not buy new buckets: all four count against 127.0.0.1.
        assert answers == [{"ab1234"}] * 2 + [{"%EMAILADDRESS%"}] * 2


def _shape(text: str) -> str:
    return USERNAME.sub("<username/>", text)


def test_known_and_unknown_look_alike(slapd: Slapd, tmp_path: Path) -> None:
    """Default policy: same status, same document shape, and cold lookups of known and unknown
    addresses take the same time within noise."""
    site = tmp_path / "site.toml"
    site.write_text(site_toml(ldap_toml(slapd)))
    with running_server(site) as base, httpx.Client(base_url=base) as client:
        client.get(URL, params={"emailaddress": "warmup@example.com"})
        known = client.get(URL, params={"emailaddress": "user0001@example.com"})
        unknown = client.get(URL, params={"emailaddress": "nobody@example.com"})
        assert known.status_code == unknown.status_code == 200
        assert known.headers["content-type"] == unknown.headers["content-type"]
        assert _shape(known.text).replace("user0001", "X") == _shape(unknown.text).replace(
            "nobody", "X"
        )
        timings: dict[str, list[float]] = {"known": [], "unknown": []}
        for i in range(2, 42):  # cold: every address asked for the first time
            for kind, address in (
                ("known", f"user{i:04d}@example.com"),
                ("unknown", f"nobody{i:04d}@example.com"),
            ):
                started = time.perf_counter()
                assert client.get(URL, params={"emailaddress": address}).status_code == 200
                timings[kind].append(time.perf_counter() - started)
        known_ms = statistics.median(timings["known"]) * 1000
        unknown_ms = statistics.median(timings["unknown"]) * 1000
        print(f"median cold lookup: known {known_ms:.2f} ms, unknown {unknown_ms:.2f} ms")
        assert abs(known_ms - unknown_ms) < max(2.0, 0.5 * min(known_ms, unknown_ms))


POX = (
    '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
    'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{}</EMailAddress>'
    "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/"
    "responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>"
)


def test_outlook_gets_the_directory_login(slapd: Slapd, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(site_toml(ldap_toml(slapd)))
    with running_server(site) as base:
        r = httpx.post(
            f"{base}/autodiscover/autodiscover.xml",
            content=POX.format("a.example@example.com"),
            headers={"Content-Type": "text/xml"},
        )
        assert r.status_code == 200
        assert "<LoginName>ab1234</LoginName>" in r.text


@pytest.mark.slow  # starts mailwarden serve
def test_outage_policies_without_any_directory(tmp_path: Path) -> None:
    """Nothing listens on the LDAP port: answers per on_outage, at once, never a 5xx."""
    dead = (
        'backend = "ldap"\n'
        f'servers = ["ldap://127.0.0.1:{free_port()}"]\n'
        'starttls = false\nbase_dn = "dc=example,dc=com"\n'
    )
    for policy, expected in (("generic", "%EMAILADDRESS%"), ("unknown", "alice@example.com")):
        site = tmp_path / f"site-{policy}.toml"
        site.write_text(site_toml(dead + f'on_outage = "{policy}"\n'))
        with running_server(site) as base, httpx.Client(base_url=base) as client:
            for _ in range(3):
                assert _usernames(client, "alice@example.com") == {expected}
            metrics = client.get("/metrics").text
            assert "mailwarden_directory_errors_total 3.0" in metrics
