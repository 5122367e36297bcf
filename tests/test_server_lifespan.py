"""The ASGI lifespan: start-up hands the loaded worker to the collector's permanent generation,
shut-down closes the directory and writes the last metrics."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from prometheus_client import CollectorRegistry

from mailwarden.directory.embedded import EmbeddedDirectory
from mailwarden.server.app import AutoconfigApp
from mailwarden.server.http import Message
from mailwarden.server.metrics import Metrics
from mailwarden.site import load_site

ROOT = Path(__file__).resolve().parents[1]


def test_startup_freezes_what_is_loaded_and_shutdown_flushes() -> None:
    site = load_site(ROOT / "examples" / "site.toml")
    registry = CollectorRegistry()
    metrics = Metrics(registry, flush_interval=3600)  # only the shut-down may write
    app = AutoconfigApp(site, EmbeddedDirectory(ROOT / "var" / "none.sqlite"), metrics)
    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []
    frozen: list[int] = []

    async def receive() -> Message:
        return events.pop(0)

    async def send(message: Message) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            frozen.append(gc.get_freeze_count())

    async def scenario() -> None:
        metrics.count("autoconfig", 200)
        await app({"type": "lifespan"}, receive, send)

    gc.unfreeze()
    try:
        asyncio.run(scenario())
    finally:
        gc.unfreeze()
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert frozen[0] > 0
    labels = {"endpoint": "autoconfig", "status": "200"}
    assert registry.get_sample_value("mailwarden_http_requests_total", labels) == 1.0
