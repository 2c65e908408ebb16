"""The long poll ``GET /v1/requests/{id}?wait=…`` (``Keyturn.request_status``) and the
hub that wakes it: a poll reads the store when it starts and when the request leaves
``pending``, not at every change on the way (a first approval, a receipt)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.signer import FileSigner
from bot import demo
from bot.bootstrap import App
from bot.service.runtime import Event, Hub
from core.canonical import b64u_encode
from core.quorum import Verdict

pytestmark = pytest.mark.asyncio


async def _submit(app: App) -> tuple[str, str]:
    kt = app.service
    key = FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem")
    await kt.register_agent(key.did, name="agent", by="test")
    challenge = await kt.agent_challenge(key.did)
    signature = key.sign(("keyturn-job-v1\n" + challenge.challenge).encode("utf-8"))
    job = await kt.start_job(
        agent_did=key.did, challenge=challenge.challenge, signature_b64u=b64u_encode(signature)
    )
    params = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": "poll"}
    submitted = await kt.submit(
        cst=job.runner_token, job_id=job.job_id, tool_route="payments.transfer", params=params
    )
    assert submitted.request_id is not None
    return job.runner_token, submitted.request_id


def _count_calls(counts: dict[str, int], name: str, fn: Callable[..., Awaitable[Any]]) -> Any:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] = counts.get(name, 0) + 1
        return await fn(*args, **kwargs)

    return counted


async def test_a_poll_reads_once_at_the_start_and_once_when_approved(app: App) -> None:
    kt = app.service
    runner, request_id = await _submit(app)
    confirm = (await kt.view(request_id)).request.binding.payload_hash_b64u[-4:]
    reads: dict[str, int] = {}
    for name in ("_status_once", "_status_minting"):
        setattr(kt, name, _count_calls(reads, name, getattr(kt, name)))

    poll = asyncio.create_task(
        kt.request_status(cst=runner, request_id=request_id, wait_seconds=20)
    )
    await asyncio.sleep(0.1)
    assert reads == {"_status_once": 1}
    await kt.decide(
        request_id, demo.person("bob"), Verdict.APPROVE, platform="test", typed_confirmation=confirm
    )
    await asyncio.sleep(0.1)
    assert not poll.done(), "one approval of two must not end the poll"
    assert reads == {"_status_once": 1}, "a change that leaves it pending is not read"
    await kt.decide(
        request_id,
        demo.person("carol"),
        Verdict.APPROVE,
        platform="test",
        typed_confirmation=confirm,
    )
    status = await asyncio.wait_for(poll, timeout=5)
    assert status.state == "approved" and status.grant is not None and status.job_token
    # Woken by the approval itself: straight to the read that mints the job token.
    assert reads == {"_status_once": 1, "_status_minting": 1}


async def test_a_poll_answers_a_denial_at_once(app: App) -> None:
    kt = app.service
    runner, request_id = await _submit(app)
    confirm = (await kt.view(request_id)).request.binding.payload_hash_b64u[-4:]
    poll = asyncio.create_task(
        kt.request_status(cst=runner, request_id=request_id, wait_seconds=20)
    )
    await asyncio.sleep(0.1)
    await kt.decide(
        request_id,
        demo.person("bob"),
        Verdict.DENY,
        platform="test",
        typed_confirmation=confirm,
        reason="not this vendor",
    )
    status = await asyncio.wait_for(poll, timeout=5)
    assert status.state == "denied" and status.grant is None


async def test_a_waiter_stays_registered_across_wakes_until_forgotten() -> None:
    hub = Hub()
    waiter = hub.waiter("r1")
    await hub.publish(Event("request", "r1", {"state": "pending"}))
    assert waiter.is_set() and waiter.state == "pending"
    waiter.clear()
    await hub.publish(Event("receipt", "r1", {"index": 3}))
    await hub.publish(Event("request", "r1", {"state": "approved"}))
    assert waiter.is_set() and waiter.state == "approved", "the latest change is the hint"
    assert hub.waited_for() == ["r1"]
    hub.forget("r1", waiter)
    assert hub.waited_for() == []
    waiter.clear()
    await hub.publish(Event("request", "r1", {"state": "consumed"}))
    assert not waiter.is_set()
