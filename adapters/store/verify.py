"""``verify_log``: replay the stored receipt log and check it against its checkpoints.

What ``keyturn log verify`` runs, and what the crash tests run after a writer is
killed. In one read snapshot it checks, and raises ``LogError`` at the first break,
naming where:

    LOG_HEAD_MISMATCH        the head's size differs from the number of stored entries
    LOG_GAP                  an index below the head is missing (not dense)
    LOG_LEAF_HASH_MISMATCH   a stored leaf hash is not SHA-256(0x00 ‖ entry)
    CHECKPOINT_SIZE_MISMATCH a checkpoint's note names another size than its row
    LOG_ROOT_MISMATCH        the root recomputed from the entries differs from a
                             checkpoint's root
    CHECKPOINT_*             with trusted keys given: a note that does not verify

Entries are streamed in pages through an in-memory ``core.merkle.MerkleTree``, so
memory stays at one page plus log2(n) hashes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.store.unit import SqlStore
from core.checkpoint import verify_checkpoint
from core.errors import LogError
from core.merkle import HASH_SIZE, MerkleTree, empty_root, leaf_hash

_NOT_A_CHECKPOINT = "a stored checkpoint note is not a checkpoint"


@dataclass(frozen=True, slots=True)
class LogVerification:
    """A log that verified: its size and root, and how many checkpoints matched."""

    size: int
    root_hash: bytes
    checkpoints: int
    latest_checkpoint_size: int | None
    signatures_checked: bool


async def verify_log(
    store: SqlStore,
    *,
    origin: str | None = None,
    public_keys: Mapping[str, bytes] | None = None,
    page_size: int = 2000,
) -> LogVerification:
    """Replay every entry and check density, leaf hashes and every checkpoint root.

    Args:
        origin, public_keys: when given, every checkpoint's signature is verified
            too (``core.checkpoint.verify_checkpoint``); without them only the
            checkpoints' contents are compared (a crash or storage check, not an
            authenticity check, and the result says so).

    Raises:
        LogError: see the module docstring.
        StoreError: the store could not be read.
    """
    if (origin is None) != (public_keys is None):
        raise ValueError("give both origin and public_keys, or neither")
    if page_size < 1:
        raise ValueError("page_size must be positive")
    async with store.unit_of_work(read_only=True) as uow:
        # Checkpoints before the head: every checkpoint read is then within the head
        # read, even on a database other replicas keep appending to.
        checkpoints = await uow.log.checkpoints()
        size = await uow.log.size()
        count = await uow.log.count()
        if count != size:
            raise LogError(
                "LOG_HEAD_MISMATCH", f"the log head says {size} entries but {count} are stored"
            )
        expected: dict[int, bytes] = {}
        for checkpoint_size, note in checkpoints:
            note_size, root = _checkpoint_contents(note, origin, public_keys)
            if note_size != checkpoint_size:
                raise LogError(
                    "CHECKPOINT_SIZE_MISMATCH",
                    f"the checkpoint stored at size {checkpoint_size} is for size {note_size}",
                )
            if checkpoint_size > size:
                raise LogError(
                    "LOG_SIZE_OUT_OF_RANGE",
                    f"a checkpoint at size {checkpoint_size} is beyond the log's {size}",
                )
            expected[checkpoint_size] = root

        tree = MerkleTree()
        _check_root(tree, expected)
        start = 0
        while start < size:
            end = min(start + page_size, size)
            rows = await uow.log.rows(start, end)
            for offset, (index, entry, stored_leaf) in enumerate(rows):
                if index != start + offset:
                    raise LogError("LOG_GAP", f"log entry {start + offset} is missing")
                computed = leaf_hash(entry)
                if computed != stored_leaf:
                    raise LogError(
                        "LOG_LEAF_HASH_MISMATCH",
                        f"log entry {index}'s stored leaf hash does not match its bytes",
                    )
                tree.append(computed)
                _check_root(tree, expected)
            if len(rows) != end - start:
                raise LogError("LOG_GAP", f"log entry {start + len(rows)} is missing")
            start = end

    latest = max(expected) if expected else None
    return LogVerification(
        size=size,
        root_hash=tree.root() if size else empty_root(),
        checkpoints=len(expected),
        latest_checkpoint_size=latest,
        signatures_checked=public_keys is not None,
    )


def _check_root(tree: MerkleTree, expected: Mapping[int, bytes]) -> None:
    want = expected.get(tree.size)
    if want is not None and tree.root() != want:
        raise LogError(
            "LOG_ROOT_MISMATCH",
            f"the entries do not give the checkpoint's root at size {tree.size}",
        )


def _checkpoint_contents(
    note: str, origin: str | None, public_keys: Mapping[str, bytes] | None
) -> tuple[int, bytes]:
    """(size, root) of a stored checkpoint note, verified when keys are given."""
    if origin is not None and public_keys is not None:
        checkpoint = verify_checkpoint(note, origin=origin, public_keys=public_keys)
        return checkpoint.size, checkpoint.root_hash
    lines = note.split("\n")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except (IndexError, ValueError, binascii.Error) as e:
        raise LogError("CHECKPOINT_MALFORMED", _NOT_A_CHECKPOINT) from e
    if len(root) != HASH_SIZE or size < 0:
        raise LogError("CHECKPOINT_MALFORMED", _NOT_A_CHECKPOINT)
    return size, root
