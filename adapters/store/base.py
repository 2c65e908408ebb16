"""What every SQL repository shares: one connection, error mapping, dialect statements."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import CursorResult, Executable, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store.engine import store_error
from core.errors import KeyturnError, StoreError

T = TypeVar("T")
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None

postgresql_insert = postgresql.insert
sqlite_insert = sqlite.insert


class Repository:
    """Base of the repositories of one unit of work: they share its connection.

    Every statement goes through :meth:`_execute`, so every driver error leaves as a
    ``StoreError`` (``raise … from``), and writes through :meth:`_write`, which a
    read-only unit of work refuses before anything reaches the database.
    """

    __slots__ = ("_conn", "_dialect", "_read_only")

    def __init__(self, conn: AsyncConnection, *, read_only: bool = False) -> None:
        self._conn = conn
        self._dialect = conn.dialect.name
        self._read_only = read_only

    @property
    def _postgres(self) -> bool:
        return self._dialect == "postgresql"

    async def _execute(
        self, statement: Executable, params: Params = None, *, doing: str
    ) -> CursorResult[Any]:
        try:
            return await self._conn.execute(statement, params)
        except SQLAlchemyError as e:
            raise store_error(e, doing) from e

    async def _write(
        self,
        statement: Executable,
        params: Params = None,
        *,
        doing: str,
        on_violation: Callable[[DBAPIError], KeyturnError | None] | None = None,
    ) -> CursorResult[Any]:
        """Run a write; ``on_violation`` may turn a constraint error into a domain error.

        Raises:
            StoreError: ``STORE_READ_ONLY`` in a read-only unit of work, else the codes
                of ``store_error``; or what ``on_violation`` returns.
        """
        if self._read_only:
            raise StoreError("STORE_READ_ONLY", f"a read-only unit of work cannot be {doing}")
        try:
            return await self._conn.execute(statement, params)
        except DBAPIError as e:
            if on_violation is not None:
                mapped = on_violation(e)
                if mapped is not None:
                    raise mapped from e
            raise store_error(e, doing) from e
        except SQLAlchemyError as e:
            raise store_error(e, doing) from e

    def _insert(self, table: Table) -> Any:
        """``INSERT`` with ``ON CONFLICT`` support for this connection's dialect."""
        return _dialect_insert(self._dialect, table)

    def _prepared(self, name: str, build: Callable[[Callable[[Table], Any]], Any]) -> Any:
        """A dialect-specific statement built once per process (``build(self._insert)``),
        so SQLAlchemy reuses its cache key and compiled form on every call."""
        key = (self._dialect, name)
        statement = _PREPARED.get(key)
        if statement is None:
            statement = _PREPARED[key] = build(self._insert)
        return statement


_PREPARED: dict[tuple[str, str], Any] = {}


@functools.cache
def _dialect_insert(dialect: str, table: Table) -> Any:
    statement = postgresql_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    # SQLAlchemy only keeps the row count of UPDATE and DELETE unless asked; the
    # repositories read it to tell "inserted" from "already there" (ON CONFLICT).
    return statement.execution_options(preserve_rowcount=True)


def foreign_key_violation(error: DBAPIError) -> bool:
    """True when ``error`` is a foreign-key violation (either back end)."""
    name = getattr(error.orig, "sqlite_errorname", None)
    if isinstance(name, str):
        return name == "SQLITE_CONSTRAINT_FOREIGNKEY"
    return getattr(error.orig, "sqlstate", None) == "23503"


def load(build: Callable[[Any], T], record: Any, what: str) -> T:
    """Rebuild a core value from its stored record, re-running its invariants.

    Raises:
        StoreError: ``RECORD_CORRUPT`` when the record does not make a valid value.
    """
    try:
        return build(record)
    except StoreError:
        raise
    except (KeyturnError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise StoreError("RECORD_CORRUPT", f"a stored {what} record is invalid") from e


def require_row_matches(what: str, column: object, recorded: object) -> None:
    """Refuse a row whose indexed column disagrees with its own JSON record.

    Raises:
        StoreError: ``RECORD_CORRUPT``.
    """
    if column != recorded:
        raise StoreError(
            "RECORD_CORRUPT", f"a stored {what} row disagrees with its record ({column!r})"
        )
