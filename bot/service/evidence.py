"""Receipts into the durable log, the in-memory Merkle tree, checkpoints and feeds.

Every use case records its receipts inside its own unit of work (so a receipt exists
exactly when the state change it describes was committed). The in-memory tree only
ever holds *committed* leaves: after a commit, :meth:`Evidence.after_commit` adds the
leaves that commit wrote, and reads the store only when an earlier leaf is missing
here (another replica appended meanwhile) or a checkpoint is due, which it then signs.
Proofs are served against stored checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.store import SqlStore, SqlUnitOfWork
from bot.service.runtime import Event, Hub, new_id
from core.canonical import b64u_encode
from core.checkpoint import Checkpoint, verifier_key
from core.errors import LogError
from core.merkle import leaf_hash
from core.ports import Signer
from core.receipt_log import ReceiptLog
from core.receipts import Receipt, entry_bytes, sign_receipt

log = logging.getLogger(__name__)

#: Committed leaves kept while waiting for an earlier one; past this, the store decides.
_MAX_UNTAKEN = 10_000


@dataclass(frozen=True, slots=True)
class Recorded:
    index: int
    envelope: dict[str, Any]
    receipt: Receipt


class Evidence:
    def __init__(
        self,
        store: SqlStore,
        signer: Signer,
        hub: Hub,
        *,
        origin: str,
        checkpoint_every: int,
        checkpoint_interval: timedelta,
    ) -> None:
        self._store = store
        self._signer = signer
        self._hub = hub
        self._origin = origin
        self._every = checkpoint_every
        self._interval = checkpoint_interval
        self._log: ReceiptLog | None = None
        self._lock = asyncio.Lock()
        # after_commit callers so far, and how many of them the last sync covered.
        self._requested = 0
        self._covered = 0
        # Leaves this process committed that the tree has not taken yet, by index.
        self._committed: dict[int, bytes] = {}

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def verifier_key(self) -> str:
        return verifier_key(self._origin, self._signer.public_key)

    async def start(self, now: datetime) -> None:
        """Rebuild the tree from the store; refuses a store whose leaves lost history."""
        async with self._store.unit_of_work(read_only=True) as uow:
            size = await uow.log.size()
            leaves = await uow.log.leaf_hashes(0, size)
            latest = await uow.log.latest_checkpoint()
        self._log = ReceiptLog.restore(
            self._origin,
            self._signer,
            leaves,
            now=now,
            latest_checkpoint=latest[1] if latest else None,
            checkpoint_every=self._every,
            checkpoint_interval=self._interval,
        )

    def _require(self) -> ReceiptLog:
        if self._log is None:
            raise RuntimeError("Evidence.start() was not called")
        return self._log

    async def record(self, uow: SqlUnitOfWork, receipt: Receipt) -> Recorded:
        """Sign ``receipt`` and append it to the durable log inside ``uow``."""
        envelope = sign_receipt(receipt, self._signer)
        index = await uow.log.append(entry_bytes(envelope), at=receipt.timestamp)
        return Recorded(index, envelope, receipt)

    async def after_commit(self, recorded: Sequence[Recorded], now: datetime) -> None:
        """Catch the tree up, checkpoint if due, and publish the receipts to the feeds."""
        try:
            if not self._take_committed(recorded, now):
                await self._catch_up(now)
        except Exception:
            log.exception("receipt log sync failed; the next sync retries")
        for item in recorded:
            await self._hub.publish(
                Event(
                    "receipt",
                    item.receipt.request_id,
                    {"index": item.index, "envelope": item.envelope},
                )
            )

    def _take_committed(self, recorded: Sequence[Recorded], now: datetime) -> bool:
        """Grow the tree from leaves this process just committed, without reading them back.

        The bytes a unit of work appended are, once it committed, exactly the stored
        entries at those indexes, so the tree may take them in index order. True when
        the tree now holds every leaf of ``recorded`` and no checkpoint is due; False
        when a leaf before them is not known here (another replica's, or a commit whose
        own catch-up has not run yet) or a checkpoint is due: the caller then syncs
        from the store as before.
        """
        tree = self._require()
        for item in recorded:
            if item.index >= tree.size:
                self._committed[item.index] = leaf_hash(entry_bytes(item.envelope))
        if self._lock.locked():
            return False  # a sync is reading the store: the tree is its alone until it ends
        run: list[bytes] = []
        while (leaf := self._committed.pop(tree.size + len(run), None)) is not None:
            run.append(leaf)
        if run:
            tree.catch_up(run)
        if len(self._committed) > _MAX_UNTAKEN:  # a gap that never filled: forget it
            self._committed = {i: h for i, h in self._committed.items() if i >= tree.size}
        covered = all(item.index < tree.size for item in recorded)
        return covered and not tree.checkpoint_due(now)

    async def _catch_up(self, now: datetime) -> None:
        """:meth:`sync`, shared by every caller that arrives while one is queued.

        A sync that *starts* after a caller's commit covers it (it reads the store's
        size afterwards), so under a burst of commits the callers waiting for the lock
        are served by one read instead of one each, and still return only once the
        tree holds their leaves.
        """
        self._requested += 1
        ticket = self._requested
        async with self._lock:
            if self._covered >= ticket:
                return
            covers = self._requested
            await self._sync_locked(now, force_checkpoint=False)
            self._covered = covers

    async def sync(self, now: datetime, *, force_checkpoint: bool = False) -> Checkpoint | None:
        """Bring the tree to the store's size and sign a checkpoint when due (or forced)."""
        async with self._lock:
            return await self._sync_locked(now, force_checkpoint=force_checkpoint)

    async def _sync_locked(self, now: datetime, *, force_checkpoint: bool) -> Checkpoint | None:
        tree = self._require()
        # Reading needs no write lock: the tree only ever takes committed leaves, and
        # most syncs end here (no checkpoint due), so they never queue behind writers.
        async with self._store.unit_of_work(read_only=True) as uow:
            size = await uow.log.size()
            if size > tree.size:
                tree.catch_up(await uow.log.leaf_hashes(tree.size, size))
        self._committed = {i: h for i, h in self._committed.items() if i >= tree.size}
        latest = tree.latest_checkpoint
        due = tree.size > 0 and (
            (force_checkpoint and (latest is None or latest.size < tree.size))
            or tree.checkpoint_due(now)
        )
        if not due:
            return None
        checkpoint = tree.checkpoint(now)
        async with self._store.unit_of_work() as uow:
            stored = await uow.log.latest_checkpoint()
            if stored is None or stored[0] < checkpoint.size:
                await uow.log.add_checkpoint(checkpoint.size, checkpoint.signed_note, at=now)
            await uow.commit()
        await self._hub.publish(
            Event("checkpoint", None, {"size": checkpoint.size, "note": checkpoint.signed_note})
        )
        return checkpoint

    @property
    def proofs(self) -> ReceiptLog:
        """The in-memory tree (committed leaves only), for inclusion proofs."""
        return self._require()

    async def checkpoint_covering(self, now: datetime, size: int) -> Checkpoint:
        """A signed checkpoint of at least ``size`` entries (signing one if needed)."""
        await self.sync(now, force_checkpoint=True)
        latest = self._require().latest_checkpoint
        if latest is None or latest.size < size:
            raise LogError("CHECKPOINT_BEHIND", f"no checkpoint covers entry {size - 1} yet")
        return latest

    async def checkpoint_note(self, now: datetime) -> tuple[int, str]:
        """The latest stored checkpoint, signing one first if the log moved on."""
        await self.sync(now, force_checkpoint=True)
        async with self._store.unit_of_work(read_only=True) as uow:
            latest = await uow.log.latest_checkpoint()
        if latest is None:
            tree = self._require()
            checkpoint = tree.checkpoint(now)
            return checkpoint.size, checkpoint.signed_note
        return latest

    async def inclusion(self, index: int, size: int | None, now: datetime) -> dict[str, Any]:
        """An inclusion proof for entry ``index`` against a stored checkpoint."""
        size, note = (
            await self.checkpoint_note(now) if size is None else (size, await self._note_at(size))
        )
        tree = self._require()
        async with self._store.unit_of_work(read_only=True) as uow:
            entry = (await uow.log.entries(index, index + 1))[0]
        proof = tree.inclusion_proof(index, size)
        return {
            "index": index,
            "tree_size": size,
            "entry_b64u": b64u_encode(entry),
            "proof_b64u": [b64u_encode(h) for h in proof],
            "checkpoint": note,
        }

    async def consistency(
        self, old_size: int, new_size: int | None, now: datetime
    ) -> dict[str, Any]:
        size, note = (
            await self.checkpoint_note(now)
            if new_size is None
            else (new_size, await self._note_at(new_size))
        )
        proof = self._require().consistency_proof(old_size, size)
        return {
            "old_size": old_size,
            "new_size": size,
            "proof_b64u": [b64u_encode(h) for h in proof],
            "checkpoint": note,
        }

    async def _note_at(self, size: int) -> str:
        async with self._store.unit_of_work(read_only=True) as uow:
            for stored_size, note in await uow.log.checkpoints():
                if stored_size == size:
                    return note
        raise LogError("CHECKPOINT_NOT_FOUND", f"no signed checkpoint at size {size}")

    def new_receipt_id(self) -> str:
        return new_id("rc")
