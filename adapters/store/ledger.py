"""The receipt log's durable part: dense, append-only leaves and signed checkpoints.

Appends from every replica are serialised by one row, ``log_head`` (id 1, size n):

* PostgreSQL: one statement ::

      WITH head AS (UPDATE log_head SET size = size + 1 WHERE id = 1
                    RETURNING size - 1 AS idx)
      INSERT INTO log_entries (idx, entry, leaf_hash, appended_at)
      SELECT idx, :entry, :leaf_hash, :at FROM head RETURNING idx

  The UPDATE takes the head's row lock until the unit of work ends; a second replica
  waits, then (READ COMMITTED re-reads the locked row) gets the next index. If the
  first rolls back, the second gets the same index the first would have had: no gap.
* SQLite: one statement too, ``INSERT … SELECT size FROM log_head``, and a trigger
  (``log_head_follows_entries``, revision 0001) moves the head. The unit of work holds
  the database write lock from ``BEGIN IMMEDIATE``, so nothing interleaves.

The primary key on ``idx`` makes a fork (two entries at one index) impossible and the
unique ``leaf_hash`` makes a replayed append fail instead of storing an entry twice.
Appending takes the log-wide lock, so a unit of work should append last, just before
it commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, LargeBinary, bindparam, func, insert, select, update

from adapters.store import tables as t
from adapters.store.base import Repository
from adapters.store.engine import unique_violation
from core.errors import LogError, StoreError
from core.merkle import leaf_hash
from core.times import require_aware

_ENTRY = bindparam("entry", type_=LargeBinary())
_LEAF = bindparam("leaf_hash", type_=LargeBinary())
_AT = bindparam("at", type_=t.UtcDateTime())
_COLUMNS = ["idx", "entry", "leaf_hash", "appended_at"]

_HEAD = t.log_head.c.id == 1
_PG_HEAD = (
    update(t.log_head)
    .where(_HEAD)
    .values(size=t.log_head.c.size + 1)
    .returning((t.log_head.c.size - 1).label("idx"))
    .cte("head")
)
_PG_APPEND = (
    insert(t.log_entries)
    .from_select(_COLUMNS, select(_PG_HEAD.c.idx, _ENTRY, _LEAF, _AT))
    .returning(t.log_entries.c.idx)
    .add_cte(_PG_HEAD)
)
_SQLITE_APPEND = (
    insert(t.log_entries)
    .from_select(_COLUMNS, select(t.log_head.c.size, _ENTRY, _LEAF, _AT).where(_HEAD))
    .returning(t.log_entries.c.idx)
)
_SIZE = select(t.log_head.c.size).where(_HEAD)
_RANGE_FROM = bindparam("start", type_=BigInteger())
_RANGE_TO = bindparam("end", type_=BigInteger())
_ENTRIES = (
    select(t.log_entries.c.idx, t.log_entries.c.entry)
    .where(t.log_entries.c.idx >= _RANGE_FROM, t.log_entries.c.idx < _RANGE_TO)
    .order_by(t.log_entries.c.idx)
)
_LEAVES = (
    select(t.log_entries.c.idx, t.log_entries.c.leaf_hash)
    .where(t.log_entries.c.idx >= _RANGE_FROM, t.log_entries.c.idx < _RANGE_TO)
    .order_by(t.log_entries.c.idx)
)
_ROWS = (
    select(t.log_entries.c.idx, t.log_entries.c.entry, t.log_entries.c.leaf_hash)
    .where(t.log_entries.c.idx >= _RANGE_FROM, t.log_entries.c.idx < _RANGE_TO)
    .order_by(t.log_entries.c.idx)
)
_COUNT = select(func.count()).select_from(t.log_entries)
_CHECKPOINT_NOTE = select(t.log_checkpoints.c.note).where(
    t.log_checkpoints.c.size == bindparam("size")
)
_LATEST_CHECKPOINT = (
    select(t.log_checkpoints.c.size, t.log_checkpoints.c.note)
    .order_by(t.log_checkpoints.c.size.desc())
    .limit(1)
)
_CHECKPOINTS = select(t.log_checkpoints.c.size, t.log_checkpoints.c.note).order_by(
    t.log_checkpoints.c.size
)


class SqlLogRepository(Repository):
    """``core.ports.LogRepository`` on SQL."""

    __slots__ = ()

    async def append(self, entry: bytes, *, at: datetime) -> int:
        """Append one entry and return its 0-based index.

        Raises:
            StoreError: ``LOG_DUPLICATE_ENTRY`` when these exact bytes are already in
                the log (an append replayed after an unclear commit); the codes of
                ``store_error`` otherwise.
        """
        if type(entry) is not bytes or not entry:
            raise ValueError("a log entry is non-empty bytes")
        params = {"entry": entry, "leaf_hash": leaf_hash(entry), "at": require_aware(at)}

        def duplicate(e: Any) -> StoreError | None:
            if unique_violation(e) and "leaf_hash" in str(e.orig):
                return StoreError("LOG_DUPLICATE_ENTRY", "this entry is already in the log")
            return None

        statement = _PG_APPEND if self._postgres else _SQLITE_APPEND
        result = await self._write(
            statement, params, doing="appending to the log", on_violation=duplicate
        )
        return int(result.scalar_one())

    async def size(self) -> int:
        result = await self._execute(_SIZE, doing="reading the log size")
        return int(result.scalar_one())

    async def entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``[start, end)``.

        Raises:
            LogError: ``LOG_SIZE_OUT_OF_RANGE`` beyond the log's end, ``LOG_GAP`` if an
                index inside the range is missing (the store lost an entry).
        """
        rows = await self._range(_ENTRIES, start, end, "reading log entries")
        return [bytes(row.entry) for row in rows]

    async def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes ``[start, end)``, to rebuild the Merkle tree; same errors as
        :meth:`entries`."""
        rows = await self._range(_LEAVES, start, end, "reading log leaves")
        return [bytes(row.leaf_hash) for row in rows]

    async def rows(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """``(index, entry, stored leaf hash)`` for ``[start, end)``, as stored, for
        :func:`adapters.store.verify.verify_log`; no density check."""
        _check_range(start, end)
        result = await self._execute(
            _ROWS, {"start": start, "end": end}, doing="reading log entries"
        )
        return [(int(r.idx), bytes(r.entry), bytes(r.leaf_hash)) for r in result]

    async def count(self) -> int:
        """Number of entry rows (equal to :meth:`size` in a healthy log)."""
        result = await self._execute(_COUNT, doing="counting log entries")
        return int(result.scalar_one())

    async def add_checkpoint(self, size: int, note: str, *, at: datetime) -> None:
        """Record the signed checkpoint note for tree ``size``.

        Recording the same note twice is a no-op (two replicas signing the same head
        with the same key produce the same note).

        Raises:
            LogError: ``LOG_SIZE_OUT_OF_RANGE`` for a size beyond the log;
                ``CHECKPOINT_MALFORMED`` when the note's size line is not ``size``.
            StoreError: ``STORE_CONFLICT`` when another note is recorded for ``size``.
        """
        if type(size) is not int or size < 0:
            raise LogError("LOG_SIZE_OUT_OF_RANGE", f"{size!r} is not a tree size")
        lines = note.split("\n")
        if len(lines) < 3 or lines[1] != str(size):
            raise LogError("CHECKPOINT_MALFORMED", f"the note is not a checkpoint of size {size}")
        current = await self.size()
        if size > current:
            raise LogError(
                "LOG_SIZE_OUT_OF_RANGE", f"a checkpoint at {size} is beyond the log's {current}"
            )
        row = {"size": size, "note": note, "created_at": require_aware(at)}
        statement = self._prepared(
            "log.add_checkpoint",
            lambda insert: insert(t.log_checkpoints).on_conflict_do_nothing(),
        )
        result = await self._write(statement, row, doing="recording the checkpoint")
        if result.rowcount == 1:
            return
        found = await self._execute(
            _CHECKPOINT_NOTE, {"size": size}, doing="reading the checkpoint"
        )
        if found.scalar_one() != note:
            raise StoreError(
                "STORE_CONFLICT", f"a different checkpoint is already recorded for size {size}"
            )

    async def latest_checkpoint(self) -> tuple[int, str] | None:
        result = await self._execute(_LATEST_CHECKPOINT, doing="reading the checkpoint")
        row = result.first()
        return None if row is None else (int(row.size), str(row.note))

    async def checkpoints(self) -> list[tuple[int, str]]:
        result = await self._execute(_CHECKPOINTS, doing="reading checkpoints")
        return [(int(row.size), str(row.note)) for row in result]

    async def _range(self, statement: Any, start: int, end: int, doing: str) -> list[Any]:
        _check_range(start, end)
        result = await self._execute(statement, {"start": start, "end": end}, doing=doing)
        rows = list(result.all())
        for offset, row in enumerate(rows):
            if row.idx != start + offset:
                raise LogError("LOG_GAP", f"log entry {start + offset} is missing")
        if len(rows) != end - start:
            raise LogError(
                "LOG_SIZE_OUT_OF_RANGE", f"the log ends at {start + len(rows)}, not {end}"
            )
        return rows


def _check_range(start: int, end: int) -> None:
    if type(start) is not int or type(end) is not int or not 0 <= start <= end:
        raise LogError("LOG_SIZE_OUT_OF_RANGE", f"[{start!r}, {end!r}) is not a range of indexes")
