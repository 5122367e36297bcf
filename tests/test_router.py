"""The route table's rows: allowed methods, 405 with ``Allow``, ``HEAD``, the fallback; the
resolver's explicit client and the one redirect helper for domains that moved.

Requests go to the application in this process through ``httpx.ASGITransport``; the expected
``Allow`` values are the methods each endpoint's protocol defines (autoconfig and the JSON
endpoint are GET, POX is POST, with GET for Outlook's plain-HTTP redirect probe).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

import mailwarden.server.app as app_module
from mailwarden.address import parse_address
from mailwarden.directory.embedded import EmbeddedDirectory
from mailwarden.errors import DirectoryError
from mailwarden.server.app import AutoconfigApp
from mailwarden.server.metrics import Metrics
from mailwarden.server.resolver import Resolver, moved_address, moved_location
from mailwarden.site import load_site

ADDRESS = "user%40example.edu"
GET_ROUTES = [
    f"/mail/config-v1.1.xml?emailaddress={ADDRESS}",
    f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={ADDRESS}",
    f"/autodiscover/autodiscover.json?Email={ADDRESS}&Protocol=AutodiscoverV1",
    f"/autodiscover/autodiscover.json/v1.0/{ADDRESS}?Protocol=AutodiscoverV1",
    f"/mobileconfig?emailaddress={ADDRESS}",
    f"/?emailaddress={ADDRESS}",
    "/healthz",
    "/metrics",
]


def _app(site_file: Path) -> AutoconfigApp:
    site = load_site(site_file)
    directory = EmbeddedDirectory(site_file.parent / "users.sqlite")
    return AutoconfigApp(site, directory, Metrics(CollectorRegistry()))


def _ask(site_file: Path, requests: Sequence[tuple[str, str]]) -> list[httpx.Response]:
    """The answers to ``requests`` (method, URL), in order, on one event loop."""

    async def session() -> list[httpx.Response]:
        app = _app(site_file)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as c:
            answers = [await c.request(method, url) for method, url in requests]
        await app.directory.close()
        return answers

    return asyncio.run(session())


@pytest.mark.parametrize("url", GET_ROUTES)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_a_get_route_refuses_other_methods_with_allow(
    example_site_file: Path, url: str, method: str
) -> None:
    [response] = _ask(example_site_file, [(method, url)])
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    if "/autodiscover/" in url:  # Outlook reads the JSON endpoint's errors as JSON
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["ErrorCode"] == "MethodNotAllowed"
    else:
        assert response.content == b"method not allowed\n"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "HEAD", "OPTIONS"])
def test_pox_allows_post_and_get_only(example_site_file: Path, method: str) -> None:
    [response] = _ask(example_site_file, [(method, "/autodiscover/autodiscover.xml")])
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, GET"


@pytest.mark.parametrize("url", GET_ROUTES)
def test_head_is_get_without_the_body(example_site_file: Path, url: str) -> None:
    got, head = _ask(example_site_file, [("GET", url), ("HEAD", url)])
    assert got.status_code == head.status_code
    assert got.content  # every route answers GET with a body
    assert head.content == b""
    varying = {"content-length"} if url == "/metrics" else set()  # the GET was counted
    if not varying:
        assert head.headers["content-length"] == str(len(got.content))
    for name in set(got.headers) - varying:
        assert head.headers[name] == got.headers[name], name


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "BREW"])
def test_unknown_paths_are_404_for_any_method(example_site_file: Path, method: str) -> None:
    [response] = _ask(example_site_file, [(method, "/wp-login.php")])
    assert response.status_code == 404
    assert "allow" not in response.headers


def test_paths_are_matched_without_case(example_site_file: Path) -> None:
    """Outlook writes ``/AutoDiscover/AutoDiscover.xml``; the table is not case-sensitive."""
    [response] = _ask(example_site_file, [("PUT", "/AutoDiscover/AutoDiscover.XML")])
    assert response.headers["allow"] == "POST, GET"


def test_no_request_state_in_module_globals() -> None:
    """The client travels with the call, not in a context variable the app module sets."""
    assert not [v for v in vars(app_module).values() if isinstance(v, contextvars.ContextVar)]


def test_the_lookup_limit_counts_each_client_apart(example_site_file: Path) -> None:
    text = example_site_file.read_text(encoding="utf-8")
    example_site_file.write_text(
        text.replace("[server]\n", "[server]\nlookup_rate = 0.001\nlookup_burst = 2\n"),
        encoding="utf-8",
    )
    site = load_site(example_site_file)
    directory = EmbeddedDirectory(example_site_file.parent / "users.sqlite")
    resolver = Resolver(site, directory, Metrics(CollectorRegistry()))
    address, domain = resolver.address_and_domain("user@example.edu")

    async def scenario() -> None:
        first, second = ("192.0.2.1", 50000), ("192.0.2.2", 50000)
        for _ in range(2):
            assert await resolver.lookup(address, domain, first) is not None
        with pytest.raises(DirectoryError, match="throttled"):
            await resolver.lookup(address, domain, first)
        assert await resolver.lookup(address, domain, second) is not None
        assert await resolver.lookup(address, domain, None) is not None  # no peer: no limit
        await directory.close()

    asyncio.run(scenario())


def test_a_moved_domain_keeps_the_path_and_rewrites_the_address(example_site_file: Path) -> None:
    site = load_site(example_site_file)
    domain = site.domain("alumni.example.edu")
    assert domain is not None
    assert domain.config.moved_to == "alumni-mail.example.net"
    address = parse_address("jo+news@alumni.example.edu")
    assert moved_address(address, domain) == "jo+news@alumni-mail.example.net"
    assert (
        moved_location(domain, "/mail/config-v1.1.xml")
        == "https://autoconfig.alumni-mail.example.net/mail/config-v1.1.xml"
    )
    assert moved_location(domain, "/mobileconfig", address) == (
        "https://autoconfig.alumni-mail.example.net/mobileconfig"
        "?emailaddress=jo%2Bnews%40alumni-mail.example.net"
    )
    assert moved_location(domain, "/", address, lang="de") == (
        "https://autoconfig.alumni-mail.example.net/"
        "?emailaddress=jo%2Bnews%40alumni-mail.example.net&lang=de"
    )


@pytest.mark.parametrize(
    ("url", "location"),
    [
        (
            "/mail/config-v1.1.xml?emailaddress=jo%40alumni.example.edu",
            "https://autoconfig.alumni-mail.example.net/mail/config-v1.1.xml"
            "?emailaddress=jo%40alumni-mail.example.net",
        ),
        (
            "/mobileconfig?emailaddress=jo%40alumni.example.edu",
            "https://autoconfig.alumni-mail.example.net/mobileconfig"
            "?emailaddress=jo%40alumni-mail.example.net",
        ),
        (
            "/?emailaddress=jo%40alumni.example.edu&lang=en",
            "https://autoconfig.alumni-mail.example.net/"
            "?emailaddress=jo%40alumni-mail.example.net&lang=en",
        ),
    ],
)
def test_every_endpoint_redirects_a_moved_domain_alike(
    example_site_file: Path, url: str, location: str
) -> None:
    [response] = _ask(example_site_file, [("GET", url)])
    assert response.status_code == 302
    assert response.headers["location"] == location
