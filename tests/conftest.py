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


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example site served by a real ``mailwarden serve`` (2 workers); yields base URL."""
    tmp = tmp_path_factory.mktemp("example-server")
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
    with running_server(tmp / "site.toml", workers=2) as base:
        yield base
