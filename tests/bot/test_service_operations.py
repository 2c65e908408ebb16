"""What keeps a running installation observable: approver reminders at the policy's
interval, and request transitions and decision latency on ``/metrics``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from adapters.http import Metrics
from adapters.signer import FileSigner
from bot import demo
from bot.bootstrap import App, build
from bot.server import build_web_app
from bot.service.runtime import Event
from core.policy.wpc import sign_wpc
from core.quorum import Verdict
from tests.bot.test_service_e2e import PAYMENT, MovableClock

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    settings = demo.demo_settings(tmp_path / "data")
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
    application = await build(settings, create_key=True, clock=clock)
    agent = FileSigner.load(settings.data_dir / "keys" / "demo-agent.pem")
    await application.service.register_agent(agent.did, name="invoice-bot", by="test")
    try:
        yield application
    finally:
        await application.close()


async def gated_payment(app: App) -> Any:
    agent = FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem").key
    job = await demo._start_job(app.service, agent)
    submitted = await app.service.submit(
        cst=job.runner_token, job_id=job.job_id, tool_route="payments.transfer", params=PAYMENT
    )
    assert submitted.outcome == "gated"
    return submitted


async def click(app: App, submitted: Any, who: str) -> Any:
    return await app.service.decide(
        submitted.request_id,
        demo.person(who),
        Verdict.APPROVE,
        platform="test",
        typed_confirmation=submitted.payload_hash_b64u[-4:],
    )


def reminders(app: App) -> list[Event]:
    seen: list[Event] = []

    async def listen(event: Event) -> None:
        if event.kind == "reminder":
            seen.append(event)

    app.service.rt.hub.subscribe(listen)
    return seen


async def test_approvers_are_reminded_at_the_policys_interval_until_the_request_is_decided(
    app: App,
) -> None:
    seen = reminders(app)
    clock = app.service.rt.clock
    submitted = await gated_payment(app)  # payments_two_person: reminder every 300 s
    await app.service.run_due()
    clock.advance(299)
    await app.service.run_due()
    assert seen == []

    clock.advance(2)
    await app.service.run_due()
    await app.service.run_due()  # the same interval never reminds twice
    assert [(e.request_id, e.data["approvals"], e.data["needed"]) for e in seen] == [
        (submitted.request_id, 0, 2)
    ]
    assert seen[0].data["waiting_seconds"] == 301
    assert seen[0].data["tool_route"] == "payments.transfer"

    await click(app, submitted, "bob")
    clock.advance(300)
    await app.service.run_due()
    assert [e.data["approvals"] for e in seen] == [0, 1]

    await click(app, submitted, "carol")  # approved: nobody needs nudging any more
    clock.advance(300)
    await app.service.run_due()
    assert len(seen) == 2


async def test_requests_whose_policy_sets_no_reminder_are_never_reminded(app: App) -> None:
    seen = reminders(app)
    kt = app.service
    payload = json.loads(demo.asset_text("demo-policy.json"))
    issuer = FileSigner.load(app.settings.data_dir / "keys" / "demo-issuer.pem")
    payload["issuer_did"] = issuer.did
    payload["description"] = "changed"
    proposal = await kt.propose_policy(
        sign_wpc(payload, issuer, issued_at=kt.rt.clock.now()), proposer="alice"
    )
    for _ in range(5):  # policy_change: an hour to decide, no reminder_every_seconds
        kt.rt.clock.advance(600)
        await kt.run_due()
    assert (await kt.view(proposal.request_id or "")).request.state.value == "pending"
    assert seen == []


async def test_metrics_show_transitions_and_decision_latency_after_a_decision(app: App) -> None:
    metrics = Metrics()
    app.service.rt.metrics = metrics
    client = TestClient(TestServer(build_web_app(app, metrics=metrics)))
    await client.start_server()
    try:
        submitted = await gated_payment(app)
        app.service.rt.clock.advance(42)  # people take 42 s to approve
        await click(app, submitted, "bob")
        await click(app, submitted, "carol")
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
    finally:
        await client.close()
    assert 'keyturn_request_transitions_total{state="pending"} 1.0' in text
    assert 'keyturn_request_transitions_total{state="approved"} 1.0' in text
    assert "keyturn_decision_latency_seconds_count 1.0" in text
    assert "keyturn_decision_latency_seconds_sum 42.0" in text


class BrokenMetrics:
    def observe_state(self, state: str) -> None:
        raise RuntimeError("metrics backend down")

    def observe_decision_latency(self, seconds: float) -> None:
        raise RuntimeError("metrics backend down")


async def test_a_failing_metrics_backend_never_fails_a_decision(app: App) -> None:
    app.service.rt.metrics = BrokenMetrics()
    submitted = await gated_payment(app)
    await click(app, submitted, "bob")
    decided = await click(app, submitted, "carol")
    assert decided.state == "approved" and decided.grant_id
