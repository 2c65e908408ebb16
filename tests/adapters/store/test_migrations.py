"""Schema migrations: from nothing, from the previous revision, by several replicas at once."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from adapters.store import head_revision, open_store, sqlite_url, verify_log
from adapters.store.engine import create_engine
from adapters.store.migrate import current_revision, upgrade
from adapters.store.settings import database_url
from adapters.store.tables import metadata
from bot import cli_db
from core.errors import StoreError
from core.merkle import leaf_hash
from tests.adapters.store.targets import Target

NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def _engine_upgrade(target: Target, revision: str = "head") -> str | None:
    engine = create_engine(database_url(target.url), target.settings())
    try:
        return await upgrade(engine, revision)
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_an_empty_database_is_upgraded_to_exactly_the_code_schema(
    fresh_target: Target,
) -> None:
    engine = create_engine(database_url(fresh_target.url), fresh_target.settings())
    try:
        assert await current_revision(engine) is None
        assert await upgrade(engine) == head_revision() == "0005"
        async with engine.connect() as conn:
            differences = await conn.run_sync(_differences)
            head = (await conn.execute(text("SELECT id, size FROM log_head"))).all()
        assert await upgrade(engine) == head_revision()  # a second run changes nothing
    finally:
        await engine.dispose()
    assert differences == []
    assert [tuple(row) for row in head] == [(1, 0)]


@pytest.mark.asyncio
async def test_a_database_at_the_previous_revision_keeps_its_data(fresh_target: Target) -> None:
    assert await _engine_upgrade(fresh_target, "0001") == "0001"
    engine = create_engine(database_url(fresh_target.url), fresh_target.settings())
    try:
        async with engine.begin() as conn:
            # Written the way revision 0001's code wrote them (no outbox version yet).
            await conn.execute(
                text(
                    "INSERT INTO log_entries (idx, entry, leaf_hash, appended_at) "
                    "VALUES (0, :entry, :leaf, :at)"
                ),
                {"entry": b"receipt 0", "leaf": leaf_hash(b"receipt 0"), "at": NOW},
            )
            await conn.execute(text("UPDATE log_head SET size = 1"))
            await conn.execute(
                text(
                    "INSERT INTO outbox (channel_key, kind, coalesce_key, payload, created_at, "
                    "attempts, next_attempt_at) VALUES ('slack:C1', 'update_card', 'card:r1', "
                    "'{\"n\": 1}', :at, 0, :at)"
                ),
                {"at": NOW},
            )
    finally:
        await engine.dispose()

    store = await open_store(fresh_target.url, auto_upgrade=True, settings=fresh_target.settings())
    try:
        assert await store.revision() == head_revision() == "0005"
        assert (await verify_log(store)).size == 1
        async with store.unit_of_work() as uow:
            same = await uow.outbox.enqueue(
                "slack:C1", "update_card", {"n": 2}, at=NOW, coalesce_key="card:r1"
            )
            (item,) = await uow.outbox.claim_due(now=NOW)
            await uow.commit()
    finally:
        await store.close()
    assert (same, item.payload, item.version) == (1, {"n": 2}, 1)


@pytest.mark.asyncio
async def test_an_old_schema_is_upgraded_on_open_only_when_allowed(fresh_target: Target) -> None:
    with pytest.raises(StoreError) as outdated:
        await open_store(fresh_target.url, auto_upgrade=False, settings=fresh_target.settings())
    assert outdated.value.reason_code == "STORE_SCHEMA_OUTDATED"
    assert "keyturn db upgrade" in outdated.value.message
    store = await open_store(fresh_target.url, auto_upgrade=True, settings=fresh_target.settings())
    await store.close()
    store = await open_store(fresh_target.url, auto_upgrade=False, settings=fresh_target.settings())
    try:
        assert await store.revision() == head_revision()
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_schema_from_a_newer_keyturn_is_refused(fresh_target: Target) -> None:
    await _engine_upgrade(fresh_target)
    engine = create_engine(database_url(fresh_target.url), fresh_target.settings())
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    for auto in (True, False):
        with pytest.raises(StoreError) as unknown:
            await open_store(fresh_target.url, auto_upgrade=auto, settings=fresh_target.settings())
        assert unknown.value.reason_code == "STORE_SCHEMA_UNKNOWN"


@pytest.mark.asyncio
async def test_replicas_upgrading_at_the_same_time_both_succeed(fresh_target: Target) -> None:
    results = await asyncio.gather(_engine_upgrade(fresh_target), _engine_upgrade(fresh_target))
    assert list(results) == [head_revision(), head_revision()]
    store = await open_store(fresh_target.url, auto_upgrade=False, settings=fresh_target.settings())
    await store.close()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="keyturn")
    cli_db.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_keyturn_db_upgrade_upgrades_then_reports_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path)
    assert _cli(["db", "upgrade", "--url", url]) == 0
    assert "upgraded from empty to 0005" in capsys.readouterr().out
    assert _cli(["db", "upgrade", "--url", url]) == 0
    assert "already at revision 0005" in capsys.readouterr().out


def test_keyturn_db_upgrade_fails_closed_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cli_db.URL_ENV, raising=False)
    monkeypatch.delenv("KEYTURN_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert _cli(["db", "upgrade"]) == 0  # no URL: the embedded default's SQLite file
    assert (tmp_path / "keyturn-data" / "keyturn.db").is_file()
    capsys.readouterr()
    assert _cli(["db", "upgrade", "--url", "mysql://db/keyturn"]) == 2
    assert "not supported" in capsys.readouterr().err
    assert _cli(["db", "upgrade", "--url", "postgresql://nobody@127.0.0.1:9/x"]) == 1
    assert "STORE_UNAVAILABLE" in capsys.readouterr().err
    missing_dir = tmp_path / "not-mounted"
    assert _cli(["db", "upgrade", "--url", sqlite_url(missing_dir)]) == 1
    assert "STORE_UNAVAILABLE" in capsys.readouterr().err
