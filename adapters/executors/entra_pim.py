"""Entra PIM executor for ``entra.role.assign``: a directory role for the approved window.

Graph calls (application permissions, app-only token from msal), paths under
``/roleManagement/directory/``; the steps are :class:`adapters.executors.pim.PimExecutor`'s:

* resolve the principal: ``GET /users/{upn}?$select=id,userPrincipalName`` (User.Read.All);
* execute: ``POST roleAssignmentScheduleRequests`` with ``action: adminAssign``,
  ``roleDefinitionId``, ``directoryScopeId`` and ``scheduleInfo.expiration``
  ``afterDateTime`` = the window's end (RoleAssignmentSchedule.ReadWrite.Directory, or
  the broader RoleManagement.ReadWrite.Directory);
* verify / verify_rollback: ``GET roleAssignmentScheduleInstances?$filter=principalId eq …
  and roleDefinitionId eq …`` — active, on the configured scope, ending by the window;
* rollback: ``POST roleAssignmentScheduleRequests`` with ``action: adminRemove``;
* list_active (reconciliation): ``roleAssignmentScheduleInstances?$filter=roleDefinitionId
  eq …`` (reading needs RoleAssignmentSchedule.Read.Directory, which the write
  permission includes).

Options of the binding: ``roles`` (role display name → role definition id: only these
roles can be assigned), ``directory_scope_id`` (default ``/``), ``principals`` (optional:
the only user principal names it may assign). The tenant is the Entra settings' tenant.
Params of the route: ``tenant_id``, ``principal`` (UPN, optionally ``user:``-prefixed),
``role`` (display name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adapters.entra.graph import Timer
from adapters.entra.settings import EntraSettings
from adapters.entra.tokens import MsalTokenSource
from adapters.executors.pim import PimExecutor
from core.errors import ConfigError
from core.ports import Clock

KIND = "entra.role.assign"


class EntraRoleAssignExecutor(PimExecutor):
    """Assigns an Entra directory role through PIM for exactly the approved window."""

    KIND = KIND
    target_param = "role"
    targets_option = "roles"
    target_field = "roleDefinitionId"
    reference_key = "role_definition_id"
    requests_path = "roleManagement/directory/roleAssignmentScheduleRequests"
    instances_path = "roleManagement/directory/roleAssignmentScheduleInstances"
    what = "role assignment"

    def __init__(
        self,
        settings: EntraSettings,
        *,
        roles: Mapping[str, str],
        clock: Clock,
        directory_scope_id: str = "/",
        principals: Iterable[str] | None = None,
        http_client: Any = None,
        timer: Timer | None = None,
        token_source: MsalTokenSource | None = None,
    ) -> None:
        if not isinstance(directory_scope_id, str) or not directory_scope_id.startswith("/"):
            raise ConfigError("CONFIG_INVALID", "directory_scope_id must start with /")
        super().__init__(
            settings,
            targets=roles,
            clock=clock,
            principals=principals,
            http_client=http_client,
            timer=timer,
            token_source=token_source,
        )
        self._scope = directory_scope_id

    def _assign_fields(self, target_id: str) -> dict[str, Any]:
        return {"roleDefinitionId": target_id, "directoryScopeId": self._scope}

    def _instance_filter(self, principal_id: str, target_id: str) -> str:
        return f"principalId eq '{principal_id}' and roleDefinitionId eq '{target_id}'"

    def _target_filter(self, target_id: str) -> str:
        return f"roleDefinitionId eq '{target_id}'"

    def _as_approved(self, instance: Mapping[str, Any]) -> bool:
        return instance.get("directoryScopeId") == self._scope
