"""A writer killed with SIGKILL in the middle of a burst of decisions, then restarted.

After every kill: the log replays clean against every signed checkpoint (what
``keyturn log verify`` does), every unit of work the writer reported committed is in
the database, nothing is duplicated, and no request is half decided (two approvals
without a grant, a grant without the approved state, a consumed grant on an open
request, or receipts that disagree with the rows).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from adapters.store import tables, verify_log
from core.requests import RequestState
from tests.adapters.store.targets import Target
from tests.adapters.store.usecase import (
    ORIGIN,
    ApprovalService,
    new_request,
    receipt_payload,
    signing_key,
)

ROOT = Path(__file__).resolve().parents[3]
REQUESTS = 24
KILL_AFTER = (3, 11, 26)  # COMMITTED lines each killed run gets to print


def _writer(target: Target, ids: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.adapters.store.writer",
            "burst",
            target.url,
            target.pg_schema or "-",
            *ids,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _committed(lines: list[str]) -> list[tuple[str, ...]]:
    return [tuple(line.split()[1:]) for line in lines if line.startswith("COMMITTED ")]


def test_a_writer_killed_mid_burst_loses_nothing_and_leaves_nothing_half_done(
    target: Target,
) -> None:
    ids = asyncio.run(_open_requests(target))
    committed: list[tuple[str, ...]] = []
    rng = random.Random(4)
    for kill_after in KILL_AFTER:
        process = _writer(target, ids)
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if len(_committed(lines)) >= kill_after:
                # Land the kill at a varying point of the next unit of work.
                if rng.random() < 0.5:
                    os.sched_yield()
                os.kill(process.pid, signal.SIGKILL)
                break
        lines.extend(process.stdout.read().splitlines(keepends=True))
        process.wait(timeout=60)
        errors = process.stderr.read() if process.stderr else ""
        assert process.returncode == -signal.SIGKILL, errors
        assert "DONE\n" not in lines
        committed.extend(_committed(lines))
        asyncio.run(_check(target, ids, committed, finished=False))

    final = _writer(target, ids)
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err
    assert out.endswith("DONE\n")
    committed.extend(_committed(out.splitlines()))
    asyncio.run(_check(target, ids, committed, finished=True))
    # Nothing reported twice across the runs: each step was done exactly once. (A kill
    # between a commit and its line leaves a step done but unreported; _check found it.)
    steps = [c for c in committed if c[0] != "checkpoint"]
    assert len(steps) == len(set(steps)) <= 4 * REQUESTS


async def _open_requests(target: Target) -> list[str]:
    store = await target.open()
    try:
        service = ApprovalService(store)
        now = datetime.now(UTC)
        ids = [f"crash-{n:02d}" for n in range(REQUESTS)]
        for request_id in ids:
            await service.open(new_request(request_id, now=now), now=now)
        return ids
    finally:
        await store.close()


async def _check(
    target: Target, ids: list[str], committed: list[tuple[str, ...]], *, finished: bool
) -> None:
    store = await target.open()
    try:
        verified = await verify_log(
            store, origin=ORIGIN, public_keys={ORIGIN: signing_key().public_key}
        )
        async with store.unit_of_work(read_only=True) as uow:
            entries = await uow.log.entries(0, verified.size)
            checkpoint_sizes = {size for size, _ in await uow.log.checkpoints()}
            state = {}
            for request_id in ids:
                request = await uow.requests.get(request_id)
                decisions = await uow.decisions.for_request(request_id)
                grant = await uow.grants.for_request(request_id)
                state[request_id] = (request, decisions, grant)
        async with store.engine.connect() as conn:
            rows = await conn.execute(
                select(tables.grants.c.request_id, tables.grants.c.consumed_at)
            )
            consumed = {row.request_id: row.consumed_at for row in rows}
    finally:
        await store.close()

    receipts: Counter[tuple[str, str]] = Counter()
    decision_receipts: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        payload = receipt_payload(entry)
        receipts[(payload["request_id"], payload["kind"])] += 1
        if payload["kind"] == "decision":
            decision_receipts[(payload["request_id"], payload["approver_id"])] += 1
    assert all(n == 1 for n in decision_receipts.values()), "an approval was logged twice"

    for request_id, (request, decisions, grant) in state.items():
        approvers = [d.approver_id for d in decisions]
        assert len(approvers) == len(set(approvers)) <= 2
        assert receipts[(request_id, "request_opened")] == 1
        assert receipts[(request_id, "decision")] == len(approvers)
        if len(approvers) < 2:
            assert request.state is RequestState.PENDING and grant is None, request_id
        else:
            assert grant is not None, f"{request_id}: quorum met but no grant"
            assert request.state in (RequestState.APPROVED, RequestState.CONSUMED), request_id
        assert receipts[(request_id, "grant")] == (1 if grant else 0)
        is_consumed = request.state is RequestState.CONSUMED
        assert (consumed.get(request_id) is not None) == is_consumed, request_id
        assert receipts[(request_id, "execution")] == (1 if is_consumed else 0)
        if finished:
            assert is_consumed and sorted(approvers) == ["alice", "bob"], request_id

    for kind, *rest in committed:
        if kind == "checkpoint":
            assert int(rest[0]) in checkpoint_sizes, f"checkpoint {rest[0]} was lost"
            continue
        request_id = rest[0]
        request, decisions, grant = state[request_id]
        if kind == "decision":
            assert rest[1] in [d.approver_id for d in decisions], f"lost: {kind} {rest}"
        elif kind == "grant":
            assert grant is not None and grant.grant_id == rest[1], f"lost: {kind} {rest}"
        else:
            assert request.state is RequestState.CONSUMED, f"lost: {kind} {rest}"
