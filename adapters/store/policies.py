"""Policies by hash, and the history of which one was active when.

The store keeps the document exactly as loaded (a signed WPC envelope, or a bare payload
where the deployment allows it) under the policy hash the caller computed when it
verified it; the store itself verifies nothing. The active policy is the most recently
activated one; activations are never updated or deleted, so the history answers "which
policy was in force at 10:41?".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from adapters.store import tables as t
from adapters.store.base import Repository, foreign_key_violation
from core.errors import StoreError
from core.times import require_aware

_POLICY = select(t.policies).where(t.policies.c.policy_hash == bindparam("policy_hash"))
_ACTIVATION_COLUMNS = (
    t.policy_activations.c.id,
    t.policy_activations.c.policy_hash,
    t.policy_activations.c.activated_at,
    t.policy_activations.c.activated_by,
    t.policy_activations.c.note,
)
_LATEST_FIRST = (t.policy_activations.c.activated_at.desc(), t.policy_activations.c.id.desc())
_ACTIVE_HASH = (
    select(t.policy_activations.c.policy_hash).order_by(*_LATEST_FIRST).limit(1)
)
_ACTIVE = (
    select(t.policies)
    .join(t.policy_activations, t.policy_activations.c.policy_hash == t.policies.c.policy_hash)
    .order_by(*_LATEST_FIRST)
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    policy_hash_b64u: str
    name: str | None
    document: Mapping[str, Any]
    added_at: datetime


@dataclass(frozen=True, slots=True)
class PolicyActivation:
    id: int
    policy_hash_b64u: str
    activated_at: datetime
    activated_by: str
    note: str | None


class SqlPolicyRepository(Repository):
    __slots__ = ()

    async def add(
        self,
        policy_hash_b64u: str,
        document: Mapping[str, Any],
        *,
        at: datetime,
        name: str | None = None,
    ) -> bool:
        """Keep a verified policy document; True when it was new.

        A hash already stored keeps its first document (the same payload re-signed
        later has the same hash and the same meaning).
        """
        if not policy_hash_b64u:
            raise ValueError("a policy is stored under its hash")
        row = {
            "policy_hash": policy_hash_b64u,
            "name": name,
            "document": dict(document),
            "added_at": require_aware(at),
        }
        statement = self._prepared(
            "policies.add", lambda insert: insert(t.policies).on_conflict_do_nothing()
        )
        result = await self._write(statement, row, doing="saving the policy")
        return result.rowcount == 1

    async def get(self, policy_hash_b64u: str) -> StoredPolicy:
        """Raises ``StoreError("NOT_FOUND")``."""
        result = await self._execute(
            _POLICY, {"policy_hash": policy_hash_b64u}, doing="reading the policy"
        )
        row = result.first()
        if row is None:
            raise StoreError("NOT_FOUND", f"no policy {policy_hash_b64u}")
        return _policy(row)

    async def activate(
        self, policy_hash_b64u: str, *, at: datetime, by: str, note: str | None = None
    ) -> PolicyActivation:
        """Make a stored policy the active one from ``at`` on.

        Raises:
            StoreError: ``NOT_FOUND`` when the policy was never stored.
        """
        if not by:
            raise ValueError("an activation records who made it")
        row = {
            "policy_hash": policy_hash_b64u,
            "activated_at": require_aware(at),
            "activated_by": by,
            "note": note,
        }
        statement = self._prepared(
            "policies.activate",
            lambda insert: insert(t.policy_activations).returning(*_ACTIVATION_COLUMNS),
        )
        result = await self._write(
            statement,
            row,
            doing="activating the policy",
            on_violation=lambda e: (
                StoreError("NOT_FOUND", f"no policy {policy_hash_b64u}")
                if foreign_key_violation(e)
                else None
            ),
        )
        return _activation(result.one())

    async def active(self) -> StoredPolicy | None:
        """The most recently activated policy, ``None`` before any activation."""
        result = await self._execute(_ACTIVE, doing="reading the active policy")
        row = result.first()
        return None if row is None else _policy(row)

    async def active_hash(self) -> str | None:
        """The hash of the most recently activated policy, without reading its document
        (callers that keep compiled policies by hash need nothing more)."""
        result = await self._execute(_ACTIVE_HASH, doing="reading the active policy")
        value = result.scalar_one_or_none()
        return None if value is None else str(value)

    async def history(self, *, limit: int = 50) -> list[PolicyActivation]:
        """Activations, newest first."""
        statement = select(*_ACTIVATION_COLUMNS).order_by(*_LATEST_FIRST).limit(limit)
        result = await self._execute(statement, doing="reading policy history")
        return [_activation(row) for row in result]


def _policy(row: Any) -> StoredPolicy:
    return StoredPolicy(
        policy_hash_b64u=row.policy_hash,
        name=row.name,
        document=row.document,
        added_at=row.added_at,
    )


def _activation(row: Any) -> PolicyActivation:
    return PolicyActivation(
        id=int(row.id),
        policy_hash_b64u=row.policy_hash,
        activated_at=row.activated_at,
        activated_by=row.activated_by,
        note=row.note,
    )
