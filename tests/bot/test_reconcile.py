"""PIM for Groups through the real service, and reconciliation, end to end.

The real service (SQLite, real keys, the demo policy plus a break-glass rule for
``entra.group.add``), both Entra PIM executors against the local Graph stand-in, whose
clock is the service's: Entra ends an assignment at its expiration whether or not
keyturn is running.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError

from adapters.executors.entra_group import EntraGroupAddExecutor
from adapters.executors.entra_pim import EntraRoleAssignExecutor
from adapters.signer import FileSigner
from bot import demo
from bot.bootstrap import App, build
from bot.service.execution import Executions, install
from bot.service.reconcile import Reconciler, ReconcileSettings
from bot.service.runtime import Event
from core.errors import ConfigError, GateDeniedError
from core.executor import Action, ExecutionState, ExecutorRegistry, RetryPolicy, StepResult
from core.feed import feed_line
from core.policy.wpc import sign_wpc
from core.quorum import Verdict
from core.receipts import ReceiptKind, receipt_from_payload
from tests.adapters import graph_standin as g
from tests.adapters.executors.pim_standin import EXECUTOR_ROLES, PRA, PimStandIn
from tests.bot.test_execution import step_receipts
from tests.bot.test_service_e2e import MovableClock, person

pytestmark = pytest.mark.asyncio
TENANT = "00000000-0000-4000-8000-0000000000aa"
ALICE_OID = "a1a1a1a1-0000-4000-8000-0000000000a1"
MALLORY_OID = "a1a1a1a1-0000-4000-8000-0000000000ff"
EMERGENCY_OID = "a1a1a1a1-0000-4000-8000-0000000000e1"
CA_EXCLUSION = "90000000-0000-4000-8000-0000000000c1"
GROUP = "CA-Exclusion-Breakglass"
PARAMS = {"tenant_id": TENANT, "principal": "user:alice@corp.example", "group": GROUP}
S = ExecutionState
GROUP_RULE: dict[str, Any] = {
    "id": "breakglass-group-add",
    "description": "temporary group membership for a named principal",
    "routes": ["entra.group.add"],
    "effect": "gate",
    "approval": "breakglass_step_up",
    "constraints": [
        {"param": "tenant_id", "eq": TENANT},
        {
            "param": "principal",
            "in": ["user:alice@corp.example", "alice@corp.example"],
            "ignore_case": True,
        },
        {"param": "group", "in": [GROUP]},
    ],
    "breakglass": {
        "max_duration_seconds": 1800,
        "token_ttl_seconds": 1800,
        "renewable_without_reapproval": False,
        "rollback_steps": ["Remove the group membership"],
        "kill_switch_triggers": ["timebox_expired", "manual_revoke"],
        "kill_switch_actions": ["revoke_cst", "halt_job"],
        "executor": "entra.group.add",
    },
}


def settings_with_group_rule(data_dir: Path) -> Any:
    """The demo's settings, its signed policy holding one more break-glass rule."""
    files = demo.prepare(data_dir)
    issuer = FileSigner.load(files.issuer_key)
    payload = json.loads(demo.asset_text("demo-policy.json"))
    payload["issuer_did"] = issuer.did
    payload["rules"].append(GROUP_RULE)
    envelope = sign_wpc(payload, issuer, issued_at=datetime.now(UTC))
    files.policy.write_text(json.dumps(envelope), encoding="utf-8")
    return demo.demo_settings(data_dir)


@dataclass
class World:
    app: App
    graph: PimStandIn
    executions: Executions
    executors: dict[str, Any]
    alerts: list[Event]
    receipts: list[Event]
    slept: list[float]

    @property
    def kt(self) -> Any:
        return self.app.service

    @property
    def clock(self) -> MovableClock:
        clock: MovableClock = self.kt.rt.clock
        return clock

    def reconciler(self, **settings: Any) -> Reconciler:
        values: dict[str, Any] = {"grace_seconds": 60, "retry_failed_every_seconds": 300}
        values.update(settings)
        return Reconciler.build(
            self.kt, self.executions, self.executors, ReconcileSettings(**values)
        )

    def feed(self) -> list[str]:
        lines = []
        for event in self.receipts:
            receipt = receipt_from_payload(event.data["envelope"]["payload"])
            lines.append(feed_line(event.data["index"], receipt))
        return lines


OPEN: list[Any] = []


def group_executor(app: App, graph: PimStandIn, **options: Any) -> EntraGroupAddExecutor:
    values: dict[str, Any] = {"groups": {GROUP: CA_EXCLUSION}}
    values.update(options)
    ex = EntraGroupAddExecutor(
        g.settings(graph, tenant_id=TENANT),
        clock=app.service.rt.clock,
        http_client=graph.http_client(),
        timer=g.FakeTimer(),
        **values,
    )
    OPEN.append(ex)
    return ex


def executions_for(app: App, executors: dict[str, Any], slept: list[float]) -> Executions:
    registry = ExecutorRegistry.from_config(
        {
            "entra.group.add": {"kind": "entra.group.add", "groups": {GROUP: CA_EXCLUSION}},
            "entra.role.assign": {"kind": "entra.role.assign", "roles": {"PRA": PRA}},
        }
    )

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Executions(
        app.service,
        registry,
        executors,
        retry=RetryPolicy(max_attempts=3, first_delay_seconds=0.5),
        sleep=sleep,
    )


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = settings_with_group_rule(tmp_path / "data")
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
    app = await build(settings, create_key=True, clock=clock)
    async with PimStandIn(
        tenant_id=TENANT, client_id=g.CLIENT, client_secret=g.SECRET, roles=EXECUTOR_ROLES
    ) as graph:
        graph.now = clock.now
        graph.add_user(ALICE_OID, "Alice", mail="alice@corp.example", upn="alice@corp.example")
        graph.add_user(MALLORY_OID, "Mallory", mail="mallory@corp.example")
        graph.add_user(EMERGENCY_OID, "Emergency", mail="emergency@corp.example")
        graph.add_group(CA_EXCLUSION, GROUP)
        role = EntraRoleAssignExecutor(
            g.settings(graph, tenant_id=TENANT),
            roles={"PRA": PRA},
            clock=clock,
            http_client=graph.http_client(),
            timer=g.FakeTimer(),
        )
        OPEN.append(role)
        executors = {"entra.group.add": group_executor(app, graph), "entra.role.assign": role}
        slept: list[float] = []
        executions = executions_for(app, executors, slept)
        install(app.service, executions)
        alerts: list[Event] = []
        receipts: list[Event] = []

        async def listen(event: Event) -> None:
            if event.kind == "executor_alert":
                alerts.append(event)
            elif event.kind == "receipt":
                receipts.append(event)

        app.service.rt.hub.subscribe(listen)
        try:
            yield World(app, graph, executions, executors, alerts, receipts, slept)
        finally:
            while OPEN:
                await OPEN.pop().close()
            await app.close()


async def approved_window(w: World, params: dict[str, str] | None = None) -> str:
    bg = await w.kt.request_breakglass(
        person("alice"),
        route="entra.group.add",
        params=params or PARAMS,
        duration_seconds=600,
        reason="INC-4411 sign-in blocked by CA",
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


def actions(w: World) -> list[str]:
    return [r["action"] for r in w.graph.pim_requests]


# -- entra.group.add through the service ------------------------------------------------


async def test_group_add_verify_window_ends_removed_and_verified_gone(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    status = await w.executions.execute_breakglass(request_id, person("alice"))
    assert status.state is S.VERIFIED
    assert actions(w) == ["adminAssign"]
    [member] = w.graph.pim
    assert (member["groupId"], member["principalId"], member["accessId"]) == (
        CA_EXCLUSION,
        ALICE_OID,
        "member",
    )
    w.clock.advance(601)
    assert await w.kt.run_due() >= 1
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    assert w.graph.pim == [] and w.alerts == []
    steps = await step_receipts(w, request_id)
    assert [(s["step"], s["outcome"]) for s in steps] == [
        ("execute", "ok"),
        ("verify", "ok"),
        ("rollback", "ok"),
        ("verify_rollback", "ok"),
    ]
    assert steps[0]["reference"]["group_id"] == CA_EXCLUSION


async def test_the_kill_switch_mid_window_removes_the_membership_at_once(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.clock.advance(120)
    await w.kt.revoke_breakglass(request_id, person("carol"), reason="kill switch")
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    assert actions(w) == ["adminAssign", "adminRemove"] and w.graph.pim == []
    assert (await w.kt.view(request_id)).request.state.value == "revoked"


async def test_a_graph_5xx_on_rollback_is_retried_then_succeeds(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.graph.script("pimRequests", g.graph_error(500, "InternalServerError"))
    await w.kt.revoke_breakglass(request_id, person("carol"))
    status = await w.executions.status(request_id)
    assert status.state is S.ROLLED_BACK and w.graph.pim == []
    assert w.slept == [0.5] and w.alerts == []
    rollback = [s for s in await step_receipts(w, request_id) if s["step"] == "rollback"]
    assert rollback[0]["attempts"] == 2


async def test_a_rollback_that_never_succeeds_is_rollback_failed_and_loud_in_the_feed(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.graph.script("pimRequests", *[g.graph_error(503, "ServiceUnavailable")] * 40)
    await w.kt.revoke_breakglass(request_id, person("carol"))
    assert (await w.executions.status(request_id)).state is S.ROLLBACK_FAILED
    assert len(w.graph.pim) == 1  # still a member: that is what the alert is about
    assert [a.data["state"] for a in w.alerts] == ["rollback_failed"]
    loud = [line for line in w.feed() if "!! NEEDS A PERSON" in line]
    assert len(loud) == 1 and "rollback ✗ FAILED" in loud[0] and "503" in loud[0]
    assert "state rollback_failed" in loud[0]


async def test_a_target_outside_the_executors_constraints_is_refused_before_any_call(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    other_group = group_executor(w.app, w.graph, groups={"Some-Other-Group": CA_EXCLUSION})
    other_people = group_executor(w.app, w.graph, principals=["bob@corp.example"])
    w.graph.calls.clear()
    for executor in (other_group, other_people):
        narrow = executions_for(w.app, {**w.executors, "entra.group.add": executor}, w.slept)
        with pytest.raises(GateDeniedError) as e:
            await narrow.execute_breakglass(request_id, person("alice"))
        assert e.value.reason_code == "TARGET_NOT_ALLOWED"
    assert w.graph.calls == [] and w.graph.pim_requests == []
    # Nothing was consumed: the configured executor can still run the approved action.
    assert (await w.executions.execute_breakglass(request_id, person("alice"))).state is S.VERIFIED


async def test_a_group_the_policy_does_not_allow_is_refused_by_the_policy_first(
    world: World,
) -> None:
    w = world
    from core.errors import PolicyError

    with pytest.raises(PolicyError) as e:
        await approved_window(w, {**PARAMS, "group": "Domain Admins"})
    assert e.value.reason_code == "CONSTRAINT_VIOLATED"
    assert w.graph.calls == []


# -- reconciliation ------------------------------------------------------------------


async def test_entra_expires_a_grant_while_keyturn_is_down_and_reconciliation_settles_it(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    # keyturn is down from here: no scheduler, no window close. Entra still ends it.
    w.clock.advance(601)
    w.graph.expire()  # what Entra does at the expiration, with or without keyturn
    assert w.graph.pim == []
    reconciler = w.reconciler()
    # Within the grace period the window's own close is left to act.
    report = await reconciler.run_once(w.clock.now())
    assert report.acted and report.rolled_back == {}
    w.clock.advance(60)
    report = await reconciler.run_once(w.clock.now())
    assert report.rolled_back == {request_id: "rolled_back"} and report.errors == ()
    steps = await step_receipts(w, request_id)
    assert [s["step"] for s in steps][-2:] == ["rollback", "verify_rollback"]
    assert "nothing left to remove" in steps[-2]["detail"]
    # Finished executions are left alone afterwards; the scheduler's late close is a no-op.
    assert (await reconciler.run_once(w.clock.now())).rolled_back == {}
    await w.kt.run_due()
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    assert actions(w) == ["adminAssign", "adminRemove"]


async def test_reconciliation_removes_an_expired_grant_entra_still_shows(world: World) -> None:
    w = world
    w.graph.now = None  # Entra's expiry has not run yet (it is not instantaneous)
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.clock.advance(601 + 60)
    report = await w.reconciler().run_once(w.clock.now())
    assert report.rolled_back == {request_id: "rolled_back"}
    assert actions(w) == ["adminAssign", "adminRemove"] and w.graph.pim == []


async def test_reconciliation_reports_a_holder_keyturn_did_not_grant(world: World) -> None:
    w = world
    w.graph.add_pim(CA_EXCLUSION, MALLORY_OID, assignment_type="Assigned")  # no end
    w.graph.add_pim(CA_EXCLUSION, EMERGENCY_OID, access="owner", assignment_type="Assigned")
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    reconciler = w.reconciler(
        watch_groups=[CA_EXCLUSION.upper()],
        standing_holders={CA_EXCLUSION: [EMERGENCY_OID]},
    )
    report = await reconciler.run_once(w.clock.now())
    # Alice holds it through keyturn (window open), the emergency account is standing.
    assert [(f.executor, f.assignment.principal_id) for f in report.findings] == [
        ("entra.group.add", MALLORY_OID)
    ]
    findings = [
        receipt_from_payload(e.data["envelope"]["payload"])
        for e in w.receipts
        if e.data["envelope"]["payload"]["kind"] == "reconcile_finding"
    ]
    assert len(findings) == 1 and findings[0].kind is ReceiptKind.RECONCILE_FINDING
    assert findings[0].details["principal_id"] == MALLORY_OID
    assert findings[0].details["target_id"] == CA_EXCLUSION
    loud = [line for line in w.feed() if "RECONCILE" in line]
    assert len(loud) == 1 and "⚠ NOT GRANTED BY KEYTURN" in loud[0] and "permanent" in loud[0]
    # Reported once while it persists, not every run.
    assert (await reconciler.run_once(w.clock.now())).findings == ()
    # After the window alice's membership is gone; mallory is still the one finding.
    w.clock.advance(6 * 3600)
    report = await reconciler.run_once(w.clock.now())
    assert report.rolled_back == {request_id: "rolled_back"}
    assert [f.assignment.principal_id for f in report.findings] == [MALLORY_OID]


async def test_two_reconcilers_at_once_only_one_acts(world: World) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.clock.advance(601 + 60)
    first, second = w.reconciler(), w.reconciler()
    reports = await asyncio.gather(first.run_once(w.clock.now()), second.run_once(w.clock.now()))
    assert sorted(r.acted for r in reports) == [False, True]
    assert [r.rolled_back for r in reports if r.acted] == [{request_id: "rolled_back"}]
    assert actions(w) == ["adminAssign", "adminRemove"]
    # The holder keeps the lease run after run; the other stands by until it lapses.
    holder, other = (first, second) if reports[0].acted else (second, first)
    w.clock.advance(60)
    assert (await other.run_once(w.clock.now())).acted is False
    assert (await holder.run_once(w.clock.now())).acted is True
    w.clock.advance(3 * 60 + 1)  # the holder died: its lease runs out
    assert (await other.run_once(w.clock.now())).acted is True


async def test_a_rollback_sent_but_never_confirmed_is_confirmed_by_reconciliation(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    inner = w.executors["entra.group.add"]

    class CrashesAfterRemoving:
        """The process stops between the removal and its confirmation."""

        kind = inner.kind

        def check_target(self, action: Action) -> None:
            inner.check_target(action)

        async def execute(self, action: Action) -> StepResult:
            return await inner.execute(action)

        async def verify(self, action: Action) -> StepResult:
            return await inner.verify(action)

        async def rollback(self, action: Action) -> StepResult:
            return await inner.rollback(action)

        async def verify_rollback(self, action: Action) -> StepResult:
            raise asyncio.CancelledError

    crashing = executions_for(
        w.app, {**w.executors, "entra.group.add": CrashesAfterRemoving()}, w.slept
    )
    with pytest.raises(asyncio.CancelledError):
        await crashing.rollback(request_id, reason="kill switch")
    assert (await w.executions.status(request_id)).state is S.ROLLBACK_SENT
    w.clock.advance(601 + 60)
    report = await w.reconciler().run_once(w.clock.now())
    assert report.rolled_back == {request_id: "rolled_back"}
    steps = await step_receipts(w, request_id)
    assert [s["step"] for s in steps] == ["execute", "verify", "rollback", "verify_rollback"]


async def test_a_failed_rollback_is_retried_by_reconciliation_not_every_run(
    world: World,
) -> None:
    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    down = [g.graph_error(500, "InternalServerError")] * 3  # one per attempt (3 attempts)
    w.graph.script("pimRequests", *down)
    await w.kt.revoke_breakglass(request_id, person("carol"))
    assert (await w.executions.status(request_id)).state is S.ROLLBACK_FAILED
    reconciler = w.reconciler()
    w.graph.script("pimRequests", *down)
    w.clock.advance(60)
    first = await reconciler.run_once(w.clock.now())
    assert first.rolled_back == {request_id: "rollback_failed"}
    w.clock.advance(60)  # within retry_failed_every_seconds: left alone
    assert (await reconciler.run_once(w.clock.now())).rolled_back == {}
    w.clock.advance(300)
    last = await reconciler.run_once(w.clock.now())
    assert last.rolled_back == {request_id: "rolled_back"} and w.graph.pim == []


async def test_watching_needs_an_executor_that_can_list_and_settings_are_checked(
    world: World,
) -> None:
    w = world
    with pytest.raises(ConfigError):
        Reconciler.build(
            w.kt,
            w.executions,
            {"entra.group.add": w.executors["entra.group.add"]},
            ReconcileSettings(watch_roles=[PRA]),
        )
    for bad in (
        {"watch_groups": ["CA-Exclusion-Breakglass"]},
        {"standing_holders": {CA_EXCLUSION: [EMERGENCY_OID]}},  # not watched
        {"every_seconds": 60, "lease_seconds": 30},
        {"surprise": True},
    ):
        with pytest.raises(ValidationError):
            ReconcileSettings(**bad)
    settings = ReconcileSettings(every_seconds=30, watch_roles=[PRA.upper()])
    assert settings.lease == 90 and settings.watch_roles == (PRA,)


async def test_reconcile_forever_runs_until_cancelled_and_then_lets_the_lease_go(
    world: World,
) -> None:
    from bot.service.reconcile import reconcile_forever

    w = world
    request_id = await approved_window(w)
    await w.executions.execute_breakglass(request_id, person("alice"))
    w.clock.advance(601 + 60)
    task = asyncio.create_task(reconcile_forever(w.reconciler(), every_seconds=0.01))
    for _ in range(200):
        if (await w.executions.status(request_id)).state is S.ROLLED_BACK:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await w.executions.status(request_id)).state is S.ROLLED_BACK
    # Released on the way out: another replica acts at once, not after the lease.
    assert (await w.reconciler().run_once(w.clock.now())).acted
