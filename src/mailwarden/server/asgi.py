"""The ASGI entry point the server processes import (``mailwarden.server.asgi:create_app``).

Worker processes cannot receive Python objects from ``mailwarden serve``, so the site file's
path travels in the environment variable ``MAILWARDEN_CONFIG``.
"""

from __future__ import annotations

import os

from mailwarden.directory import open_directory
from mailwarden.server.app import AutoconfigApp
from mailwarden.server.metrics import Metrics
from mailwarden.site import load_site

CONFIG_ENV = "MAILWARDEN_CONFIG"


def create_app() -> AutoconfigApp:
    site = load_site(os.environ[CONFIG_ENV])
    return AutoconfigApp(site, open_directory(site.directory), Metrics())
