"""The parts of Microsoft Graph's answers keyturn reads, validated with pydantic.

Graph adds properties over time (``@odata.context``, new fields), so unknown keys are
ignored; the keys keyturn relies on are required and strictly typed: a string where a
boolean is expected is a malformed answer, not a "truthy" one.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictStr

from core.identity import Person


class GraphUser(BaseModel):
    """A user from ``GET /users/{id}`` or ``GET /users?$filter=…`` (``$select`` as asked)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: StrictStr = Field(min_length=1)
    display_name: StrictStr | None = Field(default=None, alias="displayName")
    mail: StrictStr | None = None
    user_principal_name: StrictStr | None = Field(default=None, alias="userPrincipalName")
    # Required: without User.Read.All Graph omits it, and "unknown" must not read as enabled.
    account_enabled: StrictBool = Field(alias="accountEnabled")
    user_type: StrictStr | None = Field(default=None, alias="userType")

    @property
    def is_guest(self) -> bool:
        """Guest unless Graph says ``Member``; an external (``#EXT#``) UPN is a guest too."""
        upn = self.user_principal_name or ""
        return (self.user_type or "").lower() != "member" or "#ext#" in upn.lower()

    def matches_email(self, email: str) -> bool:
        wanted = email.casefold()
        return any(
            v is not None and v.casefold() == wanted for v in (self.mail, self.user_principal_name)
        )

    def person(self) -> Person:
        return Person(
            object_id=self.id.lower(),
            display_name=self.display_name or self.user_principal_name or self.id,
            email=self.mail or self.user_principal_name,
            is_guest=self.is_guest,
            enabled=self.account_enabled,
        )


class GraphUserList(BaseModel):
    """``GET /users?$filter=…``: ``value`` is required; a page link means more matches."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    value: list[GraphUser]
    next_link: StrictStr | None = Field(default=None, alias="@odata.nextLink")


class GraphStringList(BaseModel):
    """``POST …/checkMemberGroups``: the asked group ids the object is a member of."""

    model_config = ConfigDict(extra="ignore")

    value: list[StrictStr]


class GraphAssignmentInstance(BaseModel):
    """One ``privilegedAccessGroupAssignmentScheduleInstance`` (PIM for Groups)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    group_id: StrictStr = Field(alias="groupId")
    principal_id: StrictStr = Field(alias="principalId")
    access_id: StrictStr = Field(alias="accessId")  # member | owner
    assignment_type: StrictStr | None = Field(default=None, alias="assignmentType")
    start: AwareDatetime | None = Field(default=None, alias="startDateTime")
    end: AwareDatetime | None = Field(default=None, alias="endDateTime")


class GraphAssignmentPage(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    value: list[GraphAssignmentInstance]
    next_link: StrictStr | None = Field(default=None, alias="@odata.nextLink")


class GraphGroup(BaseModel):
    """``GET /groups/{id}?$select=id,displayName``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: StrictStr
    display_name: StrictStr | None = Field(default=None, alias="displayName")
