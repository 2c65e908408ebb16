"""Fakes that implement core's ports with plain values (preferred to mocks)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.errors import GateDeniedError
from core.identity import Eligibility
from core.policy import Policy, policy_from_payload

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "manifests" / "policies"
T0 = datetime(2026, 11, 23, 10, 41, tzinfo=UTC)


@dataclass
class FixedClock:
    moment: datetime = T0

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> datetime:
        self.moment += timedelta(seconds=seconds)
        return self.moment


@dataclass
class InMemoryLedger:
    """A GrantLedger: remembers consumed grant ids."""

    used: dict[str, datetime] = field(default_factory=dict)

    def consume(self, grant_id: str, *, at: datetime) -> None:
        if grant_id in self.used:
            raise GateDeniedError("GRANT_ALREADY_USED", "this grant was already used")
        self.used[grant_id] = at


@dataclass
class InMemoryRevocations:
    revoked: set[str] = field(default_factory=set)

    def is_revoked(self, token_hash_hex: str) -> bool:
        return token_hash_hex in self.revoked


def load_policy(name: str) -> Policy:
    return policy_from_payload(json.loads((POLICIES / name).read_text(encoding="utf-8")))


def eligibility(
    policy: Policy,
    person: str,
    group_keys: Iterable[str],
    *,
    at: datetime = T0,
    name: str | None = None,
    pim_active: Iterable[str] = (),
    pim_checked: bool = False,
    enabled: bool = True,
    is_guest: bool = False,
) -> Eligibility:
    """Directory evidence for ``person``: member of the named policy groups."""
    asked = frozenset(g.directory_id for g in policy.groups.values())
    member = frozenset(policy.groups[k].directory_id for k in group_keys)
    return Eligibility(
        object_id=person,
        display_name=name or person.title(),
        checked_groups=asked,
        member_of=member,
        checked_at=at,
        source="static",
        enabled=enabled,
        is_guest=is_guest,
        pim_checked=pim_checked or bool(tuple(pim_active)),
        pim_active_until={policy.groups[k].directory_id: None for k in pim_active},
    )
