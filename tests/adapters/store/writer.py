"""Writer processes for the race and crash tests: real replicas, real OS processes.

Each worker opens its own store *after* it started (never a connection inherited
across a fork), waits at a barrier so the replicas collide, then drives the use cases
and reports what happened to it.

As a script (the crash test kills it with SIGKILL and starts it again)::

    python -m tests.adapters.store.writer burst URL SCHEMA|- REQUEST_ID...

it approves every request as alice then bob, consumes each grant, checkpoints every
few requests, and prints one line per committed unit of work (``COMMITTED …``) —
flushed after the commit returned, so every printed line must be in the database.
Steps already done (by an earlier, killed run) are skipped, so a restart finishes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from core.errors import ApprovalRefusedError, GateDeniedError, StoreError
from tests.adapters.store.targets import Target
from tests.adapters.store.usecase import ApprovalService


def _now() -> datetime:
    return datetime.now(UTC)


def approve_worker(
    target: Target, person: str, request_ids: Sequence[str], barrier: Barrier, out: Queue[Any]
) -> None:
    """Approve every request as ``person``; report ``(request_id, outcome)`` pairs."""
    out.put(asyncio.run(_approve(target, person, request_ids, barrier)))


async def _approve(
    target: Target, person: str, request_ids: Sequence[str], barrier: Barrier
) -> list[tuple[str, str]]:
    store = await target.open()
    try:
        service = ApprovalService(store)
        barrier.wait(timeout=60)
        outcomes = []
        for request_id in request_ids:
            try:
                decided = await service.decide(request_id, person, now=_now())
            except ApprovalRefusedError as e:
                outcomes.append((request_id, e.reason_code))
            else:
                outcomes.append((request_id, "GRANTED" if decided.grant else "RECORDED"))
        return outcomes
    finally:
        await store.close()


def consume_worker(
    target: Target, grant_ids: Sequence[str], barrier: Barrier, out: Queue[Any]
) -> None:
    """Present every grant at the gate; report ``(grant_id, outcome)`` pairs."""
    out.put(asyncio.run(_consume(target, grant_ids, barrier)))


async def _consume(
    target: Target, grant_ids: Sequence[str], barrier: Barrier
) -> list[tuple[str, str]]:
    store = await target.open()
    try:
        barrier.wait(timeout=60)
        outcomes = []
        for grant_id in grant_ids:
            try:
                async with store.unit_of_work() as uow:
                    await uow.grants.consume(grant_id, at=_now())
                    await uow.commit()
            except GateDeniedError as e:
                outcomes.append((grant_id, e.reason_code))
            else:
                outcomes.append((grant_id, "CONSUMED"))
        return outcomes
    finally:
        await store.close()


def append_worker(target: Target, name: str, count: int, barrier: Barrier, out: Queue[Any]) -> None:
    """Append ``count`` entries, one unit of work each; report the indexes received."""
    out.put(asyncio.run(_append(target, name, count, barrier)))


async def _append(
    target: Target, name: str, count: int, barrier: Barrier
) -> list[tuple[bytes, int]]:
    store = await target.open()
    try:
        barrier.wait(timeout=60)
        got = []
        for i in range(count):
            entry = f"{name}:{i}".encode()
            async with store.unit_of_work() as uow:
                index = await uow.log.append(entry, at=_now())
                await uow.commit()
            got.append((entry, index))
        return got
    finally:
        await store.close()


async def burst(target: Target, request_ids: Sequence[str], *, checkpoint_every: int = 4) -> None:
    store = await target.open()
    service = ApprovalService(store)

    def committed(*words: str) -> None:
        print("COMMITTED", *words, flush=True)

    try:
        for n, request_id in enumerate(request_ids, start=1):
            for person in ("alice", "bob"):
                try:
                    decided = await service.decide(request_id, person, now=_now())
                except ApprovalRefusedError as e:
                    if e.reason_code not in ("ALREADY_DECIDED", "REQUEST_NOT_PENDING"):
                        raise
                    continue
                committed("decision", request_id, person)
                if decided.grant is not None:
                    committed("grant", request_id, decided.grant.grant_id)
            async with store.unit_of_work(read_only=True) as uow:
                grant = await uow.grants.for_request(request_id)
            if grant is None:
                raise StoreError("STORE_FAILED", f"request {request_id} has no grant after quorum")
            try:
                await service.consume(grant.grant_id, now=_now())
            except GateDeniedError as e:
                if e.reason_code != "GRANT_ALREADY_USED":
                    raise
            else:
                committed("execution", request_id, grant.grant_id)
            if n % checkpoint_every == 0:
                size, _ = await service.checkpoint(now=_now())
                committed("checkpoint", str(size))
        print("DONE", flush=True)
    finally:
        await store.close()


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[0] != "burst":
        print("usage: writer burst URL SCHEMA|- REQUEST_ID...", file=sys.stderr)
        return 2
    url, schema, *request_ids = argv[1:]
    target = Target(url, pg_schema=None if schema == "-" else schema)
    asyncio.run(burst(target, request_ids))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
