"""Schema migrations with Alembic, run from code (``keyturn db upgrade``, or on first run).

The migration scripts live in this package (``migrations/``); Alembic is configured
here, without an ``alembic.ini``. An upgrade runs in one transaction: on PostgreSQL it
first takes a transaction-level advisory lock, so replicas starting together upgrade
one after the other (the later ones find the schema current); on SQLite the
``BEGIN IMMEDIATE`` of the engine does the same. Either lock is taken before Alembic
runs. DDL is transactional on both, so a
failed upgrade leaves the previous revision in place.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.store.engine import READ_ONLY_OPTION, create_engine, store_error
from adapters.store.settings import StoreSettings, database_url

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
# pg_advisory_xact_lock key: the first 8 bytes of "keyturn-schema" as a signed bigint.
_ADVISORY_KEY = int.from_bytes(b"keyturn-schema"[:8], "big", signed=True)
_LOCK_SCHEMA = text("SELECT pg_advisory_xact_lock(:key)")
_TAKE_WRITE_LOCK = text("SELECT 1")


def alembic_config() -> Config:
    """An Alembic configuration pointing at this package's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise RuntimeError("no migrations found")
    return head


def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision, ``None`` for an empty database.

    Raises:
        StoreError: ``STORE_UNAVAILABLE`` and the other codes of ``store_error``.
    """
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{READ_ONLY_OPTION: True})
            return await conn.run_sync(_revision_of)
    except SQLAlchemyError as e:
        raise store_error(e, "reading the schema revision") from e


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str | None:
    """Upgrade the schema to ``revision`` (default: the newest); returns the revision now.

    Raises:
        StoreError: ``STORE_UNAVAILABLE`` and the other codes of ``store_error``.
    """
    config = alembic_config()
    try:
        async with engine.begin() as conn:
            # Take the database's lock before Alembic starts: Alembic keeps its running
            # context in module globals, so two upgrades must not even interleave.
            if conn.dialect.name == "postgresql":
                await conn.execute(_LOCK_SCHEMA, {"key": _ADVISORY_KEY})
            else:
                await conn.execute(_TAKE_WRITE_LOCK)  # carries the unit's BEGIN IMMEDIATE
            await conn.run_sync(_run, config, revision)
            return await conn.run_sync(_revision_of)
    except SQLAlchemyError as e:
        raise store_error(e, "upgrading the schema") from e


def _run(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade_database(
    url: str, *, settings: StoreSettings | None = None
) -> tuple[str | None, str | None]:
    """``keyturn db upgrade``: upgrade the database at ``url`` to the newest revision.

    Returns:
        The revisions before and after (``None`` before means an empty database).

    Raises:
        ConfigError: ``CONFIG_INVALID`` for an unsupported URL.
        StoreError: ``STORE_UNAVAILABLE`` and the other codes of ``store_error``.
    """
    engine = create_engine(database_url(url), settings or StoreSettings())
    try:
        before = await current_revision(engine)
        after = await upgrade(engine)
    finally:
        await engine.dispose()
    return before, after
