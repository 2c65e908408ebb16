"""Who a person is, and what the directory confirmed about them at a given instant.

These values are the evidence that eligibility decisions rest on: the directory
adapters (Entra ID, static file) produce them; ``core`` judges them. They carry when
and how they were obtained so receipts can say "checked in Entra ID at 10:43:12".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from core.times import require_aware


class IdentityKind(StrEnum):
    """How an identity was presented to keyturn."""

    OBJECT_ID = "object_id"  # Entra object id (Teams from.aadObjectId) or static directory id
    EMAIL = "email"  # email / UPN (Slack users.info email)
    SLACK_USER = "slack_user"  # Slack user id, resolved through a stored link
    TEAMS_USER = "teams_user"  # Teams user id, resolved through a stored link


@dataclass(frozen=True, slots=True)
class IdentityRef:
    kind: IdentityKind
    value: str

    def __post_init__(self) -> None:
        if not self.value or not self.value.strip():
            raise ValueError("an identity reference needs a value")


@dataclass(frozen=True, slots=True)
class Person:
    """A directory person. ``object_id`` is the one identity that counts for quorum."""

    object_id: str
    display_name: str
    email: str | None = None
    is_guest: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.object_id:
            raise ValueError("a person needs an object id")


@dataclass(frozen=True, slots=True)
class Resolution:
    """How an identity reference was turned into a person, for the receipts."""

    person: Person
    ref: IdentityRef
    method: str  # "object_id", "email", "link:slack", …
    source: str  # "entra" | "static"
    resolved_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.resolved_at)


@dataclass(frozen=True, slots=True)
class Eligibility:
    """What the directory confirmed about one person at ``checked_at``.

    ``member_of`` holds only directory group ids that were asked about and confirmed
    (transitively); a group that could not be checked is never in it — the directory
    raises instead of answering partially. ``pim_active_until`` maps a group id to the
    end of the person's *active* PIM assignment (``None`` = active with no end); groups
    absent from it have no active PIM assignment known.
    """

    object_id: str
    display_name: str
    checked_groups: frozenset[str]
    member_of: frozenset[str]
    checked_at: datetime
    source: str
    enabled: bool = True
    is_guest: bool = False
    pim_checked: bool = False
    pim_active_until: Mapping[str, datetime | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_aware(self.checked_at)
        if not self.member_of <= self.checked_groups:
            raise ValueError("eligibility claims membership of a group it did not check")
