"""The Graph stand-in plus PIM for directory roles (roleAssignmentSchedule*), for executors.

Adds, by subclassing :class:`tests.adapters.graph_standin.GraphStandIn`:

* ``POST /v1.0/roleManagement/directory/roleAssignmentScheduleRequests`` (route
  ``roleRequests``): ``adminAssign`` creates an active instance until the requested
  ``expiration.endDateTime``; ``adminRemove`` deletes it or answers 404
  ``RoleAssignmentDoesNotExist``; needs RoleAssignmentSchedule.ReadWrite.Directory (or
  the broader RoleManagement.ReadWrite.Directory);
* ``GET /v1.0/roleManagement/directory/roleAssignmentScheduleInstances`` (route
  ``roleInstances``) with ``$filter=principalId eq '…' and roleDefinitionId eq '…'`` or
  ``$filter=roleDefinitionId eq '…'``;
* ``GET /v1.0/users/{upn}``: Graph also accepts a user principal name as the key.

With ``now`` set, role instances past their end are gone too (Entra's own expiry).
PIM for Groups requests and instances come from the base stand-in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from tests.adapters import graph_standin as g

ROLE_ROLES = (*g.ALL_ROLES, "RoleManagement.ReadWrite.Directory")
#: Application permissions of a tenant set up for both PIM executors, least privileged.
EXECUTOR_ROLES = (
    "User.Read.All",
    "RoleAssignmentSchedule.ReadWrite.Directory",
    g.PIM_GROUP_WRITE,
)
ROLE_WRITE = ("RoleAssignmentSchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory")
ROLE_READ = (
    "RoleAssignmentSchedule.Read.Directory",
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    *ROLE_WRITE,
)
PRA = "e8611ab8-c189-46e8-94e1-60213ab1f814"  # Privileged Role Administrator (template id)
REQUESTS_PATH = "/v1.0/roleManagement/directory/roleAssignmentScheduleRequests"
INSTANCES_PATH = "/v1.0/roleManagement/directory/roleAssignmentScheduleInstances"
_FILTER = re.compile(r"(?:principalId eq '([^']+)' and )?roleDefinitionId eq '([^']+)'")


class PimStandIn(g.GraphStandIn):
    """``GraphStandIn`` that also assigns and removes directory roles through PIM."""

    def __init__(self, *, roles: Iterable[str] = ROLE_ROLES, **kwargs: Any) -> None:
        super().__init__(roles=roles, **kwargs)
        self.role_instances: list[dict[str, Any]] = []
        self.role_requests: list[dict[str, Any]] = []

    def script(self, route: str, *replies: g.Reply) -> None:
        if route in ("roleRequests", "roleInstances"):
            self._scripts[route].extend(replies)
            return
        super().script(route, *replies)

    def expire(self) -> None:
        super().expire()
        if self.now is not None:
            now = self.now()
            self.role_instances = [i for i in self.role_instances if not g.ended(i, now)]

    def routes(self, app: web.Application) -> None:
        app.router.add_post(REQUESTS_PATH, self._role_request)
        app.router.add_get(INSTANCES_PATH, self._role_instances)
        super().routes(app)

    async def _user(self, request: web.Request) -> web.Response:
        key = request.match_info["id"].lower()
        for oid, user in self.users.items():
            if str(user["userPrincipalName"]).lower() == key and oid.lower() != key:
                request.match_info["id"] = oid  # type: ignore[index]
        return await super()._user(request)

    async def _role_request(self, request: web.Request) -> web.Response:
        scripted = await self._record("roleRequests", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, ROLE_WRITE)
        if denied:
            return await self._respond(denied)
        self.expire()
        body = self.calls[-1].body
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str)
            for k in ("action", "principalId", "roleDefinitionId", "directoryScopeId")
        ):
            return await self._respond(g.graph_error(400, "InvalidRequest", "missing fields"))
        if body["principalId"] not in self.users:
            return await self._respond(g.graph_error(400, "InvalidPrincipal"))
        key = (body["principalId"], body["roleDefinitionId"], body["directoryScopeId"])
        self.role_requests.append(body)
        if body["action"] == "adminAssign":
            expiration = (body.get("scheduleInfo") or {}).get("expiration") or {}
            if expiration.get("type") != "afterDateTime" or not expiration.get("endDateTime"):
                return await self._respond(g.graph_error(400, "InvalidSchedule"))
            self.role_instances.append(
                {
                    "id": f"ri{len(self.role_requests)}",
                    "principalId": key[0],
                    "roleDefinitionId": key[1],
                    "directoryScopeId": key[2],
                    "assignmentType": "Assigned",
                    "startDateTime": body["scheduleInfo"].get("startDateTime"),
                    "endDateTime": expiration["endDateTime"],
                }
            )
            return web.json_response(
                {"id": f"rq{len(self.role_requests)}", "status": "Provisioned"}, status=201
            )
        if body["action"] == "adminRemove":
            before = len(self.role_instances)
            self.role_instances = [
                i
                for i in self.role_instances
                if (i["principalId"], i["roleDefinitionId"], i["directoryScopeId"]) != key
            ]
            if len(self.role_instances) == before:
                return await self._respond(g.graph_error(404, "RoleAssignmentDoesNotExist"))
            return web.json_response(
                {"id": f"rq{len(self.role_requests)}", "status": "Revoked"}, status=201
            )
        return await self._respond(g.graph_error(400, "InvalidAction"))

    async def _role_instances(self, request: web.Request) -> web.Response:
        scripted = await self._record("roleInstances", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, ROLE_READ)
        if denied:
            return await self._respond(denied)
        self.expire()
        match = _FILTER.fullmatch(request.query.get("$filter", ""))
        if not match:
            return await self._respond(g.graph_error(400, "BadRequest", "filter required"))
        principal, role = match.groups()
        value = [
            i
            for i in self.role_instances
            if principal in (None, i["principalId"]) and i["roleDefinitionId"] == role
        ]
        return web.json_response({"value": value})
