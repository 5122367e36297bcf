"""The ASGI entry point the server processes import (``mailwarden.server.asgi:create_app``).

Worker processes cannot receive Python objects from ``mailwarden serve``, so the site file's
path (and the validated snapshot of it that reloads publish, see
:mod:`mailwarden.server.reload`) travel in environment variables.
"""

from __future__ import annotations

import os

from mailwarden.directory import open_directory
from mailwarden.server.app import AutoconfigApp
from mailwarden.server.live import LiveApp
from mailwarden.server.metrics import Metrics
from mailwarden.server.reload import CONFIG_ENV, published
from mailwarden.site import load_site

__all__ = ["CONFIG_ENV", "create_app"]


def create_app() -> LiveApp | AutoconfigApp:
    """The reloadable application under ``mailwarden serve``; a fixed one for a bare
    ``uvicorn --factory mailwarden.server.asgi:create_app`` (only ``MAILWARDEN_CONFIG`` set)."""
    paths = published()
    if paths is not None:
        return LiveApp(*paths)
    site = load_site(os.environ[CONFIG_ENV])
    return AutoconfigApp(site, open_directory(site.directory), Metrics())
