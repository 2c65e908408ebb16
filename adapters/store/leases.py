"""Named leases: one replica at a time does a job (reconciliation), others stand by.

A lease is a row ``(name, holder, expires_at)``. Taking it is one conditional UPDATE —
``WHERE name = :name AND (holder = :me OR expires_at <= :now)`` — and, the very first
time, one INSERT that the primary key lets only one replica win. On PostgreSQL a
concurrent UPDATE waits for the other transaction and re-checks the WHERE clause on the
row it committed; SQLite serialises writers. Either way at most one holder sees a row
count of 1. The holder renews by taking it again; a holder that dies simply lets it
expire, and another replica takes over.

Clocks: ``now`` is the caller's clock, so replicas' clocks must agree to within a
fraction of the lease (NTP); the lease length gives the margin.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, or_, update
from sqlalchemy.exc import SQLAlchemyError

from adapters.store import tables as t
from adapters.store.base import Repository
from adapters.store.engine import store_error
from adapters.store.unit import SqlStore
from core.errors import StoreError
from core.times import require_aware

_L = t.leases.c
_TAKE = (
    update(t.leases)
    .where(
        and_(
            _L.name == bindparam("lease_name"),
            or_(_L.holder == bindparam("me"), _L.expires_at <= bindparam("now")),
        )
    )
    .values(holder=bindparam("me"), expires_at=bindparam("until"))
)
_RELEASE = (
    update(t.leases)
    .where(and_(_L.name == bindparam("lease_name"), _L.holder == bindparam("me")))
    .values(expires_at=bindparam("now"))
)


def _first(insert: Callable[[Table], Any]) -> Any:
    return insert(t.leases).on_conflict_do_nothing(index_elements=["name"])


class SqlLeaseRepository(Repository):
    __slots__ = ()

    async def take(self, name: str, holder: str, *, now: datetime, seconds: float) -> bool:
        """True when ``holder`` holds ``name`` until ``now + seconds`` (taken or renewed)."""
        if not name or len(name) > 64 or not holder or len(holder) > 255 or seconds <= 0:
            raise StoreError("STORE_INVALID", "a lease has a name, a holder and a length")
        now = require_aware(now)
        until = now + timedelta(seconds=seconds)
        params = {"lease_name": name, "me": holder, "now": now, "until": until}
        result = await self._write(_TAKE, params, doing="taking the lease")
        if result.rowcount == 1:
            return True
        statement = self._prepared("leases.first", _first)
        row = {"name": name, "holder": holder, "expires_at": until}
        result = await self._write(statement, row, doing="taking the lease")
        return result.rowcount == 1

    async def release(self, name: str, holder: str, *, now: datetime) -> bool:
        """Let the lease go now (only its holder can); True when it was held."""
        params = {"lease_name": name, "me": holder, "now": require_aware(now)}
        result = await self._write(_RELEASE, params, doing="releasing the lease")
        return result.rowcount == 1


class Leases:
    """Leases, each call in its own short transaction (never inside a unit of work)."""

    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine

    async def take(self, name: str, holder: str, *, now: datetime, seconds: float) -> bool:
        """Raises:
        StoreError: the database cannot be reached (the caller then does not act).
        """
        try:
            async with self._engine.connect() as conn:
                await conn.begin()
                won = await SqlLeaseRepository(conn).take(name, holder, now=now, seconds=seconds)
                await conn.commit()
        except SQLAlchemyError as e:
            raise store_error(e, "taking the lease") from e
        return won

    async def release(self, name: str, holder: str, *, now: datetime) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.begin()
                released = await SqlLeaseRepository(conn).release(name, holder, now=now)
                await conn.commit()
        except SQLAlchemyError as e:
            raise store_error(e, "releasing the lease") from e
        return released
