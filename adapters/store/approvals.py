"""Requests, decisions, grants and tokens: the core persistence ports in SQL.

Each method is one statement (two on an error path, to say precisely what went wrong).
The guarantees come from the schema (``adapters.store.tables``): a second decision by
the same person is an ``ON CONFLICT DO NOTHING`` that inserts nothing, a second grant
for a request likewise, and consuming a grant is one conditional ``UPDATE`` whose row
count says whether this caller was the one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from adapters.store import tables as t
from adapters.store.base import Repository, foreign_key_violation, load, require_row_matches
from core.errors import ApprovalRefusedError, GateDeniedError, IllegalTransitionError, StoreError
from core.grants import Grant
from core.quorum import ApproverDecision
from core.records import (
    TokenRecord,
    decision_from_record,
    decision_to_record,
    grant_from_record,
    grant_to_record,
    request_from_record,
    request_to_record,
)
from core.requests import TRANSITIONS, ApprovalRequest, RequestState
from core.times import parse_iso, require_aware, to_iso

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")

_REQUEST_BY_ID = select(t.requests.c.state, t.requests.c.record).where(
    t.requests.c.request_id == bindparam("request_id")
)
_REQUEST_BY_ID_LOCKED = _REQUEST_BY_ID.with_for_update()
_REQUEST_STATE = select(t.requests.c.state).where(
    t.requests.c.request_id == bindparam("request_id")
)
_REPLACE_REQUEST = (
    update(t.requests)
    .where(t.requests.c.request_id == bindparam("b_request_id"))
    .where(t.requests.c.state == bindparam("b_state"))
    .values(
        state=bindparam("state"),
        state_changed_at=bindparam("state_changed_at"),
        record=bindparam("record"),
    )
)
_DUE_REQUESTS = (
    select(t.requests.c.state, t.requests.c.record)
    .where(t.requests.c.state == RequestState.PENDING.value)
    .where(t.requests.c.expires_at <= bindparam("now"))
    .order_by(t.requests.c.expires_at, t.requests.c.request_id)
    .limit(bindparam("limit"))
)
_DECISIONS_FOR = (
    select(t.decisions.c.approver_id, t.decisions.c.record)
    .where(t.decisions.c.request_id == bindparam("request_id"))
    .order_by(t.decisions.c.id)
)
_GRANT_FOR_REQUEST = select(t.grants.c.grant_id, t.grants.c.record).where(
    t.grants.c.request_id == bindparam("request_id")
)
_GRANT_BY_ID = select(t.grants.c.grant_id, t.grants.c.record).where(
    t.grants.c.grant_id == bindparam("grant_id")
)
_GRANT_USE = select(t.grants.c.consumed_at, t.grants.c.expires_at).where(
    t.grants.c.grant_id == bindparam("grant_id")
)
_CONSUME_GRANT = (
    update(t.grants)
    .where(t.grants.c.grant_id == bindparam("b_grant_id"))
    .where(t.grants.c.consumed_at.is_(None))
    .where(t.grants.c.expires_at > bindparam("now"))
    .values(consumed_at=bindparam("at"))
)
_TOKEN_BY_HASH = select(t.tokens.c.record).where(t.tokens.c.token_hash == bindparam("token_hash"))
_TOKENS_FOR_JOB = (
    select(t.tokens.c.record)
    .where(t.tokens.c.job_id == bindparam("job_id"))
    .order_by(t.tokens.c.issued_at)
)
_IS_REVOKED = select(t.token_revocations.c.token_hash).where(
    t.token_revocations.c.token_hash == bindparam("token_hash")
)


#: Ids per ``IN (…)`` when reading many states (well under SQLite's parameter limit).
_STATES_CHUNK = 500


def _request_row(request: ApprovalRequest) -> dict[str, Any]:
    binding = request.binding
    return {
        "request_id": binding.request_id,
        "request_hash": request.request_hash_b64u,
        "job_id": binding.job_id,
        "policy_hash": binding.policy_hash_b64u,
        "tool_route": binding.tool_route,
        "payload_hash": binding.payload_hash_b64u,
        "requester": binding.requester,
        "state": request.state.value,
        "created_at": binding.created_at,
        "expires_at": binding.expires_at,
        "state_changed_at": request.state_changed_at,
        "record": request_to_record(request),
    }


def _request_from_row(state: str, record: Any) -> ApprovalRequest:
    request = load(request_from_record, record, "request")
    require_row_matches("request", state, request.state.value)
    return request


class SqlRequestRepository(Repository):
    """``core.ports.RequestRepository`` on SQL."""

    __slots__ = ()

    async def add(self, request: ApprovalRequest) -> None:
        """Raises ``StoreError("STORE_CONFLICT")`` when the request id exists."""
        statement = self._prepared(
            "requests.add", lambda insert: insert(t.requests).on_conflict_do_nothing()
        )
        result = await self._write(statement, _request_row(request), doing="saving the request")
        if result.rowcount != 1:
            raise StoreError("STORE_CONFLICT", f"request {request.request_id} already exists")

    async def get(self, request_id: str, *, for_update: bool = False) -> ApprovalRequest:
        """The stored request; ``for_update`` locks its row until the unit of work ends.

        On SQLite the whole unit of work already holds the write lock (``BEGIN
        IMMEDIATE``), so the lock clause is not needed there.

        Raises:
            StoreError: ``NOT_FOUND``; ``RECORD_CORRUPT`` for a row that does not load.
        """
        statement = _REQUEST_BY_ID_LOCKED if for_update else _REQUEST_BY_ID
        result = await self._execute(
            statement, {"request_id": request_id}, doing="reading the request"
        )
        row = result.first()
        if row is None:
            raise StoreError("NOT_FOUND", f"no request {request_id}")
        return _request_from_row(row.state, row.record)

    async def states(self, request_ids: Sequence[str]) -> dict[str, RequestState]:
        """The stored state of each known request among ``request_ids`` (unknown ones are
        left out), read without loading the records: what a waiting poll needs to know."""
        found: dict[str, RequestState] = {}
        ids = list(dict.fromkeys(request_ids))
        c = t.requests.c
        for start in range(0, len(ids), _STATES_CHUNK):
            chunk = ids[start : start + _STATES_CHUNK]
            result = await self._execute(
                select(c.request_id, c.state).where(c.request_id.in_(chunk)),
                doing="reading request states",
            )
            for row in result:
                try:
                    found[row.request_id] = RequestState(row.state)
                except ValueError as e:
                    raise StoreError(
                        "RECORD_CORRUPT", f"request {row.request_id} has an unknown state"
                    ) from e
        return found

    async def replace(self, before: ApprovalRequest, after: ApprovalRequest) -> None:
        """Store ``after`` only if the stored state is still ``before.state``.

        States only move forward (``core.requests.TRANSITIONS`` has no cycle), so the
        state is a sufficient version: no other writer can have moved it away and back.

        Raises:
            ValueError: ``after`` has another binding (what was approved cannot change).
            IllegalTransitionError: the state machine does not allow the move.
            StoreError: ``STORE_CONFLICT`` when another writer moved it first;
                ``NOT_FOUND`` when there is no such request.
        """
        if after.binding != before.binding:
            raise ValueError("replacing a request cannot change its binding")
        if after.state is not before.state and after.state not in TRANSITIONS[before.state]:
            raise IllegalTransitionError(
                "ILLEGAL_TRANSITION", f"a request cannot move from {before.state} to {after.state}"
            )
        params = {
            "b_request_id": before.request_id,
            "b_state": before.state.value,
            "state": after.state.value,
            "state_changed_at": after.state_changed_at,
            "record": request_to_record(after),
        }
        result = await self._write(_REPLACE_REQUEST, params, doing="updating the request")
        if result.rowcount == 1:
            return
        found = await self._execute(
            _REQUEST_STATE, {"request_id": before.request_id}, doing="reading the request"
        )
        state = found.scalar_one_or_none()
        if state is None:
            raise StoreError("NOT_FOUND", f"no request {before.request_id}")
        raise StoreError(
            "STORE_CONFLICT",
            f"request {before.request_id} is now {state}, not {before.state}: another "
            "replica changed it first",
        )

    async def find(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 100
    ) -> list[ApprovalRequest]:
        """Newest first, optionally only in ``states``."""
        statement = (
            select(t.requests.c.state, t.requests.c.record)
            .order_by(t.requests.c.created_at.desc(), t.requests.c.request_id)
            .limit(_limit(limit))
        )
        if states is not None:
            statement = statement.where(t.requests.c.state.in_([s.value for s in states]))
        result = await self._execute(statement, doing="listing requests")
        return [_request_from_row(row.state, row.record) for row in result]

    async def pending_clocks(self, *, limit: int = 500) -> list[tuple[str, datetime, datetime]]:
        """``(request id, created at, expires at)`` of pending requests, oldest first,
        without loading their records (what a reminder sweep looks at every tick)."""
        c = t.requests.c
        result = await self._execute(
            select(c.request_id, c.created_at, c.expires_at)
            .where(c.state == RequestState.PENDING.value)
            .order_by(c.created_at, c.request_id)
            .limit(_limit(limit)),
            doing="listing pending requests",
        )
        return [(r.request_id, r.created_at, r.expires_at) for r in result]

    async def lapsed_windows(self, *, now: datetime, limit: int = 500) -> list[str]:
        """Ids of approved requests whose grant has expired (windows to close), in one
        query instead of a grant read per approved request."""
        r, g = t.requests.c, t.grants.c
        result = await self._execute(
            select(r.request_id)
            .select_from(t.requests.join(t.grants, g.request_id == r.request_id))
            .where(r.state == RequestState.APPROVED.value, g.expires_at <= require_aware(now))
            .order_by(g.expires_at, r.request_id)
            .limit(_limit(limit)),
            doing="listing lapsed windows",
        )
        return [row.request_id for row in result]

    async def due(self, *, now: datetime, limit: int = 100) -> list[ApprovalRequest]:
        """Pending requests whose deadline has passed, earliest first."""
        result = await self._execute(
            _DUE_REQUESTS,
            {"now": require_aware(now), "limit": _limit(limit)},
            doing="listing due requests",
        )
        return [_request_from_row(row.state, row.record) for row in result]


class SqlDecisionRepository(Repository):
    """``core.ports.DecisionRepository`` on SQL."""

    __slots__ = ()

    async def add(self, decision: ApproverDecision) -> None:
        """Record one person's decision.

        Raises:
            ApprovalRefusedError: ``ALREADY_DECIDED`` when the unique constraint
                (request_id, approver_id) holds a decision already, from any replica.
            StoreError: ``NOT_FOUND`` when the request does not exist.
        """
        statement = self._prepared(
            "decisions.add",
            lambda insert: insert(t.decisions).on_conflict_do_nothing(
                index_elements=["request_id", "approver_id"]
            ),
        )
        row = {
            "request_id": decision.request_id,
            "approver_id": decision.approver_id,
            "request_hash": decision.request_hash_b64u,
            "verdict": decision.verdict.value,
            "decided_at": decision.decided_at,
            "platform": decision.platform,
            "record": decision_to_record(decision),
        }
        result = await self._write(
            statement,
            row,
            doing="recording the decision",
            on_violation=lambda e: (
                StoreError("NOT_FOUND", f"no request {decision.request_id}")
                if foreign_key_violation(e)
                else None
            ),
        )
        if result.rowcount != 1:
            raise ApprovalRefusedError(
                "ALREADY_DECIDED",
                "You already decided this request; one person counts once, on any platform.",
            )

    async def for_request(self, request_id: str) -> list[ApproverDecision]:
        """Every decision on ``request_id``, in the order they were recorded."""
        result = await self._execute(
            _DECISIONS_FOR, {"request_id": request_id}, doing="reading decisions"
        )
        decisions = []
        for row in result:
            decision = load(decision_from_record, row.record, "decision")
            require_row_matches("decision", row.approver_id, decision.approver_id)
            decisions.append(decision)
        return decisions


class SqlGrantRepository(Repository):
    """``core.ports.GrantRepository`` on SQL."""

    __slots__ = ()

    async def add(self, grant: Grant) -> None:
        """Raises ``StoreError("GRANT_EXISTS")``: at most one grant per request (and id);
        ``StoreError("NOT_FOUND")`` when the request does not exist."""
        row = {
            "grant_id": grant.grant_id,
            "request_id": grant.request_id,
            "request_hash": grant.request_hash_b64u,
            "payload_hash": grant.payload_hash_b64u,
            "issued_at": grant.issued_at,
            "expires_at": grant.expires_at,
            "consumed_at": None,
            "record": grant_to_record(grant),
        }
        result = await self._write(
            self._prepared("grants.add", lambda insert: insert(t.grants).on_conflict_do_nothing()),
            row,
            doing="saving the grant",
            on_violation=lambda e: (
                StoreError("NOT_FOUND", f"no request {grant.request_id}")
                if foreign_key_violation(e)
                else None
            ),
        )
        if result.rowcount != 1:
            raise StoreError(
                "GRANT_EXISTS", f"request {grant.request_id} already has a grant; none was added"
            )

    async def for_request(self, request_id: str) -> Grant | None:
        result = await self._execute(
            _GRANT_FOR_REQUEST, {"request_id": request_id}, doing="reading the grant"
        )
        row = result.first()
        return None if row is None else _grant_from_row(row.grant_id, row.record)

    async def get(self, grant_id: str) -> Grant:
        """Raises ``StoreError("NOT_FOUND")``."""
        result = await self._execute(
            _GRANT_BY_ID, {"grant_id": grant_id}, doing="reading the grant"
        )
        row = result.first()
        if row is None:
            raise StoreError("NOT_FOUND", f"no grant {grant_id}")
        return _grant_from_row(row.grant_id, row.record)

    async def consumed_at(self, grant_id: str) -> datetime | None:
        """When the grant was used (``None``: not yet).

        Raises:
            StoreError: ``NOT_FOUND``.
        """
        result = await self._execute(_GRANT_USE, {"grant_id": grant_id}, doing="reading the grant")
        row = result.first()
        if row is None:
            raise StoreError("NOT_FOUND", f"no grant {grant_id}")
        used: datetime | None = row.consumed_at
        return used

    async def consume(self, grant_id: str, *, at: datetime) -> None:
        """Mark the grant used, once: one conditional UPDATE, so of two racing gates
        exactly one sees a row count of 1.

        Raises:
            GateDeniedError: ``GRANT_ALREADY_USED``, ``GRANT_UNKNOWN``, or
                ``GRANT_EXPIRED`` when ``at`` is past its expiry (checked again here
                so an expired grant is never marked used).
        """
        at = require_aware(at)
        params = {"b_grant_id": grant_id, "at": at, "now": at}
        result = await self._write(_CONSUME_GRANT, params, doing="consuming the grant")
        if result.rowcount == 1:
            return
        found = await self._execute(_GRANT_USE, {"grant_id": grant_id}, doing="reading the grant")
        row = found.first()
        if row is None:
            raise GateDeniedError("GRANT_UNKNOWN", "keyturn never issued this grant")
        if row.consumed_at is not None:
            raise GateDeniedError(
                "GRANT_ALREADY_USED", f"this grant was already used at {to_iso(row.consumed_at)}"
            )
        raise GateDeniedError("GRANT_EXPIRED", "the grant has expired")


def _grant_from_row(grant_id: str, record: Any) -> Grant:
    grant = load(grant_from_record, record, "grant")
    require_row_matches("grant", grant_id, grant.grant_id)
    return grant


def token_to_record(token: TokenRecord) -> dict[str, Any]:
    return {
        "record_version": "1",
        "token_hash_hex": token.token_hash_hex,
        "jti": token.jti,
        "kind": token.kind,
        "subject": token.subject,
        "job_id": token.job_id,
        "request_id": token.request_id,
        "issued_at": to_iso(token.issued_at),
        "expires_at": to_iso(token.expires_at),
    }


def token_from_record(record: Mapping[str, Any]) -> TokenRecord:
    return TokenRecord(
        token_hash_hex=record["token_hash_hex"],
        jti=record["jti"],
        kind=record["kind"],
        subject=record["subject"],
        job_id=record["job_id"],
        request_id=record["request_id"],
        issued_at=parse_iso(record["issued_at"]),
        expires_at=parse_iso(record["expires_at"]),
    )


def _token_hash(token_hash_hex: str) -> str:
    if not isinstance(token_hash_hex, str) or not _HEX64.match(token_hash_hex):
        raise ValueError("a token hash is the lower-case hex SHA-256 of the compact token")
    return token_hash_hex


class SqlTokenRepository(Repository):
    """``core.ports.TokenRepository`` on SQL. Revocation is read from the database on
    every call and never cached, so a revocation holds on every replica at once."""

    __slots__ = ()

    async def add(self, token: TokenRecord) -> None:
        """Raises ``StoreError("STORE_CONFLICT")`` for a known token hash or jti."""
        row = {
            "token_hash": _token_hash(token.token_hash_hex),
            "jti": token.jti,
            "kind": token.kind,
            "subject": token.subject,
            "job_id": token.job_id,
            "request_id": token.request_id,
            "issued_at": token.issued_at,
            "expires_at": token.expires_at,
            "record": token_to_record(token),
        }
        result = await self._write(
            self._prepared("tokens.add", lambda insert: insert(t.tokens).on_conflict_do_nothing()),
            row,
            doing="saving the token",
        )
        if result.rowcount != 1:
            raise StoreError("STORE_CONFLICT", "a token with this hash or jti is already recorded")

    async def revoke(self, token_hash_hex: str, *, at: datetime, reason: str) -> bool:
        """Revoke a token (known or not); True when this call revoked it."""
        if not reason or not reason.strip():
            raise ValueError("a revocation needs a reason")
        row = {
            "token_hash": _token_hash(token_hash_hex),
            "revoked_at": require_aware(at),
            "reason": reason,
        }
        statement = self._prepared(
            "tokens.revoke",
            lambda insert: insert(t.token_revocations).on_conflict_do_nothing(),
        )
        result = await self._write(statement, row, doing="revoking the token")
        return result.rowcount == 1

    async def is_revoked(self, token_hash_hex: str) -> bool:
        result = await self._execute(
            _IS_REVOKED, {"token_hash": _token_hash(token_hash_hex)}, doing="checking revocation"
        )
        return result.first() is not None

    async def get(self, token_hash_hex: str) -> TokenRecord | None:
        result = await self._execute(
            _TOKEN_BY_HASH, {"token_hash": _token_hash(token_hash_hex)}, doing="reading the token"
        )
        record = result.scalar_one_or_none()
        return None if record is None else load(token_from_record, record, "token")

    async def for_job(self, job_id: str) -> list[TokenRecord]:
        """Every token minted for ``job_id`` (the kill switch revokes them all)."""
        result = await self._execute(_TOKENS_FOR_JOB, {"job_id": job_id}, doing="reading tokens")
        return [load(token_from_record, record, "token") for record in result.scalars()]


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValueError("limit must be between 1 and 10000")
    return limit
