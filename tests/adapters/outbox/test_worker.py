"""The outbox worker keeps order per channel, coalesces, folds feed lines, waits out
429s and drops nothing (real SQLite store, a plain function as the sender)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.outbox import Delivery, DeliveryFailed, OutboxWorker, RateLimited
from adapters.store import SqlStore, open_store, sqlite_url

pytestmark = pytest.mark.asyncio


@dataclass
class Clock:
    moment: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 10, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class Sender:
    sent: list[Delivery] = field(default_factory=list)
    fail_with: list[Exception] = field(default_factory=list)

    async def __call__(self, delivery: Delivery) -> None:
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.sent.append(delivery)


@dataclass
class Metrics:
    failures: int = 0
    backlog: int = -1

    def feed_failure(self, platform: str) -> None:
        self.failures += 1

    def set_outbox_backlog(self, count: int) -> None:
        self.backlog = count


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(sqlite_url(tmp_path), auto_upgrade=True)
    try:
        yield opened
    finally:
        await opened.close()


def worker(
    store: SqlStore, sender: Sender, clock: Clock, metrics: Metrics | None = None
) -> OutboxWorker:
    return OutboxWorker(
        store,
        {"chat": sender},
        clock=clock,
        min_interval_seconds=0,
        max_feed_lines=3,
        metrics=metrics,
    )


async def test_updates_of_one_card_are_coalesced_into_the_latest(store: SqlStore) -> None:
    sender, clock = Sender(), Clock()
    w = worker(store, sender, clock)
    for n in range(5):
        await w.enqueue("chat:C1", "card", {"n": n}, coalesce_key="card:r-1")
    await w.run_once()
    assert [d.payload for d in sender.sent] == [{"n": 4}]


async def test_feed_lines_are_folded_in_batches_and_none_are_lost(store: SqlStore) -> None:
    sender, clock = Sender(), Clock()
    w = worker(store, sender, clock)
    for n in range(7):
        await w.enqueue("chat:F", "feed", {"receipt": {"index": n, "envelope": {}}})
    await w.run_once()
    assert [len(d.item_ids) for d in sender.sent] == [3, 3, 1]
    text = "\n".join(str(d.payload["text"]) for d in sender.sent)
    assert all(f"#{n} " in text for n in range(7))  # unreadable lines still say their index
    assert await w.backlog() == 0


async def test_rate_limit_holds_the_channel_in_order_and_other_channels_go_on(
    store: SqlStore,
) -> None:
    sender, clock, metrics = Sender(fail_with=[RateLimited(10)]), Clock(), Metrics()
    w = worker(store, sender, clock, metrics)
    for n in range(3):
        await w.enqueue("chat:A", "text", {"n": n})
    await w.run_once()
    assert sender.sent == [] and metrics.failures == 1 and metrics.backlog == 3
    await w.enqueue("chat:A", "text", {"n": 3})  # queued while limited: still last
    await w.enqueue("chat:B", "text", {"n": 99})
    await w.run_once()
    assert [d.payload["n"] for d in sender.sent] == [99]
    clock.advance(10)
    await w.run_once()
    assert [d.payload["n"] for d in sender.sent] == [99, 0, 1, 2, 3]
    assert metrics.backlog == 0


async def test_failed_sends_are_retried_not_dropped(store: SqlStore) -> None:
    sender, clock = Sender(fail_with=[DeliveryFailed("boom"), RuntimeError("bug")]), Clock()
    w = worker(store, sender, clock)
    await w.enqueue("chat:A", "text", {"n": 1})
    await w.run_once()
    clock.advance(2)  # back-off after the first failure
    await w.run_once()
    assert sender.sent == [] and await w.backlog() == 1
    clock.advance(3600)
    await w.run_once()
    assert [d.payload for d in sender.sent] == [{"n": 1}]


async def test_a_channel_without_sender_waits(store: SqlStore) -> None:
    sender, clock = Sender(), Clock()
    w = worker(store, sender, clock)
    await w.enqueue("teams:X", "text", {"n": 1})
    await w.run_once()
    assert sender.sent == [] and await w.backlog() == 1
