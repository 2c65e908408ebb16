"""RFC 9162 Merkle tree: hashing, an append-only tree, proofs and their verification.

keyturn's receipt log is the Merkle tree of RFC 9162 §2.1 (the same hashing as
RFC 6962)::

    MTH({})       = SHA-256()
    MTH({d0})     = SHA-256(0x00 ‖ d0)                              leaf hash
    MTH(D[0:n])   = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))       node hash
                    with k the largest power of two smaller than n

The 0x00/0x01 prefixes keep a leaf from passing for an interior node, and the split at
a power of two (no duplicated last node) gives [a, b, c] and [a, b, c, c] different
roots: the two weaknesses of the plain tree Claw's log uses (CLAW_FORMATS.md).

Storage: node (level, index) is the hash of the perfect subtree of 2**level leaves that
starts at leaf index * 2**level; level 0 holds the leaf hashes. :class:`MerkleTree`
writes each such node once, when its last leaf arrives (two hashes per append,
amortized), through the :class:`LogNodes` port; every other subtree hash (the ragged
right edge of a tree of any size) is folded from at most log2(n) stored nodes.

Verification raises :class:`~core.errors.LogError` and returns ``None``:

    PROOF_MALFORMED       a hash is not 32 bytes, or an index or size is not an integer ≥ 0
    PROOF_OUT_OF_RANGE    leaf index ≥ tree size, old size > new size, or a size ≥ 2**64
    PROOF_SIZE_INVALID    the proof does not hold the number of hashes the sizes require
    PROOF_INVALID         the hashes do not reproduce the given root(s)

A proof binds a leaf to a root, not to a tree size: the same hashes can reproduce the
root for more than one size. The size and root a verifier passes must therefore come
together from one verified checkpoint (``core.checkpoint``), never separately.

The tree and the replay helpers raise ``LogError`` too:

    LOG_HASH_INVALID       a leaf hash to append is not 32 bytes
    LOG_SIZE_OUT_OF_RANGE  an index or size the tree (or the replayed entries) does not have
    LOG_NODE_MISSING       the store lacks a node the tree needs (it was lost or corrupted)
    LOG_NODE_CONFLICT      InMemoryLogNodes: a write that is not the next node of its level
    LOG_ROOT_MISMATCH      verify_replay: a recomputed root differs from the recorded one
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

from core.errors import LogError

HASH_SIZE = 32
#: RFC 9162 tree sizes are uint64.
MAX_TREE_SIZE = 2**64 - 1

NodeKey = tuple[int, int]
"""``(level, index)`` of a perfect subtree."""
Node = tuple[int, int, bytes]
"""``(level, index, hash)``."""

# Merkle hashing is over raw bytes (no JSON), so it calls hashlib directly rather than
# core.canonical: append and replay are hot loops where a wrapper call is measurable.
_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_EMPTY_ROOT = _sha256(b"").digest()
# Ragged subtree hashes a tree remembers: a few per proof size (at most log2 n each).
_RAGGED_CACHE_SIZE = 1024


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 ‖ entry)``: the hash of one log entry (RFC 9162 §2.1.1)."""
    return _sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``: the hash of an interior node."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def empty_root() -> bytes:
    """The root of the empty tree, ``SHA-256("")``."""
    return _EMPTY_ROOT


class TreeHead(NamedTuple):
    """A tree size and its root hash.

    A ``NamedTuple`` rather than a frozen dataclass because :func:`replay` makes one per
    entry, and it has no invariant to check beyond its types.
    """

    size: int
    root_hash: bytes


class LogNodes(Protocol):
    """Where a :class:`MerkleTree` keeps its perfect-subtree hashes.

    Node ``(level, index)`` is the hash of leaves ``[index·2**level, (index+1)·2**level)``;
    level 0 holds the leaf hashes. A store implements three operations:

    * ``size()``: how many leaves (level-0 nodes) it holds.
    * ``get_many(keys)``: the hash of each requested node, in the order asked, ``None``
      for a node it does not have. A proof or root costs one call of at most log2(n)
      keys, plus one more for the pieces of its ragged right subtree the first time
      that subtree is needed; so a SQL store answers with one or two queries.
    * ``put_many(nodes)``: store a batch atomically, all of it or none of it. The tree
      sends the new leaves of one append (or extend) with every parent they complete,
      each node once, in order; so a store of size n always holds every perfect subtree
      of its first n leaves. A store must never overwrite a node: on a write that
      collides with an existing node (another writer got there first) it raises
      (``StoreError`` or ``LogError``) and stores nothing.

    The tree keeps its right edge in memory, so appending never reads the store. One
    tree object is the only writer of a store; after a failed write, build a new
    ``MerkleTree`` on the store to pick up what it really holds.
    """

    def size(self) -> int: ...

    def get_many(self, keys: Sequence[NodeKey]) -> Sequence[bytes | None]: ...

    def put_many(self, nodes: Sequence[Node]) -> None: ...


class InMemoryLogNodes:
    """The default :class:`LogNodes`: one Python list of hashes per level."""

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    def size(self) -> int:
        return len(self._levels[0])

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes | None]:
        levels = self._levels
        depth = len(levels)
        return [
            levels[level][index] if 0 <= level < depth and 0 <= index < len(levels[level]) else None
            for level, index in keys
        ]

    def put_many(self, nodes: Sequence[Node]) -> None:
        """Append a batch of nodes; each must be the next one at its level.

        Raises:
            LogError: ``LOG_NODE_CONFLICT`` when a node is not the next of its level;
                nothing of the batch is stored.
        """
        levels = self._levels
        next_index: dict[int, int] = {}
        for level, index, _ in nodes:  # check all before storing any: all or nothing
            expected = next_index.get(level)
            if expected is None:
                expected = len(levels[level]) if 0 <= level < len(levels) else 0
            if level < 0 or index != expected:
                raise LogError(
                    "LOG_NODE_CONFLICT",
                    f"node ({level}, {index}) is not the next node of its level",
                )
            next_index[level] = expected + 1
        for level, _, value in nodes:
            while level >= len(levels):
                levels.append([])
            levels[level].append(value)


class MerkleTree:
    """An append-only RFC 9162 Merkle tree over leaf hashes, persisted through LogNodes.

    Appends cost one leaf write plus the parents it completes (two hashes amortized);
    ``root``, ``inclusion_proof`` and ``consistency_proof`` work for any size up to the
    current one and read at most about 2·log2(n) stored nodes. The hashes of ragged
    right subtrees (those ending at a size that is not a power of two) are remembered,
    a thousand at most: a range of existing leaves always has the same hash.
    """

    __slots__ = ("_frontier", "_nodes", "_ragged", "_size")

    def __init__(self, nodes: LogNodes | None = None) -> None:
        """Open a tree on ``nodes`` (a new in-memory store when omitted).

        Raises:
            LogError: ``LOG_NODE_MISSING`` when the store lacks a node of its right edge.
        """
        self._nodes: LogNodes = InMemoryLogNodes() if nodes is None else nodes
        size = self._nodes.size()
        if not _is_count(size):
            raise LogError("LOG_NODE_MISSING", f"the node store reports size {size!r}")
        # The right edge: the perfect subtrees that make up [0, size), largest first.
        self._frontier: list[bytes] = self._fetch(_pieces(0, size))
        self._size: int = size
        self._ragged: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    def append(self, leaf_hash: bytes) -> int:
        """Add one leaf hash and return its index.

        Raises:
            LogError: ``LOG_HASH_INVALID`` for a hash that is not 32 bytes.
            Exception: whatever the store raises; the tree is then unchanged.
        """
        return self.extend((leaf_hash,)) - 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> int:
        """Add leaf hashes in order with one store write, and return the new size.

        Raises:
            LogError: ``LOG_HASH_INVALID`` for a hash that is not 32 bytes (nothing added).
            Exception: whatever the store raises; the tree is then unchanged.
        """
        frontier = list(self._frontier)
        size = self._size
        batch: list[Node] = []
        for leaf in leaf_hashes:
            if type(leaf) is not bytes or len(leaf) != HASH_SIZE:
                raise LogError("LOG_HASH_INVALID", "a leaf hash is 32 bytes")
            batch.append((0, size, leaf))
            h = leaf
            level = 0
            # Each trailing 1 bit of the old size is a perfect subtree on the right edge
            # that the new leaf completes into one twice its size.
            while (size >> level) & 1:
                h = _sha256(_NODE_PREFIX + frontier.pop() + h).digest()
                level += 1
                batch.append((level, size >> level, h))
            frontier.append(h)
            size += 1
        if batch:
            self._nodes.put_many(batch)
        # Only once the store holds the batch does the in-memory edge move.
        self._frontier = frontier
        self._size = size
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the first ``size`` leaves (all leaves when omitted).

        Raises:
            LogError: ``LOG_SIZE_OUT_OF_RANGE`` for a size the tree does not have;
                ``LOG_NODE_MISSING`` if the store lost a node.
        """
        if size is not None:
            self._require_size(size)
        if size is None or size == self._size:
            return _fold(self._frontier) if self._frontier else _EMPTY_ROOT
        if size == 0:
            return _EMPTY_ROOT
        return self._subtree_hashes([(0, size)])[0]

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, ...]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size]): sibling hashes, leaf level first.

        Raises:
            LogError: ``LOG_SIZE_OUT_OF_RANGE`` unless 0 ≤ index < size ≤ tree size;
                ``LOG_NODE_MISSING`` if the store lost a node.
        """
        self._require_size(size)
        if not _is_count(index) or index >= size:
            raise LogError("LOG_SIZE_OUT_OF_RANGE", f"no leaf {index!r} in a tree of {size}")
        # Bottom-up, PATH is the sibling of each node on the leaf's path to the root
        # (RFC 9162 §2.1.3.1 unrolled). A sibling that starts at or past `size` does not
        # exist: the RFC's split carries the node up unchanged. At most one sibling
        # straddles `size`: the ragged right subtree.
        keys: list[NodeKey] = []
        ragged_at = -1
        ragged = b""
        level = 0
        while (size - 1) >> level:
            sibling = (index >> level) ^ 1
            start = sibling << level
            if start < size:
                if start + (1 << level) <= size:
                    keys.append((level, sibling))
                else:
                    ragged_at, ragged = len(keys), self._ragged_hash(start, size)
            level += 1
        hashes = self._fetch(keys)
        if ragged_at >= 0:
            hashes.insert(ragged_at, ragged)
        return tuple(hashes)

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]).

        Empty when ``old_size`` is 0 or equals ``new_size`` (nothing to prove).

        Raises:
            LogError: ``LOG_SIZE_OUT_OF_RANGE`` unless 0 ≤ old_size ≤ new_size ≤ tree
                size; ``LOG_NODE_MISSING`` if the store lost a node.
        """
        self._require_size(new_size)
        if not _is_count(old_size) or old_size > new_size:
            raise LogError(
                "LOG_SIZE_OUT_OF_RANGE", f"no consistency from size {old_size!r} to {new_size}"
            )
        if old_size in (0, new_size):
            return ()
        return self._subtree_hashes(_consistency_ranges(old_size, new_size))

    def _require_size(self, size: int) -> None:
        if not _is_count(size) or size > self._size:
            raise LogError(
                "LOG_SIZE_OUT_OF_RANGE", f"size {size!r} is beyond the tree's {self._size}"
            )

    def _subtree_hashes(self, ranges: Sequence[tuple[int, int]]) -> tuple[bytes, ...]:
        # All ranges but at most one are perfect subtrees: one stored node each, all
        # fetched in one store call. The ragged one (it ends at a size that is not a
        # power of two) is folded from its pieces, and remembered.
        keys: list[NodeKey] = []
        ragged: list[tuple[int, bytes]] = []
        for position, (start, end) in enumerate(ranges):
            width = end - start
            if width & (width - 1):
                ragged.append((position, self._ragged_hash(start, end)))
            else:
                level = width.bit_length() - 1
                keys.append((level, start >> level))
        hashes = self._fetch(keys)
        for position, value in ragged:
            hashes.insert(position, value)
        return tuple(hashes)

    def _ragged_hash(self, start: int, end: int) -> bytes:
        # The hash of leaves [start, end) never changes once they exist, so it can be
        # kept across appends; proofs against one checkpoint size reuse the same few.
        cached = self._ragged.get((start, end))
        if cached is None:
            cached = _fold(self._fetch(_pieces(start, end)))
            if len(self._ragged) >= _RAGGED_CACHE_SIZE:
                self._ragged.clear()
            self._ragged[(start, end)] = cached
        return cached

    def _fetch(self, keys: Sequence[NodeKey]) -> list[bytes]:
        if not keys:
            return []
        values = self._nodes.get_many(keys)
        if len(values) != len(keys):
            raise LogError("LOG_NODE_MISSING", "the node store answered the wrong number of nodes")
        hashes: list[bytes] = []
        for value in values:
            if type(value) is not bytes or len(value) != HASH_SIZE:
                key = keys[len(hashes)]
                raise LogError("LOG_NODE_MISSING", f"the node store has no hash for node {key}")
            hashes.append(value)
        return hashes


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2. ``size`` and ``root`` must come from one verified checkpoint.

    Raises:
        LogError: ``PROOF_MALFORMED``, ``PROOF_OUT_OF_RANGE``, ``PROOF_SIZE_INVALID`` or
            ``PROOF_INVALID`` (see the module docstring).
    """
    _require_hash(leaf_hash, "leaf hash")
    _require_hash(root, "root hash")
    _require_proof_sizes(index, size)
    if index >= size:
        raise LogError("PROOF_OUT_OF_RANGE", f"leaf index {index} is not below tree size {size}")
    path = _require_proof(proof)
    if len(path) != _inclusion_length(index, size):
        raise LogError(
            "PROOF_SIZE_INVALID",
            f"an inclusion proof for leaf {index} of {size} has "
            f"{_inclusion_length(index, size)} hashes, not {len(path)}",
        )
    fn, sn = index, size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:  # unreachable after the length check; kept as RFC 9162 step 4a
            raise LogError("PROOF_SIZE_INVALID", "the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0 or not hmac.compare_digest(r, root):
        raise LogError("PROOF_INVALID", "the inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    RFC 9162 §2.1.4.2, with its two degenerate cases made explicit: from size 0 the
    proof is empty and ``old_root`` must be the empty root; between equal sizes the
    proof is empty and the roots must be equal.

    Raises:
        LogError: ``PROOF_MALFORMED``, ``PROOF_OUT_OF_RANGE``, ``PROOF_SIZE_INVALID`` or
            ``PROOF_INVALID`` (see the module docstring).
    """
    _require_hash(old_root, "old root hash")
    _require_hash(new_root, "new root hash")
    _require_proof_sizes(old_size, new_size)
    if old_size > new_size:
        raise LogError("PROOF_OUT_OF_RANGE", f"old size {old_size} exceeds new size {new_size}")
    path = _require_proof(proof)
    if old_size in (0, new_size):
        if path:
            raise LogError("PROOF_SIZE_INVALID", "this consistency proof must be empty")
        expected = _EMPTY_ROOT if old_size == 0 else new_root
        if not hmac.compare_digest(old_root, expected):
            raise LogError("PROOF_INVALID", "the old root does not match")
        return
    if len(path) != _consistency_length(old_size, new_size):
        raise LogError(
            "PROOF_SIZE_INVALID",
            f"a consistency proof from {old_size} to {new_size} has "
            f"{_consistency_length(old_size, new_size)} hashes, not {len(path)}",
        )
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the seed
        path = [old_root, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check; kept as RFC 9162 step 6a
            raise LogError("PROOF_SIZE_INVALID", "the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogError("PROOF_INVALID", "the consistency proof does not span the new tree")
    if not hmac.compare_digest(fr, old_root):
        raise LogError("PROOF_INVALID", "the consistency proof does not lead to the old root")
    if not hmac.compare_digest(sr, new_root):
        raise LogError("PROOF_INVALID", "the consistency proof does not lead to the new root")


def replay(entries: Iterable[bytes]) -> Iterator[TreeHead]:
    """Rebuild the tree from its entries, yielding the tree head after every entry.

    Pure and in memory (only the right edge is kept: log2(n) hashes). ``keyturn log
    verify`` compares these roots with the signed checkpoints.
    """
    edge: list[bytes] = []
    for size, entry in enumerate(entries, start=1):
        h = _sha256(_LEAF_PREFIX + entry).digest()
        n = size - 1
        while n & 1:
            h = _sha256(_NODE_PREFIX + edge.pop() + h).digest()
            n >>= 1
        edge.append(h)
        root = h
        for i in range(len(edge) - 2, -1, -1):
            root = _sha256(_NODE_PREFIX + edge[i] + root).digest()
        yield TreeHead(size, root)


def verify_replay(entries: Iterable[bytes], expected_roots: Mapping[int, bytes]) -> TreeHead:
    """Rebuild the tree from ``entries`` and check the root at every size given.

    Roots are computed only at the sizes in ``expected_roots`` (checkpoint sizes), so
    this costs about two hashes per entry. Returns the head of the whole tree.

    Raises:
        LogError: ``LOG_ROOT_MISMATCH`` at the first size whose root differs;
            ``LOG_SIZE_OUT_OF_RANGE`` for an expected size beyond the entries or < 0.
    """
    wanted = dict(expected_roots)
    edge: list[bytes] = []
    size = 0

    def check() -> None:
        want = wanted.pop(size, None)
        if want is not None:
            got = _fold(edge) if edge else _EMPTY_ROOT
            if type(want) is not bytes or not hmac.compare_digest(got, want):
                raise LogError(
                    "LOG_ROOT_MISMATCH", f"the entries do not give the recorded root at size {size}"
                )

    check()
    for entry in entries:
        h = _sha256(_LEAF_PREFIX + entry).digest()
        n = size
        while n & 1:
            h = _sha256(_NODE_PREFIX + edge.pop() + h).digest()
            n >>= 1
        edge.append(h)
        size += 1
        if wanted:
            check()
    if wanted:
        raise LogError(
            "LOG_SIZE_OUT_OF_RANGE",
            f"a root is recorded for size {min(wanted)} but there are only {size} entries",
        )
    return TreeHead(size, _fold(edge) if edge else _EMPTY_ROOT)


# --- helpers -------------------------------------------------------------------------


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _split(width: int) -> int:
    """The largest power of two smaller than ``width`` (≥ 2): RFC 9162's k."""
    return 1 << ((width - 1).bit_length() - 1)


def _pieces(start: int, end: int) -> list[NodeKey]:
    """The stored perfect subtrees that make up leaves [start, end), largest first.

    ``start`` is aligned as in every RFC 9162 subtree: a multiple of the largest piece.
    """
    keys: list[NodeKey] = []
    width = end - start
    level = width.bit_length() - 1
    while level >= 0:
        if (width >> level) & 1:
            keys.append((level, start >> level))
            start += 1 << level
        level -= 1
    return keys


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a subtree from its perfect pieces (largest first): MTH folds from the right."""
    acc = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        acc = _sha256(_NODE_PREFIX + hashes[i] + acc).digest()
    return acc


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges of SUBPROOF(old_size, D[0:new_size], true) (RFC 9162 §2.1.4.1), 0 < old < new."""
    ranges: list[tuple[int, int]] = []
    start, end, m = 0, new_size, old_size
    old_is_whole_subtree = True  # the RFC's b: this subtree is the old tree itself
    while m != end - start:
        k = _split(end - start)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            ranges.append((start + k, end))
            end = start + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            ranges.append((start, start + k))
            start += k
            m -= k
            old_is_whole_subtree = False
    if not old_is_whole_subtree:  # SUBPROOF(m, D[m], false) = MTH(D[m])
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def _inclusion_length(index: int, size: int) -> int:
    # Levels below where the paths to `index` and to the last leaf meet each give one
    # hash; above that, one hash per left sibling of the path.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(old_size: int, new_size: int) -> int:
    # As the inclusion proof of leaf old_size - 1 in the new tree, minus the levels
    # inside the old tree's last perfect subtree, plus that subtree's own hash unless
    # it is the whole old tree (old_size a power of two).
    shift = (old_size & -old_size).bit_length() - 1
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = ((old_size - 1) >> inner).bit_count()
    seed = 0 if old_size == 1 << shift else 1
    return seed + inner - shift + border


def _require_hash(value: object, what: str) -> None:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise LogError("PROOF_MALFORMED", f"the {what} is not a 32-byte hash")


def _require_proof(proof: object) -> list[bytes]:
    if isinstance(proof, str | bytes | bytearray) or not isinstance(proof, Sequence):
        raise LogError("PROOF_MALFORMED", "a proof is a sequence of 32-byte hashes")
    path = list(proof)
    for item in path:
        _require_hash(item, "proof hash")
    return path


def _require_proof_sizes(first: int, second: int) -> None:
    if not _is_count(first) or not _is_count(second):
        raise LogError("PROOF_MALFORMED", "tree sizes and leaf indices are integers ≥ 0")
    if second > MAX_TREE_SIZE:
        raise LogError("PROOF_OUT_OF_RANGE", "tree sizes are below 2**64")
