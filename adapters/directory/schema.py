"""The static directory file format (YAML), validated with pydantic.

::

    version: 1                       # optional; the only version there is
    people:
      - object_id: alice             # the id that counts for quorum
        display_name: Alice Martin
        emails: [alice@example.com]
        slack_user_ids: [U0ALICE]
        teams_user_ids: ["29:1alice"]
        aad_object_ids: []           # Teams aadObjectId values that mean this person
        guest: false
        enabled: true
    groups:
      - id: payments-approvers
        display_name: Payments approvers
        members: [alice]             # people (object ids)
        member_groups: [sre-leads]   # nested groups: their members are members here
        pim:                         # emulated PIM: person -> active until (null = no end)
          carol: 2026-12-01T18:00:00Z

Unknown keys are refused everywhere, ids are non-empty strings (a bare number is
refused rather than silently turned into text), timestamps must carry a timezone, and
every reference (member, nested group, PIM person) must name something defined in the
file. Duplicate YAML keys are refused by the loader (``static.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    model_validator,
)

Id = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Email = Annotated[
    StrictStr,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
]


class PersonEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    object_id: Id
    display_name: Id
    emails: list[Email] = Field(default_factory=list)
    slack_user_ids: list[Id] = Field(default_factory=list)
    teams_user_ids: list[Id] = Field(default_factory=list)
    aad_object_ids: list[Id] = Field(default_factory=list)
    guest: StrictBool = False
    enabled: StrictBool = True


class GroupEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    display_name: Id
    members: list[Id] = Field(default_factory=list)
    member_groups: list[Id] = Field(default_factory=list)
    pim: dict[Id, AwareDatetime | None] = Field(default_factory=dict)


class DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    people: list[PersonEntry]
    groups: list[GroupEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> DirectoryFile:
        people: set[str] = set()
        for person in self.people:
            key = person.object_id.casefold()
            if key in people:
                raise ValueError(f"person {person.object_id!r} is defined twice")
            people.add(key)
        groups: set[str] = set()
        for group in self.groups:
            key = group.id.casefold()
            if key in groups:
                raise ValueError(f"group {group.id!r} is defined twice")
            groups.add(key)
        for group in self.groups:
            for member in group.members:
                if member.casefold() not in people:
                    raise ValueError(f"group {group.id!r} lists unknown person {member!r}")
            for nested in group.member_groups:
                if nested.casefold() not in groups:
                    raise ValueError(f"group {group.id!r} nests unknown group {nested!r}")
            for person_id in group.pim:
                if person_id.casefold() not in people:
                    raise ValueError(f"group {group.id!r} has PIM for unknown person {person_id!r}")
        return self


def pim_is_active(until: datetime | None, now: datetime) -> bool:
    """An emulated PIM assignment is active when it has no end or ends after ``now``."""
    return until is None or until > now
