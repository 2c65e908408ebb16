"""The Entra PIM role executor against the local Graph stand-in: adminAssign with the
window as expiration, a verification read, adminRemove, and a read that confirms it is
gone; refusals (403) are definitive, outages transient; wrong targets never leave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import pytest_asyncio

from adapters.executors.entra_pim import EntraRoleAssignExecutor
from core.errors import ConfigError, GateDeniedError
from core.executor import Action
from core.times import parse_iso
from tests.adapters import graph_standin as g
from tests.adapters.executors.pim_standin import PRA, PimStandIn
from tests.core.test_executor import grant_for

pytestmark = pytest.mark.asyncio
TENANT = "00000000-0000-4000-8000-0000000000aa"
ALICE_OID = "a1a1a1a1-0000-4000-8000-0000000000a1"
PARAMS = {
    "tenant_id": TENANT,
    "principal": "alice@corp.example",
    "role": "Privileged Role Administrator",
}
WINDOW_END = g.NOW + timedelta(minutes=10)


class Clock:
    def now(self) -> datetime:
        return g.NOW


@pytest_asyncio.fixture
async def graph() -> AsyncIterator[PimStandIn]:
    async with PimStandIn(tenant_id=TENANT, client_id=g.CLIENT, client_secret=g.SECRET) as s:
        s.add_user(ALICE_OID, "Alice", mail="alice@corp.example", upn="alice@corp.example")
        yield s


def executor(graph: PimStandIn, **overrides: object) -> EntraRoleAssignExecutor:
    return EntraRoleAssignExecutor(
        g.settings(graph, tenant_id=TENANT),
        roles={"Privileged Role Administrator": PRA},
        clock=Clock(),
        http_client=graph.http_client(),
        timer=g.FakeTimer(),
        **overrides,  # type: ignore[arg-type]
    )


def action(params: dict[str, str] | None = None) -> Action:
    p = dict(params or PARAMS)
    return Action("r-1", "entra.role.assign", p, grant_for(p), WINDOW_END, "INC-4411")


async def test_assign_verify_remove_and_confirm_gone(graph: PimStandIn) -> None:
    ex = executor(graph)
    try:
        done = await ex.execute(action())
        assert done.ok and done.reference["principal_id"] == ALICE_OID
        sent = graph.role_requests[0]
        assert sent["action"] == "adminAssign" and sent["roleDefinitionId"] == PRA
        end = sent["scheduleInfo"]["expiration"]
        assert end["type"] == "afterDateTime" and parse_iso(end["endDateTime"]) == WINDOW_END
        assert (await ex.verify(replace(action(), reference=done.reference))).ok
        removed = await ex.rollback(replace(action(), reference=done.reference))
        assert removed.ok and graph.role_requests[1]["action"] == "adminRemove"
        assert graph.role_instances == []
        assert (await ex.verify_rollback(replace(action(), reference=done.reference))).ok
    finally:
        await ex.close()


async def test_a_missing_assignment_is_not_verified(graph: PimStandIn) -> None:
    ex = executor(graph)
    try:
        result = await ex.verify(action())
        assert not result.ok and result.transient  # replication lag: worth another read
    finally:
        await ex.close()


async def test_an_assignment_that_outlives_the_window_fails_verification(graph: PimStandIn) -> None:
    ex = executor(graph)
    try:
        await ex.execute(action())
        graph.role_instances[0]["endDateTime"] = None  # permanent: not what was approved
        result = await ex.verify(action())
        assert not result.ok and not result.transient
    finally:
        await ex.close()


async def test_removing_what_is_already_gone_succeeds_and_is_then_confirmed(
    graph: PimStandIn,
) -> None:
    ex = executor(graph)
    try:
        assert (await ex.rollback(action())).ok
        assert (await ex.verify_rollback(action())).ok
    finally:
        await ex.close()


async def test_a_still_present_assignment_fails_rollback_verification(graph: PimStandIn) -> None:
    ex = executor(graph)
    try:
        await ex.execute(action())
        result = await ex.verify_rollback(action())
        assert not result.ok and result.transient
    finally:
        await ex.close()


async def test_a_missing_permission_is_a_definitive_no(graph: PimStandIn) -> None:
    graph.roles = list(g.ALL_ROLES)  # no RoleManagement.ReadWrite.Directory
    ex = executor(graph)
    try:
        result = await ex.execute(action())
        assert not result.ok and not result.transient and result.status == 403
        assert "keyturn entra check" in result.detail
    finally:
        await ex.close()


async def test_a_server_error_is_transient(graph: PimStandIn) -> None:
    graph.script("roleRequests", g.graph_error(500, "InternalServerError"))
    ex = executor(graph)
    try:
        result = await ex.rollback(action())
        assert not result.ok and result.transient and result.status == 500
    finally:
        await ex.close()


async def test_wrong_targets_are_refused_before_any_call(graph: PimStandIn) -> None:
    ex = executor(graph)
    try:
        for params in (
            {**PARAMS, "tenant_id": "00000000-0000-4000-8000-0000000000bb"},
            {**PARAMS, "role": "Global Administrator"},
            {**PARAMS, "principal": "not a user"},
        ):
            with pytest.raises(GateDeniedError) as e:
                ex.check_target(action(params))
            assert e.value.reason_code == "TARGET_NOT_ALLOWED"
        ex.check_target(action())
        assert graph.calls == []
    finally:
        await ex.close()


async def test_roles_must_map_to_role_definition_ids(graph: PimStandIn) -> None:
    executor_roles = {"Privileged Role Administrator": "not-a-guid"}
    with pytest.raises(ConfigError):
        EntraRoleAssignExecutor(
            g.settings(graph, tenant_id=TENANT), roles=executor_roles, clock=Clock()
        )
