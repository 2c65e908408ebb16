"""Where the executions are: the requests with ``executor_step`` receipts, and those receipts.

An execution's state is folded from its receipts (:func:`core.executor.fold`), so there
is no execution table; this reads the receipt index (``request_receipts``, indexed by
kind since revision 0005) to find them without scanning every request.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from adapters.store import tables as t
from adapters.store.base import Repository
from adapters.store.engine import READ_ONLY_OPTION, store_error
from adapters.store.unit import SqlStore

EXECUTOR_STEP = "executor_step"
_CHUNK = 200
_R = t.request_receipts.c
_E = t.log_entries.c


class SqlExecutionReceiptRepository(Repository):
    __slots__ = ()

    async def requests_with_steps(self) -> set[str]:
        result = await self._execute(
            select(_R.request_id).where(_R.kind == EXECUTOR_STEP).distinct(),
            doing="finding the executions",
        )
        return {str(r) for r in result.scalars()}

    async def step_entries(self, request_ids: list[str]) -> dict[str, list[bytes]]:
        found: dict[str, list[bytes]] = {}
        for start in range(0, len(request_ids), _CHUNK):
            chunk = request_ids[start : start + _CHUNK]
            rows = await self._execute(
                select(_R.request_id, _E.entry)
                .join(t.log_entries, _E.idx == _R.log_index)
                .where(_R.kind == EXECUTOR_STEP, _R.request_id.in_(chunk))
                .order_by(_R.request_id, _R.log_index),
                doing="reading the executions' receipts",
            )
            for row in rows:
                found.setdefault(str(row.request_id), []).append(bytes(row.entry))
        return found


class ExecutionReceipts:
    """Read-only queries over the receipt index, in one short read-only transaction."""

    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine

    async def step_entries(self, *, skip: Collection[str] = ()) -> dict[str, list[bytes]]:
        """The raw log entries of every request's ``executor_step`` receipts, in log order,
        keyed by request id; requests in ``skip`` (known to be finished) are left out.

        Raises:
            StoreError: the database cannot be read.
        """
        try:
            async with self._engine.connect() as conn:
                # Read-only: SQLite begins DEFERRED (no write lock), PostgreSQL one snapshot.
                options: dict[str, object] = {READ_ONLY_OPTION: True}
                if conn.dialect.name == "postgresql":
                    options["isolation_level"] = "REPEATABLE READ"
                await conn.execution_options(**options)
                await conn.begin()
                repo = SqlExecutionReceiptRepository(conn, read_only=True)
                wanted = sorted(await repo.requests_with_steps() - set(skip))
                found = await repo.step_entries(wanted)
                await conn.rollback()
        except SQLAlchemyError as e:
            raise store_error(e, "reading the executions") from e
        return found
