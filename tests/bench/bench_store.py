"""Store costs next to the raw commit floor measured in the same run
(``python -m tests.bench store``), on SQLite and on PostgreSQL.

Floors (the cheapest durable single-row write each database offers):

* SQLite: ``sqlite3`` autocommit INSERT of a 1 KiB row, WAL, ``synchronous=FULL``;
* PostgreSQL: ``psycopg`` autocommit INSERT of a 1 KiB row (``synchronous_commit=on``).

and, to show what a transaction costs before SQLAlchemy, the same row written in an
explicit transaction by the async driver alone (aiosqlite: two trips to its thread;
psycopg: BEGIN, INSERT and COMMIT round trips).

Through the store (SQLAlchemy Core, async driver, one unit of work each):

* bare commit: a unit of work writing one small row (``tokens.revoke``);
* record approval: a unit of work writing one decision (``decisions.add``);
* log append: a unit of work appending one ~700-byte signed receipt;
* approval step: the service's whole click (lock, read, judge, record, receipt);
* end to end with 1, 2 and 4 writer processes (spawned, each its own replica): open
  request → approve → approve (grant) → consume, every step receipted; flows per
  second, and p50/p99 latency of one approval step.

Goals (issue #4): record approval ≤ 1.5× the floor; log append ≤ 1.25× a bare commit.
PostgreSQL reads ``KEYTURN_TEST_POSTGRES_URL`` and is skipped, with a message, when
unreachable. About a minute and a half in all.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psycopg

from adapters.store import sqlite_url
from core.quorum import ApproverDecision
from tests.adapters.store.targets import PG_URL, PostgresServer, Target, migrate, pg_conninfo
from tests.adapters.store.usecase import ApprovalService, new_request, receipt, signing_key
from tests.bench.timing import row

ROW = os.urandom(1024)
E2E_SECONDS = 3.0
WRITERS = (1, 2, 4)


async def per_op_async(
    fn: Callable[[], Awaitable[object]], *, min_seconds: float = 0.4, repeats: int = 3
) -> float:
    """``timing.per_op`` for coroutines: median seconds per awaited call."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            await fn()
        if time.perf_counter() - start >= min_seconds / 4:
            break
        loops *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            await fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples)


def sqlite_floors(directory: Path) -> tuple[float, float]:
    """(sqlite3 autocommit INSERT, aiosqlite BEGIN IMMEDIATE+INSERT then COMMIT)."""
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, body BLOB)")

    async def insert() -> None:
        conn.execute("INSERT INTO raw (body) VALUES (?)", (ROW,))

    async def driver_transaction() -> float:
        import aiosqlite

        db = await aiosqlite.connect(directory / "raw.db", isolation_level=None)
        raw = db._conn
        on_thread: Any = db._execute  # aiosqlite's own trip to its thread, nothing more

        def begin_insert() -> None:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("INSERT INTO raw (body) VALUES (?)", (ROW,))

        async def unit() -> None:
            await on_thread(begin_insert)
            await on_thread(raw.commit)

        try:
            await on_thread(raw.execute, "PRAGMA synchronous = FULL")
            return await per_op_async(unit)
        finally:
            await db.close()

    try:
        return asyncio.run(per_op_async(insert)), asyncio.run(driver_transaction())
    finally:
        conn.close()


def postgres_floors(schema: str) -> tuple[float, float]:
    """(psycopg autocommit INSERT, psycopg async BEGIN; INSERT; COMMIT)."""
    with psycopg.connect(pg_conninfo(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.execute("CREATE TABLE raw (id BIGSERIAL PRIMARY KEY, body BYTEA)")

        async def insert() -> None:
            conn.execute("INSERT INTO raw (body) VALUES (%s)", (ROW,))

        floor = asyncio.run(per_op_async(insert))

    async def driver_transaction() -> float:
        aconn = await psycopg.AsyncConnection.connect(pg_conninfo())
        await aconn.execute(f"SET search_path TO {schema}")
        await aconn.commit()

        async def unit() -> None:
            await aconn.execute("INSERT INTO raw (body) VALUES (%s)", (ROW,))
            await aconn.commit()

        try:
            return await per_op_async(unit)
        finally:
            await aconn.close()

    return floor, asyncio.run(driver_transaction())


async def store_costs(target: Target) -> dict[str, float]:
    """Seconds per unit of work for the single-step measurements."""
    store = await target.open()
    key = signing_key()
    service = ApprovalService(store, key)
    now = datetime.now(UTC)
    counter = iter(range(10**9))
    try:
        await service.open(new_request("bench-approvals", now=now), now=now)
        template = (await service.decide("bench-approvals", "alice", now=now)).decision

        async def bare_commit() -> None:
            async with store.unit_of_work() as uow:
                await uow.tokens.revoke(secrets.token_hex(32), at=now, reason="bench")
                await uow.commit()

        async def record_approval() -> None:
            decision: ApproverDecision = replace(template, approver_id=f"p{next(counter)}")
            async with store.unit_of_work() as uow:
                await uow.decisions.add(decision)
                await uow.commit()

        entries = [
            receipt("decision", {"request_id": f"b{n}", "n": n}, key=key, now=now)
            for n in range(4096)
        ]

        async def log_append() -> None:
            entry = entries[next(counter) % len(entries)] + next(counter).to_bytes(8, "big")
            async with store.unit_of_work() as uow:
                await uow.log.append(entry, at=now)
                await uow.commit()

        pending = [f"bench-step-{n}" for n in range(6000)]
        for request_id in pending[:3000]:
            await service.open(new_request(request_id, now=now), now=now)
        steps = iter(pending)

        async def approval_step() -> None:
            await service.decide(next(steps), "alice", now=now)

        return {
            "bare commit": await per_op_async(bare_commit),
            "record approval": await per_op_async(record_approval),
            "log append": await per_op_async(log_append),
            "approval step": await per_op_async(approval_step, min_seconds=0.3, repeats=1),
        }
    finally:
        await store.close()


def e2e_worker(
    target: Target, name: str, seconds: float, barrier: Barrier, out: Queue[Any]
) -> None:
    out.put(asyncio.run(_e2e(target, name, seconds, barrier)))


async def _e2e(
    target: Target, name: str, seconds: float, barrier: Barrier
) -> tuple[int, list[float]]:
    store = await target.open()
    service = ApprovalService(store)
    latencies: list[float] = []
    flows = 0
    try:
        barrier.wait(timeout=60)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            request_id = f"{name}-{flows}"
            now = datetime.now(UTC)
            await service.open(new_request(request_id, now=now), now=now)
            for person in ("alice", "bob"):
                start = time.perf_counter()
                decided = await service.decide(request_id, person, now=now)
                latencies.append(time.perf_counter() - start)
            assert decided.grant is not None
            await service.consume(decided.grant.grant_id, now=now)
            flows += 1
        return flows, latencies
    finally:
        await store.close()


def end_to_end(target: Target, writers: int, tag: str) -> tuple[float, float, float]:
    """(flows per second, p50, p99 approval-step latency) with ``writers`` processes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    results = context.Queue()
    processes = [
        context.Process(
            target=e2e_worker,
            args=(target, f"{tag}-w{writers}-{n}", E2E_SECONDS, barrier, results),
            daemon=True,
        )
        for n in range(writers)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    flows = sum(f for f, _ in reports)
    latencies = sorted(x for _, lat in reports for x in lat)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return flows / E2E_SECONDS, p50, p99


def bench_backend(
    label: str, target: Target, floor: float, driver_unit: float, driver_name: str
) -> list[str]:
    print(row(f"{label} floor: raw single-row autocommit INSERT (1 KiB)", floor))
    print(row(f"{label} driver alone: {driver_name}", driver_unit, floor, "floor"))
    costs = asyncio.run(store_costs(target))
    for name, seconds in costs.items():
        print(row(f"{label} {name} (one unit of work)", seconds, floor, "floor"))
    print(
        f"{label} ratios: record approval {costs['record approval'] / floor:.2f}× floor "
        f"(goal ≤ 1.50); log append {costs['log append'] / costs['bare commit']:.2f}× bare "
        f"commit (goal ≤ 1.25), {costs['log append'] / floor:.2f}× floor"
    )
    table = [
        f"| {label} | floor | {1 / floor:,.0f}/s | {floor * 1e6:.0f} µs | 1.00× |",
        f"| {label} | driver alone: {driver_name} | {1 / driver_unit:,.0f}/s | "
        f"{driver_unit * 1e6:.0f} µs | {driver_unit / floor:.2f}× |",
        *(
            f"| {label} | {name} | {1 / s:,.0f}/s | {s * 1e6:.0f} µs | {s / floor:.2f}× |"
            for name, s in costs.items()
        ),
    ]
    for writers in WRITERS:
        rate, p50, p99 = end_to_end(target, writers, label)
        per_flow = 1 / rate
        print(
            f"{label} end to end, {writers} writer(s): {rate:,.0f} flows/s "
            f"({per_flow / floor:.1f}× floor per flow of 4 units), approval step "
            f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms",
            flush=True,
        )
        table.append(
            f"| {label} | end to end, {writers} writer(s) | {rate:,.0f} flows/s | "
            f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms | {per_flow / floor:.1f}× per flow |"
        )
    return table


def main() -> None:
    table = ["| back end | measurement | rate | cost | × floor |", "|---|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as directory:
        target = Target(sqlite_url(Path(directory)))
        asyncio.run(migrate(target))
        floor, driver_unit = sqlite_floors(Path(directory))
        table += bench_backend(
            "SQLite", target, floor, driver_unit, "aiosqlite, BEGIN IMMEDIATE+INSERT, COMMIT"
        )
    try:
        psycopg.connect(pg_conninfo(), connect_timeout=3).close()
    except psycopg.Error as e:
        print(f"PostgreSQL SKIPPED: {PG_URL} is unreachable ({e})")
    else:
        server = PostgresServer(PG_URL, f"bench{secrets.token_hex(3)}")
        try:
            target = server.new_schema()
            floor, driver_unit = postgres_floors(target.pg_schema or "")
            table += bench_backend(
                "PostgreSQL", target, floor, driver_unit, "psycopg async, BEGIN; INSERT; COMMIT"
            )
        finally:
            server.drop_all()
    print()
    print("\n".join(table))


if __name__ == "__main__":
    main()
