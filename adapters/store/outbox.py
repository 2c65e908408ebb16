"""The outbox: chat messages to send, written in the same unit of work as the decision.

A click is acknowledged once its decision and the messages it causes are committed
together; a worker sends them afterwards (LIMITS.md §8.5: ack-then-work halves click
latency under storms). Delivery is at least once:

::

    enqueue ──▶ pending ──claim (lease)──▶ in flight ──mark_sent──▶ sent
                  ▲  ▲                          │
                  │  └──── lease expires ───────┤ (worker died)
                  └──── mark_failed(retry_after)┘

* **Coalescing**: messages with a ``coalesce_key`` (e.g. "update card X") replace the
  payload of the pending message with the same key instead of queueing another; a
  partial unique index (channel, key) over unsent rows makes this one upsert on every
  replica. Each replacement bumps ``version``; :meth:`mark_sent` only marks the version
  the worker claimed, so a newer payload that arrived while the old one was in flight
  is sent next instead of being lost.
* **Claiming**: one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`` that
  leases a batch (``next_attempt_at`` moves to the lease end). Replicas on PostgreSQL
  skip each other's rows; on SQLite the unit of work's ``BEGIN IMMEDIATE`` serialises
  claims. A worker that dies simply lets its lease expire.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, select, update

from adapters.store import tables as t
from adapters.store.base import Repository
from core.times import require_aware

MAX_ERROR_TEXT = 2000

_O = t.outbox.c
_ITEM_COLUMNS = (
    _O.id,
    _O.channel_key,
    _O.kind,
    _O.coalesce_key,
    _O.payload,
    _O.created_at,
    _O.attempts,
    _O.next_attempt_at,
    _O.version,
    _O.last_error,
)
_PENDING = _O.sent_at.is_(None)
_INSERT = insert(t.outbox).returning(_O.id)
_DUE_IDS = (
    select(_O.id)
    .where(_PENDING, _O.next_attempt_at <= bindparam("now"))
    .order_by(_O.next_attempt_at, _O.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_CLAIM = (
    update(t.outbox)
    .where(_O.id.in_(_DUE_IDS))
    .values(attempts=_O.attempts + 1, next_attempt_at=bindparam("lease_until"))
    .returning(*_ITEM_COLUMNS)
)
_MARK_SENT = (
    update(t.outbox)
    .where(_O.id == bindparam("item_id"), _O.version == bindparam("claimed_version"), _PENDING)
    .values(sent_at=bindparam("at"), last_error=None)
)
_RESCHEDULE = (
    update(t.outbox)
    .where(_O.id == bindparam("item_id"), _PENDING)
    .values(next_attempt_at=bindparam("at"))
)
_MARK_FAILED = (
    update(t.outbox)
    .where(_O.id == bindparam("item_id"), _PENDING)
    .values(next_attempt_at=bindparam("retry_at"), last_error=bindparam("error"))
)
_BACKLOG = select(func.count()).select_from(t.outbox).where(_PENDING)
_PRUNE = delete(t.outbox).where(_O.sent_at.is_not(None), _O.sent_at < bindparam("before"))


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    channel_key: str
    kind: str
    coalesce_key: str | None
    payload: Mapping[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    version: int
    last_error: str | None


class SqlOutboxRepository(Repository):
    __slots__ = ()

    async def enqueue(
        self,
        channel_key: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        at: datetime,
        coalesce_key: str | None = None,
    ) -> int:
        """Queue a message (due at once); returns its id.

        With ``coalesce_key``, a pending message with the same channel and key gets
        this payload and kind instead (its id is returned, its schedule kept).
        """
        if not channel_key or not kind:
            raise ValueError("an outbox message needs a channel key and a kind")
        at = require_aware(at)
        row = {
            "channel_key": channel_key,
            "kind": kind,
            "coalesce_key": coalesce_key,
            "payload": dict(payload),
            "created_at": at,
            "attempts": 0,
            "next_attempt_at": at,
            "version": 0,
        }
        if coalesce_key is None:
            result = await self._write(_INSERT, row, doing="queueing the message")
            return int(result.scalar_one())
        statement = self._prepared("outbox.coalesce", _coalescing_insert)
        result = await self._write(statement, row, doing="queueing the message")
        return int(result.scalar_one())

    async def claim_due(
        self, *, now: datetime, limit: int = 50, lease_seconds: float = 60.0
    ) -> list[OutboxItem]:
        """Lease up to ``limit`` due messages, ordered by channel then age.

        Commit the unit of work right after claiming, then send: the lease, not a
        held lock, keeps other workers off the rows while they are in flight.
        """
        if not 1 <= limit <= 1000 or lease_seconds <= 0:
            raise ValueError("claim 1 to 1000 messages with a positive lease")
        now = require_aware(now)
        params = {"now": now, "limit": limit, "lease_until": now + timedelta(seconds=lease_seconds)}
        result = await self._write(_CLAIM, params, doing="claiming outbox messages")
        items = [_item(row) for row in result]
        return sorted(items, key=lambda item: (item.channel_key, item.id))

    async def mark_sent(self, item_id: int, *, version: int, at: datetime) -> bool:
        """Mark the claimed ``version`` sent; False when a newer payload was coalesced
        in meanwhile (it is then made due at once, and stays pending)."""
        at = require_aware(at)
        params = {"item_id": item_id, "claimed_version": version, "at": at}
        result = await self._write(_MARK_SENT, params, doing="marking the message sent")
        if result.rowcount == 1:
            return True
        await self._write(
            _RESCHEDULE, {"item_id": item_id, "at": at}, doing="rescheduling the message"
        )
        return False

    async def mark_failed(
        self, item_id: int, *, at: datetime, error: str, retry_after: float
    ) -> None:
        """Record a failed send and when to try again (the platform's ``Retry-After``)."""
        if retry_after < 0:
            raise ValueError("retry_after cannot be negative")
        params = {
            "item_id": item_id,
            "retry_at": require_aware(at) + timedelta(seconds=retry_after),
            "error": error[:MAX_ERROR_TEXT],
        }
        await self._write(_MARK_FAILED, params, doing="recording the failed send")

    async def backlog(self, *, channel_key: str | None = None) -> int:
        """Messages not yet sent (all channels, or one)."""
        statement = _BACKLOG
        if channel_key is not None:
            statement = statement.where(_O.channel_key == channel_key)
        result = await self._execute(statement, doing="counting the outbox backlog")
        return int(result.scalar_one())

    async def prune_sent(self, *, before: datetime) -> int:
        """Delete messages sent before ``before``; returns how many."""
        result = await self._write(
            _PRUNE, {"before": require_aware(before)}, doing="pruning the outbox"
        )
        return int(result.rowcount)


def _coalescing_insert(insert: Callable[[Table], Any]) -> Any:
    statement = insert(t.outbox)
    return statement.on_conflict_do_update(
        index_elements=["channel_key", "coalesce_key"],
        index_where=_PENDING & _O.coalesce_key.is_not(None),
        set_={
            "payload": statement.excluded.payload,
            "kind": statement.excluded.kind,
            "version": _O.version + 1,
        },
    ).returning(_O.id)


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=int(row.id),
        channel_key=row.channel_key,
        kind=row.kind,
        coalesce_key=row.coalesce_key,
        payload=row.payload,
        created_at=row.created_at,
        attempts=int(row.attempts),
        next_attempt_at=row.next_attempt_at,
        version=int(row.version),
        last_error=row.last_error,
    )
