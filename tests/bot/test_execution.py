"""Break-glass through an executor, end to end: the real service (SQLite, real keys) and
the Entra PIM executor against the local Graph stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.executors.entra_pim import EntraRoleAssignExecutor
from bot import demo
from bot.bootstrap import App, build
from bot.service.execution import Executions, install
from bot.service.runtime import Event
from core.errors import ApprovalRefusedError, GateDeniedError, StoreError
from core.executor import Action, ExecutionState, ExecutorRegistry, RetryPolicy, StepResult
from core.quorum import Verdict
from core.receipts import ReceiptKind, verify_receipt
from tests.adapters import graph_standin as g
from tests.adapters.executors.pim_standin import PRA, PimStandIn
from tests.bot.test_service_e2e import MovableClock, person

pytestmark = pytest.mark.asyncio
TENANT = "00000000-0000-4000-8000-0000000000aa"
ALICE_OID = "a1a1a1a1-0000-4000-8000-0000000000a1"
PARAMS = {
    "tenant_id": TENANT,
    "principal": "alice@corp.example",
    "role": "Privileged Role Administrator",
}
S = ExecutionState
OPEN: list[EntraRoleAssignExecutor] = []


@dataclass
class World:
    app: App
    graph: PimStandIn
    executions: Executions
    alerts: list[Event]
    slept: list[float]

    @property
    def kt(self) -> Any:
        return self.app.service


def _executions(
    app: App, graph: PimStandIn, slept: list[float], roles: dict[str, str]
) -> Executions:
    registry = ExecutorRegistry.from_config(
        {"entra.role.assign": {"kind": "entra.role.assign", "roles": roles}}
    )
    executor = EntraRoleAssignExecutor(
        g.settings(graph, tenant_id=TENANT),
        roles=roles,
        clock=app.service.rt.clock,
        http_client=graph.http_client(),
        timer=g.FakeTimer(),
    )

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    OPEN.append(executor)
    return Executions(
        app.service,
        registry,
        {"entra.role.assign": executor},
        retry=RetryPolicy(max_attempts=3, first_delay_seconds=0.5),
        sleep=sleep,
    )


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    from datetime import UTC, datetime

    settings = demo.demo_settings(tmp_path / "data")
    app = await build(
        settings, create_key=True, clock=MovableClock(datetime.now(UTC).replace(microsecond=0))
    )
    async with PimStandIn(tenant_id=TENANT, client_id=g.CLIENT, client_secret=g.SECRET) as graph:
        graph.add_user(ALICE_OID, "Alice", mail="alice@corp.example", upn="alice@corp.example")
        slept: list[float] = []
        executions = _executions(app, graph, slept, {"Privileged Role Administrator": PRA})
        install(app.service, executions)
        alerts: list[Event] = []

        async def listen(event: Event) -> None:
            if event.kind == "executor_alert":
                alerts.append(event)

        app.service.rt.hub.subscribe(listen)
        try:
            yield World(app, graph, executions, alerts, slept)
        finally:
            while OPEN:
                await OPEN.pop().close()
            await app.close()


async def approved_window(w: World) -> str:
    bg = await w.kt.request_breakglass(
        person("alice"),
        route="entra.role.assign",
        params=PARAMS,
        duration_seconds=600,
        reason="INC-4411 mailbox compromise",
        ticket="INC-4411",
    )
    for who in ("bob", "carol"):
        await w.kt.decide(
            bg.request_id,
            person(who),
            Verdict.APPROVE,
            platform="t",
            typed_confirmation=bg.payload_hash_b64u[-4:],
        )
    return str(bg.request_id)


async def step_receipts(w: World, request_id: str) -> list[dict[str, Any]]:
    """The executor_step receipts of the request, from the signed log, in order."""
    found = []
    async with w.kt.rt.store.unit_of_work(read_only=True) as uow:
        for index in await uow.jobs.receipt_indexes(request_id):
            envelope = json.loads((await uow.log.entries(index, index + 1))[0])
            receipt = verify_receipt(envelope, trusted_signers={w.kt.rt.signer.did})
            if receipt.kind is ReceiptKind.EXECUTOR_STEP:
                found.append(dict(receipt.details))
    return found


async def test_assign_verify_window_ends_removed_and_verified_gone(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    status = await w.executions.execute_breakglass(request_id, person("alice"))
    assert status.state is S.VERIFIED
    assert [r["action"] for r in w.graph.role_requests] == ["adminAssign"]
    assert len(w.graph.role_instances) == 1
    w.kt.rt.clock.advance(601)
    assert await w.kt.run_due() >= 1
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    assert [r["action"] for r in w.graph.role_requests] == ["adminAssign", "adminRemove"]
    assert w.graph.role_instances == [] and w.alerts == []
    steps = await step_receipts(w, request_id)
    assert [(s["step"], s["outcome"]) for s in steps] == [
        ("execute", "ok"),
        ("verify", "ok"),
        ("rollback", "ok"),
        ("verify_rollback", "ok"),
    ]
    # The sealed bundle of a window whose action passed the gate verifies offline.
    from core.bundle_verify import verify_bundle

    bundle = await w.kt.bundle(request_id)
    report = verify_bundle(
        bundle, trusted_keyturn_dids={w.kt.rt.signer.did}, now=w.kt.rt.clock.now()
    )
    assert report.outcome == "expired"


async def test_the_kill_switch_mid_window_removes_the_role_at_once(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.kt.rt.clock.advance(120)
    await w.kt.revoke_breakglass(request_id, person("carol"), reason="kill switch")
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    assert w.graph.role_instances == []
    assert (await w.kt.view(request_id)).request.state.value == "revoked"


async def test_a_graph_5xx_on_rollback_is_retried_then_succeeds(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.graph.script("roleRequests", g.graph_error(500, "InternalServerError"))
    await w.kt.revoke_breakglass(request_id, person("carol"))
    status = await w.executions.status(request_id)
    assert status.state is S.ROLLED_BACK and w.graph.role_instances == []
    assert w.slept == [0.5] and w.alerts == []
    rollback = [s for s in await step_receipts(w, request_id) if s["step"] == "rollback"]
    assert rollback[0]["attempts"] == 2


async def test_a_rollback_that_never_succeeds_is_rollback_failed_and_pages_until_resolved(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.graph.script("roleRequests", *[g.graph_error(503, "ServiceUnavailable")] * 40)
    await w.kt.revoke_breakglass(request_id, person("carol"))
    status = await w.executions.status(request_id)
    assert status.state is S.ROLLBACK_FAILED
    assert len(w.graph.role_instances) == 1  # still there: that is what the alert is about
    assert [a.data["state"] for a in w.alerts] == ["rollback_failed"]
    assert w.alerts[0].request_id == request_id
    with pytest.raises(ApprovalRefusedError) as own:
        await w.executions.resolve(request_id, person("alice"), note="removed it myself")
    assert own.value.reason_code == "NOT_ALLOWED_TO_RESOLVE"
    resolved = await w.executions.resolve(
        request_id, person("carol"), note="removed by hand in the portal"
    )
    assert resolved.state is S.RESOLVED
    with pytest.raises(ApprovalRefusedError) as again:
        await w.executions.resolve(request_id, person("carol"), note="twice")
    assert again.value.reason_code == "NOTHING_TO_RESOLVE"


async def test_a_target_the_executor_may_not_touch_is_refused_before_any_call(
    world: World,
) -> None:
    w = world
    narrow = _executions(w.app, w.graph, w.slept, {"Helpdesk Administrator": PRA})
    request_id = await approved_window(w)
    w.graph.calls.clear()
    with pytest.raises(GateDeniedError) as e:
        await narrow.execute_breakglass(request_id, person("alice"))
    assert e.value.reason_code == "TARGET_NOT_ALLOWED"
    assert w.graph.calls == [] and w.graph.role_requests == []
    # Nothing was consumed: the configured executor can still run the approved action.
    assert (await w.executions.execute_breakglass(request_id, person("alice"))).state is S.VERIFIED


async def test_replaying_the_same_grant_is_refused_by_the_gate(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    with pytest.raises(GateDeniedError) as e:
        await w.executions.execute_breakglass(request_id, person("alice"))
    assert e.value.reason_code == "GRANT_ALREADY_USED"
    assert [r["action"] for r in w.graph.role_requests] == ["adminAssign"]


async def test_only_the_requester_can_have_their_window_executed(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    with pytest.raises(ApprovalRefusedError) as e:
        await w.executions.execute_breakglass(request_id, person("bob"))
    assert e.value.reason_code == "NOT_REQUESTER"
    assert w.graph.role_requests == []


async def test_a_kill_switch_pulled_while_the_call_is_in_flight_still_rolls_back(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    inner = w.executions._executors["entra.role.assign"]

    class PulledMidway:
        """Delegates to the real executor; the kill switch is pulled during execute."""

        kind = inner.kind

        def check_target(self, action: Action) -> None:
            inner.check_target(action)

        async def execute(self, action: Action) -> StepResult:
            result = await inner.execute(action)
            await w.kt.revoke_breakglass(request_id, person("carol"), reason="kill switch")
            return result

        async def verify(self, action: Action) -> StepResult:
            return await inner.verify(action)

        async def rollback(self, action: Action) -> StepResult:
            return await inner.rollback(action)

        async def verify_rollback(self, action: Action) -> StepResult:
            return await inner.verify_rollback(action)

    racing = Executions(
        w.kt,
        ExecutorRegistry.from_config(
            {"entra.role.assign": {"kind": "entra.role.assign", "roles": {}}}
        ),
        {"entra.role.assign": PulledMidway()},
    )
    install(w.kt, racing)
    status = await racing.execute_breakglass(request_id, person("alice"))
    assert status.state is S.ROLLED_BACK
    assert [r["action"] for r in w.graph.role_requests] == ["adminAssign", "adminRemove"]
    assert w.graph.role_instances == []


async def test_a_failed_verification_pages_and_the_window_end_still_rolls_back(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    w.graph.script("roleInstances", *[g.Reply(200, {"value": []})] * 3)
    status = await w.executions.execute_breakglass(request_id, person("alice"))
    assert status.state is S.VERIFY_FAILED
    assert [a.data["state"] for a in w.alerts] == ["verify_failed"]
    assert w.slept == [0.5, 1.0]  # retried with backoff: a fresh assignment can lag
    w.kt.rt.clock.advance(601)
    await w.kt.run_due()
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    assert w.graph.role_instances == []


def _delegating(inner: Any, *, after_execute: Any) -> Any:
    """The real executor, with ``after_execute()`` run once its execute call returned."""

    class Delegating:
        kind = inner.kind

        def check_target(self, action: Action) -> None:
            inner.check_target(action)

        async def execute(self, action: Action) -> StepResult:
            result = await inner.execute(action)
            await after_execute()
            return result

        async def verify(self, action: Action) -> StepResult:
            return await inner.verify(action)

        async def rollback(self, action: Action) -> StepResult:
            return await inner.rollback(action)

        async def verify_rollback(self, action: Action) -> StepResult:
            return await inner.verify_rollback(action)

    return Delegating()


async def test_a_store_failure_after_the_call_landed_is_not_receipted_as_never_sent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The role was assigned, then the database blinked while receipting it: keyturn must
    not record "refused before anything was sent" (which skips the rollback) — the
    outcome is unknown, it is paged, and the window's end removes the role."""
    w = world
    request_id = await approved_window(w)
    store = w.kt.rt.store
    real = store.unit_of_work
    armed = {"now": False}

    def unit_of_work(*, read_only: bool = False) -> Any:
        if armed["now"] and not read_only:
            armed["now"] = False
            raise StoreError("STORE_UNAVAILABLE", "the database went away")
        return real(read_only=read_only)

    async def database_blinks() -> None:
        armed["now"] = True

    monkeypatch.setattr(store, "unit_of_work", unit_of_work)
    inner = w.executions._executors["entra.role.assign"]
    blinking = Executions(
        w.kt,
        ExecutorRegistry.from_config(
            {"entra.role.assign": {"kind": "entra.role.assign", "roles": {}}}
        ),
        {"entra.role.assign": _delegating(inner, after_execute=database_blinks)},
        retry=RetryPolicy(max_attempts=1),
    )
    install(w.kt, blinking)
    status = await blinking.run_approved(request_id)
    assert len(w.graph.role_instances) == 1  # it landed
    assert status is not None and status.state is S.EXECUTE_FAILED
    assert status.reference.get("sent") != "no"
    assert [a.data["state"] for a in w.alerts] == ["execute_failed"]
    w.kt.rt.clock.advance(601)
    await w.kt.run_due()
    assert (await blinking.status(request_id)).state is S.ROLLED_BACK
    assert w.graph.role_instances == []


async def test_resolving_a_failed_verification_cannot_cancel_the_window_end_rollback(
    world: World,
) -> None:
    """A verify_failed role may well be assigned (permanently, even). An approver who
    'resolves' it mid-window must not turn the window's end into a no-op: the resolve is
    refused until the rollback has been tried, and the window's end removes the role."""
    w = world
    request_id = await approved_window(w)
    w.graph.script("roleInstances", *[g.Reply(200, {"value": []})] * 3)
    status = await w.executions.execute_breakglass(request_id, person("alice"))
    assert status.state is S.VERIFY_FAILED and len(w.graph.role_instances) == 1
    with pytest.raises(ApprovalRefusedError) as early:
        await w.executions.resolve(request_id, person("carol"), note="looks fine to me")
    assert early.value.reason_code == "ROLLBACK_PENDING"
    assert (await w.executions.status(request_id)).state is S.VERIFY_FAILED  # nothing saved
    w.kt.rt.clock.advance(601)
    await w.kt.run_due()
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    assert w.graph.role_instances == []


async def test_the_kill_switch_pulled_during_a_retry_backoff_stops_the_retries(
    world: World,
) -> None:
    """The first assign got a 500; while keyturn waits to try again, an approver pulls the
    kill switch. keyturn must not assign the role after that (and then remove it): the
    retries stop, and the window's rollback still runs."""
    w = world
    request_id = await approved_window(w)
    w.graph.script("roleRequests", g.graph_error(500, "InternalServerError"))

    async def kill_switch_during_backoff(seconds: float) -> None:
        await w.kt.revoke_breakglass(request_id, person("carol"), reason="kill switch")

    pulled = Executions(
        w.kt,
        ExecutorRegistry.from_config(
            {"entra.role.assign": {"kind": "entra.role.assign", "roles": {}}}
        ),
        {"entra.role.assign": w.executions._executors["entra.role.assign"]},
        retry=RetryPolicy(max_attempts=3, first_delay_seconds=0.5),
        sleep=kill_switch_during_backoff,
    )
    install(w.kt, pulled)
    status = await pulled.execute_breakglass(request_id, person("alice"))
    assert "adminAssign" not in [r["action"] for r in w.graph.role_requests]
    assert w.graph.role_instances == []
    assert status.state is S.ROLLED_BACK
