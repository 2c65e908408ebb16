"""Where SQLite's COMMIT runs: on the event loop's thread while this process's commits
are fast, on aiosqlite's thread when they are not; durable either way."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.store import sqlite_driver
from adapters.store.leases import Leases
from adapters.store.sqlite_driver import CommitTimes
from tests.adapters.store.targets import Target

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def test_commits_are_fast_only_after_a_warm_up_of_fast_ones() -> None:
    times = CommitTimes()
    for _ in range(CommitTimes.WARM_UP - 1):
        times.add(0.0002)
        assert not times.fast  # not measured enough yet: the thread
    times.add(0.0002)
    assert times.fast


def test_slow_commits_move_to_the_thread_and_fast_ones_bring_them_back() -> None:
    times = CommitTimes()
    for _ in range(CommitTimes.WARM_UP):
        times.add(0.0002)
    times.add(0.004)
    times.add(0.004)
    assert not times.fast
    for _ in range(6):
        times.add(0.0002)
    assert times.fast


@pytest.mark.asyncio
@pytest.mark.parametrize("disk", ["fast", "slow"])
async def test_commit_runs_where_the_measured_commits_say_and_is_durable(
    sqlite_target: Target, monkeypatch: pytest.MonkeyPatch, disk: str
) -> None:
    times = CommitTimes()
    for _ in range(CommitTimes.WARM_UP):
        times.add(0.0002 if disk == "fast" else 0.02)
    monkeypatch.setattr(sqlite_driver, "COMMIT_TIMES", times)
    threads: list[int] = []
    commit = sqlite_driver._commit

    def watched(connection: object) -> None:
        threads.append(threading.get_ident())
        commit(connection)

    monkeypatch.setattr(sqlite_driver, "_commit", watched)
    store = await sqlite_target.open()
    try:
        leases = Leases(store)
        for n in range(3):
            assert await leases.take(f"lease-{n}", "replica-a", now=NOW, seconds=60)
    finally:
        await store.close()
    assert len(threads) == 3
    here = threading.get_ident()
    if disk == "fast":
        assert set(threads) == {here}
    else:
        assert here not in threads
    assert times.count == CommitTimes.WARM_UP + 3  # every commit is measured
    # Committed means on disk: a new connection sees every row.
    path = Path(sqlite_target.url.split("///", 1)[1])
    with sqlite3.connect(path) as raw:
        (count,) = raw.execute("SELECT count(*) FROM leases").fetchone()
    assert count == 3
    # And the leases hold: another replica is refused.
    store = await sqlite_target.open()
    try:
        later = NOW + timedelta(seconds=1)
        assert not await Leases(store).take("lease-0", "replica-b", now=later, seconds=60)
    finally:
        await store.close()
