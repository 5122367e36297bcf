"""Shared fixtures. Servers started here listen on free high ports on 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from mailwarden.directory.embedded import UserStore, parse_users_csv
from mailwarden.site import Site, load_site
from tests.fixtures.inprocess import InProcessClient, inprocess_client
from tests.fixtures.paths import EXAMPLES
from tests.fixtures.server import running_server

# `make test` is a gate: the same inputs on every run, so a red build always points at a change.
# `make fuzz` draws fresh random inputs each run; what it finds becomes an @example or a fix.
settings.register_profile("gate", derandomize=True, print_blob=True)
settings.register_profile("fuzz", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("MAILWARDEN_HYPOTHESIS", "gate"))


@pytest.fixture
def example_site_file(tmp_path: Path) -> Path:
    """A copy of examples/site.toml whose embedded directory lives in ``tmp_path``."""
    text = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    text = text.replace('path = "../var/demo-users.sqlite"', 'path = "users.sqlite"')
    target = tmp_path / "site.toml"
    target.write_text(text, encoding="utf-8")
    shutil.copy(EXAMPLES / "users.csv", tmp_path / "users.csv")
    store = UserStore(tmp_path / "users.sqlite")
    records = parse_users_csv((EXAMPLES / "users.csv").read_text(encoding="utf-8"), "users.csv")
    store.import_records(records, source="users.csv")
    store.close()
    return target


@pytest.fixture
def example_site(example_site_file: Path) -> Site:
    return load_site(example_site_file)


def _example_site_in(tmp: Path) -> Path:
    """examples/site.toml with its embedded directory, imported from users.csv, in ``tmp``."""
    text = (EXAMPLES / "site.toml").read_text(encoding="utf-8")
    (tmp / "site.toml").write_text(
        text.replace('path = "../var/demo-users.sqlite"', 'path = "users.sqlite"'), encoding="utf-8"
    )
    store = UserStore(tmp / "users.sqlite")
    store.import_records(
        parse_users_csv((EXAMPLES / "users.csv").read_text(encoding="utf-8"), "users.csv"),
        source="users.csv",
    )
    store.close()
    return tmp / "site.toml"


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example site served by a real ``mailwarden serve`` (2 workers); yields base URL."""
    with running_server(
        _example_site_in(tmp_path_factory.mktemp("example-server")), workers=2
    ) as base:
        yield base


@pytest.fixture(scope="module")
def asgi_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessClient]:
    """The example site's application answering in this process (no uvicorn, no sockets):
    the fast lane for endpoint behaviour; see :mod:`tests.fixtures.inprocess`."""
    with inprocess_client(_example_site_in(tmp_path_factory.mktemp("example-app"))) as client:
        yield client
