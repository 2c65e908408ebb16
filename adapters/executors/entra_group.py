"""Entra PIM for Groups executor for ``entra.group.add``: membership for the approved window.

Graph calls (application permissions, app-only token from msal), paths under
``/identityGovernance/privilegedAccess/group/``; the steps are
:class:`adapters.executors.pim.PimExecutor`'s:

* resolve the principal: ``GET /users/{upn}?$select=id,userPrincipalName`` (User.Read.All);
* execute: ``POST assignmentScheduleRequests`` with ``accessId: member``,
  ``action: adminAssign``, ``groupId``, ``principalId`` and ``scheduleInfo.expiration``
  ``afterDateTime`` = the window's end, so Entra ends the membership even if keyturn is
  down (PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup);
* verify / verify_rollback: ``GET assignmentScheduleInstances?$filter=principalId eq …``
  (Graph requires a filter on ``principalId`` or ``groupId``), then only this group's
  ``member`` instances count;
* rollback: ``POST assignmentScheduleRequests`` with ``action: adminRemove``;
* list_active (reconciliation): ``assignmentScheduleInstances?$filter=groupId eq …``,
  members and owners alike (an owner can add members, so an unknown owner is a finding
  too). Reading needs PrivilegedAssignmentSchedule.Read.AzureADGroup, which the write
  permission includes.

Only ``member`` access is ever assigned; ownership is not something keyturn grants.
The group must be onboarded to PIM for Groups (role-assignable or not).

Options of the binding: ``groups`` (display name → group object id: only these groups),
``principals`` (optional: the only user principal names it may add). The tenant is the
Entra settings' tenant. Params of the route: ``tenant_id``, ``principal`` (UPN,
optionally ``user:``-prefixed), ``group`` (display name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adapters.entra.graph import Timer
from adapters.entra.settings import EntraSettings
from adapters.entra.tokens import MsalTokenSource
from adapters.executors.pim import PimExecutor
from core.ports import Clock

KIND = "entra.group.add"
ACCESS = "member"


class EntraGroupAddExecutor(PimExecutor):
    """Adds a user to a PIM-managed group as an active member for the approved window."""

    KIND = KIND
    target_param = "group"
    targets_option = "groups"
    target_field = "groupId"
    reference_key = "group_id"
    requests_path = "identityGovernance/privilegedAccess/group/assignmentScheduleRequests"
    instances_path = "identityGovernance/privilegedAccess/group/assignmentScheduleInstances"
    what = "group membership"

    def __init__(
        self,
        settings: EntraSettings,
        *,
        groups: Mapping[str, str],
        clock: Clock,
        principals: Iterable[str] | None = None,
        http_client: Any = None,
        timer: Timer | None = None,
        token_source: MsalTokenSource | None = None,
    ) -> None:
        super().__init__(
            settings,
            targets=groups,
            clock=clock,
            principals=principals,
            http_client=http_client,
            timer=timer,
            token_source=token_source,
        )

    def _assign_fields(self, target_id: str) -> dict[str, Any]:
        return {"accessId": ACCESS, "groupId": target_id}

    def _instance_filter(self, principal_id: str, target_id: str) -> str:
        return f"principalId eq '{principal_id}'"

    def _target_filter(self, target_id: str) -> str:
        return f"groupId eq '{target_id}'"

    def _as_approved(self, instance: Mapping[str, Any]) -> bool:
        return str(instance.get("accessId", "")).lower() == ACCESS
