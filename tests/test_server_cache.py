"""The rendered-document cache: bounded, least recently used out first, and keyed so that a
changed login name can never be answered from the cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mailwarden.directory.embedded import EmbeddedDirectory, UserRecord, UserStore
from mailwarden.server.app import AutoconfigApp
from mailwarden.server.cache import LRUCache
from mailwarden.server.metrics import Metrics
from mailwarden.site import load_site


def test_keeps_at_most_maxsize_and_drops_the_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    made: list[str] = []

    def make(key: str) -> int:
        made.append(key)
        return len(made)

    assert cache.get_or_make("a", lambda: make("a")) == 1
    assert cache.get_or_make("b", lambda: make("b")) == 2
    assert cache.get_or_make("a", lambda: make("a")) == 1  # hit: "a" is now the most recent
    assert cache.get_or_make("c", lambda: make("c")) == 3  # evicts "b", not "a"
    assert len(cache) == 2
    assert cache.get_or_make("a", lambda: make("a")) == 1
    assert cache.get_or_make("b", lambda: make("b")) == 4  # "b" had to be made again
    assert made == ["a", "b", "c", "b"]
    assert (cache.hits, cache.misses) == (2, 4)


def test_a_failing_make_caches_nothing() -> None:
    cache: LRUCache[str, int] = LRUCache(4)

    def boom() -> int:
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError):
        cache.get_or_make("k", boom)
    assert len(cache) == 0
    assert cache.get_or_make("k", lambda: 7) == 7


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LRUCache(0)


def test_bounded_under_many_distinct_keys() -> None:
    cache: LRUCache[int, int] = LRUCache(100)
    for i in range(10_000):
        cache.get_or_make(i, int)
    assert len(cache) == 100


def test_changed_login_is_not_served_from_the_cache(example_site_file: Path) -> None:
    """The app keys documents on the subject, which carries this request's directory answer."""
    site = load_site(example_site_file)
    database = example_site_file.parent / "users.sqlite"
    app = AutoconfigApp(site, EmbeddedDirectory(database), Metrics(CollectorRegistry()))
    url = "/mail/config-v1.1.xml?emailaddress=user%40example.edu"

    async def get() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get(url)
        assert response.status_code == 200
        return response.text

    assert "<username>u0001</username>" in asyncio.run(get())
    assert "<username>u0001</username>" in asyncio.run(get())
    assert app.documents.hits >= 1
    store = UserStore(database)
    store.import_records(
        [UserRecord("user@example.edu", "renamed7", "Demo User", ())], source="test"
    )
    store.close()
    assert "<username>renamed7</username>" in asyncio.run(get())


def test_pox_bodies_parsed_once_and_errors_never_cached(example_site_file: Path) -> None:
    site = load_site(example_site_file)
    database = example_site_file.parent / "users.sqlite"
    app = AutoconfigApp(site, EmbeddedDirectory(database), Metrics(CollectorRegistry()))
    good = (
        '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
        'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>'
        "jdoe@example.edu</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/"
        "exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>"
        "</Autodiscover>"
    )
    bad = "<Autodiscover><Request>"

    async def post(body: str) -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/autodiscover/autodiscover.xml", content=body)
        assert response.status_code == 200
        return response.text

    for _ in range(3):
        assert "<LoginName>jdoe42</LoginName>" in asyncio.run(post(good))
        assert "<ErrorCode>600</ErrorCode>" in asyncio.run(post(bad))
    assert (app.pox_requests.hits, app.pox_requests.misses) == (2, 4)
    assert len(app.pox_requests) == 1
