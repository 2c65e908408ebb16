"""A local stand-in for Microsoft Graph and the Entra ID token endpoint.

An aiohttp server on 127.0.0.1 (ephemeral port) that behaves like the parts of Entra
keyturn uses, records every call, and can be scripted per test:

* tenant discovery (``/{tenant}/v2.0/.well-known/openid-configuration``) and the token
  endpoint (``/{tenant}/oauth2/v2.0/token``), which checks the client id, the secret or
  the certificate's signed client assertion, and the scope, and answers with Entra's
  error shapes (``invalid_client`` + AADSTS codes);
* Graph ``/v1.0``: ``GET /users/{id}`` (honours ``$select``), ``GET /users?$filter=mail
  eq … or userPrincipalName eq …``, ``POST /users/{id}/checkMemberGroups`` (transitive,
  at most 20 ids, as Graph), PIM for Groups ``assignmentScheduleInstances`` (filter
  required, optional paging) and ``assignmentScheduleRequests`` (``adminAssign`` of
  ``member``/``owner`` with an ``afterDateTime`` expiration, ``adminRemove``; 404
  ``RoleAssignmentDoesNotExist`` for nothing to remove), ``GET /groups/{id}``; each
  checks the bearer token and the application permissions in it (403
  ``Authorization_RequestDenied`` otherwise; a broader permission, such as ReadWrite for
  Read, is accepted as Graph does).

Entra's own expiry: with :attr:`GraphStandIn.now` set (a function returning the time),
PIM instances whose ``endDateTime`` has passed are gone before every PIM call, as they
are in Entra whether or not keyturn is running. Left unset, nothing expires by itself
(tests of keyturn's own filtering add ended instances on purpose).

msal refuses a plain-http authority, so msal keeps the real
``https://login.microsoftonline.com/{tenant}`` and gets :class:`StandInHttpClient`,
which sends exactly that origin to the stand-in and refuses every other URL: nothing
leaves the machine.

Scripted replies (:meth:`GraphStandIn.script`) are served, in order, before the
default behaviour of a route; route names are in ``ROUTES``. The end of the module
holds a small tenant (``populate``) and builders shared by the tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import requests
from aiohttp import web
from cryptography import x509

from adapters.entra import EntraDirectory, EntraSettings

PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
ROUTES = (
    "instance",
    "openid",
    "token",
    "user",
    "users",
    "checkMemberGroups",
    "pim",
    "pimRequests",
    "group",
)
ALL_ROLES = (
    "User.Read.All",
    "GroupMember.Read.All",
    "PrivilegedAssignmentSchedule.Read.AzureADGroup",
)
_PIM_PATH = "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleInstances"
_PIM_REQUESTS_PATH = "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests"
PIM_GROUP_READ = (
    "PrivilegedAssignmentSchedule.Read.AzureADGroup",
    "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup",
)
PIM_GROUP_WRITE = "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup"
_EMAIL_FILTER = re.compile(r"^mail eq '((?:[^']|'')*)' or userPrincipalName eq '((?:[^']|'')*)'$")


@dataclass
class Reply:
    """A canned answer: status, JSON (or raw ``bytes``/``str``) body, headers, delay."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Call:
    route: str
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    at: float


def graph_error(status: int, code: str, message: str = "") -> Reply:
    return Reply(status, {"error": {"code": code, "message": message or code}})


def throttled(retry_after: str | None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(429, {"error": {"code": "TooManyRequests", "message": "throttled"}}, headers)


class GraphStandIn:
    """The stand-in server. Use ``async with GraphStandIn(...) as s:``."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str | None = None,
        certificate_pem: bytes | None = None,
        roles: Iterable[str] = ALL_ROLES,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.certificate = (
            x509.load_pem_x509_certificate(certificate_pem) if certificate_pem else None
        )
        self.roles = list(roles)
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.pim: list[dict[str, Any]] = []
        self.pim_requests: list[dict[str, Any]] = []
        self.pim_page_size: int | None = None
        self.now: Callable[[], datetime] | None = None
        self.calls: list[Call] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._token_key = secrets.token_bytes(32)
        self._issued: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.origin = ""

    # -- directory content -------------------------------------------------------

    def add_user(
        self,
        oid: str,
        display_name: str,
        *,
        mail: str | None = None,
        upn: str | None = None,
        enabled: bool = True,
        user_type: str = "Member",
    ) -> None:
        self.users[oid] = {
            "id": oid,
            "displayName": display_name,
            "mail": mail,
            "userPrincipalName": upn or mail or f"{oid}@contoso.test",
            "accountEnabled": enabled,
            "userType": user_type,
        }

    def add_group(
        self,
        gid: str,
        display_name: str,
        *,
        members: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> None:
        self.groups[gid] = {
            "displayName": display_name,
            "members": set(members),
            "groups": set(groups),
        }

    def add_pim(
        self,
        group: str,
        principal: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        access: str = "member",
        assignment_type: str = "Activated",
    ) -> None:
        self.pim.append(
            {
                "id": f"{group}_{access}_{len(self.pim)}",
                "groupId": group,
                "principalId": principal,
                "accessId": access,
                "assignmentType": assignment_type,
                "memberType": "Direct",
                "startDateTime": iso(start),
                "endDateTime": iso(end),
            }
        )

    def expire(self) -> None:
        """Entra's own expiry: drop the PIM instances that have ended (when ``now`` is set)."""
        if self.now is None:
            return
        now = self.now()
        self.pim = [i for i in self.pim if not ended(i, now)]

    def is_member(self, oid: str, gid: str) -> bool:
        """Transitive membership, cycle-safe, as ``checkMemberGroups`` reports it."""
        seen: set[str] = set()
        stack = [gid]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.groups:
                continue
            seen.add(current)
            group = self.groups[current]
            if oid in group["members"]:
                return True
            # nested groups: ``groups`` lists the groups that are members of this one
            stack.extend(group["groups"])
        return False

    # -- scripting and inspection ------------------------------------------------

    def script(self, route: str, *replies: Reply) -> None:
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}")
        self._scripts[route].extend(replies)

    def calls_to(self, route: str) -> list[Call]:
        return [c for c in self.calls if c.route == route]

    @property
    def graph_base(self) -> str:
        return f"{self.origin}/v1.0"

    def http_client(self) -> StandInHttpClient:
        return StandInHttpClient(PUBLIC_AUTHORITY, self.origin)

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> GraphStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def routes(self, app: web.Application) -> None:
        """Register the handlers (a subclass adds its own, then calls this)."""
        app.router.add_get("/common/discovery/instance", self._instance)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get(_PIM_PATH, self._pim)
        app.router.add_post(_PIM_REQUESTS_PATH, self._pim_request)
        app.router.add_get("/v1.0/users", self._users)
        app.router.add_get("/v1.0/users/{id}", self._user)
        app.router.add_post("/v1.0/users/{id}/checkMemberGroups", self._check_member_groups)
        app.router.add_get("/v1.0/groups/{id}", self._group)

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing ----------------------------------------------------------------

    async def _record(self, route: str, request: web.Request) -> Reply | None:
        raw = await request.read()
        body: Any
        if request.content_type == "application/json" and raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        elif request.content_type == "application/x-www-form-urlencoded":
            body = dict((await request.post()).items())
        else:
            body = raw.decode() if raw else None
        self.calls.append(
            Call(
                route,
                request.method,
                request.path,
                dict(request.query),
                body,
                request.headers.get("Authorization"),
                time.monotonic(),
            )
        )
        queue = self._scripts[route]
        return queue.popleft() if queue else None

    @staticmethod
    async def _respond(reply: Reply) -> web.Response:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if isinstance(reply.body, bytes | str):
            data = reply.body.encode() if isinstance(reply.body, str) else reply.body
            return web.Response(
                status=reply.status,
                body=data,
                headers=reply.headers,
                content_type="application/json",
            )
        if reply.body is None:
            return web.Response(status=reply.status, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    def _authorized(self, request: web.Request, *needed: str | tuple[str, ...]) -> Reply | None:
        """None when the bearer token is one the stand-in issued and holds every needed
        permission (a tuple: any one of them)."""
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        if not header.startswith("Bearer ") or token not in self._issued:
            return graph_error(
                401, "InvalidAuthenticationToken", "Access token is empty or invalid."
            )
        missing = [
            r
            for r in needed
            if not any(p in self.roles for p in ((r,) if isinstance(r, str) else r))
        ]
        if missing:
            return graph_error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        return None

    # -- login.microsoftonline.com -------------------------------------------------

    async def _instance(self, request: web.Request) -> web.Response:
        # msal asks for the authority's aliases (which hosts share a token cache).
        scripted = await self._record("instance", request)
        if scripted:
            return await self._respond(scripted)
        return web.json_response(
            {
                "tenant_discovery_endpoint": (
                    f"{PUBLIC_AUTHORITY}/{self.tenant_id}/v2.0/.well-known/openid-configuration"
                ),
                "api-version": "1.1",
                "metadata": [
                    {
                        "preferred_network": "login.microsoftonline.com",
                        "preferred_cache": "login.windows.net",
                        "aliases": [
                            "login.microsoftonline.com",
                            "login.windows.net",
                            "login.microsoft.com",
                            "sts.windows.net",
                        ],
                    }
                ],
            }
        )

    async def _openid(self, request: web.Request) -> web.Response:
        scripted = await self._record("openid", request)
        if scripted:
            return await self._respond(scripted)
        tenant = request.match_info["tenant"]
        if tenant != self.tenant_id:
            return web.json_response(
                {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                },
                status=400,
            )
        base = f"{PUBLIC_AUTHORITY}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{PUBLIC_AUTHORITY}/{tenant}/discovery/v2.0/keys",
            }
        )

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> web.Response:
        return web.json_response(
            {
                "error": error,
                "error_description": description,
                "error_codes": [int(description[6:].split(":")[0])],
            },
            status=status,
        )

    async def _token(self, request: web.Request) -> web.Response:
        scripted = await self._record("token", request)
        if scripted:
            return await self._respond(scripted)
        form = self.calls[-1].body
        assert isinstance(form, dict)
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type", "AADSTS70003: grant type.")
        if form.get("client_id") != self.client_id:
            return self._oauth_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not "
                f"found in the directory '{self.tenant_id}'.",
            )
        if form.get("scope") != f"{GRAPH_RESOURCE}/.default":
            return self._oauth_error(
                400, "invalid_scope", "AADSTS70011: The provided scope is invalid."
            )
        if "client_secret" in form:
            if self.client_secret is None or form["client_secret"] != self.client_secret:
                return self._oauth_error(
                    401,
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                    "in the request is the client secret value, not the client secret ID.",
                )
        elif "client_assertion" in form:
            if not self._assertion_ok(str(form["client_assertion"]), request.match_info["tenant"]):
                return self._oauth_error(
                    401,
                    "invalid_client",
                    "AADSTS700027: The certificate with identifier used to sign the client "
                    "assertion is not registered on application.",
                )
        else:
            return self._oauth_error(401, "invalid_client", "AADSTS7000216: credential required.")
        now = int(time.time())
        token = jwt.encode(
            {
                "aud": GRAPH_RESOURCE,
                "iss": f"https://sts.windows.net/{self.tenant_id}/",
                "tid": self.tenant_id,
                "appid": self.client_id,
                "roles": list(self.roles),
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
            },
            self._token_key,
            algorithm="HS256",
        )
        self._issued.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        )

    def _assertion_ok(self, assertion: str, tenant: str) -> bool:
        if self.certificate is None:
            return False
        try:
            claims = jwt.decode(
                assertion,
                self.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=f"{PUBLIC_AUTHORITY}/{tenant}/oauth2/v2.0/token",
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError:
            return False
        return bool(claims["iss"] == claims["sub"] == self.client_id)

    # -- graph.microsoft.com/v1.0 ----------------------------------------------------

    def _select(self, user: dict[str, Any], select: str | None) -> dict[str, Any]:
        if not select:
            return dict(user)
        wanted = {s.strip() for s in select.split(",")} | {"id"}
        return {k: v for k, v in user.items() if k in wanted}

    async def _user(self, request: web.Request) -> web.Response:
        scripted = await self._record("user", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, "User.Read.All")
        if denied:
            return await self._respond(denied)
        user = self.users.get(request.match_info["id"])
        if user is None:
            return await self._respond(graph_error(404, "Request_ResourceNotFound"))
        body = self._select(user, request.query.get("$select"))
        body["@odata.context"] = f"{self.graph_base}/$metadata#users/$entity"
        return web.json_response(body)

    async def _users(self, request: web.Request) -> web.Response:
        scripted = await self._record("users", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, "User.Read.All")
        if denied:
            return await self._respond(denied)
        match = _EMAIL_FILTER.match(request.query.get("$filter", ""))
        if not match:
            return await self._respond(graph_error(400, "Request_UnsupportedQuery"))
        mail = match.group(1).replace("''", "'").casefold()
        upn = match.group(2).replace("''", "'").casefold()
        found = [
            u
            for u in self.users.values()
            if (u["mail"] or "").casefold() == mail
            or (u["userPrincipalName"] or "").casefold() == upn
        ]
        top = int(request.query.get("$top", "100"))
        body: dict[str, Any] = {
            "value": [self._select(u, request.query.get("$select")) for u in found[:top]]
        }
        if len(found) > top:
            body["@odata.nextLink"] = f"{self.graph_base}/users?$skiptoken=next"
        return web.json_response(body)

    async def _check_member_groups(self, request: web.Request) -> web.Response:
        scripted = await self._record("checkMemberGroups", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, "User.Read.All", "GroupMember.Read.All")
        if denied:
            return await self._respond(denied)
        oid = request.match_info["id"]
        if oid not in self.users:
            return await self._respond(graph_error(404, "Request_ResourceNotFound"))
        body = self.calls[-1].body
        ids = body.get("groupIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return await self._respond(graph_error(400, "Request_BadRequest", "groupIds required"))
        if len(ids) > 20:
            return await self._respond(
                graph_error(400, "Request_BadRequest", "At most 20 groups may be checked.")
            )
        return web.json_response({"value": [g for g in ids if self.is_member(oid, g)]})

    async def _pim(self, request: web.Request) -> web.Response:
        scripted = await self._record("pim", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, PIM_GROUP_READ)
        if denied:
            return await self._respond(denied)
        self.expire()
        match = re.fullmatch(
            r"(principalId|groupId) eq '([^']+)'", request.query.get("$filter", "")
        )
        if not match:
            return await self._respond(
                graph_error(400, "BadRequest", "A filter on groupId or principalId is required.")
            )
        key, value = match.groups()
        items = [i for i in self.pim if i[key] == value]
        skip = int(request.query.get("$skiptoken", "0"))
        size = self.pim_page_size or len(items) or 1
        page = items[skip : skip + size]
        body: dict[str, Any] = {"value": page}
        if skip + size < len(items):
            body["@odata.nextLink"] = (
                f"{self.origin}{_PIM_PATH}?$filter={key}%20eq%20'{value}'&$skiptoken={skip + size}"
            )
        return web.json_response(body)

    async def _pim_request(self, request: web.Request) -> web.Response:
        """PIM for Groups: adminAssign / adminRemove of a membership or ownership."""
        scripted = await self._record("pimRequests", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, PIM_GROUP_WRITE)
        if denied:
            return await self._respond(denied)
        self.expire()
        body = self.calls[-1].body
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("action", "principalId", "groupId", "accessId")
        ):
            return await self._respond(graph_error(400, "InvalidRequest", "missing fields"))
        if body["accessId"] not in ("member", "owner"):
            return await self._respond(graph_error(400, "InvalidRequest", "accessId"))
        if body["principalId"] not in self.users:
            return await self._respond(graph_error(400, "InvalidPrincipal"))
        if body["groupId"] not in self.groups:
            return await self._respond(graph_error(404, "ResourceNotOnboarded"))
        key = (body["groupId"], body["principalId"], body["accessId"])
        self.pim_requests.append(body)
        number = len(self.pim_requests)
        if body["action"] == "adminAssign":
            schedule = body.get("scheduleInfo") or {}
            expiration = schedule.get("expiration") or {}
            if expiration.get("type") != "afterDateTime" or not expiration.get("endDateTime"):
                return await self._respond(graph_error(400, "InvalidSchedule"))
            if any((i["groupId"], i["principalId"], i["accessId"]) == key for i in self.pim):
                return await self._respond(graph_error(400, "RoleAssignmentExists"))
            self.pim.append(
                {
                    "id": f"{key[0]}_{key[2]}_pr{number}",
                    "groupId": key[0],
                    "principalId": key[1],
                    "accessId": key[2],
                    "assignmentType": "Assigned",
                    "memberType": "Direct",
                    "startDateTime": schedule.get("startDateTime"),
                    "endDateTime": expiration["endDateTime"],
                    "assignmentScheduleId": f"{key[0]}_{key[2]}_pr{number}",
                }
            )
            return web.json_response(
                {"id": f"pr{number}", "status": "Provisioned", "targetScheduleId": f"pr{number}"},
                status=201,
            )
        if body["action"] == "adminRemove":
            before = len(self.pim)
            self.pim = [
                i for i in self.pim if (i["groupId"], i["principalId"], i["accessId"]) != key
            ]
            if len(self.pim) == before:
                return await self._respond(graph_error(404, "RoleAssignmentDoesNotExist"))
            return web.json_response({"id": f"pr{number}", "status": "Revoked"}, status=201)
        return await self._respond(graph_error(400, "InvalidAction"))

    async def _group(self, request: web.Request) -> web.Response:
        scripted = await self._record("group", request)
        if scripted:
            return await self._respond(scripted)
        denied = self._authorized(request, "GroupMember.Read.All")
        if denied:
            return await self._respond(denied)
        gid = request.match_info["id"]
        group = self.groups.get(gid)
        if group is None:
            return await self._respond(graph_error(404, "Request_ResourceNotFound"))
        return web.json_response({"id": gid, "displayName": group["displayName"]})


def iso(d: datetime | None) -> str | None:
    """Graph's instant format (UTC, ``Z``), ``None`` kept."""
    return None if d is None else d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ended(instance: dict[str, Any], now: datetime) -> bool:
    """A PIM instance whose ``endDateTime`` is at or before ``now``."""
    end = instance.get("endDateTime")
    if not isinstance(end, str):
        return False
    return datetime.fromisoformat(end.replace("Z", "+00:00")) <= now


class StandInHttpClient:
    """msal's ``http_client``: sends ``public_origin`` URLs to the stand-in, refuses others."""

    def __init__(self, public_origin: str, local_origin: str) -> None:
        self._public = public_origin.rstrip("/")
        self._local = local_origin.rstrip("/")
        self._session = requests.Session()
        self.urls: list[str] = []

    def _route(self, url: str) -> str:
        self.urls.append(url)
        if not url.startswith(self._public + "/"):
            raise requests.ConnectionError(f"the stand-in refuses to leave the machine: {url}")
        return self._local + url[len(self._public) :]

    def get(
        self, url: str, params: Any = None, headers: Any = None, **kwargs: Any
    ) -> requests.Response:
        return self._session.get(self._route(url), params=params, headers=headers, timeout=10)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> requests.Response:
        return self._session.post(
            self._route(url), params=params, data=data, headers=headers, timeout=10
        )

    def close(self) -> None:
        self._session.close()


class FakeTimer:
    """A monotonic clock that only moves when retries sleep; records every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


# -- a small tenant shared by the Entra tests and the benchmark ------------------------

TENANT = "11111111-1111-4111-8111-111111111111"
CLIENT = "22222222-2222-4222-8222-222222222222"
SECRET = "stand-in-secret-value"
NOW = datetime(2026, 11, 23, 10, 43, 12, tzinfo=UTC)

ALICE = "a1a1a1a1-0000-4000-8000-000000000001"  # direct member of APPROVERS
BOB = "b2b2b2b2-0000-4000-8000-000000000002"  # member of LEADS, nested in APPROVERS
CAROL = "c3c3c3c3-0000-4000-8000-000000000003"  # member of nothing
DAVE = "d4d4d4d4-0000-4000-8000-000000000004"  # disabled
GUEST = "e5e5e5e5-0000-4000-8000-000000000005"  # guest, member of APPROVERS
ERIN = "f6f6f6f6-0000-4000-8000-000000000006"  # shares an email with FRANK
FRANK = "f7f7f7f7-0000-4000-8000-000000000007"

APPROVERS = "90000000-0000-4000-8000-000000000001"
LEADS = "90000000-0000-4000-8000-000000000002"
PIM_GROUP = "90000000-0000-4000-8000-000000000003"
OTHER = "90000000-0000-4000-8000-000000000004"


def populate(s: GraphStandIn) -> None:
    s.add_user(ALICE, "Alice Martin", mail="alice@contoso.test")
    s.add_user(BOB, "Bob Chen", mail="bob@contoso.test")
    s.add_user(CAROL, "Carol Diaz", mail="carol@contoso.test")
    s.add_user(DAVE, "Dave Olsen", mail="dave@contoso.test", enabled=False)
    s.add_user(
        GUEST,
        "Gus External",
        mail="gus@partner.test",
        upn="gus_partner.test#EXT#@contoso.onmicrosoft.com",
        user_type="Guest",
    )
    s.add_user(ERIN, "Erin Shared", mail="ops@contoso.test")
    s.add_user(FRANK, "Frank Shared", mail="frank@contoso.test", upn="ops@contoso.test")
    s.add_group(APPROVERS, "Payments approvers", members=[ALICE, GUEST], groups=[LEADS])
    s.add_group(LEADS, "SRE leads", members=[BOB])
    s.add_group(PIM_GROUP, "Prod admins (PIM)")
    s.add_group(OTHER, "Other")


def settings(standin: GraphStandIn, **overrides: Any) -> EntraSettings:
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "graph_base": standin.graph_base,
    }
    values.update(overrides)
    return EntraSettings(**values)


def directory(
    standin: GraphStandIn, *, timer: FakeTimer | None = None, **overrides: Any
) -> EntraDirectory:
    return EntraDirectory(
        settings(standin, **overrides),
        http_client=standin.http_client(),
        timer=timer or FakeTimer(),
    )
