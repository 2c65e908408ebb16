"""End to end through the real service: SQLite store, real keys, the agent HTTP API and
the SDK, with approvals clicked through the same use case every surface calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from adapters.agents.sdk import Gate, GateRefused, gated
from adapters.signer import FileSigner
from bot import demo
from bot.bootstrap import App, build
from bot.server import build_web_app
from bot.service.breakglass import breakglass_token, request_breakglass
from core.bundle_verify import verify_bundle
from core.errors import ApprovalRefusedError, GateDeniedError, PolicyError, TokenError
from core.identity import IdentityKind, IdentityRef
from core.quorum import Verdict

pytestmark = pytest.mark.asyncio
PAYMENT = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": "Invoice 2026-118"}


@dataclass
class MovableClock:
    moment: datetime

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def person(oid: str) -> IdentityRef:
    return IdentityRef(IdentityKind.OBJECT_ID, oid)


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


def agent_key(app: App) -> Any:
    return FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem").key


async def approve_when_pending(app: App, approvers: list[str], *, route: str) -> None:
    """Two people click Approve as soon as the request shows up."""
    kt = app.service
    for _ in range(200):
        pending = [
            v
            for v in await kt.list_requests()
            if v.request.binding.tool_route == route and v.request.state.value == "pending"
        ]
        if pending:
            view = pending[0]
            for who in approvers:
                await kt.decide(
                    view.request.request_id,
                    person(who),
                    Verdict.APPROVE,
                    platform="test",
                    typed_confirmation=view.request.binding.payload_hash_b64u[-4:],
                )
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no pending request appeared")


async def test_agent_through_sdk_runs_once_and_changed_arguments_are_refused(app: App) -> None:
    server = TestServer(build_web_app(app))
    await server.start_server()
    key = agent_key(app)
    try:
        async with Gate(
            str(server.make_url("")).rstrip("/"), agent_did=key.did, agent_key=key
        ) as gate:
            runs: list[dict[str, Any]] = []

            @gated("payments.transfer", gate=gate, timeout=30)
            async def transfer(amount_usd: int, to_account: str, memo: str) -> str:
                runs.append({"amount_usd": amount_usd, "to_account": to_account, "memo": memo})
                return "sent"

            clicks = asyncio.create_task(
                approve_when_pending(app, ["bob", "carol"], route="payments.transfer")
            )
            assert await transfer(**PAYMENT) == "sent"
            await clicks
            assert runs == [PAYMENT]

            # Approval for one payload; the tool then tries to run another one.
            clicks = asyncio.create_task(
                approve_when_pending(app, ["bob", "carol"], route="payments.transfer")
            )
            approval = await gate.require("payments.transfer", PAYMENT, timeout=30)
            await clicks
            with pytest.raises(GateRefused) as refused:
                await gate.check(
                    approval,
                    "payments.transfer",
                    {**PAYMENT, "to_account": "GB33BUKB20201555555555"},
                )
            assert refused.value.reason_code == "PAYLOAD_HASH_MISMATCH"
            await gate.check(
                approval, "payments.transfer", PAYMENT
            )  # the approved one still runs once
            with pytest.raises(GateRefused):
                await gate.check(approval, "payments.transfer", PAYMENT)
    finally:
        await server.close()

    consumed = [v for v in await app.service.list_requests() if v.request.state.value == "consumed"]
    assert len(consumed) == 2
    for view in consumed:
        bundle = await app.service.bundle(view.request.request_id)
        report = verify_bundle(bundle, trusted_keyturn_dids={app.service.rt.signer.did})
        assert report.evidence is not None


async def _job(app: App) -> Any:
    return await demo._start_job(app.service, agent_key(app))


async def test_policy_denials_are_refused_and_receipted(app: App) -> None:
    job = await _job(app)
    result = await app.service.submit(
        cst=job.runner_token, job_id=job.job_id, tool_route="shell.exec", params={"cmd": "rm -rf /"}
    )
    assert result.outcome == "denied"
    unknown = await app.service.submit(
        cst=job.runner_token, job_id=job.job_id, tool_route="db.drop", params={}
    )
    assert (unknown.outcome, unknown.reason_code) == ("denied", "NO_MATCHING_RULE")
    small = await app.service.submit(
        cst=job.runner_token,
        job_id=job.job_id,
        tool_route="payments.transfer",
        params={**PAYMENT, "amount_usd": 20},
    )
    assert small.outcome == "allowed"


async def test_a_runner_token_is_bound_to_its_job_and_cannot_pass_the_gate(app: App) -> None:
    job, other = await _job(app), await _job(app)
    with pytest.raises(TokenError):
        await app.service.submit(
            cst=job.runner_token,
            job_id=other.job_id,
            tool_route="payments.transfer",
            params=PAYMENT,
        )
    submitted = await app.service.submit(
        cst=job.runner_token, job_id=job.job_id, tool_route="payments.transfer", params=PAYMENT
    )
    confirm = submitted.payload_hash_b64u[-4:]
    for who in ("bob", "carol"):
        await app.service.decide(
            submitted.request_id or "",
            person(who),
            Verdict.APPROVE,
            platform="t",
            typed_confirmation=confirm,
        )
    status = await app.service.request_status(
        cst=job.runner_token, request_id=submitted.request_id or ""
    )
    assert status.grant is not None
    with pytest.raises(GateDeniedError) as exc:
        await app.service.gate_check(
            cst=job.runner_token, grant=status.grant, tool_route="payments.transfer", params=PAYMENT
        )
    assert exc.value.reason_code in {
        "RUNNER_TOKEN_CANNOT_EXECUTE",
        "TOKEN_SCOPE_HASH_MISMATCH",
        "TOKEN_INSUFFICIENT_SCOPE",
    }


async def test_pending_requests_expire_and_nothing_can_approve_them_after(app: App) -> None:
    job = await _job(app)
    submitted = await app.service.submit(
        cst=job.runner_token,
        job_id=job.job_id,
        tool_route="storage.export",
        params={"dataset": "customer_pii"},
    )
    app.service.rt.clock.advance(16 * 60)
    assert await app.service.run_due() >= 1
    view = await app.service.view(submitted.request_id or "")
    assert view.request.state.value == "expired"
    with pytest.raises(ApprovalRefusedError):
        await app.service.decide(
            submitted.request_id or "", person("bob"), Verdict.APPROVE, platform="t"
        )
    bundle = await app.service.bundle(submitted.request_id or "")
    verify_bundle(
        bundle, trusted_keyturn_dids={app.service.rt.signer.did}, now=app.service.rt.clock.now()
    )


async def test_breakglass_window_expires_on_its_own_and_revokes_the_token(app: App) -> None:
    kt = app.service
    params = {
        "tenant_id": "00000000-0000-4000-8000-0000000000aa",
        "principal": "alice@corp.example",
        "role": "Privileged Role Administrator",
    }
    with pytest.raises(PolicyError) as too_long:
        await request_breakglass(
            kt,
            person("alice"),
            route="entra.role.assign",
            params=params,
            duration_seconds=2 * 3600,
            reason="INC-1",
        )
    assert too_long.value.reason_code == "WINDOW_TOO_LONG"
    with pytest.raises(PolicyError) as outside:
        await request_breakglass(
            kt,
            person("alice"),
            route="entra.role.assign",
            params={**params, "principal": "mallory@corp.example"},
            duration_seconds=600,
            reason="INC-1",
        )
    assert outside.value.reason_code == "CONSTRAINT_VIOLATED"
    bg = await request_breakglass(
        kt,
        person("alice"),
        route="entra.role.assign",
        params=params,
        duration_seconds=600,
        reason="INC-4411 mailbox compromise",
        ticket="INC-4411",
    )
    for who in ("bob", "carol"):
        await kt.decide(
            bg.request_id or "",
            person(who),
            Verdict.APPROVE,
            platform="t",
            typed_confirmation=bg.payload_hash_b64u[-4:],
        )
    token = await breakglass_token(kt, bg.request_id or "", person("alice"))
    assert token.token
    kt.rt.clock.advance(601)
    assert await kt.run_due() >= 1
    view = await kt.view(bg.request_id or "")
    assert view.request.state.value == "expired"
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        records = await uow.tokens.for_job(view.request.binding.job_id)
        assert records and all([await uow.tokens.is_revoked(r.token_hash_hex) for r in records])
    with pytest.raises(ApprovalRefusedError):
        await breakglass_token(kt, bg.request_id or "", person("alice"))
    bundle = await kt.bundle(bg.request_id or "")
    verify_bundle(bundle, trusted_keyturn_dids={kt.rt.signer.did}, now=kt.rt.clock.now())


async def test_changing_the_policy_is_itself_gated_and_pinned_jobs_fail_closed(app: App) -> None:
    kt = app.service
    job = await _job(app)
    old = await kt.active_policy()
    payload = json.loads(demo.asset_text("demo-policy.json"))
    issuer = FileSigner.load(app.settings.data_dir / "keys" / "demo-issuer.pem")
    payload["issuer_did"] = issuer.did
    payload["description"] = "tightened after review"
    from core.policy.wpc import sign_wpc

    envelope = sign_wpc(payload, issuer, issued_at=kt.rt.clock.now())
    proposal = await kt.propose_policy(envelope, proposer="alice")
    assert proposal.outcome == "gated"
    assert (await kt.active_policy()).policy_hash_b64u == old.policy_hash_b64u
    with pytest.raises(ApprovalRefusedError) as own:
        await kt.decide(
            proposal.request_id or "",
            person("alice"),
            Verdict.APPROVE,
            platform="t",
            typed_confirmation=proposal.payload_hash_b64u[-4:],
        )
    assert own.value.reason_code in {"REQUESTER_CANNOT_APPROVE", "APPROVER_NOT_IN_GROUP"}
    for who in ("carol", "dan"):
        await kt.decide(
            proposal.request_id or "",
            person(who),
            Verdict.APPROVE,
            platform="t",
            typed_confirmation=proposal.payload_hash_b64u[-4:],
        )
    new = await kt.active_policy()
    assert new.policy_hash_b64u != old.policy_hash_b64u
    with pytest.raises(TokenError) as drift:
        await kt.submit(
            cst=job.runner_token, job_id=job.job_id, tool_route="payments.transfer", params=PAYMENT
        )
    assert drift.value.reason_code == "TOKEN_POLICY_MISMATCH"


async def test_final_requests_are_sealed_by_the_scheduler_once(app: App) -> None:
    kt = app.service
    job = await _job(app)
    submitted = await kt.submit(
        cst=job.runner_token,
        job_id=job.job_id,
        tool_route="storage.export",
        params={"dataset": "customer_pii"},
    )
    rid = submitted.request_id or ""
    await kt.decide(rid, person("bob"), Verdict.DENY, platform="t", reason="not today")
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        assert await uow.jobs.bundle(rid) is None  # sealing happens off the click path
    await kt.run_due()
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        sealed = await uow.jobs.bundle(rid)
    assert sealed is not None
    await kt.run_due()
    assert await kt.bundle(rid) == sealed  # sealed once; later runs do not re-seal
    report = verify_bundle(sealed, trusted_keyturn_dids={kt.rt.signer.did}, now=kt.rt.clock.now())
    assert report.outcome == "denied"
