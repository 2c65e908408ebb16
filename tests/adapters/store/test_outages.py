"""The database goes away: requests fail closed with STORE_UNAVAILABLE (or STORE_BUSY),
nothing half done is saved, and work succeeds again once the database is back."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from adapters.store import SqlStore, StoreSettings, open_store, sqlite_url
from core.errors import StoreError
from core.requests import RequestState
from tests.adapters.store.proxy import CuttableProxy
from tests.adapters.store.targets import Target, pg_conninfo
from tests.adapters.store.usecase import ApprovalService, new_request

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)


def _terminate_sessions(target: Target, application_name: str) -> int:
    """pg_terminate_backend on every session of one store (found by application name)."""
    with psycopg.connect(pg_conninfo(target.url), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


async def _decisions(store: SqlStore, request_id: str) -> list[str]:
    async with store.unit_of_work(read_only=True) as uow:
        return [d.approver_id for d in await uow.decisions.for_request(request_id)]


@pytest.mark.postgres
async def test_a_session_killed_mid_unit_fails_closed_and_saves_nothing(pg_target: Target) -> None:
    name = f"{pg_target.application_name}-kill-mid"
    store = await pg_target.open(application_name=name)
    try:
        service = ApprovalService(store)
        await service.open(new_request("r1", now=NOW), now=NOW)
        with pytest.raises(StoreError) as lost:
            async with store.unit_of_work() as uow:
                request = await uow.requests.get("r1", for_update=True)
                cancelled = request.transition(RequestState.CANCELLED, at=NOW)
                await uow.requests.replace(request, cancelled)
                assert _terminate_sessions(pg_target, name) >= 1
                await uow.log.append(b"never saved", at=NOW)
                await uow.commit()
        assert lost.value.reason_code == "STORE_UNAVAILABLE"
        # The next request reconnects and sees that nothing of the killed unit stayed.
        decided = await service.decide("r1", "alice", now=NOW)
        assert decided.request.state is RequestState.PENDING
        async with store.unit_of_work(read_only=True) as uow:
            assert await uow.log.size() == 2
    finally:
        await store.close()


@pytest.mark.postgres
async def test_idle_pooled_sessions_killed_fail_one_request_then_recover(pg_target: Target) -> None:
    name = f"{pg_target.application_name}-kill-idle"
    store = await pg_target.open(application_name=name)
    try:
        service = ApprovalService(store)
        await service.open(new_request("r1", now=NOW), now=NOW)
        assert _terminate_sessions(pg_target, name) >= 1
        with pytest.raises(StoreError) as lost:
            await service.decide("r1", "alice", now=NOW)
        assert lost.value.reason_code == "STORE_UNAVAILABLE"
        await service.decide("r1", "alice", now=NOW)
        assert await _decisions(store, "r1") == ["alice"]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_database_cut_off_fails_closed_until_it_is_back(pg_target: Target) -> None:
    upstream = make_url(pg_target.url)
    proxy = CuttableProxy(upstream.host or "127.0.0.1", upstream.port or 5432)
    await proxy.start()
    url = upstream.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = await open_store(url, auto_upgrade=False, settings=pg_target.settings())
    try:
        service = ApprovalService(store)
        await service.open(new_request("r1", now=NOW), now=NOW)
        # Cut while a unit of work is under way (the database "restarts").
        with pytest.raises(StoreError) as mid:
            async with store.unit_of_work() as uow:
                await uow.requests.get("r1", for_update=True)
                await proxy.cut()
                await uow.decisions.for_request("r1")
        assert mid.value.reason_code == "STORE_UNAVAILABLE"
        # While it is down every request is refused, promptly and clearly.
        for _ in range(2):
            with pytest.raises(StoreError) as down:
                await service.decide("r1", "alice", now=NOW)
            assert down.value.reason_code == "STORE_UNAVAILABLE"
            assert "nothing was saved" in down.value.message
        await proxy.start()
        await service.decide("r1", "alice", now=NOW)
        await service.decide("r1", "bob", now=NOW)
        async with store.unit_of_work(read_only=True) as uow:
            assert (await uow.requests.get("r1")).state is RequestState.APPROVED
    finally:
        await store.close()
        await proxy.cut()


async def test_an_unreachable_postgres_fails_closed_at_start() -> None:
    with pytest.raises(StoreError) as unreachable:
        await open_store(
            "postgresql://keyturn@127.0.0.1:9/keyturn",
            auto_upgrade=True,
            settings=StoreSettings(connect_timeout_s=2),
        )
    assert unreachable.value.reason_code == "STORE_UNAVAILABLE"


async def test_sqlite_locked_past_the_busy_timeout_fails_closed_then_recovers(
    sqlite_target: Target,
) -> None:
    store = await sqlite_target.open(busy_timeout_ms=150)
    database = sqlite_target.url.split(":///", 1)[1]
    try:
        service = ApprovalService(store)
        await service.open(new_request("r1", now=NOW), now=NOW)
        # Another process (a backup tool, an operator's shell) holds the write lock.
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreError) as busy:
                await service.decide("r1", "alice", now=NOW)
            assert busy.value.reason_code == "STORE_BUSY"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await service.decide("r1", "alice", now=NOW)
        assert await _decisions(store, "r1") == ["alice"]
    finally:
        await store.close()


async def test_sqlite_on_a_missing_volume_fails_closed_until_it_is_there(tmp_path: Path) -> None:
    data_dir = tmp_path / "volume"
    with pytest.raises(StoreError) as missing:
        await open_store(sqlite_url(data_dir), auto_upgrade=True)
    assert missing.value.reason_code == "STORE_UNAVAILABLE"
    data_dir.mkdir()
    store = await open_store(sqlite_url(data_dir), auto_upgrade=True)
    try:
        await ApprovalService(store).open(new_request("r1", now=NOW), now=NOW)
    finally:
        await store.close()
