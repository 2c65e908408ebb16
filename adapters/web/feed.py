"""The console's security feed: receipts as feed lines, and the latest signed checkpoint.

The console subscribes to the service's event hub and keeps the most recent receipt
lines in memory (the receipt log itself keeps every one). Each receipt envelope is
verified against keyturn's own DID before it is shown, and the checkpoint note is
verified against the same key, so the page never vouches for something unsigned.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.web.ports import EventLike
from core.checkpoint import Checkpoint, verify_checkpoint
from core.errors import KeyturnError
from core.feed import checkpoint_line, feed_line
from core.keys import public_key_from_did
from core.receipts import verify_receipt

log = logging.getLogger(__name__)

#: Lines the console keeps in memory; older ones are in the log (and its bundles).
KEEP_LINES = 500


@dataclass(frozen=True, slots=True)
class FeedEntry:
    index: int
    text: str
    request_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "request_id": self.request_id}


@dataclass(frozen=True, slots=True)
class CheckpointView:
    size: int
    line: str
    note: str


class Feed:
    """Receipt lines seen since the console started, newest last."""

    def __init__(self, trusted_did: str, *, keep: int = KEEP_LINES) -> None:
        self._trusted = trusted_did
        self._lines: deque[FeedEntry] = deque(maxlen=keep)
        self._indexes: set[int] = set()
        self._checkpoint: CheckpointView | None = None
        # Receipts heard from the hub, verified and rendered when a page asks for lines:
        # under load most receipts are never looked at in the console, and verifying
        # each one as it is published cost the busy event loop ~0.5 ms per receipt.
        self._unseen: deque[Mapping[str, Any]] = deque(maxlen=keep)

    async def on_event(self, event: EventLike) -> None:
        """Hub listener: receipts become feed lines (when shown), checkpoints are remembered."""
        if event.kind == "receipt":
            self._unseen.append(event.data)
        elif event.kind == "checkpoint":
            note = event.data.get("note")
            if isinstance(note, str):
                self.remember_checkpoint(note)

    def add_receipt(self, data: Mapping[str, Any]) -> FeedEntry | None:
        index, envelope = data.get("index"), data.get("envelope")
        if not isinstance(index, int) or isinstance(index, bool) or index in self._indexes:
            return None
        try:
            receipt = verify_receipt(envelope, trusted_signers={self._trusted})
        except (KeyturnError, ValueError):
            log.warning("receipt #%s did not verify against keyturn's key; not shown", index)
            return None
        if len(self._lines) == self._lines.maxlen:
            self._indexes.discard(self._lines[0].index)
        entry = FeedEntry(index, feed_line(index, receipt), receipt.request_id)
        self._lines.append(entry)
        self._indexes.add(index)
        if len(self._lines) > 1 and self._lines[-2].index > index:  # out-of-order delivery
            ordered = sorted(self._lines, key=lambda e: e.index)
            self._lines.clear()
            self._lines.extend(ordered)
        return entry

    def remember_checkpoint(self, note: str) -> CheckpointView | None:
        """Verify ``note`` against keyturn's key; keep it if it is newer than the last one."""
        checkpoint = verified_checkpoint(note, self._trusted)
        if checkpoint is None:
            return None
        if self._checkpoint is None or checkpoint.size >= self._checkpoint.size:
            self._checkpoint = CheckpointView(
                checkpoint.size, checkpoint_line(checkpoint, self._trusted), note
            )
        return self._checkpoint

    def _catch_up(self) -> None:
        while self._unseen:
            self.add_receipt(self._unseen.popleft())

    def lines(self, request_id: str | None = None) -> list[FeedEntry]:
        self._catch_up()
        return [e for e in self._lines if request_id is None or e.request_id == request_id]

    @property
    def newest_index(self) -> int | None:
        self._catch_up()
        return self._lines[-1].index if self._lines else None

    @property
    def checkpoint(self) -> CheckpointView | None:
        return self._checkpoint

    async def refresh_checkpoint(self, fetch: Callable[[], Awaitable[str]]) -> None:
        """Ask the service for a checkpoint only when the feed has moved past the last one."""
        newest = self.newest_index
        known = self._checkpoint
        if known is not None and (newest is None or known.size > newest):
            return
        try:
            self.remember_checkpoint(await fetch())
        except KeyturnError as e:
            log.warning("could not read the latest checkpoint: %s", e.reason_code)


def verified_checkpoint(note: str, trusted_did: str) -> Checkpoint | None:
    """The checkpoint in ``note`` if keyturn's key (``trusted_did``) signed it, else None."""
    origin = note.split("\n", 1)[0]
    try:
        return verify_checkpoint(
            note, origin=origin, public_keys={origin: public_key_from_did(trusted_did)}
        )
    except KeyturnError:
        log.warning("a checkpoint did not verify against keyturn's key; not shown")
        return None
