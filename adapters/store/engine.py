"""The async engine for each back end, and the one place driver errors become core errors.

SQLite connections are set up so that durability and serialisation come from the
database itself:

* ``journal_mode=WAL`` and ``synchronous=FULL``: every commit is fsynced before it
  returns (LIMITS.md §2.2: 0.66× the raw fdatasync rate, so durability costs little);
* ``foreign_keys=ON`` and a ``busy_timeout``;
* the sqlite3 module's own transaction handling is switched off and every unit of work
  begins with ``BEGIN IMMEDIATE``: it takes the write lock before its first statement,
  so writers in any number of processes are serialised and a read made in a unit of
  work cannot be invalidated by another writer before it commits. Read-only units
  begin ``DEFERRED``. The driver is aiosqlite through ``sqlite_driver.OneTripDBAPI``
  (one thread round trip per statement; the BEGIN travels with the first one).

PostgreSQL connections carry ``lock_timeout``, ``idle_in_transaction_session_timeout``
and, when configured, a ``search_path`` in their start-up options (no extra round
trip). Row locks (``SELECT … FOR UPDATE``) serialise the writers that need it.

Error mapping (:func:`store_error`), all ``StoreError``:

    STORE_UNAVAILABLE  the database cannot be reached, the connection was lost or
                       ended by the server, the disk or file failed; when it happens
                       during COMMIT the outcome is unknown and the message says so
    STORE_BUSY         a lock was not granted within the configured timeout
    STORE_CONFLICT     a constraint refused the write, or PostgreSQL detected a
                       deadlock or serialisation failure (retrying is safe)
    STORE_FAILED       any other database error (a bug or a schema mismatch)
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.store.settings import StoreSettings, is_sqlite
from adapters.store.sqlite_driver import OneTripConnection, OneTripDBAPI
from core.errors import StoreError

log = logging.getLogger(__name__)

#: Execution option a read-only unit of work sets so SQLite begins DEFERRED.
READ_ONLY_OPTION = "keyturn_read_only"


def _refuse_constant(name: str) -> float:
    raise ValueError(f"JSON constant {name} is not allowed in a record")


json_dumps = functools.partial(
    json.dumps, ensure_ascii=False, separators=(",", ":"), allow_nan=False
)
json_loads = functools.partial(json.loads, parse_constant=_refuse_constant)


def create_engine(url: URL, settings: StoreSettings) -> AsyncEngine:
    """Build the async engine for ``url`` (already normalised by ``database_url``)."""
    common: dict[str, Any] = {
        "json_serializer": json_dumps,
        "json_deserializer": json_loads,
        "pool_size": settings.pool_size,
        "max_overflow": settings.pool_size,
        "pool_timeout": max(settings.busy_timeout_ms, settings.lock_timeout_ms) / 1000,
    }
    if is_sqlite(url):
        engine = create_async_engine(url, module=OneTripDBAPI(), **common)
        _configure_sqlite(engine, settings)
        return engine
    options = [
        f"-c lock_timeout={settings.lock_timeout_ms}",
        f"-c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout_ms}",
    ]
    if settings.pg_schema:
        options.append(f"-c search_path={settings.pg_schema}")
    return create_async_engine(
        url,
        connect_args={
            "connect_timeout": settings.connect_timeout_s,
            "application_name": settings.application_name,
            "options": " ".join(options),
        },
        **common,
    )


def _configure_sqlite(engine: AsyncEngine, settings: StoreSettings) -> None:
    busy_ms = int(settings.busy_timeout_ms)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: it would otherwise
        # begin lazily (DEFERRED) before the first write, and a read-then-write unit
        # of work could then fail, or worse, decide on a stale read.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            mode = cursor.fetchone()
            if not mode or str(mode[0]).lower() != "wal":
                raise StoreError(
                    "STORE_UNAVAILABLE",
                    "SQLite could not switch to WAL mode (is the file on a network share?)",
                )
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        adapted: Any = connection.connection.dbapi_connection
        if not isinstance(adapted, OneTripConnection):  # pragma: no cover - wiring error
            raise TypeError("the SQLite engine must use the one-trip aiosqlite adapter")
        # Sent with the unit's first statement, before it runs (sqlite_driver.py).
        adapted.defer_begin("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


# --- error mapping ---------------------------------------------------------------------

_SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
_SQLITE_UNAVAILABLE = (
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PERM",
    "SQLITE_AUTH",
)
# SQLSTATE classes and codes (PostgreSQL appendix A).
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "28", "3D")
_PG_BUSY = ("55P03",)  # lock_not_available: lock_timeout elapsed
_PG_RETRY = ("40001", "40P01")  # serialization_failure, deadlock_detected
_PG_IDLE_TIMEOUT = "25P03"  # idle_in_transaction_session_timeout


def store_error(error: BaseException, doing: str) -> StoreError:
    """The ``StoreError`` for a driver or SQLAlchemy error met while ``doing`` something.

    The caller raises it ``from`` the original, so the cause stays in the traceback.
    """
    if isinstance(error, StoreError):
        return error
    if isinstance(error, PoolTimeoutError):
        return StoreError("STORE_BUSY", f"no database connection was free while {doing}")
    if isinstance(error, DBAPIError):
        code = _classify(error)
        if code == "STORE_UNAVAILABLE" and doing == "committing":
            return StoreError(
                "STORE_UNAVAILABLE",
                "the database became unreachable while committing; the outcome is unknown "
                "and nothing was confirmed",
            )
        messages = {
            "STORE_UNAVAILABLE": f"the database is unavailable ({doing} failed); nothing was saved",
            "STORE_BUSY": f"the database stayed locked by another writer while {doing}",
            "STORE_CONFLICT": f"another writer changed the same data while {doing}; retry",
            "STORE_FAILED": f"the database refused the operation while {doing}",
        }
        return StoreError(code, messages[code])
    if isinstance(error, SQLAlchemyError | OSError):
        return StoreError("STORE_FAILED", f"the store failed while {doing}")
    return StoreError("STORE_FAILED", f"unexpected error while {doing}")


def _classify(error: DBAPIError) -> str:
    if error.connection_invalidated:
        return "STORE_UNAVAILABLE"
    orig = error.orig
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):
        if name.startswith(_SQLITE_BUSY):
            return "STORE_BUSY"
        if name.startswith(_SQLITE_UNAVAILABLE):
            return "STORE_UNAVAILABLE"
        if name.startswith("SQLITE_CONSTRAINT"):
            return "STORE_CONFLICT"
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate in _PG_BUSY:
            return "STORE_BUSY"
        if sqlstate in _PG_RETRY or sqlstate.startswith("23"):
            return "STORE_CONFLICT"
        if sqlstate == _PG_IDLE_TIMEOUT or sqlstate[:2] in _PG_UNAVAILABLE_CLASSES:
            return "STORE_UNAVAILABLE"
    if isinstance(error, IntegrityError):
        return "STORE_CONFLICT"
    if isinstance(error, OperationalError | InterfaceError):
        return "STORE_UNAVAILABLE"
    return "STORE_FAILED"


def unique_violation(error: DBAPIError) -> bool:
    """True when ``error`` is a unique or primary-key violation (either back end)."""
    name = getattr(error.orig, "sqlite_errorname", None)
    if isinstance(name, str):
        return name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")
    return getattr(error.orig, "sqlstate", None) == "23505"
