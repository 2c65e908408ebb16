"""``EntraDirectory``: the ``core.ports.Directory`` port on Entra ID and Microsoft Graph.

Who may approve is decided by group membership in Entra ID, read at decision time:

* ``resolve`` turns a Teams ``aadObjectId`` (``GET /users/{id}``) or a Slack email
  (``GET /users?$filter=mail eq … or userPrincipalName eq …``) into one person, and
  refuses unknown, ambiguous, disabled and (unless allowed) guest accounts.
* ``eligibility`` asks, concurrently: the user (``accountEnabled``, ``userType``),
  ``checkMemberGroups`` in batches of at most 20 group ids (transitive membership),
  and, when PIM is asked, the user's PIM-for-Groups assignment schedule instances
  (``$filter=principalId eq …``), keeping the *active* ``member`` ones and their end.

Fail closed: every answer that is missing, partial or malformed, every 5xx, every
network error and every throttling that outlasts ``retry_deadline_seconds`` raises
``DirectoryError``; nothing is ever read as "member" or "not a member" by default.
Answers are cached for ``cache_seconds`` (see ``cache.py``); ``bypass_cache=True``
(break-glass) always asks Graph.

Microsoft Graph application permissions (admin consent required), least privileged:

==========================================  ===========================================
``User.Read.All``                           read users: ``accountEnabled``, ``userType``,
                                            ``mail``, UPN; resolve by email
``GroupMember.Read.All``                    ``checkMemberGroups``, ``GET /groups/{id}``
``PrivilegedAssignmentSchedule.Read.AzureADGroup``  PIM for Groups assignment schedule
                                            instances (only when a policy requires PIM;
                                            needs Entra ID P2 / ID Governance)
==========================================  ===========================================

``Group.Read.All`` or ``Directory.Read.All`` also satisfy the group reads, and the
``ReadWrite`` forms satisfy the reads, but keyturn needs no write permission.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp
from pydantic import ValidationError

from adapters.entra.cache import EligibilityCache
from adapters.entra.graph import GraphClient, Operation, SystemTimer, Timer
from adapters.entra.settings import EntraSettings, is_guid
from adapters.entra.tokens import MsalTokenSource
from adapters.entra.wire import (
    GraphAssignmentPage,
    GraphGroup,
    GraphStringList,
    GraphUser,
    GraphUserList,
)
from core.errors import DirectoryError
from core.identity import Eligibility, IdentityKind, IdentityRef, Resolution
from core.times import require_aware

SOURCE = "entra"
CHECK_MEMBER_GROUPS_LIMIT = 20  # Graph: "up to a maximum of 20 groups per request"
MAX_PAGES = 20  # bound on @odata.nextLink pages followed for one PIM query
_USER_SELECT = "id,displayName,mail,userPrincipalName,accountEnabled,userType"
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_PIM_INSTANCES = "identityGovernance/privilegedAccess/group/assignmentScheduleInstances"
# When several errors happen at once, report the one that says most about the person.
_ERROR_PRIORITY = {"IDENTITY_NOT_FOUND": 0, "DIRECTORY_AUTH_FAILED": 1}


class EntraDirectory:
    """Entra ID through msal (app-only token) and Microsoft Graph (aiohttp).

    Args:
        settings: tenant, credential, endpoints and limits.
        http_client: msal's HTTP seam (tests route the authority to a stand-in).
        session: an aiohttp session to use (not closed here); one is made otherwise.
        timer: monotonic clock and sleep for retries (tests pass a fake).
        token_source: overrides the msal token source (rarely needed).

    Use as an async context manager or call :meth:`close`.
    """

    source = SOURCE

    def __init__(
        self,
        settings: EntraSettings,
        *,
        http_client: Any = None,
        session: aiohttp.ClientSession | None = None,
        timer: Timer | None = None,
        token_source: MsalTokenSource | None = None,
    ) -> None:
        self._settings = settings
        self._timer: Timer = timer or SystemTimer()
        self._tokens = token_source or MsalTokenSource(settings, http_client=http_client)
        self._graph = GraphClient(
            settings.graph_base,
            request_timeout_seconds=settings.request_timeout_seconds,
            timer=self._timer,
            session=session,
        )
        self._cache = EligibilityCache(settings.cache_seconds, settings.cache_max_entries)

    async def __aenter__(self) -> EntraDirectory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._graph.close()

    @property
    def settings(self) -> EntraSettings:
        return self._settings

    # -- the Directory port -------------------------------------------------------

    async def resolve(
        self, ref: IdentityRef, *, now: datetime, allow_guests: bool = False
    ) -> Resolution:
        """Resolve an object id or an email/UPN to one enabled Entra user.

        Raises:
            DirectoryError: IDENTITY_NOT_FOUND (no such user, malformed id or email, or a
                Slack/Teams user id, which Entra cannot resolve), IDENTITY_AMBIGUOUS (an
                email matching several users), ACCOUNT_DISABLED, GUEST_NOT_ALLOWED,
                DIRECTORY_UNAVAILABLE, DIRECTORY_AUTH_FAILED, DIRECTORY_CONFIG_INVALID.
        """
        now = require_aware(now)
        op = self._operation("resolve this identity")
        value = ref.value.strip()
        if ref.kind is IdentityKind.OBJECT_ID:
            user = await self._user_by_id(self._object_id(value), op)
            method = "object_id"
        elif ref.kind is IdentityKind.EMAIL:
            user = await self._user_by_email(value, op)
            method = "email"
        else:
            raise DirectoryError(
                "IDENTITY_NOT_FOUND",
                f"Entra ID cannot resolve a {ref.kind.value} id; resolve the person by "
                "email or object id instead.",
            )
        person = user.person()
        if not person.enabled:
            raise DirectoryError(
                "ACCOUNT_DISABLED", f"{person.display_name}'s account is disabled in Entra ID."
            )
        if person.is_guest and not allow_guests:
            raise DirectoryError(
                "GUEST_NOT_ALLOWED",
                f"{person.display_name} is a guest in this tenant; guests may not approve here.",
            )
        return Resolution(person=person, ref=ref, method=method, source=SOURCE, resolved_at=now)

    async def eligibility(
        self,
        object_id: str,
        group_ids: Sequence[str],
        *,
        now: datetime,
        check_pim: bool = False,
        bypass_cache: bool = False,
    ) -> Eligibility:
        """Confirm, now, which of ``group_ids`` the user is a (transitive) member of.

        Raises:
            DirectoryError: IDENTITY_NOT_FOUND (no such user or malformed id),
                DIRECTORY_UNAVAILABLE (unreachable, 5xx, throttled past the deadline,
                malformed or partial answer, malformed group id), DIRECTORY_AUTH_FAILED,
                DIRECTORY_CONFIG_INVALID.
        """
        now = require_aware(now)
        op = self._operation("confirm eligibility")
        oid = self._object_id(object_id.strip())
        groups = self._group_ids(group_ids, op)
        key = (oid, frozenset(groups), check_pim)
        if not bypass_cache:
            cached = self._cache.get(key, now=now)
            if cached is not None:
                return cached
        token = await self._tokens.access_token(purpose=op.purpose)
        batches = [
            groups[i : i + CHECK_MEMBER_GROUPS_LIMIT]
            for i in range(0, len(groups), CHECK_MEMBER_GROUPS_LIMIT)
        ]
        try:
            async with asyncio.TaskGroup() as tg:
                user_task = tg.create_task(self._user_by_id(oid, op, token=token))
                member_tasks = [
                    tg.create_task(self._check_member_groups(oid, batch, op, token))
                    for batch in batches
                ]
                pim_task = (
                    tg.create_task(self._active_pim(oid, groups, op, token, now))
                    if check_pim
                    else None
                )
        except BaseExceptionGroup as group:
            error = _most_telling(group)
            raise error from error.__cause__
        user = user_task.result()
        member_of: set[str] = set()
        for task in member_tasks:
            member_of |= task.result()
        result = Eligibility(
            object_id=user.id.lower(),
            display_name=user.display_name or user.user_principal_name or user.id,
            checked_groups=frozenset(groups),
            member_of=frozenset(member_of),
            checked_at=now,
            source=SOURCE,
            enabled=user.account_enabled,
            is_guest=user.is_guest,
            pim_checked=check_pim,
            pim_active_until=pim_task.result() if pim_task is not None else {},
        )
        # A bypassing call stores its answer too: it is the freshest there is.
        self._cache.put(key, result)
        return result

    # -- used by `keyturn entra check` --------------------------------------------

    async def token_roles(self) -> frozenset[str]:
        """The application permissions (``roles`` claim) in the current app token.

        Raises:
            DirectoryError: the token could not be acquired or read.
        """
        claims = await self._tokens.token_claims(purpose="check the configuration")
        roles = claims.get("roles")
        if not isinstance(roles, list):
            return frozenset()
        return frozenset(r for r in roles if isinstance(r, str))

    async def group_display_name(self, group_id: str) -> str | None:
        """The group's display name, or ``None`` when Graph says it does not exist.

        Raises:
            DirectoryError: malformed id, or Graph could not answer.
        """
        op = self._operation("check the configuration")
        if not is_guid(group_id):
            raise DirectoryError(
                "DIRECTORY_CONFIG_INVALID", f"{group_id!r} is not an Entra group id (a GUID)."
            )
        token = await self._tokens.access_token(purpose=op.purpose)
        reply = await self._graph.request(
            "GET",
            self._graph.url(f"groups/{group_id.lower()}"),
            token=token,
            op=op,
            params={"$select": "id,displayName"},
        )
        if reply.status == 404:
            return None
        reply.expect_ok(op)
        try:
            group = GraphGroup.model_validate(reply.json_object(op))
        except ValidationError as e:
            raise op.unavailable("Microsoft Graph sent a malformed group") from e
        if group.id.lower() != group_id.lower():
            raise op.unavailable("Microsoft Graph answered with a different group")
        return group.display_name or group.id

    # -- Graph calls ---------------------------------------------------------------

    def _operation(self, purpose: str) -> Operation:
        budget = self._settings.retry_deadline_seconds
        return Operation(purpose, self._timer.monotonic() + budget, budget)

    @staticmethod
    def _object_id(value: str) -> str:
        # The id goes into a URL path: anything but a GUID is refused before any call.
        if not is_guid(value):
            raise DirectoryError(
                "IDENTITY_NOT_FOUND", f"{value[:60]!r} is not an Entra object id (a GUID)."
            )
        return value.lower()

    @staticmethod
    def _group_ids(group_ids: Sequence[str], op: Operation) -> list[str]:
        if isinstance(group_ids, str):
            raise TypeError("group_ids must be a sequence of ids, not one string")
        seen: set[str] = set()
        groups: list[str] = []
        for raw in group_ids:
            gid = raw.strip()
            if not is_guid(gid):
                raise op.unavailable(f"{gid[:60]!r} is not an Entra group id (a GUID)")
            if gid.lower() not in seen:
                seen.add(gid.lower())
                groups.append(gid)
        return groups

    async def _user_by_id(self, oid: str, op: Operation, *, token: str | None = None) -> GraphUser:
        if token is None:
            token = await self._tokens.access_token(purpose=op.purpose)
        reply = await self._graph.request(
            "GET",
            self._graph.url(f"users/{oid}"),
            token=token,
            op=op,
            params={"$select": _USER_SELECT},
        )
        reply.expect_ok(op, not_found=f"No Entra ID user has the object id {oid}.")
        user = _parse_user(reply.json_object(op), op)
        if user.id.lower() != oid:
            raise op.unavailable("Microsoft Graph answered with a different user")
        return user

    async def _user_by_email(self, email: str, op: Operation) -> GraphUser:
        if len(email) > 320 or not _EMAIL_RE.match(email) or any(ord(c) < 32 for c in email):
            raise DirectoryError("IDENTITY_NOT_FOUND", f"{email[:80]!r} is not an email address.")
        literal = email.replace("'", "''")  # OData string literal escaping
        token = await self._tokens.access_token(purpose=op.purpose)
        reply = await self._graph.request(
            "GET",
            self._graph.url("users"),
            token=token,
            op=op,
            params={
                "$filter": f"mail eq '{literal}' or userPrincipalName eq '{literal}'",
                "$select": _USER_SELECT,
                "$top": "5",
            },
        )
        reply.expect_ok(op)
        try:
            page = GraphUserList.model_validate(reply.json_object(op))
        except ValidationError as e:
            raise op.unavailable("Microsoft Graph sent a malformed user list") from e
        if any(not u.matches_email(email) for u in page.value):
            raise op.unavailable("Microsoft Graph returned users that do not match the email")
        ids = {u.id.lower() for u in page.value}
        if len(ids) > 1 or page.next_link is not None:
            raise DirectoryError(
                "IDENTITY_AMBIGUOUS",
                f"Several Entra ID users match {email}; keyturn will not guess which one clicked.",
            )
        if not ids:
            raise DirectoryError("IDENTITY_NOT_FOUND", f"No Entra ID user has the email {email}.")
        user = page.value[0]
        if not is_guid(user.id):
            raise op.unavailable("Microsoft Graph returned a user without a valid object id")
        return user

    async def _check_member_groups(
        self, oid: str, batch: list[str], op: Operation, token: str
    ) -> set[str]:
        reply = await self._graph.request(
            "POST",
            self._graph.url(f"users/{oid}/checkMemberGroups"),
            token=token,
            op=op,
            json_body={"groupIds": batch},
        )
        reply.expect_ok(op, not_found=f"No Entra ID user has the object id {oid}.")
        try:
            answer = GraphStringList.model_validate(reply.json_object(op))
        except ValidationError as e:
            raise op.unavailable("Microsoft Graph sent a malformed group membership answer") from e
        asked = {g.lower(): g for g in batch}
        confirmed: set[str] = set()
        for gid in answer.value:
            original = asked.get(gid.lower())
            if original is None:
                raise op.unavailable("Microsoft Graph confirmed a group keyturn did not ask about")
            confirmed.add(original)
        # Fewer ids than asked is a normal answer: the user is not a member of the rest.
        return confirmed

    async def _active_pim(
        self, oid: str, groups: list[str], op: Operation, token: str, now: datetime
    ) -> dict[str, datetime | None]:
        asked = {g.lower(): g for g in groups}
        active: dict[str, datetime | None] = {}
        url = self._graph.url(_PIM_INSTANCES)
        params: dict[str, str] | None = {"$filter": f"principalId eq '{oid}'"}
        for _ in range(MAX_PAGES):
            reply = await self._graph.request("GET", url, token=token, op=op, params=params)
            reply.expect_ok(op)
            try:
                page = GraphAssignmentPage.model_validate(reply.json_object(op))
            except ValidationError as e:
                raise op.unavailable("Microsoft Graph sent malformed PIM assignments") from e
            for item in page.value:
                if item.principal_id.lower() != oid:
                    raise op.unavailable(
                        "Microsoft Graph sent PIM assignments of another principal"
                    )
                group = asked.get(item.group_id.lower())
                if group is None or item.access_id.lower() != "member":
                    continue
                if item.start is not None and item.start > now:
                    continue
                if item.end is not None and item.end <= now:
                    continue
                if group in active and active[group] is None:
                    continue
                current = active.get(group)
                if item.end is None or current is None or item.end > current:
                    active[group] = item.end
            if page.next_link is None:
                return active
            next_url = self._graph.same_service(page.next_link)
            if next_url is None:
                raise op.unavailable("Microsoft Graph sent a next-page link to another service")
            url, params = next_url, None
        raise op.unavailable(f"Microsoft Graph sent more than {MAX_PAGES} pages of PIM assignments")


def _parse_user(data: dict[str, Any], op: Operation) -> GraphUser:
    try:
        user = GraphUser.model_validate(data)
    except ValidationError as e:
        missing = "accountEnabled" in str(e)
        raise op.unavailable(
            "Microsoft Graph did not say whether the account is enabled (is User.Read.All granted?)"
            if missing
            else "Microsoft Graph sent a malformed user"
        ) from e
    return user


def _most_telling(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error to report from concurrent calls that failed together."""
    flat: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            flat.append(exc)
    directory_errors = [e for e in flat if isinstance(e, DirectoryError)]
    if len(directory_errors) != len(flat):
        # Something other than a directory answer failed (a bug, a cancellation):
        # surface it unchanged rather than dressing it up as a directory refusal.
        return next(e for e in flat if not isinstance(e, DirectoryError))
    return min(directory_errors, key=lambda e: _ERROR_PRIORITY.get(e.reason_code, 9))
