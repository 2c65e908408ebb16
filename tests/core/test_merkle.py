"""The receipt log's Merkle tree is RFC 9162's, and its proofs cannot be bent.

The reference functions below are the RFC's recursive definitions written out directly
(MTH §2.1.1, PATH §2.1.3.1, SUBPROOF §2.1.4.1), independent of ``core.merkle``'s
iterative code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import LogError, StoreError
from core.merkle import (
    InMemoryLogNodes,
    MerkleTree,
    Node,
    NodeKey,
    TreeHead,
    empty_root,
    leaf_hash,
    node_hash,
    replay,
    verify_consistency,
    verify_inclusion,
    verify_replay,
)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (n ≥ 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(entries: Sequence[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + entries[0])
    k = _k(n)
    return _sha256(b"\x01" + _mth(entries[:k]) + _mth(entries[k:]))


def _path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*_path(m, entries[:k]), _mth(entries[k:])]
    return [*_path(m - k, entries[k:]), _mth(entries[:k])]


def _subproof(m: int, entries: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [_mth(entries)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, entries[:k], b), _mth(entries[k:])]
    return [*_subproof(m - k, entries[k:], False), _mth(entries[:k])]


def _tree(entries: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree()
    tree.extend(leaf_hash(e) for e in entries)
    return tree


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# Unique entries, so that a leaf proven at another index would be a false statement.
ENTRIES = [b"receipt-%d" % i for i in range(4096)]
TREE = _tree(ENTRIES)
MAX_PROVEN = 2048  # sizes drawn below; a flip of bits 0..11 stays inside TREE

# --- the tree is RFC 9162's ----------------------------------------------------------


def test_root_of_the_empty_tree_is_sha256_of_nothing() -> None:
    assert empty_root().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MerkleTree().root() == empty_root()
    assert TREE.root(0) == empty_root()


def test_roots_follow_the_rfc_definition_for_sizes_1_to_8() -> None:
    for size in range(1, 9):
        assert TREE.root(size) == _mth(ENTRIES[:size])
        assert _tree(ENTRIES[:size]).root() == _mth(ENTRIES[:size])


def test_small_roots_match_values_computed_by_hand() -> None:
    # leaf_i = SHA-256(0x00 ‖ "i"); size 2: SHA-256(0x01 ‖ leaf_0 ‖ leaf_1);
    # size 3: SHA-256(0x01 ‖ root_2 ‖ leaf_2) — the split is at 2, not the midpoint.
    tree = _tree([b"0", b"1", b"2"])
    assert tree.root(1).hex() == "db3426e878068d28d269b6c87172322ce5372b65756d0789001d34835f601c03"
    assert tree.root(2).hex() == "cb00989d94a569c0a678ae042b63dcd4625db96440517f37a6eb7976ea24ed4b"
    assert tree.root(3).hex() == "725d5230db68f557470dc35f1d8865813acd7ebb07ad152774141decbae71327"
    assert leaf_hash(b"0") == _sha256(b"\x00" + b"0")
    assert node_hash(leaf_hash(b"0"), leaf_hash(b"1")) == tree.root(2)


# The Certificate Transparency project's RFC 6962 test data (google/certificate-transparency),
# which every RFC 6962/9162 implementation reproduces.
CT_ENTRIES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_certificate_transparency_reference_vectors() -> None:
    tree = _tree(CT_ENTRIES)
    assert [tree.root(n).hex() for n in range(9)] == CT_ROOTS
    assert [h.hex() for h in tree.inclusion_proof(0, 8)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [h.hex() for h in tree.inclusion_proof(5, 8)] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [h.hex() for h in tree.consistency_proof(2, 8)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [h.hex() for h in tree.consistency_proof(6, 8)] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]


def test_every_inclusion_proof_up_to_40_leaves_is_the_rfc_path_and_verifies() -> None:
    for size in range(1, 41):
        root = TREE.root(size)
        assert root == _mth(ENTRIES[:size])
        for index in range(size):
            proof = TREE.inclusion_proof(index, size)
            assert list(proof) == _path(index, ENTRIES[:size])
            verify_inclusion(leaf_hash(ENTRIES[index]), index, size, proof, root)


def test_every_consistency_proof_up_to_40_leaves_is_the_rfc_proof_and_verifies() -> None:
    for new in range(1, 41):
        for old in range(0, new + 1):
            proof = TREE.consistency_proof(old, new)
            expected = _subproof(old, ENTRIES[:new], True) if old else []
            assert list(proof) == expected
            verify_consistency(old, new, TREE.root(old), TREE.root(new), proof)


def test_the_duplicated_last_leaf_does_not_give_the_same_root() -> None:
    a, b, c = b"a", b"b", b"c"
    assert _tree([a, b, c]).root() != _tree([a, b, c, c]).root()

    # Claw's plain tree (odd levels duplicate the last node, no prefixes) does collide.
    def plain(hashes: list[bytes]) -> bytes:
        while len(hashes) > 1:
            if len(hashes) % 2:
                hashes = [*hashes, hashes[-1]]
            hashes = [_sha256(hashes[i] + hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    assert plain([_sha256(x) for x in (a, b, c)]) == plain([_sha256(x) for x in (a, b, c, c)])


def test_an_interior_node_cannot_pass_for_a_leaf() -> None:
    # Without the 0x00/0x01 prefixes, the entry left‖right would hash like their parent.
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    root = _tree([b"a", b"b"]).root()
    assert _tree([left + right]).root() != root
    with pytest.raises(LogError) as exc:
        verify_inclusion(leaf_hash(left + right), 0, 1, [], root)
    assert exc.value.reason_code == "PROOF_INVALID"


# --- proofs cannot be bent -----------------------------------------------------------


@st.composite
def _leaf_positions(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_PROVEN))
    return draw(st.integers(0, size - 1)), size


@st.composite
def _size_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """1 ≤ old < new: the pairs whose consistency proof has hashes."""
    new = draw(st.integers(2, MAX_PROVEN))
    return draw(st.integers(1, new - 1)), new


def _refused(code: str | None = None) -> pytest.RaisesExc[LogError]:
    return pytest.raises(LogError, match=f"^{code}:" if code else None)


@given(_leaf_positions())
def test_any_inclusion_proof_verifies(position: tuple[int, int]) -> None:
    index, size = position
    proof = TREE.inclusion_proof(index, size)
    assert len(proof) <= (size - 1).bit_length()
    verify_inclusion(leaf_hash(ENTRIES[index]), index, size, proof, TREE.root(size))


@given(_leaf_positions(), st.data())
def test_a_flipped_bit_in_an_inclusion_proof_hash_is_refused(
    position: tuple[int, int], data: st.DataObject
) -> None:
    index, size = position
    proof = list(TREE.inclusion_proof(index, size))
    if not proof:  # size 1: nothing to flip; the empty proof must still be exact
        with _refused("PROOF_SIZE_INVALID"):
            verify_inclusion(leaf_hash(ENTRIES[0]), 0, 1, [empty_root()], TREE.root(1))
        return
    at = data.draw(st.integers(0, len(proof) - 1))
    proof[at] = _flip(proof[at], data.draw(st.integers(0, 255)))
    with _refused("PROOF_INVALID"):
        verify_inclusion(leaf_hash(ENTRIES[index]), index, size, proof, TREE.root(size))


@given(_leaf_positions(), st.integers(0, 255), st.booleans())
def test_a_flipped_bit_in_the_leaf_or_the_root_is_refused(
    position: tuple[int, int], bit: int, in_leaf: bool
) -> None:
    index, size = position
    leaf, root = leaf_hash(ENTRIES[index]), TREE.root(size)
    if in_leaf:
        leaf = _flip(leaf, bit)
    else:
        root = _flip(root, bit)
    with _refused("PROOF_INVALID"):
        verify_inclusion(leaf, index, size, TREE.inclusion_proof(index, size), root)


@given(_leaf_positions(), st.integers(0, 11))
def test_an_inclusion_proof_does_not_move_the_leaf_to_another_index(
    position: tuple[int, int], bit: int
) -> None:
    index, size = position
    proof = TREE.inclusion_proof(index, size)
    with _refused():
        verify_inclusion(
            leaf_hash(ENTRIES[index]), index ^ (1 << bit), size, proof, TREE.root(size)
        )


@given(_leaf_positions(), st.integers(0, 11))
def test_an_inclusion_proof_does_not_fit_a_checkpoint_of_another_size(
    position: tuple[int, int], bit: int
) -> None:
    # A size is only ever believed together with its root (both from one signed
    # checkpoint), so the tampered size comes with the real root at that size.
    index, size = position
    proof = TREE.inclusion_proof(index, size)
    other = size ^ (1 << bit)
    leaf, root = leaf_hash(ENTRIES[index]), TREE.root(other)
    if index < other and TREE.inclusion_proof(index, other) == proof:
        verify_inclusion(leaf, index, other, proof, root)  # genuinely the same proof
    else:
        with _refused():
            verify_inclusion(leaf, index, other, proof, root)


def test_a_proof_binds_the_root_not_the_size_so_both_come_from_one_checkpoint() -> None:
    # RFC 9162 hashes do not commit to the tree size: leaf 0's proof in the tree of 5
    # also reproduces root(5) when told the size is 7. This is why callers take size
    # and root from one verified checkpoint, never from separate sources.
    proof = TREE.inclusion_proof(0, 5)
    verify_inclusion(leaf_hash(ENTRIES[0]), 0, 7, proof, TREE.root(5))
    with _refused("PROOF_INVALID"):
        verify_inclusion(leaf_hash(ENTRIES[0]), 0, 7, proof, TREE.root(7))


@given(_size_pairs())
def test_any_consistency_proof_verifies(pair: tuple[int, int]) -> None:
    old, new = pair
    proof = TREE.consistency_proof(old, new)
    assert 1 <= len(proof) <= (new - 1).bit_length() + 1
    verify_consistency(old, new, TREE.root(old), TREE.root(new), proof)


@given(_size_pairs(), st.data())
def test_a_flipped_bit_in_a_consistency_proof_hash_is_refused(
    pair: tuple[int, int], data: st.DataObject
) -> None:
    old, new = pair
    proof = list(TREE.consistency_proof(old, new))
    at = data.draw(st.integers(0, len(proof) - 1))
    proof[at] = _flip(proof[at], data.draw(st.integers(0, 255)))
    with _refused("PROOF_INVALID"):
        verify_consistency(old, new, TREE.root(old), TREE.root(new), proof)


@given(_size_pairs(), st.integers(0, 255), st.booleans())
def test_a_flipped_bit_in_the_old_or_new_root_is_refused(
    pair: tuple[int, int], bit: int, in_old: bool
) -> None:
    old, new = pair
    old_root, new_root = TREE.root(old), TREE.root(new)
    if in_old:
        old_root = _flip(old_root, bit)
    else:
        new_root = _flip(new_root, bit)
    with _refused("PROOF_INVALID"):
        verify_consistency(old, new, old_root, new_root, TREE.consistency_proof(old, new))


@given(_size_pairs(), st.integers(0, 11), st.booleans())
def test_a_consistency_proof_does_not_fit_checkpoints_of_other_sizes(
    pair: tuple[int, int], bit: int, tamper_old: bool
) -> None:
    old, new = pair
    proof = TREE.consistency_proof(old, new)
    if tamper_old:
        old ^= 1 << bit
    else:
        new ^= 1 << bit
    old_root, new_root = TREE.root(old), TREE.root(new)
    if old <= new and TREE.consistency_proof(old, new) == proof:
        verify_consistency(old, new, old_root, new_root, proof)  # genuinely the same proof
    else:
        with _refused():
            verify_consistency(old, new, old_root, new_root, proof)


@given(_leaf_positions(), _size_pairs())
def test_a_proof_with_a_hash_added_or_removed_is_refused(
    position: tuple[int, int], pair: tuple[int, int]
) -> None:
    index, size = position
    leaf, root = leaf_hash(ENTRIES[index]), TREE.root(size)
    proof = list(TREE.inclusion_proof(index, size))
    with _refused("PROOF_SIZE_INVALID"):
        verify_inclusion(leaf, index, size, [*proof, root], root)
    if proof:
        with _refused("PROOF_SIZE_INVALID"):
            verify_inclusion(leaf, index, size, proof[:-1], root)
    old, new = pair
    old_root, new_root = TREE.root(old), TREE.root(new)
    cproof = list(TREE.consistency_proof(old, new))
    with _refused("PROOF_SIZE_INVALID"):
        verify_consistency(old, new, old_root, new_root, [*cproof, old_root])
    with _refused("PROOF_SIZE_INVALID"):
        verify_consistency(old, new, old_root, new_root, cproof[:-1])


def test_consistency_from_the_empty_tree_and_between_equal_sizes() -> None:
    root5 = TREE.root(5)
    verify_consistency(0, 5, empty_root(), root5, [])
    verify_consistency(5, 5, root5, root5, ())
    with _refused("PROOF_INVALID"):
        verify_consistency(0, 5, root5, root5, [])
    with _refused("PROOF_INVALID"):
        verify_consistency(5, 5, root5, TREE.root(6), [])
    with _refused("PROOF_SIZE_INVALID"):
        verify_consistency(0, 5, empty_root(), root5, [root5])
    with _refused("PROOF_SIZE_INVALID"):
        verify_consistency(5, 5, root5, root5, [root5])


H = leaf_hash(b"x")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((H[:31], 0, 1, [], H), "PROOF_MALFORMED"),
        ((H, 0, 1, [], H + b"\x00"), "PROOF_MALFORMED"),
        ((bytearray(H), 0, 1, [], H), "PROOF_MALFORMED"),
        ((H, 0, 2, [H[:16]], H), "PROOF_MALFORMED"),
        ((H, 0, 2, H, H), "PROOF_MALFORMED"),  # bytes are not a sequence of hashes
        ((H, -1, 2, [H], H), "PROOF_MALFORMED"),
        ((H, True, 2, [H], H), "PROOF_MALFORMED"),
        ((H, 0, 2.0, [H], H), "PROOF_MALFORMED"),
        ((H, 2, 2, [H], H), "PROOF_OUT_OF_RANGE"),
        ((H, 0, 0, [], H), "PROOF_OUT_OF_RANGE"),
        ((H, 0, 2**64, [H] * 64, H), "PROOF_OUT_OF_RANGE"),
    ],
)
def test_malformed_inclusion_checks_are_refused(args: tuple[object, ...], code: str) -> None:
    with _refused(code):
        verify_inclusion(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((1, 2, H[:31], H, [H]), "PROOF_MALFORMED"),
        ((1, 2, H, H, [H, b""]), "PROOF_MALFORMED"),
        ((-1, 2, H, H, []), "PROOF_MALFORMED"),
        ((3, 2, H, H, [H]), "PROOF_OUT_OF_RANGE"),
        ((1, 2**64, H, H, [H] * 64), "PROOF_OUT_OF_RANGE"),
        ((1, 2, H, H, []), "PROOF_SIZE_INVALID"),
    ],
)
def test_malformed_consistency_checks_are_refused(args: tuple[object, ...], code: str) -> None:
    with _refused(code):
        verify_consistency(*args)  # type: ignore[arg-type]


# --- the tree and its store ----------------------------------------------------------


def test_append_returns_each_leaf_index_and_extend_the_new_size() -> None:
    tree = MerkleTree()
    assert [tree.append(leaf_hash(e)) for e in ENTRIES[:5]] == [0, 1, 2, 3, 4]
    assert tree.extend(leaf_hash(e) for e in ENTRIES[5:9]) == 9
    assert tree.size == 9 and tree.root() == TREE.root(9)


def test_the_tree_refuses_sizes_and_indices_it_does_not_have() -> None:
    tree = _tree(ENTRIES[:5])
    for call in (
        lambda: tree.root(6),
        lambda: tree.root(-1),
        lambda: tree.inclusion_proof(5, 5),
        lambda: tree.inclusion_proof(0, 6),
        lambda: tree.inclusion_proof(-1, 5),
        lambda: tree.consistency_proof(4, 3),
        lambda: tree.consistency_proof(1, 6),
        lambda: tree.consistency_proof(-1, 3),
    ):
        with _refused("LOG_SIZE_OUT_OF_RANGE"):
            call()


def test_a_malformed_leaf_hash_is_refused_and_nothing_is_added() -> None:
    tree = _tree(ENTRIES[:3])
    before = tree.root()
    with _refused("LOG_HASH_INVALID"):
        tree.append(b"short")
    with _refused("LOG_HASH_INVALID"):
        tree.extend([leaf_hash(b"ok"), "not bytes"])  # type: ignore[list-item]
    assert tree.size == 3 and tree.root() == before


class FlakyNodes(InMemoryLogNodes):
    """A store that refuses writes while ``broken`` and counts the writes it accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.writes = 0

    def put_many(self, nodes: Sequence[Node]) -> None:
        if self.broken:
            raise StoreError("STORE_UNAVAILABLE", "disk full")
        self.writes += 1
        super().put_many(nodes)


def test_a_failed_store_write_leaves_the_tree_and_store_unchanged() -> None:
    nodes = FlakyNodes()
    tree = MerkleTree(nodes)
    tree.extend(leaf_hash(e) for e in ENTRIES[:7])
    nodes.broken = True
    with pytest.raises(StoreError):
        tree.append(leaf_hash(ENTRIES[7]))
    assert tree.size == 7 and nodes.size() == 7 and tree.root() == TREE.root(7)
    nodes.broken = False
    assert tree.append(leaf_hash(ENTRIES[7])) == 7
    assert tree.root() == TREE.root(8)


def test_a_batch_is_one_store_write() -> None:
    nodes = FlakyNodes()
    MerkleTree(nodes).extend(leaf_hash(e) for e in ENTRIES[:100])
    assert nodes.writes == 1
    assert nodes.get_many([(6, 0), (5, 2), (2, 24), (7, 0)]) == [
        _mth(ENTRIES[0:64]),
        _mth(ENTRIES[64:96]),
        _mth(ENTRIES[96:100]),
        None,
    ]


def test_a_tree_reopened_on_its_store_continues_where_it_stopped() -> None:
    nodes = InMemoryLogNodes()
    MerkleTree(nodes).extend(leaf_hash(e) for e in ENTRIES[:77])
    reopened = MerkleTree(nodes)
    assert reopened.size == 77 and reopened.root() == TREE.root(77)
    reopened.extend(leaf_hash(e) for e in ENTRIES[77:130])
    assert reopened.root() == TREE.root(130)
    assert reopened.consistency_proof(77, 130) == TREE.consistency_proof(77, 130)


def test_proofs_and_roots_for_a_past_size_do_not_change_as_the_log_grows() -> None:
    tree = _tree(ENTRIES[:1000])
    sizes = range(1, 1001, 37)
    before = [(tree.root(n), tree.inclusion_proof(n // 3, n)) for n in sizes]
    consistency = tree.consistency_proof(333, 999)
    tree.extend(leaf_hash(e) for e in ENTRIES[1000:3000])
    assert [(tree.root(n), tree.inclusion_proof(n // 3, n)) for n in sizes] == before
    assert before[:5] == [(_mth(ENTRIES[:n]), tuple(_path(n // 3, ENTRIES[:n]))) for n in sizes[:5]]
    assert tree.consistency_proof(333, 999) == consistency
    assert list(consistency) == _subproof(333, ENTRIES[:999], True)


class ForgetfulNodes(InMemoryLogNodes):
    """A store that has lost one node."""

    def __init__(self, lost: NodeKey) -> None:
        super().__init__()
        self.lost = lost

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes | None]:
        found = super().get_many(keys)
        return [None if key == self.lost else value for key, value in zip(keys, found, strict=True)]


def test_a_node_lost_by_the_store_is_refused_not_guessed() -> None:
    nodes = ForgetfulNodes(lost=(2, 0))  # leaves 0..3
    tree = MerkleTree(nodes)
    tree.extend(leaf_hash(e) for e in ENTRIES[:16])
    with _refused("LOG_NODE_MISSING"):
        tree.root(6)
    with _refused("LOG_NODE_MISSING"):
        tree.inclusion_proof(5, 16)
    with _refused("LOG_NODE_MISSING"):
        tree.consistency_proof(5, 16)
    assert tree.root() == TREE.root(16)  # the right edge is held in memory

    partial = ForgetfulNodes(lost=(1, 2))  # leaves 4..5, part of the right edge of 6
    MerkleTree(partial).extend(leaf_hash(e) for e in ENTRIES[:6])
    with _refused("LOG_NODE_MISSING"):
        MerkleTree(partial)


def test_the_in_memory_store_refuses_writes_out_of_order_and_stores_none_of_them() -> None:
    nodes = InMemoryLogNodes()
    nodes.put_many([(0, 0, H), (0, 1, H), (1, 0, H)])
    with _refused("LOG_NODE_CONFLICT"):
        nodes.put_many([(0, 2, H), (0, 2, H)])
    with _refused("LOG_NODE_CONFLICT"):
        nodes.put_many([(0, 2, H), (1, 0, H)])  # would overwrite node (1, 0)
    with _refused("LOG_NODE_CONFLICT"):
        nodes.put_many([(0, 2, H), (3, 1, H)])
    assert nodes.size() == 2 and nodes.get_many([(0, 2), (1, 1)]) == [None, None]


# --- replay --------------------------------------------------------------------------


def test_replay_yields_the_root_at_every_size() -> None:
    heads = list(replay(ENTRIES[:130]))
    assert heads == [TreeHead(n, TREE.root(n)) for n in range(1, 131)]
    assert list(replay([])) == []


def test_verify_replay_accepts_the_recorded_roots() -> None:
    recorded = {n: TREE.root(n) for n in (0, 1, 64, 100, 129)}
    assert verify_replay(ENTRIES[:129], recorded) == TreeHead(129, TREE.root(129))
    assert verify_replay([], {}) == TreeHead(0, empty_root())


def test_verify_replay_refuses_a_rewritten_or_missing_entry() -> None:
    recorded = {50: TREE.root(50), 100: TREE.root(100)}
    rewritten = [*ENTRIES[:70], b"forged", *ENTRIES[71:100]]
    with _refused("LOG_ROOT_MISMATCH"):
        verify_replay(rewritten, recorded)
    dropped = [*ENTRIES[:10], *ENTRIES[11:100]]
    with _refused("LOG_ROOT_MISMATCH"):
        verify_replay(dropped, recorded)
    with _refused("LOG_SIZE_OUT_OF_RANGE"):
        verify_replay(ENTRIES[:99], recorded)
    with _refused("LOG_ROOT_MISMATCH"):
        verify_replay(ENTRIES[:3], {0: TREE.root(1)})
