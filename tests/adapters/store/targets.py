"""Where a test store lives: a SQLite file or a PostgreSQL schema (picklable for workers)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field, replace

import psycopg
from sqlalchemy.engine import make_url

from adapters.store import SqlStore, StoreSettings, open_store
from adapters.store.engine import create_engine
from adapters.store.migrate import upgrade
from adapters.store.settings import database_url
from adapters.store.tables import metadata

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("KEYTURN_TEST_POSTGRES_URL", DEFAULT_PG_URL)


def pg_conninfo(url: str = PG_URL) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL (for psycopg admin connections)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def require_postgres(what: str) -> None:
    """Return if PostgreSQL answers; otherwise fail under ``CI=true``, else skip loudly.

    ``what`` names what is skipped ("STORE TESTS", …) in the skip line.
    """
    import pytest

    try:
        psycopg.connect(pg_conninfo(), connect_timeout=3).close()
    except psycopg.Error as e:
        where = make_url(PG_URL).render_as_string(hide_password=True)
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {where} is unreachable and CI=true: {e}")
        pytest.skip(
            f"!!! POSTGRESQL {what} SKIPPED: {where} is unreachable ({e}). Start "
            "PostgreSQL or set KEYTURN_TEST_POSTGRES_URL; under CI=true this fails."
        )


@dataclass(frozen=True)
class Target:
    """Where a store lives; picklable, so writer processes can open their own."""

    url: str
    pg_schema: str | None = None
    application_name: str = "keyturn-test"
    busy_timeout_ms: int = 10_000

    @property
    def backend(self) -> str:
        return "postgresql" if self.pg_schema is not None else "sqlite"

    def settings(self, **changes: object) -> StoreSettings:
        base = StoreSettings(
            pg_schema=self.pg_schema,
            application_name=self.application_name,
            busy_timeout_ms=self.busy_timeout_ms,
        )
        return replace(base, **changes)  # type: ignore[arg-type]

    async def open(self, **changes: object) -> SqlStore:
        return await open_store(self.url, auto_upgrade=False, settings=self.settings(**changes))


@dataclass
class PostgresServer:
    url: str
    run_id: str
    schemas: list[str] = field(default_factory=list)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(pg_conninfo(self.url), autocommit=True, connect_timeout=5)
        conn.execute("SET lock_timeout = '20s'")
        return conn

    def new_schema(self, *, migrated: bool = True) -> Target:
        name = f"kt_{self.run_id}_{len(self.schemas)}"
        with self.admin() as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        target = Target(self.url, pg_schema=name, application_name=f"kt-{self.run_id}")
        if migrated:
            asyncio.run(migrate(target))
        return target

    def truncate(self, target: Target) -> None:
        tables = ", ".join(t.name for t in metadata.sorted_tables if t.name != "log_head")
        with self.admin() as conn:
            conn.execute(f"SET search_path TO {target.pg_schema}")
            conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
            conn.execute("UPDATE log_head SET size = 0")

    def drop_all(self) -> None:
        with self.admin() as conn:
            for name in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


async def migrate(target: Target) -> None:
    engine = create_engine(database_url(target.url), target.settings())
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
