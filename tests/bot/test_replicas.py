"""Two replicas on one database.

The in-memory Merkle tree after commits: leaves this process wrote are taken without a
store read; a leaf another replica appended in between sends the sync to the store, and
the tree never holds anything but the store's leaves, in the store's order. A long poll
waiting on one replica learns of approvals recorded on the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event

from adapters.signer import FileSigner
from bot import demo
from bot.bootstrap import App, build
from core.canonical import b64u_encode
from core.merkle import MerkleTree
from core.quorum import Verdict


@pytest_asyncio.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[App, App]]:
    settings = demo.demo_settings(tmp_path / "data")
    first = await build(settings, create_key=True)
    second = await build(settings)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


async def _submit(app: App, key: FileSigner, n: int) -> tuple[str, str]:
    """One gated call (one ``request_created`` receipt) through ``app``: (runner, id)."""
    kt = app.service
    challenge = await kt.agent_challenge(key.did)
    signature = key.sign(("keyturn-job-v1\n" + challenge.challenge).encode("utf-8"))
    job = await kt.start_job(
        agent_did=key.did, challenge=challenge.challenge, signature_b64u=b64u_encode(signature)
    )
    params = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": n}
    submitted = await kt.submit(
        cst=job.runner_token, job_id=job.job_id, tool_route="payments.transfer", params=params
    )
    assert submitted.outcome == "gated" and submitted.request_id is not None
    return job.runner_token, submitted.request_id


async def _stored_root(app: App, size: int) -> bytes:
    async with app.store.unit_of_work(read_only=True) as uow:
        leaves = await uow.log.leaf_hashes(0, size)
    tree = MerkleTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree.root()


def _count_log_reads(app: App) -> list[str]:
    seen: list[str] = []

    def on_execute(*args: object) -> None:
        statement = str(args[2])
        if "log_head.size" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(app.store.engine.sync_engine, "before_cursor_execute", on_execute)
    return seen


@pytest.mark.asyncio
async def test_a_replica_takes_its_own_committed_leaves_without_reading_the_log_back(
    replicas: tuple[App, App],
) -> None:
    first, _ = replicas
    key = FileSigner.load(first.settings.data_dir / "keys" / "demo-agent.pem")
    await first.service.register_agent(key.did, name="agent", by="test")
    reads = _count_log_reads(first)
    for n in range(3):
        await _submit(first, key, n)
    read_back = list(reads)
    tree = first.service.evidence.proofs
    async with first.store.unit_of_work(read_only=True) as uow:
        stored = await uow.log.size()
    assert tree.size == stored
    assert tree.root() == await _stored_root(first, stored)
    assert read_back == [], "the tree read back leaves it had just written"


@pytest.mark.asyncio
async def test_interleaved_replicas_keep_every_tree_a_prefix_of_the_stored_log(
    replicas: tuple[App, App],
) -> None:
    first, second = replicas
    key = FileSigner.load(first.settings.data_dir / "keys" / "demo-agent.pem")
    await first.service.register_agent(key.did, name="agent", by="test")
    for n in range(6):
        app = first if n % 2 == 0 else second
        await _submit(app, key, n)
        for each in (first, second):
            tree = each.service.evidence.proofs
            # Never a leaf the store does not hold at that index.
            assert tree.root() == await _stored_root(each, tree.size)
        # The replica that committed holds its own receipt now.
        async with app.store.unit_of_work(read_only=True) as uow:
            stored = await uow.log.size()
        assert app.service.evidence.proofs.size == stored


@pytest.mark.asyncio
async def test_a_poll_waiting_on_one_replica_sees_the_approval_recorded_on_the_other(
    replicas: tuple[App, App],
) -> None:
    first, second = replicas
    key = FileSigner.load(first.settings.data_dir / "keys" / "demo-agent.pem")
    await first.service.register_agent(key.did, name="agent", by="test")
    runner, request_id = await _submit(first, key, 0)
    polls = [
        asyncio.create_task(
            first.service.request_status(cst=runner, request_id=request_id, wait_seconds=20)
        )
        for _ in range(3)
    ]
    await asyncio.sleep(0.2)
    assert not any(p.done() for p in polls)
    view = await second.service.view(request_id)
    started = time.monotonic()
    for who in ("bob", "carol"):
        await second.service.decide(
            request_id,
            demo.person(who),
            Verdict.APPROVE,
            platform="test",
            typed_confirmation=view.request.binding.payload_hash_b64u[-4:],
        )
    statuses = await asyncio.wait_for(asyncio.gather(*polls), timeout=10)
    waited = time.monotonic() - started
    assert waited < 5, f"the other replica's approval took {waited:.1f} s to be seen"
    assert [s.state for s in statuses] == ["approved"] * 3
    assert all(s.grant is not None and s.job_token for s in statuses)
