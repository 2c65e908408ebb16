"""The receipt log: dense, append-only, each entry once; ``verify_log`` finds any break."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from adapters.store import SqlStore, tables, verify_log
from core.checkpoint import sign_checkpoint
from core.errors import LogError, StoreError
from core.keys import SigningKey
from core.merkle import MerkleTree, leaf_hash, replay
from tests.adapters.store.targets import Target
from tests.adapters.store.usecase import ORIGIN, ApprovalService, new_request, signing_key

NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)
KEYS = {ORIGIN: signing_key().public_key}


async def _append_all(store: SqlStore, entries: list[bytes]) -> list[int]:
    indexes = []
    for entry in entries:
        async with store.unit_of_work() as uow:
            indexes.append(await uow.log.append(entry, at=NOW))
            await uow.commit()
    return indexes


@pytest.mark.asyncio
async def test_appends_get_dense_indexes_and_come_back_in_order(store: SqlStore) -> None:
    entries = [f"receipt {i}".encode() for i in range(7)]
    assert await _append_all(store, entries) == list(range(7))
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.log.size() == 7
        assert await uow.log.entries(0, 7) == entries
        assert await uow.log.entries(2, 4) == entries[2:4]
        assert await uow.log.leaf_hashes(0, 7) == [leaf_hash(e) for e in entries]
        with pytest.raises(LogError) as beyond:
            await uow.log.entries(5, 9)
    assert beyond.value.reason_code == "LOG_SIZE_OUT_OF_RANGE"


@pytest.mark.asyncio
async def test_the_same_entry_is_never_stored_twice(store: SqlStore) -> None:
    await _append_all(store, [b"receipt"])
    with pytest.raises(StoreError) as again:
        await _append_all(store, [b"receipt"])
    assert again.value.reason_code == "LOG_DUPLICATE_ENTRY"
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.log.size() == 1


@pytest.mark.asyncio
async def test_a_rolled_back_append_leaves_no_gap(store: SqlStore) -> None:
    await _append_all(store, [b"a"])
    async with store.unit_of_work() as uow:
        assert await uow.log.append(b"b", at=NOW) == 1
    assert await _append_all(store, [b"c"]) == [1]
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.log.entries(0, 2) == [b"a", b"c"]


@pytest.mark.asyncio
async def test_checkpoints_are_recorded_and_verified_against_the_entries(store: SqlStore) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    await service.decide("r1", "alice", now=NOW)
    size, note = await service.checkpoint(now=NOW)
    await service.decide("r1", "bob", now=NOW)
    last_size, last_note = await service.checkpoint(now=NOW)
    assert (size, last_size) == (2, 4)
    async with store.unit_of_work() as uow:
        assert await uow.log.latest_checkpoint() == (4, last_note)
        assert await uow.log.checkpoints() == [(2, note), (4, last_note)]
        await uow.log.add_checkpoint(2, note, at=NOW)  # the same note again: no-op
        entries = await uow.log.entries(0, 4)
    result = await verify_log(store, origin=ORIGIN, public_keys=KEYS)
    heads = list(replay(entries))
    assert (result.size, result.root_hash) == (4, heads[-1].root_hash)
    assert (result.checkpoints, result.latest_checkpoint_size) == (2, 4)
    assert result.signatures_checked


@pytest.mark.asyncio
async def test_a_checkpoint_must_fit_the_log(store: SqlStore) -> None:
    await _append_all(store, [b"a", b"b"])
    key = signing_key()
    tree = MerkleTree()
    tree.extend([leaf_hash(b"a"), leaf_hash(b"b")])
    note = sign_checkpoint(ORIGIN, 2, tree.root(), key).signed_note
    async with store.unit_of_work() as uow:
        with pytest.raises(LogError) as mislabeled:
            await uow.log.add_checkpoint(1, note, at=NOW)
        with pytest.raises(LogError) as beyond:
            await uow.log.add_checkpoint(
                3, sign_checkpoint(ORIGIN, 3, tree.root(), key).signed_note, at=NOW
            )
        await uow.log.add_checkpoint(2, note, at=NOW)
        await uow.commit()
    assert mislabeled.value.reason_code == "CHECKPOINT_MALFORMED"
    assert beyond.value.reason_code == "LOG_SIZE_OUT_OF_RANGE"
    other = sign_checkpoint(ORIGIN, 2, tree.root(), SigningKey.from_seed(b"\x07" * 32))
    with pytest.raises(StoreError) as conflict:
        async with store.unit_of_work() as uow:
            await uow.log.add_checkpoint(2, other.signed_note, at=NOW)
    assert conflict.value.reason_code == "STORE_CONFLICT"


async def _log_with_checkpoint(store: SqlStore) -> None:
    service = ApprovalService(store)
    for n in range(3):
        await service.open(new_request(f"r{n}", now=NOW), now=NOW)
    await service.checkpoint(now=NOW)
    assert (await verify_log(store)).size == 3


@pytest.mark.asyncio
async def test_verify_log_finds_a_tampered_entry(store: SqlStore) -> None:
    await _log_with_checkpoint(store)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(tables.log_entries).where(tables.log_entries.c.idx == 1).values(entry=b"forged")
        )
    with pytest.raises(LogError) as broken:
        await verify_log(store)
    assert broken.value.reason_code == "LOG_LEAF_HASH_MISMATCH"
    assert "entry 1" in broken.value.message


@pytest.mark.asyncio
async def test_verify_log_finds_an_entry_rewritten_with_its_leaf_hash(store: SqlStore) -> None:
    await _log_with_checkpoint(store)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(tables.log_entries)
            .where(tables.log_entries.c.idx == 0)
            .values(entry=b"forged", leaf_hash=leaf_hash(b"forged"))
        )
    with pytest.raises(LogError) as broken:
        await verify_log(store)
    assert broken.value.reason_code == "LOG_ROOT_MISMATCH"
    assert "size 3" in broken.value.message


@pytest.mark.asyncio
async def test_verify_log_finds_a_deleted_entry(store: SqlStore) -> None:
    await _log_with_checkpoint(store)
    async with store.engine.begin() as conn:
        await conn.execute(delete(tables.log_entries).where(tables.log_entries.c.idx == 1))
    with pytest.raises(LogError) as broken:
        await verify_log(store)
    assert broken.value.reason_code == "LOG_HEAD_MISMATCH"
    async with store.engine.begin() as conn:
        await conn.execute(update(tables.log_head).values(size=2))
        await conn.execute(delete(tables.log_checkpoints))
    with pytest.raises(LogError) as gap:
        await verify_log(store)
    assert gap.value.reason_code == "LOG_GAP"
    assert "entry 1" in gap.value.message


@pytest.mark.asyncio
async def test_verify_log_refuses_a_checkpoint_with_a_bad_signature(store: SqlStore) -> None:
    await _log_with_checkpoint(store)
    stranger = {ORIGIN: SigningKey.from_seed(b"\x09" * 32).public_key}
    with pytest.raises(LogError) as untrusted:
        await verify_log(store, origin=ORIGIN, public_keys=stranger)
    assert untrusted.value.reason_code == "CHECKPOINT_UNKNOWN_KEY"
    async with store.engine.begin() as conn:
        note = (await conn.execute(tables.log_checkpoints.select())).one().note
        forged = note.replace(note.split("\n")[2], "A" * 43 + "=")
        await conn.execute(update(tables.log_checkpoints).values(note=forged))
    with pytest.raises(LogError) as forged_root:
        await verify_log(store)
    assert forged_root.value.reason_code == "LOG_ROOT_MISMATCH"
    with pytest.raises(LogError) as bad_signature:
        await verify_log(store, origin=ORIGIN, public_keys=KEYS)
    assert bad_signature.value.reason_code == "CHECKPOINT_SIGNATURE_INVALID"


@pytest.mark.asyncio
async def test_an_empty_log_verifies(store: SqlStore) -> None:
    result = await verify_log(store)
    assert (result.size, result.checkpoints, result.latest_checkpoint_size) == (0, 0, None)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=st.lists(st.booleans(), min_size=1, max_size=10))
def test_committed_appends_stay_dense_whatever_is_rolled_back(
    target: Target, plan: list[bool]
) -> None:
    asyncio.run(_run_plan(target, plan))


async def _run_plan(target: Target, plan: list[bool]) -> None:
    store = await target.open()
    try:
        async with store.unit_of_work(read_only=True) as uow:
            start = await uow.log.size()
        committed: list[bytes] = []
        for n, commit in enumerate(plan):
            entry = f"{start}:{n}:{commit}".encode()
            async with store.unit_of_work() as uow:
                index = await uow.log.append(entry, at=NOW)
                if commit:
                    await uow.commit()
            if commit:
                assert index == start + len(committed)
                committed.append(entry)
        async with store.unit_of_work(read_only=True) as uow:
            size = await uow.log.size()
            assert await uow.log.entries(start, size) == committed
        assert (await verify_log(store)).size == start + len(committed)
    finally:
        await store.close()
