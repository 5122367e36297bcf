"""Real directory servers for the directory tests (slapd, PostgreSQL), one per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.postgres import Postgres, running_postgres
from tests.fixtures.slapd import Slapd, running_slapd

DAEMONS = frozenset({"slapd", "postgres", "engine"})  # engine: test_sql.py, PostgreSQL or MariaDB


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test of this folder that uses a real directory server is slow: `make test-fast` and
    ``pytest -m "not slow"`` leave it out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and DAEMONS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres(users=50) as server:
        yield server
