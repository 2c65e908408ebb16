"""@gated: the function runs once, only after approval and a passed gate check, with
exactly the approved arguments — and never otherwise."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.agents.sdk import (
    ApprovalDenied,
    ApprovalTimeout,
    Gate,
    GateRefused,
    InvalidCall,
    PolicyDenied,
    gated,
)
from tests.adapters.agents.conftest import when_pending
from tests.adapters.http.harness import Api

pytestmark = pytest.mark.asyncio

ACCOUNT = "DE89370400440532013000"


class Bank:
    """The tool behind the route: records what actually ran."""

    def __init__(self, gate: Gate, *, mail_timeout: float = 5.0) -> None:
        self.runs: list[dict[str, Any]] = []
        self.received: list[Any] = []

        @gated("payments.transfer", gate=gate, exclude=("client",))
        async def transfer(
            amount_usd: int,
            to_account: str,
            memo: str = "",
            client: object = None,
        ) -> str:
            self.runs.append({"amount_usd": amount_usd, "to_account": to_account, "memo": memo})
            self.received.append(client)
            return f"sent {amount_usd}"

        @gated("m365.graph.sendMail", gate=gate, timeout=mail_timeout)
        async def send_mail(message: dict[str, Any]) -> None:
            self.received.append(message)
            self.runs.append(message)

        self.transfer = transfer
        self.send_mail = send_mail


async def test_the_function_runs_once_after_approval_and_the_gate(api: Api, gate: Gate) -> None:
    bank = Bank(gate)
    person = when_pending(api.service, api.service.approve)
    assert await bank.transfer(12_500, ACCOUNT) == "sent 12500"
    await person
    assert bank.runs == [{"amount_usd": 12_500, "to_account": ACCOUNT, "memo": ""}]
    (entry,) = api.service.requests.values()
    assert dict(entry.request.params) == {"amount_usd": 12_500, "to_account": ACCOUNT, "memo": ""}
    assert len(api.service.ledger.used) == 1


async def test_a_call_with_changed_arguments_needs_its_own_approval(api: Api, gate: Gate) -> None:
    bank = Bank(gate)
    person = when_pending(api.service, api.service.approve)
    await bank.transfer(12_500, ACCOUNT)
    await person
    person = when_pending(api.service, api.service.deny)
    with pytest.raises(ApprovalDenied):
        await bank.transfer(12_500, "GB33BUKB20201555555555")
    await person
    assert len(bank.runs) == 1
    assert len(api.service.requests) == 2


async def test_arguments_changed_while_waiting_are_refused_before_running(
    api: Api, gate: Gate
) -> None:
    bank = Bank(gate)
    message = {"toRecipients": [{"emailAddress": {"address": "cfo@partner.example"}}]}

    def swap_recipient_then_approve(request_id: str) -> None:
        message["toRecipients"][0]["emailAddress"]["address"] = "attacker@evil.example"
        api.service.approve(request_id)

    person = when_pending(api.service, swap_recipient_then_approve)
    with pytest.raises(GateRefused) as refused:
        await bank.send_mail({"message": message})
    await person
    assert refused.value.reason_code == "PAYLOAD_HASH_MISMATCH"
    assert bank.runs == []
    assert api.service.ledger.used == {}  # the grant was not spent on the changed call
    assert "gate_check" in api.service.calls  # the attempt reached the gate's record


async def test_the_function_gets_private_copies_of_the_approved_arguments(
    api: Api, gate: Gate
) -> None:
    bank = Bank(gate)
    message = {"toRecipients": [{"emailAddress": {"address": "cfo@partner.example"}}]}
    client = object()
    person = when_pending(api.service, api.service.approve)
    await bank.send_mail({"message": message})
    await person
    (received,) = bank.received
    assert received == {"message": message} and received["message"] is not message
    bank.received.clear()
    await bank.transfer(20, ACCOUNT, client=client)  # ungated: admitted at once
    assert bank.received == [client]  # excluded arguments pass through as they are


async def test_an_ungated_call_runs_after_admission_without_a_request(api: Api, gate: Gate) -> None:
    bank = Bank(gate)
    assert await bank.transfer(20, ACCOUNT, memo="coffee") == "sent 20"
    assert api.service.requests == {}
    assert api.service.calls.count("admit") == 1


async def test_no_decision_in_time_fails_closed(api: Api, gate: Gate) -> None:
    bank = Bank(gate, mail_timeout=0.3)
    with pytest.raises(ApprovalTimeout):
        await bank.send_mail(
            {"message": {"toRecipients": [{"emailAddress": {"address": "x@y.z"}}]}}
        )
    assert bank.runs == []


async def test_a_denial_by_policy_never_runs_the_function(api: Api, gate: Gate) -> None:
    ran = []

    @gated("shell.exec", gate=gate)
    async def run_shell(cmd: str) -> None:
        ran.append(cmd)

    with pytest.raises(PolicyDenied):
        await run_shell("id")
    assert ran == []


async def test_arguments_without_a_json_form_are_refused_before_asking(
    api: Api, gate: Gate
) -> None:
    bank = Bank(gate)
    with pytest.raises(InvalidCall) as refused:
        await bank.transfer(12_500, {ACCOUNT})  # type: ignore[arg-type]
    assert refused.value.reason_code == "PARAMS_NOT_JSON"
    assert "submit" not in api.service.calls
    assert bank.runs == []


async def test_the_gate_can_be_looked_up_at_call_time(api: Api, gate: Gate) -> None:
    current: dict[str, Gate] = {}

    @gated("storage.export", gate=lambda: current["gate"])
    async def export(dataset: str) -> str:
        return dataset

    current["gate"] = gate
    assert await export("sales") == "sales"


async def test_only_async_functions_with_known_argument_names_can_be_gated(gate: Gate) -> None:
    with pytest.raises(TypeError):

        @gated("payments.transfer", gate=gate)
        def sync_transfer(amount_usd: int) -> None:  # type: ignore[type-var]
            return None

    with pytest.raises(TypeError):

        @gated("payments.transfer", gate=gate, exclude=("sesion",))
        async def transfer(amount_usd: int, session: object) -> None:
            return None


async def test_concurrent_calls_are_approved_and_run_separately(api: Api, gate: Gate) -> None:
    bank = Bank(gate)

    async def approve_all() -> None:
        for _ in range(2):
            request_id = await api.service.next_pending()
            api.service.approve(request_id)

    person = asyncio.create_task(approve_all())
    await asyncio.gather(bank.transfer(600, ACCOUNT), bank.transfer(700, ACCOUNT))
    await person
    assert sorted(run["amount_usd"] for run in bank.runs) == [600, 700]
    assert len(api.service.ledger.used) == 2


async def test_a_plan_fingerprint_argument_is_bound_into_the_approval(api: Api, gate: Gate) -> None:
    plan = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"
    applied = []

    @gated("payments.transfer", gate=gate, plan_hash_arg="plan")
    async def transfer(amount_usd: int, to_account: str, plan: str) -> None:
        applied.append(plan)

    person = when_pending(api.service, api.service.approve)
    await transfer(12_500, ACCOUNT, plan)
    await person
    (entry,) = api.service.requests.values()
    assert entry.request.binding.plan_hash == plan
    assert entry.grant is not None and entry.grant.plan_hash == plan
    assert applied == [plan]
