"""Receipt-log costs next to the floors measured in the same run (``python -m tests.bench log``).

* appends in memory, with a signed checkpoint every 1,000 leaves, against hashlib
  SHA-256 of the same entries;
* inclusion (and consistency) proofs generated and verified in a tree of 10**6 leaves,
  against the bare node hashes a proof of that size needs;
* replay of 10**5 entries recomputing every root, and verify_replay checking a root
  every 1,000 entries, against hashlib SHA-256 of the same bytes;
* checkpoint signing and verification against one Ed25519 sign and verify.

Entries are 256 random bytes, about the size of a receipt (LIMITS.md §2.4).
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Callable
from itertools import cycle

from core.checkpoint import sign_checkpoint, verify_checkpoint
from core.keys import SigningKey, verify_signature
from core.merkle import (
    MerkleTree,
    leaf_hash,
    replay,
    verify_consistency,
    verify_inclusion,
    verify_replay,
)
from tests.bench.timing import per_op, row

ORIGIN = "bench.example/log"
ENTRY_BYTES = 256
STREAM = 100_000  # entries appended, and replayed
CHECKPOINT_EVERY = 1_000
PROOF_TREE = 1_000_000
SAMPLES = 4_096  # distinct proofs cycled through by the per-op loops


def _median_run(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of whole runs of ``fn`` (for work that cannot loop per op)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = random.Random(9162)
    entries = [rng.randbytes(ENTRY_BYTES) for _ in range(STREAM)]
    key = SigningKey.from_seed(bytes(range(32)))

    def hash_entries() -> None:
        for entry in entries:
            hashlib.sha256(entry).digest()

    sha_floor = _median_run(hash_entries) / STREAM
    left, right = hashlib.sha256(b"l").digest(), hashlib.sha256(b"r").digest()
    node_floor = per_op(lambda: hashlib.sha256(b"\x01" + left + right).digest())
    print(row(f"floor: hashlib SHA-256 of one {ENTRY_BYTES}-byte entry", sha_floor))
    print(row("floor: hashlib SHA-256 of one 65-byte node input", node_floor))

    _appends(entries, key, sha_floor)
    _proofs(rng, node_floor)
    root = _replays(entries, sha_floor)
    _checkpoints(key, root)


def _appends(entries: list[bytes], key: SigningKey, sha_floor: float) -> None:
    def append_all(with_checkpoints: bool) -> None:
        tree = MerkleTree()
        for size, entry in enumerate(entries, start=1):
            tree.append(leaf_hash(entry))
            if with_checkpoints and size % CHECKPOINT_EVERY == 0:
                sign_checkpoint(ORIGIN, size, tree.root(), key)

    plain = _median_run(lambda: append_all(False)) / len(entries)
    checkpointed = _median_run(lambda: append_all(True)) / len(entries)
    print(row("append (leaf hash + completed nodes)", plain, sha_floor, "SHA floor"))
    label = f"append + signed checkpoint every {CHECKPOINT_EVERY:,}"
    print(row(label, checkpointed, sha_floor, "SHA floor"))


def _proofs(rng: random.Random, node_floor: float) -> None:
    def leaf(i: int) -> bytes:
        return hashlib.sha256(i.to_bytes(8, "big")).digest()

    start = time.perf_counter()
    tree = MerkleTree()
    tree.extend(leaf(i) for i in range(PROOF_TREE))
    build = (time.perf_counter() - start) / PROOF_TREE
    print(row(f"extend() to {PROOF_TREE:,} leaf hashes, per leaf", build, node_floor, "node hash"))
    n = tree.size
    root = tree.root()
    depth = (n - 1).bit_length()  # a proof holds at most ⌈log2 n⌉ hashes
    proof_floor = depth * node_floor
    floor_name = f"{depth} node hashes"

    indices = [rng.randrange(n) for _ in range(SAMPLES)]
    next_index = cycle(indices).__next__
    generate = per_op(lambda: tree.inclusion_proof(next_index(), n))
    next_case = cycle([(leaf(i), i, tree.inclusion_proof(i, n)) for i in indices]).__next__

    def verify_one() -> None:
        leaf_hash, index, proof = next_case()
        verify_inclusion(leaf_hash, index, n, proof, root)

    verify = per_op(verify_one)
    print(row(f"inclusion proof generation at n = {n:,}", generate, proof_floor, floor_name))
    print(row(f"inclusion proof verification at n = {n:,}", verify, proof_floor, floor_name))

    olds = [rng.randrange(1, n) for _ in range(SAMPLES)]
    next_old = cycle(olds).__next__
    generate_c = per_op(lambda: tree.consistency_proof(next_old(), n))
    next_pair = cycle([(m, tree.root(m), tree.consistency_proof(m, n)) for m in olds]).__next__

    def verify_pair() -> None:
        m, old_root, proof = next_pair()
        verify_consistency(m, n, old_root, root, proof)

    verify_c = per_op(verify_pair)
    print(row(f"consistency proof generation to n = {n:,}", generate_c, proof_floor, floor_name))
    print(row(f"consistency proof verification to n = {n:,}", verify_c, proof_floor, floor_name))


def _replays(entries: list[bytes], sha_floor: float) -> bytes:
    def replay_all() -> None:
        for _ in replay(entries):
            pass

    recorded = dict(replay(entries))
    checkpoints = {
        size: recorded[size] for size in range(CHECKPOINT_EVERY, len(entries) + 1, CHECKPOINT_EVERY)
    }
    every_root = _median_run(replay_all) / len(entries)
    checked = _median_run(lambda: verify_replay(entries, checkpoints)) / len(entries)
    label = f"replay {len(entries):,} entries, every root recomputed"
    print(row(label, every_root, sha_floor, "SHA floor"))
    label = f"verify_replay {len(entries):,}, a root every {CHECKPOINT_EVERY:,}"
    print(row(label, checked, sha_floor, "SHA floor"))
    return recorded[len(entries)]


def _checkpoints(key: SigningKey, root: bytes) -> None:
    message = b"x" * 120  # about the length of a checkpoint text
    signature = key.sign(message)
    sign_floor = per_op(lambda: key.sign(message))
    verify_floor = per_op(lambda: verify_signature(key.public_key, message, signature))
    note = sign_checkpoint(ORIGIN, STREAM, root, key).signed_note
    trusted = {ORIGIN: key.public_key}
    signing = per_op(lambda: sign_checkpoint(ORIGIN, STREAM, root, key))
    opening = per_op(lambda: verify_checkpoint(note, origin=ORIGIN, public_keys=trusted))
    print(row("sign checkpoint (C2SP note, Ed25519)", signing, sign_floor, "Ed25519 sign"))
    print(row("verify checkpoint", opening, verify_floor, "Ed25519 verify"))


if __name__ == "__main__":
    main()
