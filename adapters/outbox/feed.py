"""Outbox payloads for the security feed, and their rebuilding into feed items.

A receipt is queued as ``{"receipt": {"index": 1042, "envelope": {...}}}`` and a
checkpoint as ``{"checkpoint": "<signed note>", "signer_did": "did:key:…"}``; the
worker folds consecutive feed items of one channel into one message with
:func:`core.feed.fold`. The envelope was signed by keyturn itself moments ago and is
only displayed here (verification is the job of ``keyturn log verify``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from core.checkpoint import Checkpoint
from core.errors import KeyturnError
from core.feed import CheckpointPosted, FeedItem, fold
from core.receipts import receipt_from_payload

#: The outbox ``kind`` of one feed line.
FEED = "feed"


def receipt_payload(index: int, envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The outbox payload for one receipt."""
    return {"receipt": {"index": int(index), "envelope": dict(envelope)}}


def checkpoint_payload(note: str, signer_did: str) -> dict[str, Any]:
    """The outbox payload for one signed checkpoint."""
    return {"checkpoint": note, "signer_did": signer_did}


def parse_note(note: str) -> Checkpoint:
    """The checkpoint a signed note announces (parsed for display, not verified).

    Raises:
        ValueError: the note is not a checkpoint note.
    """
    text, sep, signatures = note.partition("\n\n")
    lines = text.split("\n")
    if not sep or len(lines) < 3:
        raise ValueError("not a signed checkpoint note")
    try:
        root = base64.b64decode(lines[2], validate=True)
        return Checkpoint(
            origin=lines[0],
            size=int(lines[1]),
            root_hash=root,
            note_text=text + "\n",
            signature_lines=tuple(line for line in signatures.split("\n") if line),
            extensions=tuple(lines[3:]),
        )
    except (binascii.Error, KeyturnError) as e:
        raise ValueError(f"not a signed checkpoint note: {e}") from e


def feed_item(payload: Mapping[str, Any]) -> FeedItem:
    """Rebuild the feed item an outbox payload holds.

    Raises:
        ValueError: the payload is neither a receipt nor a checkpoint.
    """
    if "receipt" in payload:
        entry = payload["receipt"]
        envelope = entry["envelope"]
        return int(entry["index"]), receipt_from_payload(envelope["payload"])
    if "checkpoint" in payload:
        return CheckpointPosted(parse_note(payload["checkpoint"]), str(payload["signer_did"]))
    raise ValueError("a feed payload holds a receipt or a checkpoint")


def fold_payloads(payloads: Sequence[Mapping[str, Any]], *, max_lines: int) -> str:
    """One folded feed message for ``payloads`` (oldest first).

    A payload that cannot be rebuilt still produces a line (nothing is dropped): it
    says which log index it was, so a reader can look it up with ``keyturn log``.
    """
    items: list[FeedItem] = []
    unreadable: list[str] = []
    for payload in payloads:
        try:
            items.append(feed_item(payload))
        except (KeyError, TypeError, ValueError) as e:
            index = (
                payload.get("receipt", {}).get("index", "?")
                if isinstance(payload.get("receipt"), Mapping)
                else "?"
            )
            unreadable.append(f"#{index} (feed line could not be drawn: {type(e).__name__})")
    parts = [fold(items, max_lines=max_lines)] if items else []
    return "\n".join(parts + unreadable)
