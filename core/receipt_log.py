"""The receipt log: an append-only RFC 9162 Merkle log of signed receipts, with checkpoints.

Entries are the exact bytes of each receipt envelope as stored:
:func:`core.receipts.entry_bytes` (the emission-order JSON of the envelope, UTF-8). The
leaf hash of an entry is ``SHA-256(0x00 ‖ entry)`` (:func:`core.merkle.leaf_hash`).

:class:`ReceiptLog` is the pure, in-memory side: it appends entries to a
:class:`~core.merkle.MerkleTree`, returns each entry's index and leaf hash, and signs a
C2SP checkpoint (:mod:`core.checkpoint`, origin e.g. ``keyturn/acme-prod``) at least
every ``checkpoint_every`` entries or every ``checkpoint_interval`` of time (time is an
argument; :meth:`ReceiptLog.tick` lets a background job checkpoint a quiet log).

Contract with the durable side (``core.ports.LogRepository``, the SQL store), in one
unit of work per event::

    index = await uow.log.append(entry, at=now)        # the database picks the index
    appended = log.append(entry, now=now, expected_index=index)
    if appended.checkpoint:
        await uow.log.add_checkpoint(appended.checkpoint.size,
                                     appended.checkpoint.signed_note, at=now)
    await uow.commit()

The repository is the source of truth: indexes are dense across replicas, so a replica
whose tree lags (another replica appended meanwhile) gets ``LOG_INDEX_MISMATCH`` and
first calls :meth:`ReceiptLog.catch_up` with ``await uow.log.leaf_hashes(log.size,
index)``. If the unit of work rolls back after :meth:`append`, the in-memory tree is
ahead of the store: drop it and rebuild it with :meth:`ReceiptLog.restore`. Proofs are
only ever given against checkpoints the repository holds.

:func:`verify_log` is the offline audit (``keyturn log verify``): it replays the whole
log, checks every checkpoint's signature, every checkpoint's root, and consistency
between consecutive checkpoints, and says exactly where the log breaks.

Errors (:class:`~core.errors.LogError`), beyond those of ``core.merkle`` and
``core.checkpoint`` (which keep their codes, with the checkpoint's position added):

    LOG_INDEX_MISMATCH            append: the store gave another index than the tree's size
    LOG_NO_CHECKPOINT             verify_log: no signed checkpoint, so nothing vouches for it
    LOG_CHECKPOINT_ORDER          verify_log: a checkpoint is smaller than the one before it
    LOG_LEAF_MISMATCH             verify_log: an entry's hash differs from its stored leaf hash
    LOG_ROOT_MISMATCH             verify_log: the entries do not give a checkpoint's root
    LOG_TRUNCATED                 verify_log: a checkpoint covers entries that are missing
    LOG_CHECKPOINT_INCONSISTENT   verify_log: two checkpoints sign different roots for one size
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from core.errors import LogError
from core.merkle import MerkleTree, empty_root
from core.ports import Signer
from core.receipts import entry_bytes
from core.times import require_aware

DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_INTERVAL = timedelta(seconds=60)

_sha256 = hashlib.sha256


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an entry landed: its index, its leaf hash, and the checkpoint it triggered."""

    index: int
    leaf_hash: bytes
    checkpoint: Checkpoint | None = None


class ReceiptLog:
    """The in-memory receipt log: a Merkle tree plus a checkpoint cadence.

    Not thread-safe: one log object per process, driven by one writer at a time (the
    unit of work serialises appends).
    """

    __slots__ = ("_every", "_interval", "_last_at", "_latest", "_origin", "_signer", "_tree")

    def __init__(
        self,
        origin: str,
        signer: Signer,
        *,
        started_at: datetime,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval: timedelta = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> None:
        """An empty log.

        Args:
            origin: the log's identity and checkpoint key name, e.g. ``keyturn/acme-prod``.
            signer: keyturn's key; it signs every checkpoint.
            started_at: when the time-based cadence starts counting.
            checkpoint_every: sign a checkpoint at least every this many entries (≥ 1).
            checkpoint_interval: and at least this often while entries keep arriving.

        Raises:
            ValueError: a cadence that is not positive.
        """
        if type(checkpoint_every) is not int or checkpoint_every < 1:
            raise ValueError("checkpoint_every must be a positive integer")
        if checkpoint_interval <= timedelta(0):
            raise ValueError("checkpoint_interval must be positive")
        self._origin = origin
        self._signer = signer
        self._every = checkpoint_every
        self._interval = checkpoint_interval
        self._tree = MerkleTree()
        self._latest: Checkpoint | None = None
        self._last_at = require_aware(started_at)

    @classmethod
    def restore(
        cls,
        origin: str,
        signer: Signer,
        leaf_hashes: Iterable[bytes],
        *,
        now: datetime,
        latest_checkpoint: str | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval: timedelta = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> ReceiptLog:
        """Rebuild the log from the repository's leaf hashes and its latest checkpoint.

        The latest checkpoint (a signed note) is verified with the signer's own key and
        must match the rebuilt tree, so a store that lost or altered leaves is noticed
        at start-up rather than in the next audit.

        Raises:
            LogError: ``LOG_HASH_INVALID`` for a malformed leaf hash; the checkpoint's
                verification codes; ``LOG_ROOT_MISMATCH`` or ``LOG_TRUNCATED`` when the
                leaves do not give the checkpoint's root.
        """
        log = cls(
            origin,
            signer,
            started_at=now,
            checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval,
        )
        log._tree.extend(leaf_hashes)
        if latest_checkpoint is not None:
            checkpoint = verify_checkpoint(
                latest_checkpoint, origin=origin, public_keys={origin: signer.public_key}
            )
            if checkpoint.size > log.size:
                raise LogError(
                    "LOG_TRUNCATED",
                    f"the latest checkpoint covers {checkpoint.size} entries; "
                    f"the store holds {log.size}",
                )
            if log._tree.root(checkpoint.size) != checkpoint.root_hash:
                raise LogError(
                    "LOG_ROOT_MISMATCH",
                    f"the stored leaves do not give the root signed at size {checkpoint.size}",
                )
            log._latest = checkpoint
        return log

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def size(self) -> int:
        """Number of entries."""
        return self._tree.size

    @property
    def latest_checkpoint(self) -> Checkpoint | None:
        return self._latest

    def append(self, entry: bytes, *, now: datetime, expected_index: int | None = None) -> Appended:
        """Append one entry (the exact stored bytes) and checkpoint if one is due.

        Args:
            entry: the bytes the repository stored.
            now: the append time, for the checkpoint cadence.
            expected_index: the index the repository gave the entry.

        Raises:
            LogError: ``LOG_INDEX_MISMATCH`` when ``expected_index`` is not the next
                index (the tree lags or leads the store; nothing was appended).
            TypeError: ``entry`` is not bytes.
        """
        if type(entry) is not bytes:
            raise TypeError("a log entry is bytes")
        index = self._tree.size
        if expected_index is not None and expected_index != index:
            raise LogError(
                "LOG_INDEX_MISMATCH",
                f"the store placed the entry at {expected_index}, the tree's next index "
                f"is {index}: catch up or restore the tree first",
            )
        leaf = _sha256(b"\x00" + entry).digest()
        self._tree.append(leaf)
        return Appended(index, leaf, self.tick(now))

    def append_receipt(
        self, envelope: Mapping[str, Any], *, now: datetime, expected_index: int | None = None
    ) -> Appended:
        """Append a signed receipt envelope as :func:`core.receipts.entry_bytes`."""
        return self.append(entry_bytes(envelope), now=now, expected_index=expected_index)

    def catch_up(self, leaf_hashes: Iterable[bytes]) -> int:
        """Add leaf hashes other replicas appended (from the repository); returns the size.

        Raises:
            LogError: ``LOG_HASH_INVALID`` for a hash that is not 32 bytes (nothing added).
        """
        return self._tree.extend(leaf_hashes)

    def checkpoint_due(self, now: datetime) -> bool:
        """True when entries arrived since the last checkpoint and the cadence says sign."""
        signed = self._latest.size if self._latest is not None else 0
        pending = self._tree.size - signed
        if pending <= 0:
            return False
        return pending >= self._every or require_aware(now) - self._last_at >= self._interval

    def tick(self, now: datetime) -> Checkpoint | None:
        """Sign a checkpoint if one is due (call it periodically on a quiet log)."""
        return self.checkpoint(now) if self.checkpoint_due(now) else None

    def checkpoint(self, now: datetime) -> Checkpoint:
        """Sign a checkpoint of the current tree now (e.g. before sealing a bundle).

        Raises:
            LogError: ``CHECKPOINT_KEY_INVALID`` or ``CHECKPOINT_MALFORMED`` for a bad
                origin or signer.
        """
        checkpoint = sign_checkpoint(self._origin, self._tree.size, self._tree.root(), self._signer)
        self._latest = checkpoint
        self._last_at = require_aware(now)
        return checkpoint

    def root(self, size: int | None = None) -> bytes:
        return self._tree.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[bytes, ...]:
        """PATH(index, D[0:size]) against the tree of ``size`` (the current size if omitted)."""
        return self._tree.inclusion_proof(index, self._tree.size if size is None else size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> tuple[bytes, ...]:
        new = self._tree.size if new_size is None else new_size
        return self._tree.consistency_proof(old_size, new)


# --- offline audit -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogReport:
    """What :func:`verify_log` established.

    Attributes:
        size: number of entries replayed.
        root_hash: the root of all of them.
        checkpoints: the verified checkpoints, in order.
        attested_size: entries covered by the last checkpoint.
        unattested: entries after the last checkpoint (not yet vouched for).
    """

    size: int
    root_hash: bytes
    checkpoints: tuple[Checkpoint, ...]

    @property
    def attested_size(self) -> int:
        return self.checkpoints[-1].size

    @property
    def unattested(self) -> int:
        return self.size - self.attested_size


def verify_log(
    entries: Iterable[bytes],
    checkpoints: Sequence[str | bytes],
    public_keys: Mapping[str, bytes],
    *,
    origin: str | None = None,
    leaf_hashes: Sequence[bytes] | None = None,
) -> LogReport:
    """Replay the whole log and check it against its signed checkpoints.

    Consistency between consecutive checkpoints: two checkpoints of the same size must
    sign the same root (else the log forked), and sizes never shrink; beyond that,
    every checkpoint's root is recomputed from one replay of the same entries, which
    proves each checkpoint extends the one before it (what a consistency proof shows,
    for every pair at once) and, unlike a proof, also locates a change between two
    checkpoints. Memory stays at log2(n) hashes, whatever the log's size.

    Args:
        entries: every entry, in index order, as stored.
        checkpoints: the signed checkpoint notes, oldest first.
        public_keys: trusted checkpoint keys by key name (for keyturn: the origin).
        origin: the log's origin; when omitted, ``public_keys`` must hold exactly one
            name, and that name is the origin (keyturn names its key after its log).
        leaf_hashes: the leaf hashes the store keeps beside the entries, if any; each
            entry must hash to its stored leaf hash, which pinpoints an altered entry.

    Returns:
        a :class:`LogReport`; entries after the last checkpoint are reported, not refused.

    Raises:
        LogError: the first failure, in this order: a checkpoint that does not verify
            (its own code; the message names its position), ``LOG_NO_CHECKPOINT``,
            ``LOG_CHECKPOINT_ORDER``, ``LOG_CHECKPOINT_INCONSISTENT``; then, replaying,
            ``LOG_LEAF_MISMATCH`` (the entry's index) and ``LOG_ROOT_MISMATCH`` (the
            checkpoint's size and the index range holding the change); then
            ``LOG_TRUNCATED``.
    """
    if origin is None:
        if not isinstance(public_keys, Mapping) or len(public_keys) != 1:
            raise LogError(
                "CHECKPOINT_KEY_INVALID", "name the log's origin when trusting several keys"
            )
        origin = next(iter(public_keys))
    verified = _verified_checkpoints(checkpoints, origin, public_keys)
    stored = leaf_hashes
    targets = iter(verified)
    target = next(targets, None)
    attested = 0  # size of the last checkpoint whose root matched
    edge: list[bytes] = []  # the perfect subtrees of the right edge, largest first
    while target is not None and target.size == 0:
        _check_root(edge, target, attested)
        target = next(targets, None)
    size = 0
    for entry in entries:
        h = _sha256(b"\x00" + entry).digest()
        if stored is not None and (size >= len(stored) or stored[size] != h):
            raise LogError(
                "LOG_LEAF_MISMATCH", f"entry {size} does not hash to its stored leaf hash"
            )
        # Each trailing 1 bit of the old size is a subtree the new leaf completes.
        n = size
        while n & 1:
            h = _sha256(b"\x01" + edge.pop() + h).digest()
            n >>= 1
        edge.append(h)
        size += 1
        while target is not None and target.size == size:
            _check_root(edge, target, attested)
            attested = target.size
            target = next(targets, None)
    if stored is not None and len(stored) != size:
        raise LogError(
            "LOG_LEAF_MISMATCH", f"the store holds {len(stored)} leaf hashes for {size} entries"
        )
    if target is not None:
        raise LogError(
            "LOG_TRUNCATED",
            f"checkpoint of size {target.size} was signed, but the log has {size} entries: "
            f"entries {size}–{target.size - 1} are missing",
        )
    return LogReport(size, _fold(edge), tuple(verified))


def _fold(edge: Sequence[bytes]) -> bytes:
    """The root from the right edge's perfect subtrees (RFC 9162 MTH folds from the right)."""
    if not edge:
        return empty_root()
    root = edge[-1]
    for h in reversed(edge[:-1]):
        root = _sha256(b"\x01" + h + root).digest()
    return root


def _verified_checkpoints(
    checkpoints: Sequence[str | bytes], origin: str, public_keys: Mapping[str, bytes]
) -> list[Checkpoint]:
    if isinstance(checkpoints, str | bytes):
        raise TypeError("checkpoints is a sequence of signed notes, not one note")
    verified: list[Checkpoint] = []
    for position, note in enumerate(checkpoints, start=1):
        try:
            checkpoint = verify_checkpoint(note, origin=origin, public_keys=public_keys)
        except LogError as e:
            raise LogError(e.reason_code, f"checkpoint #{position}: {e.message}") from e
        previous = verified[-1] if verified else None
        if previous is not None and checkpoint.size < previous.size:
            raise LogError(
                "LOG_CHECKPOINT_ORDER",
                f"checkpoint #{position} (size {checkpoint.size}) comes after one of size "
                f"{previous.size}",
            )
        if (
            previous is not None
            and checkpoint.size == previous.size
            and checkpoint.root_hash != previous.root_hash
        ):
            raise LogError(
                "LOG_CHECKPOINT_INCONSISTENT",
                f"checkpoints #{position - 1} and #{position} sign different roots for size "
                f"{checkpoint.size}: the log forked",
            )
        verified.append(checkpoint)
    if not verified:
        raise LogError("LOG_NO_CHECKPOINT", "no signed checkpoint: nothing vouches for the log")
    return verified


def _check_root(edge: Sequence[bytes], checkpoint: Checkpoint, attested: int) -> None:
    if _fold(edge) != checkpoint.root_hash:
        where = (
            f"entries {attested}–{checkpoint.size - 1}"
            if checkpoint.size > attested
            else "the entries"
        )
        raise LogError(
            "LOG_ROOT_MISMATCH",
            f"{where} do not give the root signed in checkpoint size {checkpoint.size} "
            f"(checkpoints up to size {attested} verified)",
        )
