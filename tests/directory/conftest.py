"""Real directory servers for the directory tests (slapd, PostgreSQL), one per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.postgres import Postgres, running_postgres
from tests.fixtures.slapd import Slapd, running_slapd


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres(users=50) as server:
        yield server
