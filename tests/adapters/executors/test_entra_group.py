"""The PIM for Groups executor against the local Graph stand-in: adminAssign of a
membership with the window as expiration, a verification read, adminRemove, a read that
confirms it is gone; Entra's own expiry; wrong targets never leave; who holds a group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import pytest_asyncio

from adapters.executors import build_executors
from adapters.executors.entra_group import EntraGroupAddExecutor
from core.errors import ConfigError, DirectoryError, GateDeniedError
from core.executor import Action, ExecutorRegistry
from core.times import parse_iso
from tests.adapters import graph_standin as g
from tests.adapters.executors.pim_standin import EXECUTOR_ROLES, PimStandIn
from tests.core.test_executor import grant_for

pytestmark = pytest.mark.asyncio
TENANT = "00000000-0000-4000-8000-0000000000aa"
ALICE_OID = "a1a1a1a1-0000-4000-8000-0000000000a1"
MALLORY_OID = "a1a1a1a1-0000-4000-8000-0000000000ff"
CA_EXCLUSION = "90000000-0000-4000-8000-0000000000c1"
PARAMS = {
    "tenant_id": TENANT,
    "principal": "user:alice@corp.example",
    "group": "CA-Exclusion-Breakglass",
}
WINDOW_END = g.NOW + timedelta(minutes=10)


class Clock:
    def __init__(self) -> None:
        self.at = g.NOW

    def now(self) -> datetime:
        return self.at


@pytest_asyncio.fixture
async def graph() -> AsyncIterator[PimStandIn]:
    async with PimStandIn(
        tenant_id=TENANT, client_id=g.CLIENT, client_secret=g.SECRET, roles=EXECUTOR_ROLES
    ) as s:
        s.add_user(ALICE_OID, "Alice", mail="alice@corp.example", upn="alice@corp.example")
        s.add_user(MALLORY_OID, "Mallory", mail="mallory@corp.example")
        s.add_group(CA_EXCLUSION, "CA-Exclusion-Breakglass")
        yield s


@pytest_asyncio.fixture
async def clock(graph: PimStandIn) -> Clock:
    c = Clock()
    graph.now = c.now  # Entra's own expiry follows the same clock
    return c


def executor(graph: PimStandIn, clock: Clock, **overrides: object) -> EntraGroupAddExecutor:
    options: dict[str, object] = {
        "groups": {"CA-Exclusion-Breakglass": CA_EXCLUSION},
        "clock": clock,
        "http_client": graph.http_client(),
        "timer": g.FakeTimer(),
    }
    options.update(overrides)
    return EntraGroupAddExecutor(g.settings(graph, tenant_id=TENANT), **options)  # type: ignore[arg-type]


def action(params: dict[str, str] | None = None, **reference: str) -> Action:
    p = dict(params or PARAMS)
    return Action(
        "r-1", "entra.group.add", p, grant_for(p), WINDOW_END, "INC-4411", reference=reference
    )


async def test_add_verify_remove_and_confirm_gone(graph: PimStandIn, clock: Clock) -> None:
    ex = executor(graph, clock)
    try:
        done = await ex.execute(action())
        assert done.ok, done.detail
        assert done.reference["principal_id"] == ALICE_OID
        assert done.reference["group_id"] == CA_EXCLUSION
        sent = graph.pim_requests[0]
        assert sent["action"] == "adminAssign" and sent["accessId"] == "member"
        assert sent["groupId"] == CA_EXCLUSION and sent["principalId"] == ALICE_OID
        end = sent["scheduleInfo"]["expiration"]
        assert end["type"] == "afterDateTime" and parse_iso(end["endDateTime"]) == WINDOW_END
        checked = replace(action(), reference=done.reference)
        assert (await ex.verify(checked)).ok
        removed = await ex.rollback(checked)
        assert removed.ok and graph.pim_requests[1]["action"] == "adminRemove"
        assert graph.pim == []
        assert (await ex.verify_rollback(checked)).ok
    finally:
        await ex.close()


async def test_entra_ends_the_membership_at_the_window_even_if_keyturn_does_nothing(
    graph: PimStandIn, clock: Clock
) -> None:
    ex = executor(graph, clock)
    try:
        done = await ex.execute(action())
        assert done.ok and len(graph.pim) == 1
        clock.at = WINDOW_END  # keyturn is down: nothing it runs happens from here
        graph.expire()
        assert graph.pim == []
        # When keyturn comes back, its late rollback finds nothing and says so.
        late = replace(action(), reference=done.reference)
        removed = await ex.rollback(late)
        assert removed.ok and "nothing left to remove" in removed.detail
        assert (await ex.verify_rollback(late)).ok
    finally:
        await ex.close()


async def test_a_refused_removal_of_a_membership_still_there_is_not_believed(
    graph: PimStandIn, clock: Clock
) -> None:
    ex = executor(graph, clock)
    try:
        await ex.execute(action())
        graph.script("pimRequests", g.graph_error(400, "RoleAssignmentDoesNotExist"))
        result = await ex.rollback(action())
        assert not result.ok and not result.transient and result.status == 400
        assert len(graph.pim) == 1
    finally:
        await ex.close()


async def test_a_standing_ownership_does_not_block_the_membership_rollback(
    graph: PimStandIn, clock: Clock
) -> None:
    graph.add_pim(CA_EXCLUSION, ALICE_OID, access="owner", assignment_type="Assigned")
    ex = executor(graph, clock)
    try:
        await ex.execute(action())
        assert (await ex.rollback(action())).ok
        assert (await ex.verify_rollback(action())).ok
        assert [i["accessId"] for i in graph.pim] == ["owner"]
    finally:
        await ex.close()


async def test_a_membership_that_outlives_the_window_fails_verification(
    graph: PimStandIn, clock: Clock
) -> None:
    ex = executor(graph, clock)
    try:
        await ex.execute(action())
        graph.pim[0]["endDateTime"] = None  # permanent: not what was approved
        result = await ex.verify(action())
        assert not result.ok and not result.transient
    finally:
        await ex.close()


async def test_a_missing_write_permission_is_a_definitive_no(
    graph: PimStandIn, clock: Clock
) -> None:
    graph.roles = ["User.Read.All", "PrivilegedAssignmentSchedule.Read.AzureADGroup"]
    ex = executor(graph, clock)
    try:
        result = await ex.execute(action())
        assert not result.ok and not result.transient and result.status == 403
        assert "keyturn entra check" in result.detail
        assert graph.pim == []
    finally:
        await ex.close()


async def test_a_server_error_on_removal_is_transient(graph: PimStandIn, clock: Clock) -> None:
    ex = executor(graph, clock)
    try:
        await ex.execute(action())
        graph.script("pimRequests", g.graph_error(500, "InternalServerError"))
        result = await ex.rollback(action())
        assert not result.ok and result.transient and result.status == 500
    finally:
        await ex.close()


async def test_wrong_targets_are_refused_before_any_call(graph: PimStandIn, clock: Clock) -> None:
    ex = executor(graph, clock, principals=["alice@corp.example"])
    try:
        for params in (
            {**PARAMS, "tenant_id": "00000000-0000-4000-8000-0000000000bb"},
            {**PARAMS, "group": "Domain Admins"},
            {**PARAMS, "group": CA_EXCLUSION},  # an id is not a configured name
            {**PARAMS, "principal": "not a user"},
            {**PARAMS, "principal": "user:mallory@corp.example"},
        ):
            with pytest.raises(GateDeniedError) as e:
                ex.check_target(action(params))
            assert e.value.reason_code == "TARGET_NOT_ALLOWED"
        ex.check_target(action())
        ex.check_target(action({**PARAMS, "principal": "ALICE@corp.example"}))
        assert graph.calls == []
    finally:
        await ex.close()


async def test_who_holds_a_group_lists_members_and_owners_not_yet_ended(
    graph: PimStandIn, clock: Clock
) -> None:
    graph.add_pim(CA_EXCLUSION, MALLORY_OID, access="owner", assignment_type="Assigned")
    ex = executor(graph, clock)
    try:
        await ex.execute(action())
        graph.add_pim(CA_EXCLUSION, ALICE_OID, end=g.NOW - timedelta(minutes=1))  # ended
        graph.now = None  # keep the ended one in Graph's answer: the executor filters it
        graph.pim_page_size = 1  # and follow Graph's paging
        held = await ex.list_active(CA_EXCLUSION, now=clock.at)
        assert sorted((a.principal_id, a.ends_at) for a in held) == [
            (ALICE_OID, WINDOW_END),
            (MALLORY_OID, None),
        ]
        assert len([c for c in graph.calls_to("pim") if "$skiptoken" in c.query]) == 2
        graph.roles = ["User.Read.All"]
        with pytest.raises(DirectoryError) as e:
            await ex.list_active(CA_EXCLUSION, now=clock.at)
        assert e.value.reason_code == "DIRECTORY_AUTH_FAILED"
    finally:
        await ex.close()


async def test_groups_must_map_names_to_object_ids(graph: PimStandIn, clock: Clock) -> None:
    for groups in ({}, {"CA-Exclusion-Breakglass": "not-a-guid"}):
        with pytest.raises(ConfigError):
            EntraGroupAddExecutor(g.settings(graph, tenant_id=TENANT), groups=groups, clock=clock)
    with pytest.raises(ConfigError):
        executor(graph, clock, principals=["not a upn"])


async def test_build_executors_knows_the_group_kind(graph: PimStandIn, clock: Clock) -> None:
    registry = ExecutorRegistry.from_config(
        {
            "entra.group.add": {
                "kind": "entra.group.add",
                "groups": {"CA-Exclusion-Breakglass": CA_EXCLUSION},
                "principals": ["alice@corp.example"],
            }
        }
    )
    built = build_executors(
        registry,
        signer=None,  # type: ignore[arg-type]  # no webhook here
        clock=clock,
        entra=g.settings(graph, tenant_id=TENANT),
        entra_http_client=graph.http_client(),
    )
    ex = built["entra.group.add"]
    assert isinstance(ex, EntraGroupAddExecutor) and ex.kind == "entra.group.add"
    try:
        with pytest.raises(GateDeniedError):
            ex.check_target(action({**PARAMS, "principal": "bob@corp.example"}))
    finally:
        await ex.close()
    with pytest.raises(ConfigError):
        build_executors(registry, signer=None, clock=clock)  # type: ignore[arg-type]
