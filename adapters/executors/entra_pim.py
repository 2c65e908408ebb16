"""Entra PIM executor for ``entra.role.assign``: a directory role for the approved window.

Graph calls (application permissions, app-only token from msal), paths under
``/roleManagement/directory/``:

* resolve the principal: ``GET /users/{upn}?$select=id,userPrincipalName`` (User.Read.All);
* execute: ``POST roleAssignmentScheduleRequests`` with ``action: adminAssign`` and
  ``scheduleInfo.expiration`` ``afterDateTime`` = the window's end, so Entra removes the
  role even if keyturn is down (RoleManagement.ReadWrite.Directory);
* verify: ``GET roleAssignmentScheduleInstances?$filter=principalId eq … and
  roleDefinitionId eq …`` — active, on the configured scope, ending by the window;
* rollback: ``POST roleAssignmentScheduleRequests`` with ``action: adminRemove``;
* verify_rollback: the same read finds no active instance.

Options of the binding: ``tenant_id`` (the only tenant this executor touches; the call's
``tenant_id`` parameter must equal it), ``roles`` (role display name → role definition
id: only these roles can be assigned), ``directory_scope_id`` (default ``/``).
Params of the route: ``tenant_id``, ``principal`` (UPN, optionally ``user:``-prefixed),
``role`` (display name).

Outcomes: 2xx ok; 429/5xx/no answer transient (retried by the use case); any other
4xx a definitive "no" (401/403: keyturn lacks a permission — run ``keyturn entra check``).
Graph's replication lag makes a fresh assignment invisible for a moment, so a verify
that finds nothing (or a verify_rollback that still finds it) is transient, not final.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from adapters.entra.graph import GraphClient, GraphReply, Operation, SystemTimer, Timer
from adapters.entra.settings import EntraSettings, is_guid
from adapters.entra.tokens import MsalTokenSource
from core.errors import ConfigError, DirectoryError, GateDeniedError, KeyturnError
from core.executor import Action, StepResult
from core.ports import Clock
from core.times import parse_iso, require_aware, to_iso

KIND = "entra.role.assign"
PERMISSIONS = ("User.Read.All", "RoleManagement.ReadWrite.Directory")
_REQUESTS = "roleManagement/directory/roleAssignmentScheduleRequests"
_INSTANCES = "roleManagement/directory/roleAssignmentScheduleInstances"
_UPN = re.compile(r"\A[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\Z")
# Entra rounds schedule times; an instance may end a little after the window we asked for.
_END_SLACK = timedelta(minutes=5)
_GONE_CODES = frozenset({"RoleAssignmentDoesNotExist"})


class EntraRoleAssignExecutor:
    """Assigns an Entra directory role through PIM for exactly the approved window."""

    def __init__(
        self,
        settings: EntraSettings,
        *,
        roles: Mapping[str, str],
        clock: Clock,
        directory_scope_id: str = "/",
        http_client: Any = None,
        timer: Timer | None = None,
        token_source: MsalTokenSource | None = None,
    ) -> None:
        if not roles or not all(isinstance(k, str) and is_guid(str(v)) for k, v in roles.items()):
            raise ConfigError(
                "CONFIG_INVALID", "executors.entra.role.assign.roles maps role names to GUIDs"
            )
        if not isinstance(directory_scope_id, str) or not directory_scope_id.startswith("/"):
            raise ConfigError("CONFIG_INVALID", "directory_scope_id must start with /")
        self._settings = settings
        self._roles = dict(roles)
        self._scope = directory_scope_id
        self._clock = clock
        self._timer: Timer = timer or SystemTimer()
        self._tokens = token_source or MsalTokenSource(settings, http_client=http_client)
        self._graph = GraphClient(
            settings.graph_base,
            request_timeout_seconds=settings.request_timeout_seconds,
            timer=self._timer,
        )

    @property
    def kind(self) -> str:
        return KIND

    async def close(self) -> None:
        await self._graph.close()

    # -- pure target check ---------------------------------------------------------

    def check_target(self, action: Action) -> None:
        """Refuse a tenant, role or principal this executor must not touch.

        Raises:
            GateDeniedError: ``TARGET_NOT_ALLOWED``.
        """
        params = action.params
        if str(params.get("tenant_id", "")).lower() != self._settings.tenant_id.lower():
            raise GateDeniedError(
                "TARGET_NOT_ALLOWED", "the call names another tenant than this executor's"
            )
        if params.get("role") not in self._roles:
            raise GateDeniedError(
                "TARGET_NOT_ALLOWED", f"role {params.get('role')!r} is not configured for PIM"
            )
        if _upn(params.get("principal")) is None:
            raise GateDeniedError("TARGET_NOT_ALLOWED", "the principal is not a user name")

    # -- steps -----------------------------------------------------------------------

    async def execute(self, action: Action) -> StepResult:
        try:
            token = await self._token("assign a PIM role")
            principal = await self._principal(token, action)
            if isinstance(principal, StepResult):
                return principal
            role = self._roles[str(action.params["role"])]
            now = require_aware(self._clock.now())
            body = {
                "action": "adminAssign",
                "justification": _justification(action),
                "roleDefinitionId": role,
                "directoryScopeId": self._scope,
                "principalId": principal,
                "scheduleInfo": {
                    "startDateTime": to_iso(now),
                    "expiration": {
                        "type": "afterDateTime",
                        "endDateTime": to_iso(action.window_closes_at),
                    },
                },
            }
            reply = await self._send("POST", _REQUESTS, token, "assign a PIM role", body=body)
        except DirectoryError as e:
            return _directory_failure(e)
        reference = {"principal_id": principal, "role_definition_id": role}
        if reply.status in (200, 201):
            data = _json(reply)
            reference["schedule_request_id"] = str(data.get("id", ""))
            return StepResult(
                True,
                f"PIM accepted ({data.get('status', 'submitted')})",
                status=reply.status,
                reference=reference,
            )
        return _graph_failure(reply, "PIM refused the assignment", reference)

    async def verify(self, action: Action) -> StepResult:
        found = await self._instances(action)
        if isinstance(found, StepResult):
            return found
        limit = action.window_closes_at + _END_SLACK
        good = [i for i in found if i.get("directoryScopeId") == self._scope and _ends_by(i, limit)]
        if good:
            return StepResult(True, "the role assignment is active and ends with the window")
        if found:
            # Present but not as approved (other scope, no end): a definitive finding.
            return StepResult(False, "the role is active but not as approved (scope or end)")
        return StepResult(False, "the role assignment is not visible yet", transient=True)

    async def rollback(self, action: Action) -> StepResult:
        try:
            token = await self._token("remove a PIM role")
            principal = action.reference.get("principal_id") or await self._principal(token, action)
            if isinstance(principal, StepResult):
                return principal
            body = {
                "action": "adminRemove",
                "justification": f"keyturn rollback of {action.request_id}",
                "roleDefinitionId": self._roles[str(action.params["role"])],
                "directoryScopeId": self._scope,
                "principalId": principal,
            }
            reply = await self._send("POST", _REQUESTS, token, "remove a PIM role", body=body)
        except DirectoryError as e:
            return _directory_failure(e)
        if reply.status in (200, 201):
            return StepResult(True, "PIM accepted the removal", status=reply.status)
        if reply.status in (400, 404) and reply.graph_error_code() in _GONE_CODES:
            # Nothing to remove (Entra's own expiration got there first); verify_rollback
            # confirms it rather than trusting this answer.
            return StepResult(True, "the assignment was already gone", status=reply.status)
        return _graph_failure(reply, "PIM refused the removal", {})

    async def verify_rollback(self, action: Action) -> StepResult:
        found = await self._instances(action)
        if isinstance(found, StepResult):
            return found
        if not found:
            return StepResult(True, "no active assignment remains")
        return StepResult(False, "the role assignment is still active", transient=True)

    # -- Graph plumbing ----------------------------------------------------------------

    async def _token(self, purpose: str) -> str:
        return await self._tokens.access_token(purpose=purpose)

    def _op(self, purpose: str) -> Operation:
        budget = self._settings.retry_deadline_seconds
        return Operation(purpose, self._timer.monotonic() + budget, budget)

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        purpose: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> GraphReply:
        return await self._graph.request(
            method,
            self._graph.url(path),
            token=token,
            op=self._op(purpose),
            params=params,
            json_body=body,
        )

    async def _principal(self, token: str, action: Action) -> str | StepResult:
        upn = _upn(action.params.get("principal"))
        if upn is None:
            return StepResult(False, "the principal is not a user name")
        reply = await self._send(
            "GET",
            f"users/{quote(upn, safe='@')}",
            token,
            "find the principal",
            params={"$select": "id,userPrincipalName"},
        )
        if reply.status != 200:
            return _graph_failure(reply, "the principal could not be found", {})
        data = _json(reply)
        found_upn = data.get("userPrincipalName")
        oid = data.get("id")
        if (
            not isinstance(found_upn, str)
            or found_upn.lower() != upn.lower()
            or not is_guid(str(oid))
        ):
            return StepResult(False, "Graph answered for another principal")
        return str(oid)

    async def _instances(self, action: Action) -> list[dict[str, Any]] | StepResult:
        try:
            token = await self._token("read PIM role assignments")
            principal = action.reference.get("principal_id") or await self._principal(token, action)
            if isinstance(principal, StepResult):
                return principal
            role = self._roles[str(action.params["role"])]
            reply = await self._send(
                "GET",
                _INSTANCES,
                token,
                "read PIM role assignments",
                params={
                    "$filter": f"principalId eq '{principal}' and roleDefinitionId eq '{role}'"
                },
            )
        except DirectoryError as e:
            return _directory_failure(e)
        if reply.status != 200:
            return _graph_failure(reply, "the assignment could not be read", {})
        value = _json(reply).get("value")
        if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
            return StepResult(False, "Graph sent a malformed assignment list", transient=True)
        return [
            i
            for i in value
            if i.get("principalId") == principal and i.get("roleDefinitionId") == role
        ]


def _upn(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.removeprefix("user:")
    return text if _UPN.match(text) else None


def _justification(action: Action) -> str:
    text = f"keyturn break-glass {action.request_id}"
    if action.justification:
        text += f": {action.justification}"
    return text[:500]


def _json(reply: GraphReply) -> dict[str, Any]:
    op = Operation("read Graph's answer", 0.0)
    try:
        return reply.json_object(op)
    except DirectoryError:
        return {}


def _ends_by(instance: Mapping[str, Any], limit: datetime) -> bool:
    end = instance.get("endDateTime")
    if not isinstance(end, str):
        return False  # a permanent assignment is not what was approved
    try:
        return parse_iso(end) <= limit
    except KeyturnError:
        return False


def _graph_failure(reply: GraphReply, what: str, reference: Mapping[str, str]) -> StepResult:
    code = reply.graph_error_code()
    detail = f"{what}: Microsoft Graph answered {reply.status} {code}".rstrip()
    if reply.status in (401, 403):
        detail += " (run `keyturn entra check` for the missing permission)"
    return StepResult.from_status(reply.status, detail, reference=reference)


def _directory_failure(error: DirectoryError) -> StepResult:
    # Unreachable / throttled past the deadline is worth another try; a refused
    # credential or a misconfiguration is not.
    transient = error.reason_code == "DIRECTORY_UNAVAILABLE"
    return StepResult(False, error.message, transient=transient)
