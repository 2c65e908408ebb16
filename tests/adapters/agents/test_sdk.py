"""The Gate client against the real agent API on the fake service."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.agents.sdk import (
    Approval,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalTimeout,
    Gate,
    GateRefused,
    InvalidCall,
    PolicyDenied,
    ServiceUnavailable,
    TokenRefused,
)
from core.errors import StoreError
from core.outcomes import RequestStatus, Submitted
from core.requests import payload_hash
from tests.adapters.agents.conftest import quick_gate, when_pending
from tests.adapters.http.fake_service import FakeAgentService
from tests.adapters.http.harness import PAYMENT, SMALL_PAYMENT, Api, running_api

pytestmark = pytest.mark.asyncio


async def test_an_ungated_call_is_allowed_and_admitted(api: Api, gate: Gate) -> None:
    approval = await gate.require("payments.transfer", SMALL_PAYMENT)
    assert approval.outcome == "allowed" and approval.grant is None
    admitted = await gate.check(approval, "payments.transfer", SMALL_PAYMENT)
    assert admitted.payload_hash_b64u == payload_hash(SMALL_PAYMENT)
    assert api.service.calls.count("admit") == 1
    assert api.service.requests == {}


async def test_a_gated_call_waits_for_approval_and_the_grant_passes_once(
    api: Api, gate: Gate
) -> None:
    person = when_pending(api.service, api.service.approve)
    approval = await gate.require("payments.transfer", PAYMENT, justification="invoice 118")
    await person
    assert approval.outcome == "approved"
    assert approval.payload_hash_b64u == payload_hash(PAYMENT)
    assert approval.grant is not None and approval.job_token
    assert approval.job_token not in repr(approval)
    passed = await gate.check(approval, "payments.transfer", PAYMENT)
    assert passed.grant_id == f"g-{approval.request_id}"
    assert list(api.service.ledger.used) == [passed.grant_id]
    with pytest.raises(GateRefused) as again:
        await gate.check(approval, "payments.transfer", PAYMENT)
    assert again.value.reason_code == "GRANT_ALREADY_USED"


async def test_checking_other_parameters_is_refused_and_keeps_the_grant(
    api: Api, gate: Gate
) -> None:
    person = when_pending(api.service, api.service.approve)
    approval = await gate.require("payments.transfer", PAYMENT)
    await person
    with pytest.raises(GateRefused) as refused:
        await gate.check(approval, "payments.transfer", {**PAYMENT, "amount_usd": 99_999})
    assert refused.value.reason_code == "PAYLOAD_HASH_MISMATCH"
    assert api.service.ledger.used == {}


async def test_a_denied_request_raises_approval_denied(api: Api, gate: Gate) -> None:
    person = when_pending(api.service, api.service.deny)
    with pytest.raises(ApprovalDenied) as denied:
        await gate.require("payments.transfer", PAYMENT)
    await person
    assert denied.value.reason_code == "REQUEST_DENIED"
    assert denied.value.request_id in api.service.requests


async def test_an_expired_request_raises_approval_expired(api: Api, gate: Gate) -> None:
    person = when_pending(api.service, api.service.expire)
    with pytest.raises(ApprovalExpired) as expired:
        await gate.require("payments.transfer", PAYMENT)
    await person
    assert expired.value.reason_code == "REQUEST_EXPIRED"


async def test_nobody_deciding_in_time_raises_approval_timeout(api: Api, gate: Gate) -> None:
    with pytest.raises(ApprovalTimeout) as timed_out:
        await gate.require("payments.transfer", PAYMENT, timeout=0.3)
    assert timed_out.value.request_id == api.service.pending()[0]


async def test_waiting_can_resume_on_the_same_request(api: Api, gate: Gate) -> None:
    with pytest.raises(ApprovalTimeout) as timed_out:
        await gate.require("payments.transfer", PAYMENT, timeout=0.2)
    request_id = timed_out.value.request_id
    assert request_id is not None
    api.service.approve(request_id)
    approval = await gate.wait(request_id, "payments.transfer", PAYMENT, timeout=5)
    assert approval.request_id == request_id
    with pytest.raises(GateRefused):  # resuming with other parameters is not the same call
        await gate.wait(request_id, "payments.transfer", SMALL_PAYMENT, timeout=5)


async def test_a_call_the_policy_denies_raises_policy_denied(api: Api, gate: Gate) -> None:
    with pytest.raises(PolicyDenied) as denied:
        await gate.require("shell.exec", {"cmd": "id"})
    assert denied.value.reason_code == "NO_MATCHING_RULE"
    assert denied.value.status == 403


async def test_an_unregistered_agent_cannot_start_a_job(api: Api) -> None:
    api.service.agents.clear()
    async with quick_gate(api.url) as gate:
        with pytest.raises(PolicyDenied) as refused:
            await gate.require("payments.transfer", PAYMENT)
    assert refused.value.reason_code == "AGENT_UNKNOWN"
    assert api.service.jobs == {}


async def test_a_foreign_runner_token_is_refused(api: Api) -> None:
    job_id, _token = await api.start_job()
    async with Gate.with_runner_token(api.url, job_id=job_id, runner_token="a.b.c") as gate:
        with pytest.raises(TokenRefused) as refused:
            await gate.require("payments.transfer", PAYMENT)
    assert refused.value.reason_code.startswith("TOKEN_")
    assert "a.b.c" not in repr(gate)


async def test_parameters_without_a_json_form_are_refused_before_sending(
    api: Api, gate: Gate
) -> None:
    with pytest.raises(InvalidCall) as refused:
        await gate.require("payments.transfer", {"to": {"DE89"}})
    assert refused.value.reason_code == "PARAMS_NOT_JSON"
    assert "submit" not in api.service.calls


class FlakyStatus(FakeAgentService):
    """The store is briefly unavailable for status polls (503, retried)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def request_status(self, **kw: Any) -> RequestStatus:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("STORE_UNAVAILABLE", "database restarting")
        return await super().request_status(**kw)


async def test_polls_are_retried_through_a_brief_outage() -> None:
    async with running_api(FlakyStatus(failures=3)) as api, quick_gate(api.url) as gate:
        person = when_pending(api.service, api.service.approve)
        approval = await gate.require("payments.transfer", PAYMENT, timeout=10)
        await person
        assert approval.outcome == "approved"
        assert api.service.failures == 0  # type: ignore[attr-defined]


async def test_an_outage_longer_than_the_wait_fails_closed() -> None:
    async with running_api(FlakyStatus(failures=10**6)) as api, quick_gate(api.url) as gate:
        with pytest.raises(ApprovalTimeout):
            await gate.require("payments.transfer", PAYMENT, timeout=0.5)


async def test_an_unreachable_keyturn_is_service_unavailable() -> None:
    server = TestServer(web.Application())
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    await server.close()  # nothing listens there any more
    async with quick_gate(url, request_timeout=0.2) as gate:
        with pytest.raises(ServiceUnavailable):
            await gate.require("payments.transfer", PAYMENT, timeout=0.5)


async def test_a_submission_is_not_repeated_after_the_connection_drops(api: Api) -> None:
    job_id, token = await api.start_job()
    seen: list[str] = []

    async def drop(request: web.Request) -> web.Response:
        seen.append(request.path)
        assert request.transport is not None
        request.transport.close()  # mid-request: was it recorded? the client cannot know
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/requests", drop)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        async with Gate.with_runner_token(
            url, job_id=job_id, runner_token=token, request_timeout=2.0
        ) as gate:
            with pytest.raises(ServiceUnavailable) as lost:
                await gate.require("payments.transfer", PAYMENT, timeout=5)
    assert lost.value.reason_code == "CONNECTION_LOST"
    assert seen == ["/v1/requests"]


class SwappingService(FakeAgentService):
    """A broken (or hostile) middle that answers about another payload."""

    async def submit(self, **kw: Any) -> Submitted:
        kw["params"] = {**kw["params"], "to_account": "attacker"}
        return await super().submit(**kw)


async def test_an_answer_about_other_parameters_is_refused() -> None:
    async with running_api(SwappingService()) as api, quick_gate(api.url) as gate:
        with pytest.raises(GateRefused) as refused:
            await gate.require("payments.transfer", SMALL_PAYMENT)
    assert refused.value.reason_code == "PAYLOAD_HASH_MISMATCH"


def _approval(grant: Mapping[str, Any]) -> Approval:
    return Approval.from_grant(grant, "job.token.x")


async def test_an_approval_rebuilt_from_a_grant_reads_its_binding() -> None:
    grant = {"payload": {"tool_route": "r.x", "payload_hash_b64u": "abc", "request_id": "r-1"}}
    approval = _approval(grant)
    assert (approval.tool_route, approval.payload_hash_b64u, approval.request_id) == (
        "r.x",
        "abc",
        "r-1",
    )
    with pytest.raises(GateRefused):
        _approval({"payload": "nope"})


async def test_concurrent_requires_share_one_job(api: Api, gate: Gate) -> None:
    results = await asyncio.gather(
        gate.require("payments.transfer", SMALL_PAYMENT),
        gate.require("storage.export", {"dataset": "sales"}),
    )
    assert [r.outcome for r in results] == ["allowed", "allowed"]
    assert len(api.service.jobs) == 1
