"""Leases: one holder at a time, on SQLite and PostgreSQL, even when replicas race."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from adapters.store.leases import Leases
from core.errors import StoreError
from tests.adapters.store.targets import Target

pytestmark = pytest.mark.asyncio
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def test_a_held_lease_is_refused_to_others_until_it_expires(target: Target) -> None:
    store = await target.open()
    try:
        leases = Leases(store)
        assert await leases.take("reconcile", "replica-a", now=NOW, seconds=60)
        assert not await leases.take("reconcile", "replica-b", now=NOW, seconds=60)
        # The holder renews; the other still waits.
        assert await leases.take(
            "reconcile", "replica-a", now=NOW + timedelta(seconds=50), seconds=60
        )
        later = NOW + timedelta(seconds=100)
        assert not await leases.take("reconcile", "replica-b", now=later, seconds=60)
        # The holder died: after the renewed end another replica takes over.
        taken_over = NOW + timedelta(seconds=111)
        assert await leases.take("reconcile", "replica-b", now=taken_over, seconds=60)
        assert not await leases.take("reconcile", "replica-a", now=taken_over, seconds=60)
        # Other lease names are independent.
        assert await leases.take("other", "replica-a", now=NOW, seconds=60)
    finally:
        await store.close()


async def test_a_released_lease_is_free_at_once_and_only_its_holder_releases(
    target: Target,
) -> None:
    store = await target.open()
    try:
        leases = Leases(store)
        assert await leases.take("reconcile", "replica-a", now=NOW, seconds=600)
        assert not await leases.release("reconcile", "replica-b", now=NOW)
        assert not await leases.take("reconcile", "replica-b", now=NOW, seconds=60)
        assert await leases.release("reconcile", "replica-a", now=NOW)
        assert await leases.take("reconcile", "replica-b", now=NOW, seconds=60)
    finally:
        await store.close()


async def test_replicas_racing_for_a_lease_get_exactly_one_holder(target: Target) -> None:
    stores = [await target.open() for _ in range(4)]
    try:
        for round_ in range(3):
            now = NOW + timedelta(minutes=10 * round_)  # each round, the last lease expired
            won = await asyncio.gather(
                *(
                    Leases(s).take("reconcile", f"replica-{i}", now=now, seconds=60)
                    for i, s in enumerate(stores)
                )
            )
            assert sum(won) == 1, won
    finally:
        for s in stores:
            await s.close()


async def test_a_lease_needs_a_name_a_holder_and_a_length(target: Target) -> None:
    store = await target.open()
    try:
        for name, holder, seconds in (("", "a", 60.0), ("x", "", 60.0), ("x", "a", 0.0)):
            with pytest.raises(StoreError):
                await Leases(store).take(name, holder, now=NOW, seconds=seconds)
    finally:
        await store.close()
