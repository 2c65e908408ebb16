"""A unit of work saves everything or nothing: it rolls back unless committed."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from adapters.store import SqlStore
from core.errors import ApprovalRefusedError, StoreError
from core.requests import RequestState
from tests.adapters.store.targets import Target
from tests.adapters.store.usecase import ApprovalService, new_request

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)


async def _counts(store: SqlStore) -> tuple[int, int, int]:
    async with store.unit_of_work(read_only=True) as uow:
        requests = len(await uow.requests.find())
        log_size = await uow.log.size()
        entries = await uow.log.count()
    return requests, log_size, entries


async def test_leaving_without_commit_saves_nothing(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.requests.add(new_request("r1", now=NOW))
        await uow.log.append(b"entry", at=NOW)
    assert await _counts(store) == (0, 0, 0)


async def test_an_exception_inside_the_unit_rolls_everything_back(store: SqlStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.requests.add(new_request("r1", now=NOW))
            await uow.log.append(b"entry", at=NOW)
            raise RuntimeError("the service failed half way")
    assert await _counts(store) == (0, 0, 0)


async def test_committed_work_is_kept_and_later_uncommitted_work_is_not(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.requests.add(new_request("r1", now=NOW))
        await uow.commit()
        await uow.requests.add(new_request("r2", now=NOW))
        await uow.log.append(b"after the commit", at=NOW)
    assert await _counts(store) == (1, 0, 0)
    async with store.unit_of_work(read_only=True) as uow:
        assert (await uow.requests.get("r1")).request_id == "r1"
        with pytest.raises(StoreError) as missing:
            await uow.requests.get("r2")
    assert missing.value.reason_code == "NOT_FOUND"


async def test_a_refused_decision_saves_nothing_of_its_unit(store: SqlStore) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    await service.decide("r1", "alice", now=NOW)
    before = await _counts(store)
    # Same person again: judge refuses before the store is touched …
    with pytest.raises(ApprovalRefusedError) as refused:
        await service.decide("r1", "alice", now=NOW)
    assert refused.value.reason_code == "ALREADY_DECIDED"
    # … and when the store refuses (a second replica that did not see the first
    # decision), the request update and the log entry made before go too.
    with pytest.raises(ApprovalRefusedError) as again:
        async with store.unit_of_work() as uow:
            request = await uow.requests.get("r1", for_update=True)
            decisions = await uow.decisions.for_request("r1")
            cancelled = request.transition(RequestState.CANCELLED, at=NOW)
            await uow.requests.replace(request, cancelled)
            await uow.log.append(b"receipt written before the refusal", at=NOW)
            await uow.decisions.add(decisions[0])
            await uow.commit()
    assert again.value.reason_code == "ALREADY_DECIDED"
    assert await _counts(store) == before
    async with store.unit_of_work(read_only=True) as uow:
        assert [d.approver_id for d in await uow.decisions.for_request("r1")] == ["alice"]
        assert (await uow.requests.get("r1")).state is RequestState.PENDING


async def test_a_read_only_unit_refuses_writes_before_reaching_the_database(
    store: SqlStore,
) -> None:
    async with store.unit_of_work(read_only=True) as uow:
        with pytest.raises(StoreError) as refused:
            await uow.requests.add(new_request("r1", now=NOW))
    assert refused.value.reason_code == "STORE_READ_ONLY"
    assert await _counts(store) == (0, 0, 0)


async def test_a_unit_of_work_is_used_inside_its_block_only(store: SqlStore) -> None:
    uow = store.unit_of_work()
    with pytest.raises(RuntimeError):
        await uow.commit()
    async with uow:
        pass
    with pytest.raises(RuntimeError):
        await uow.commit()


async def test_sqlite_connections_are_durable_and_enforce_keys(sqlite_target: Target) -> None:
    target = sqlite_target
    store = await target.open()
    try:
        async with store.engine.connect() as conn:
            settings = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await store.close()
    assert settings == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL: fsync on every commit
        "foreign_keys": 1,
        "busy_timeout": target.busy_timeout_ms,
    }


async def test_sqlite_units_hold_the_write_lock_before_their_first_read(
    sqlite_target: Target,
) -> None:
    store = await sqlite_target.open(busy_timeout_ms=100)
    database = sqlite_target.url.split(":///", 1)[1]

    def other_writer_can_begin() -> bool:
        other = sqlite3.connect(database, timeout=0.05, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as e:
            assert "locked" in str(e)
            return False
        finally:
            other.close()

    try:
        async with store.unit_of_work() as uow:
            # A read only: the write lock is already held, so what it read stays true
            # until this unit commits.
            assert await uow.log.size() == 0
            assert not other_writer_can_begin()
        assert other_writer_can_begin()
        async with store.unit_of_work(read_only=True) as uow:
            assert await uow.log.size() == 0
            assert other_writer_can_begin()  # readers take no write lock
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_sessions_use_their_schema_and_timeouts(pg_target: Target) -> None:
    target = pg_target
    store = await target.open()
    try:
        async with store.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT current_schema(), current_setting('lock_timeout'), "
                        "current_setting('idle_in_transaction_session_timeout')"
                    )
                )
            ).one()
    finally:
        await store.close()
    assert tuple(row) == (target.pg_schema, "10s", "1min")


async def test_a_cancelled_unit_saves_nothing_and_the_store_keeps_working(
    target: Target,
) -> None:
    store = await target.open(busy_timeout_ms=3000)
    try:
        await ApprovalService(store).open(new_request("r1", now=NOW), now=NOW)
        blocked = asyncio.Event()

        async def waiter() -> None:
            blocked.set()
            # Waits for the holder: its row lock on PostgreSQL, this process's queue
            # for SQLite's write lock on SQLite.
            async with store.unit_of_work() as uow:
                request = await uow.requests.get("r1", for_update=True)
                cancelled = request.transition(RequestState.CANCELLED, at=NOW)
                await uow.requests.replace(request, cancelled)
                await uow.log.append(b"from the cancelled unit", at=NOW)
                await uow.commit()

        async with store.unit_of_work() as holder:
            await holder.requests.get("r1", for_update=True)
            task = asyncio.create_task(waiter())
            await blocked.wait()
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await holder.log.append(b"from the holder", at=NOW)
            await holder.commit()
        async with store.unit_of_work() as uow:
            assert (await uow.requests.get("r1", for_update=True)).state is RequestState.PENDING
            assert await uow.log.entries(1, await uow.log.size()) == [b"from the holder"]
    finally:
        await store.close()


async def test_a_writing_unit_nested_in_another_fails_fast_instead_of_deadlocking(
    sqlite_target: Target,
) -> None:
    store = await sqlite_target.open()
    try:
        async with store.unit_of_work() as outer:
            await outer.log.append(b"outer", at=NOW)
            with pytest.raises(StoreError) as nested:
                async with store.unit_of_work():
                    pass
            assert nested.value.reason_code == "STORE_BUSY"
            async with store.unit_of_work(read_only=True) as reader:
                assert await reader.log.size() == 0  # readers never wait, and see no dirt
            await outer.commit()
        async with store.unit_of_work() as after:
            assert await after.log.entries(0, 1) == [b"outer"]
    finally:
        await store.close()
