"""Fixtures: every store test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from ``KEYTURN_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Each test run creates its own
schemas (``kt_<run id>_<n>``, chosen through ``search_path`` on connect) and drops them
at the end. When the server is unreachable the PostgreSQL half FAILS under ``CI=true``
and is skipped, loudly, everywhere else.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.store import SqlStore, sqlite_url
from tests.adapters.store.targets import PG_URL, PostgresServer, Target, migrate, require_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    require_postgres("STORE TESTS")
    server = PostgresServer(PG_URL, secrets.token_hex(4))
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture(scope="session")
def pg_shared(postgres: PostgresServer) -> Target:
    """One migrated schema for the run; each test starts from empty tables."""
    return postgres.new_schema()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """A migrated, empty database on each back end."""
    if request.param == "sqlite":
        target = Target(sqlite_url(tmp_path))
        asyncio.run(migrate(target))
        return target
    server: PostgresServer = request.getfixturevalue("postgres")
    shared: Target = request.getfixturevalue("pg_shared")
    server.truncate(shared)
    return shared


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """An empty, unmigrated database on each back end (migration tests)."""
    if request.param == "sqlite":
        return Target(sqlite_url(tmp_path))
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_schema(migrated=False)


@pytest_asyncio.fixture
async def store(target: Target) -> AsyncIterator[SqlStore]:
    opened = await target.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Target:
    """A migrated, empty SQLite database (SQLite-only behaviour)."""
    target = Target(sqlite_url(tmp_path))
    asyncio.run(migrate(target))
    return target


@pytest.fixture
def pg_target(postgres: PostgresServer, pg_shared: Target) -> Target:
    """The run's migrated PostgreSQL schema, emptied (PostgreSQL-only behaviour)."""
    postgres.truncate(pg_shared)
    return pg_shared
