"""`keyturn entra check`: token, permissions in the token's roles, configured groups."""

from __future__ import annotations

import argparse
import io
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from adapters.entra import check_configuration, required_permissions
from bot.cli_entra import (
    executors_from,
    groups_from,
    handle_check,
    pim_from,
    register,
    run_check,
    settings_from,
)
from tests.adapters.graph_standin import (
    ALL_ROLES,
    APPROVERS,
    CLIENT,
    LEADS,
    SECRET,
    TENANT,
    GraphStandIn,
    directory,
    graph_error,
    populate,
    settings,
)

MISSING_GROUP = "90000000-0000-4000-8000-0000000000ff"


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[GraphStandIn]:
    async with GraphStandIn(tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET) as s:
        populate(s)
        yield s


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="keyturn")
    register(root.add_subparsers(dest="command", required=True))
    return root


@pytest.mark.asyncio
async def test_complete_configuration_passes(standin: GraphStandIn) -> None:
    async with directory(standin) as entra:
        report = await check_configuration(entra, [APPROVERS, LEADS], require_pim=True)
    assert report.ok, report.render()
    text = report.render()
    assert "Payments approvers" in text and "SRE leads" in text
    assert "PrivilegedAssignmentSchedule.Read.AzureADGroup" in text


@pytest.mark.asyncio
async def test_missing_permissions_and_groups_are_each_reported(standin: GraphStandIn) -> None:
    standin.roles = ["User.Read.All"]
    async with directory(standin) as entra:
        report = await check_configuration(entra, [APPROVERS, MISSING_GROUP], require_pim=True)
    assert not report.ok
    missing = "\n".join(report.missing)
    assert "GroupMember.Read.All is missing" in missing
    assert "PrivilegedAssignmentSchedule.Read.AzureADGroup is missing" in missing
    # Without GroupMember.Read.All Graph refuses the group reads too, and says so.
    assert f"group {APPROVERS}" in missing and "refused" in missing


@pytest.mark.asyncio
async def test_nonexistent_group_is_reported(standin: GraphStandIn) -> None:
    async with directory(standin) as entra:
        report = await check_configuration(entra, [APPROVERS, MISSING_GROUP], require_pim=False)
    assert report.missing == (f"group {MISSING_GROUP} does not exist in tenant {TENANT}",)


@pytest.mark.asyncio
async def test_broader_permissions_satisfy_the_least_privileged_ones(standin: GraphStandIn) -> None:
    standin.roles = ["Directory.Read.All"]
    async with directory(standin, cache_seconds=0) as entra:
        report = await check_configuration(entra, [], require_pim=False)
    assert report.ok, report.render()
    assert "Directory.Read.All" in report.render()


@pytest.mark.asyncio
async def test_token_failure_stops_the_check_with_the_reason(standin: GraphStandIn) -> None:
    async with directory(standin, client_secret="wrong") as entra:
        report = await check_configuration(entra, [APPROVERS], require_pim=False)
    assert not report.ok and len(report.lines) == 1
    assert "AADSTS7000215" in report.missing[0]
    assert standin.calls_to("group") == []


@pytest.mark.asyncio
async def test_group_lookup_outage_is_reported_not_raised(standin: GraphStandIn) -> None:
    standin.script("group", graph_error(500, "generalException"))
    async with directory(standin) as entra:
        report = await check_configuration(entra, [APPROVERS], require_pim=False)
    assert not report.ok
    assert "500 generalException" in report.missing[0]


@pytest.mark.asyncio
async def test_run_check_prints_and_returns_the_exit_status(standin: GraphStandIn) -> None:
    out = io.StringIO()
    good = await run_check(
        settings(standin),
        [APPROVERS],
        require_pim=False,
        out=out,
        http_client=standin.http_client(),
    )
    assert good == 0 and "Entra configuration is complete." in out.getvalue()
    out = io.StringIO()
    bad = await run_check(
        settings(standin),
        [MISSING_GROUP],
        require_pim=False,
        out=out,
        http_client=standin.http_client(),
    )
    assert bad == 1 and "FAIL" in out.getvalue() and "incomplete" in out.getvalue()


def test_required_permissions_name_the_verified_graph_permissions() -> None:
    names = [p.name for p in required_permissions(require_pim=True)]
    assert names == [
        "User.Read.All",
        "GroupMember.Read.All",
        "PrivilegedAssignmentSchedule.Read.AzureADGroup",
    ]
    assert [p.name for p in required_permissions(require_pim=False)] == names[:2]


def test_cli_reads_flags_then_environment_and_secrets_only_from_environment() -> None:
    args = parser().parse_args(
        ["entra", "check", "--tenant-id", TENANT, "--group", APPROVERS, "--group", LEADS]
    )
    assert args.handler is handle_check
    environ = {
        "KEYTURN_ENTRA_TENANT_ID": "ignored.example.com",
        "KEYTURN_ENTRA_CLIENT_ID": CLIENT,
        "KEYTURN_ENTRA_CLIENT_SECRET": SECRET,
        "KEYTURN_ENTRA_GROUPS": "ignored",
        "KEYTURN_ENTRA_REQUIRE_PIM": "true",
    }
    built = settings_from(args, environ)
    assert built.tenant_id == TENANT and built.client_id == CLIENT
    assert built.client_secret is not None and built.client_secret.get_secret_value() == SECRET
    assert groups_from(args, environ) == [APPROVERS, LEADS]
    assert pim_from(args, environ) is True
    with pytest.raises(SystemExit):
        parser().parse_args(["entra", "check", "--client-secret", "x"])


def test_cli_reports_invalid_settings_with_exit_status_two() -> None:
    args = parser().parse_args(["entra", "check", "--tenant-id", "common"])
    out = io.StringIO()
    status = handle_check(args, environ={"KEYTURN_ENTRA_CLIENT_ID": CLIENT}, out=out)
    assert status == 2
    text = out.getvalue()
    assert "tenant_id" in text and "multi-tenant alias" in text
    args = parser().parse_args(["entra", "check", "--tenant-id", TENANT])
    out = io.StringIO()
    assert handle_check(args, environ={"KEYTURN_ENTRA_CLIENT_ID": CLIENT}, out=out) == 2
    assert "exactly one credential" in out.getvalue()


@pytest.mark.asyncio
async def test_entra_check_reports_exactly_the_missing_executor_permission(
    standin: GraphStandIn,
) -> None:
    # The role executor's write permission is there (as the broader one); the group's is not.
    standin.roles = [*ALL_ROLES, "RoleManagement.ReadWrite.Directory"]
    out = io.StringIO()
    status = await run_check(
        settings(standin),
        [APPROVERS],
        require_pim=True,
        out=out,
        http_client=standin.http_client(),
        executors=["entra.role.assign", "entra.group.add"],
    )
    text = out.getvalue()
    assert status == 1, text
    failures = [line for line in text.splitlines() if line.startswith("FAIL")]
    assert failures == [
        "FAIL  permission PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup is missing "
        "(application permission with admin consent, needed for the entra.group.add "
        "executor: adding, removing and reading back PIM for Groups members)"
    ]
    assert (
        "ok    permission RoleAssignmentSchedule.ReadWrite.Directory "
        "(granted: RoleManagement.ReadWrite.Directory)" in text
    )
    # Granting it completes the configuration.
    standin.roles.append("PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup")
    out = io.StringIO()
    status = await run_check(
        settings(standin),
        [APPROVERS],
        require_pim=True,
        out=out,
        http_client=standin.http_client(),
        executors=["entra.role.assign", "entra.group.add"],
    )
    assert status == 0, out.getvalue()


def test_executor_permissions_are_only_checked_for_configured_executors() -> None:
    base = [p.name for p in required_permissions(require_pim=False)]
    assert [
        p.name for p in required_permissions(require_pim=False, executors=["entra.group.add"])
    ] == [
        *base,
        "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup",
    ]
    role = required_permissions(require_pim=False, executors=["entra.role.assign"])[-1]
    assert role.name == "RoleAssignmentSchedule.ReadWrite.Directory"
    assert "RoleManagement.ReadWrite.Directory" in role.satisfied_by
    with pytest.raises(ValueError):
        required_permissions(require_pim=False, executors=["webhook"])


def test_cli_reads_executors_from_the_flag_or_the_environment() -> None:
    args = parser().parse_args(["entra", "check", "--executors", "role, Group"])
    assert executors_from(args, {}) == ["entra.group.add", "entra.role.assign"]
    args = parser().parse_args(["entra", "check"])
    assert executors_from(args, {"KEYTURN_ENTRA_EXECUTORS": "entra.group.add"}) == [
        "entra.group.add"
    ]
    assert executors_from(args, {}) == []
    args = parser().parse_args(["entra", "check", "--tenant-id", TENANT, "--executors", "webhook"])
    out = io.StringIO()
    environ = {"KEYTURN_ENTRA_CLIENT_ID": CLIENT, "KEYTURN_ENTRA_CLIENT_SECRET": SECRET}
    assert handle_check(args, environ=environ, out=out) == 2
    assert "unknown executor webhook" in out.getvalue()
