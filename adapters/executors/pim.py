"""What the Entra PIM executors share: one schedule-request API, two kinds of target.

PIM for directory roles (``entra.role.assign``, :mod:`adapters.executors.entra_pim`) and
PIM for Groups (``entra.group.add``, :mod:`adapters.executors.entra_group`) work the same
way, so :class:`PimExecutor` holds the steps and the subclasses only say where and what:

* execute: ``POST …/…ScheduleRequests`` with ``action: adminAssign`` and
  ``scheduleInfo.expiration`` ``afterDateTime`` = the window's end, so Entra removes the
  assignment even if keyturn is down;
* verify: ``GET …/…ScheduleInstances?$filter=…`` finds it active, as approved, ending by
  the window (a few minutes of slack: Entra rounds schedule times);
* rollback: ``POST …/…ScheduleRequests`` with ``action: adminRemove``; a 400/404 refusal
  is accepted only when a read confirms nothing is left (Entra's own expiry got there
  first), anything else is reported as it is;
* verify_rollback: the same read finds nothing that has not ended;
* :meth:`PimExecutor.list_active`: who holds a watched role or group now
  (reconciliation, :mod:`bot.service.reconcile`).

Target checks (pure, before anything is sent): the call's ``tenant_id`` is this
executor's tenant; the target (``role`` / ``group`` display name) is one of the
configured names, each mapped to its object id, and nothing else; the ``principal`` is a
user principal name (optionally ``user:``-prefixed) and, when the binding lists
``principals``, one of them.

Outcomes: 2xx ok; 429/5xx/no answer transient (retried by the use case); any other 4xx a
definitive "no" (401/403: keyturn lacks a permission — run ``keyturn entra check``).
Graph's replication lag makes a fresh assignment invisible for a moment, so a verify that
finds nothing (or a verify_rollback that still finds it) is transient, not final.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

from adapters.entra.graph import GraphClient, GraphReply, Operation, SystemTimer, Timer
from adapters.entra.settings import EntraSettings, is_guid
from adapters.entra.tokens import MsalTokenSource
from core.errors import ConfigError, DirectoryError, GateDeniedError, KeyturnError
from core.executor import Action, ActiveAssignment, StepResult
from core.ports import Clock
from core.times import parse_iso, require_aware, to_iso

UPN = re.compile(r"\A[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\Z")
#: Entra rounds schedule times; an instance may end a little after the window we asked for.
END_SLACK = timedelta(minutes=5)
#: PIM's answer to removing an assignment that does not exist (both PIM APIs).
GONE_CODES = frozenset({"RoleAssignmentDoesNotExist"})
MAX_PAGES = 50


class _Refused(Exception):
    """Graph answered a read with something other than 200 (internal to this module)."""

    def __init__(self, reply: GraphReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class PimExecutor:
    """The steps of a PIM executor; subclasses name the API paths and the target.

    Raises (constructor):
        ConfigError: ``CONFIG_INVALID`` — no targets, a target id that is not a GUID, or a
            listed principal that is not a user principal name.
    """

    KIND: ClassVar[str]
    #: The call parameter naming the target (a display name from the binding's mapping).
    target_param: ClassVar[str]
    #: The binding option holding that mapping.
    targets_option: ClassVar[str]
    #: The instance / request field holding the target's id.
    target_field: ClassVar[str]
    #: The execute reference key under which the target's id is kept.
    reference_key: ClassVar[str]
    requests_path: ClassVar[str]
    instances_path: ClassVar[str]
    #: For messages: "role assignment", "group membership".
    what: ClassVar[str]

    def __init__(
        self,
        settings: EntraSettings,
        *,
        targets: Mapping[str, str],
        clock: Clock,
        principals: Iterable[str] | None = None,
        http_client: Any = None,
        timer: Timer | None = None,
        token_source: MsalTokenSource | None = None,
    ) -> None:
        where = f"executors.{self.kind}.{self.targets_option}"
        if not isinstance(targets, Mapping) or not targets:
            raise ConfigError("CONFIG_INVALID", f"{where} maps display names to object ids")
        if not all(isinstance(k, str) and k and is_guid(str(v)) for k, v in targets.items()):
            raise ConfigError("CONFIG_INVALID", f"{where} maps display names to GUIDs")
        allowed: frozenset[str] | None = None
        if principals is not None:
            names = [_upn(p) for p in principals]
            if not names or any(n is None for n in names):
                raise ConfigError(
                    "CONFIG_INVALID",
                    f"executors.{self.kind}.principals lists user principal names",
                )
            allowed = frozenset(n.lower() for n in names if n is not None)
        self._settings = settings
        self._targets = {k: str(v).lower() for k, v in targets.items()}
        self._principals = allowed
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
        return self.KIND

    async def close(self) -> None:
        await self._graph.close()

    @property
    def target_ids(self) -> frozenset[str]:
        """The object ids this executor may assign (lower-case)."""
        return frozenset(self._targets.values())

    # -- what subclasses say -------------------------------------------------------

    def _assign_fields(self, target_id: str) -> dict[str, Any]:
        """The request body's fields naming the target (and scope / access)."""
        raise NotImplementedError

    def _instance_filter(self, principal_id: str, target_id: str) -> str:
        """``$filter`` of the verification read for one principal's assignment."""
        raise NotImplementedError

    def _target_filter(self, target_id: str) -> str:
        """``$filter`` listing every assignment of a target."""
        raise NotImplementedError

    def _as_approved(self, instance: Mapping[str, Any]) -> bool:
        """Beyond principal and target: the scope / access is the one this executor
        assigns (so it is the assignment keyturn made, or would have made)."""
        raise NotImplementedError

    # -- pure target check ---------------------------------------------------------

    def check_target(self, action: Action) -> None:
        """Refuse a tenant, target or principal this executor must not touch.

        Raises:
            GateDeniedError: ``TARGET_NOT_ALLOWED``.
        """
        params = action.params
        if str(params.get("tenant_id", "")).lower() != self._settings.tenant_id.lower():
            raise GateDeniedError(
                "TARGET_NOT_ALLOWED", "the call names another tenant than this executor's"
            )
        target = params.get(self.target_param)
        if not isinstance(target, str) or target not in self._targets:
            raise GateDeniedError(
                "TARGET_NOT_ALLOWED",
                f"{self.target_param} {target!r} is not configured for executor {self.kind}",
            )
        upn = _upn(params.get("principal"))
        if upn is None:
            raise GateDeniedError("TARGET_NOT_ALLOWED", "the principal is not a user name")
        if self._principals is not None and upn.lower() not in self._principals:
            raise GateDeniedError(
                "TARGET_NOT_ALLOWED",
                f"principal {upn} is not one executor {self.kind} may assign",
            )

    def _target_of(self, action: Action) -> str:
        return self._targets[str(action.params[self.target_param])]

    # -- steps -----------------------------------------------------------------------

    async def execute(self, action: Action) -> StepResult:
        target = self._target_of(action)
        try:
            token = await self._token(f"assign a {self.what}")
            principal = await self._principal(token, action)
            if isinstance(principal, StepResult):
                return principal
            now = require_aware(self._clock.now())
            body = {
                "action": "adminAssign",
                "justification": _justification(action),
                "principalId": principal,
                **self._assign_fields(target),
                "scheduleInfo": {
                    "startDateTime": to_iso(now),
                    "expiration": {
                        "type": "afterDateTime",
                        "endDateTime": to_iso(action.window_closes_at),
                    },
                },
            }
            reply = await self._send(
                "POST", self.requests_path, token, f"assign a {self.what}", body=body
            )
        except DirectoryError as e:
            return _directory_failure(e)
        reference = {"principal_id": principal, self.reference_key: target}
        if reply.status in (200, 201):
            data = _json(reply)
            reference["schedule_request_id"] = str(data.get("id", ""))
            return StepResult(
                True,
                f"PIM accepted the {self.what} ({data.get('status', 'submitted')})",
                status=reply.status,
                reference=reference,
            )
        return _graph_failure(reply, f"PIM refused the {self.what}", reference)

    async def verify(self, action: Action) -> StepResult:
        found = await self._instances(action)
        if isinstance(found, StepResult):
            return found
        limit = action.window_closes_at + END_SLACK
        good = [i for i in found if self._as_approved(i) and _ends_by(i, limit)]
        if good:
            return StepResult(True, f"the {self.what} is active and ends with the window")
        if found:
            # Present but not as approved (other scope or access, no end): definitive.
            return StepResult(False, f"the {self.what} is active but not as approved")
        return StepResult(False, f"the {self.what} is not visible yet", transient=True)

    async def rollback(self, action: Action) -> StepResult:
        target = self._target_of(action)
        try:
            token = await self._token(f"remove a {self.what}")
            principal = action.reference.get("principal_id") or await self._principal(token, action)
            if isinstance(principal, StepResult):
                return principal
            body = {
                "action": "adminRemove",
                "justification": f"keyturn rollback of {action.request_id}",
                "principalId": principal,
                **self._assign_fields(target),
            }
            reply = await self._send(
                "POST", self.requests_path, token, f"remove a {self.what}", body=body
            )
        except DirectoryError as e:
            return _directory_failure(e)
        if reply.status in (200, 201):
            return StepResult(True, "PIM accepted the removal", status=reply.status)
        if reply.status in (400, 404):
            # PIM refuses to remove what is not there (Entra's own expiration may have got
            # there first). Believe it only when a read shows nothing is left.
            left = await self._instances(action)
            if isinstance(left, list) and not [i for i in left if self._as_approved(i)]:
                code = reply.graph_error_code() or str(reply.status)
                return StepResult(
                    True, f"nothing left to remove (PIM answered {code})", status=reply.status
                )
        return _graph_failure(reply, "PIM refused the removal", {})

    async def verify_rollback(self, action: Action) -> StepResult:
        found = await self._instances(action)
        if isinstance(found, StepResult):
            return found
        # Only what this executor assigns counts: a standing assignment of the principal
        # at another scope, or as a group owner, is not what was rolled back.
        if not [i for i in found if self._as_approved(i)]:
            return StepResult(True, f"no {self.what} remains")
        return StepResult(False, f"the {self.what} is still active", transient=True)

    # -- reconciliation ----------------------------------------------------------------

    async def list_active(self, target_id: str, *, now: datetime) -> list[ActiveAssignment]:
        """Every assignment of ``target_id`` (a role definition or group id) not yet ended.

        Raises:
            DirectoryError: ``DIRECTORY_UNAVAILABLE`` / ``DIRECTORY_AUTH_FAILED`` when
                Graph cannot be read.
            ConfigError: ``CONFIG_INVALID`` for an id that is not a GUID.
        """
        if not is_guid(target_id):
            raise ConfigError("CONFIG_INVALID", f"{target_id!r} is not an object id")
        target = target_id.lower()
        purpose = f"list who holds {target}"
        token = await self._token(purpose)
        try:
            items = await self._read(token, self._target_filter(target), purpose)
        except _Refused as refused:
            refused.reply.expect_ok(self._op(purpose))  # raises: the status is not 200
            raise
        found = []
        for item in items:
            if str(item.get(self.target_field, "")).lower() != target:
                continue
            if not _live(item, now):
                continue
            principal = item.get("principalId")
            if not isinstance(principal, str) or not is_guid(principal):
                raise self._op(purpose).unavailable("Microsoft Graph sent a malformed assignment")
            found.append(
                ActiveAssignment(
                    target_id=target,
                    principal_id=principal.lower(),
                    ends_at=_end(item),
                    assignment_type=str(item.get("assignmentType") or ""),
                )
            )
        return found

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
        return str(oid).lower()

    async def _read(self, token: str, odata_filter: str, purpose: str) -> list[dict[str, Any]]:
        """Every page of ``instances_path`` under ``odata_filter``.

        Raises:
            _Refused: Graph answered other than 200.
            DirectoryError: unreachable, malformed, a foreign next link, too many pages.
        """
        op = self._op(purpose)
        url = self._graph.url(self.instances_path)
        params: dict[str, str] | None = {"$filter": odata_filter}
        items: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            reply = await self._graph.request("GET", url, token=token, op=op, params=params)
            if reply.status != 200:
                raise _Refused(reply)
            page = reply.json_object(op)
            value = page.get("value")
            if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
                raise op.unavailable("Microsoft Graph sent a malformed assignment list")
            items.extend(value)
            link = page.get("@odata.nextLink")
            if link is None:
                return items
            next_url = self._graph.same_service(str(link))
            if next_url is None:
                raise op.unavailable("Microsoft Graph sent a next-page link to another service")
            url, params = next_url, None
        raise op.unavailable(f"Microsoft Graph sent more than {MAX_PAGES} pages of assignments")

    async def _instances(self, action: Action) -> list[dict[str, Any]] | StepResult:
        """The principal's assignments of the action's target that have not ended."""
        purpose = f"read the {self.what}"
        target = self._target_of(action)
        try:
            token = await self._token(purpose)
            principal = action.reference.get("principal_id") or await self._principal(token, action)
            if isinstance(principal, StepResult):
                return principal
            items = await self._read(token, self._instance_filter(principal, target), purpose)
        except _Refused as refused:
            return _graph_failure(refused.reply, f"the {self.what} could not be read", {})
        except DirectoryError as e:
            return _directory_failure(e)
        now = require_aware(self._clock.now())
        return [
            i
            for i in items
            if str(i.get("principalId", "")).lower() == principal.lower()
            and str(i.get(self.target_field, "")).lower() == target
            and _live(i, now)
        ]


def _upn(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.removeprefix("user:")
    return text if UPN.match(text) else None


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


def _end(instance: Mapping[str, Any]) -> datetime | None:
    """The instance's end; ``None`` for a permanent one (or one whose end is unreadable,
    which is treated as permanent: never as already ended)."""
    end = instance.get("endDateTime")
    if not isinstance(end, str):
        return None
    try:
        return parse_iso(end)
    except KeyturnError:
        return None


def _live(instance: Mapping[str, Any], now: datetime) -> bool:
    """Not ended: permanent, or ending after ``now`` (a future start still counts)."""
    end = _end(instance)
    return end is None or end > now


def _ends_by(instance: Mapping[str, Any], limit: datetime) -> bool:
    end = _end(instance)
    return end is not None and end <= limit  # a permanent assignment is not what was approved


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
