"""Slack Socket Mode envelopes, claimed once across replicas.

With several replicas connected in Socket Mode, Slack may hand an envelope to one
connection and, when the acknowledgement is late, re-send it to another. Before
dispatching, a replica inserts the envelope id; the primary key lets exactly one
insert succeed, and only that replica processes the envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete

from adapters.store import tables as t
from adapters.store.base import Repository
from adapters.store.unit import SqlStore
from core.errors import StoreError
from core.times import require_aware


def _claim(insert: Callable[[Table], Any]) -> Any:
    statement = insert(t.slack_envelopes)
    return statement.on_conflict_do_nothing(index_elements=["envelope_id"])


class SqlSlackClaimRepository(Repository):
    __slots__ = ()

    async def claim(self, envelope_id: str, *, at: datetime) -> bool:
        """True for the one caller that claims ``envelope_id`` first."""
        if not envelope_id or len(envelope_id) > 255:
            raise StoreError("STORE_INVALID", "a Slack envelope id is 1 to 255 characters")
        statement = self._prepared("slack_envelopes.claim", _claim)
        row = {"envelope_id": envelope_id, "claimed_at": require_aware(at)}
        result = await self._write(statement, row, doing="claiming the Slack envelope")
        return result.rowcount == 1

    async def prune(self, *, before: datetime) -> int:
        """Forget claims older than ``before`` (Slack stops re-sending within minutes)."""
        statement = delete(t.slack_envelopes).where(
            t.slack_envelopes.c.claimed_at < require_aware(before)
        )
        result = await self._write(statement, doing="pruning Slack envelope claims")
        return int(result.rowcount or 0)


class SlackEnvelopeClaims:
    """Claims in their own short transaction (called before Bolt dispatches)."""

    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine

    async def claim(self, envelope_id: str, *, at: datetime) -> bool:
        """Raises:
        StoreError: when the database cannot be reached (the envelope is then not
            processed here; Slack re-sends it).
        """
        async with self._engine.connect() as conn:
            await conn.begin()
            won = await SqlSlackClaimRepository(conn).claim(envelope_id, at=at)
            await conn.commit()
        return won

    async def prune(self, *, before: datetime) -> int:
        async with self._engine.connect() as conn:
            await conn.begin()
            pruned = await SqlSlackClaimRepository(conn).prune(before=before)
            await conn.commit()
        return pruned
