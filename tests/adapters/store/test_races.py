"""Replicas racing: separate OS processes (spawned, each opening its own connections after
start) released together by a barrier. The guarantees hold because the database
enforces them, not because anything in a process does."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.store import verify_log
from core.requests import RequestState
from tests.adapters.store import writer
from tests.adapters.store.targets import Target
from tests.adapters.store.usecase import ApprovalService, new_request, receipt_payload

REQUESTS = 30


def _run_processes(jobs: Sequence[tuple[Callable[..., None], tuple[Any, ...]]]) -> list[Any]:
    """Start one spawned process per job, release them together, collect their reports."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(jobs))
    results = context.Queue()
    processes = [
        context.Process(target=func, args=(*args, barrier, results), daemon=True)
        for func, args in jobs
    ]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return reports


async def _open_requests(target: Target, count: int) -> list[str]:
    store = await target.open()
    try:
        service = ApprovalService(store)
        now = datetime.now(UTC)
        ids = [f"race-{n}" for n in range(count)]
        for request_id in ids:
            await service.open(new_request(request_id, now=now), now=now)
        return ids
    finally:
        await store.close()


def test_the_last_two_approvals_at_once_mint_exactly_one_grant(target: Target) -> None:
    ids = asyncio.run(_open_requests(target, REQUESTS))
    reports = _run_processes(
        [
            (writer.approve_worker, (target, "alice", ids)),
            (writer.approve_worker, (target, "bob", ids)),
        ]
    )
    outcomes = Counter(outcome for report in reports for _, outcome in report)
    # Each request: one replica recorded the first approval, the other the second,
    # which met the quorum and minted the grant. Nobody was refused.
    assert outcomes == {"RECORDED": REQUESTS, "GRANTED": REQUESTS}
    asyncio.run(_check_every_request_granted_once(target, ids))


async def _check_every_request_granted_once(target: Target, ids: list[str]) -> None:
    store = await target.open()
    try:
        async with store.unit_of_work(read_only=True) as uow:
            for request_id in ids:
                request = await uow.requests.get(request_id)
                decisions = await uow.decisions.for_request(request_id)
                grant = await uow.grants.for_request(request_id)
                assert request.state is RequestState.APPROVED, request_id
                assert sorted(d.approver_id for d in decisions) == ["alice", "bob"]
                assert grant is not None and len(grant.approvals) == 2
            size = await uow.log.size()
            entries = await uow.log.entries(0, size)
        kinds = Counter(receipt_payload(e)["kind"] for e in entries)
        assert kinds == {"request_opened": len(ids), "decision": 2 * len(ids), "grant": len(ids)}
        assert (await verify_log(store)).size == size
    finally:
        await store.close()


def test_the_same_person_clicking_on_two_replicas_counts_once(target: Target) -> None:
    ids = asyncio.run(_open_requests(target, REQUESTS))
    reports = _run_processes(
        [
            (writer.approve_worker, (target, "alice", ids)),
            (writer.approve_worker, (target, "alice", ids)),
        ]
    )
    per_request = Counter(pair for report in reports for pair in report)
    for request_id in ids:
        assert per_request[(request_id, "RECORDED")] == 1
        assert per_request[(request_id, "ALREADY_DECIDED")] == 1
    asyncio.run(_check_one_decision_each(target, ids))


async def _check_one_decision_each(target: Target, ids: list[str]) -> None:
    store = await target.open()
    try:
        async with store.unit_of_work(read_only=True) as uow:
            for request_id in ids:
                decisions = await uow.decisions.for_request(request_id)
                assert [d.approver_id for d in decisions] == ["alice"]
                assert (await uow.requests.get(request_id)).state is RequestState.PENDING
    finally:
        await store.close()


async def _grants(target: Target, count: int) -> list[str]:
    ids = await _open_requests(target, count)
    store = await target.open()
    try:
        service = ApprovalService(store)
        now = datetime.now(UTC)
        grant_ids = []
        for request_id in ids:
            await service.decide(request_id, "alice", now=now)
            grant = (await service.decide(request_id, "bob", now=now)).grant
            assert grant is not None
            grant_ids.append(grant.grant_id)
        return grant_ids
    finally:
        await store.close()


def test_two_gates_racing_consume_a_grant_once(target: Target) -> None:
    grant_ids = asyncio.run(_grants(target, REQUESTS))
    reports = _run_processes(
        [(writer.consume_worker, (target, grant_ids)), (writer.consume_worker, (target, grant_ids))]
    )
    per_grant = Counter(pair for report in reports for pair in report)
    for grant_id in grant_ids:
        assert per_grant[(grant_id, "CONSUMED")] == 1
        assert per_grant[(grant_id, "GRANT_ALREADY_USED")] == 1


def test_appends_from_four_replicas_are_dense_and_stored_once(target: Target) -> None:
    count = 40
    reports = _run_processes(
        [(writer.append_worker, (target, f"replica-{n}", count)) for n in range(4)]
    )
    indexes = sorted(index for report in reports for _, index in report)
    assert indexes == list(range(4 * count))
    asyncio.run(_check_log(target, {entry: index for report in reports for entry, index in report}))


async def _check_log(target: Target, expected: dict[bytes, int]) -> None:
    store = await target.open()
    try:
        async with store.unit_of_work(read_only=True) as uow:
            entries = await uow.log.entries(0, await uow.log.size())
        assert {entry: index for index, entry in enumerate(entries)} == expected
        assert (await verify_log(store)).size == len(expected)
    finally:
        await store.close()
