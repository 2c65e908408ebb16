"""Checks an Entra configuration against the live tenant (``keyturn entra check``).

Three questions, each answered by the tenant itself:

1. Can keyturn get an app-only token (tenant, client id, secret or certificate)?
2. Does the token's ``roles`` claim hold the application permissions keyturn needs?
3. Do the configured group ids exist?

The answer is a ``CheckReport``: one line per finding, ``ok`` only when every line is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.entra.directory import EntraDirectory
from core.errors import DirectoryError


@dataclass(frozen=True, slots=True)
class Permission:
    """A Graph application permission keyturn needs, and the broader ones that also grant it.

    Names verified against the Microsoft Graph API reference (permissions tables of
    directoryobject-checkmembergroups, user-get, group-get,
    privilegedaccessgroup-list-assignmentscheduleinstances,
    privilegedaccessgroup-post-assignmentschedulerequests,
    rbacapplication-post-roleassignmentschedulerequests and
    rbacapplication-list-roleassignmentscheduleinstances).
    """

    name: str
    needed_for: str
    satisfied_by: frozenset[str]


USER_READ_ALL = Permission(
    "User.Read.All",
    "reading users (enabled, guest, email)",
    frozenset(
        {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
    ),
)
GROUP_MEMBER_READ_ALL = Permission(
    "GroupMember.Read.All",
    "checking group membership and reading groups",
    frozenset(
        {
            "GroupMember.Read.All",
            "GroupMember.ReadWrite.All",
            "Group.Read.All",
            "Group.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        }
    ),
)
PIM_GROUP_ASSIGNMENTS_READ = Permission(
    "PrivilegedAssignmentSchedule.Read.AzureADGroup",
    "confirming active PIM for Groups assignments",
    frozenset(
        {
            "PrivilegedAssignmentSchedule.Read.AzureADGroup",
            "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup",
        }
    ),
)


# The executors write (and read back) PIM assignments. The least privileged permission
# that can adminAssign / adminRemove is named; the broader one that also does is accepted.
# Each write permission includes the matching read (…ScheduleInstances) the verification,
# the rollback check and reconciliation use. The executors also resolve the principal's
# user principal name (User.Read.All, always required).
ROLE_ASSIGNMENT_WRITE = Permission(
    "RoleAssignmentSchedule.ReadWrite.Directory",
    "the entra.role.assign executor: assigning, removing and reading back directory roles "
    "through PIM",
    frozenset({"RoleAssignmentSchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"}),
)
PIM_GROUP_ASSIGNMENTS_WRITE = Permission(
    "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup",
    "the entra.group.add executor: adding, removing and reading back PIM for Groups members",
    frozenset({"PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup"}),
)
#: Executor kind → the application permissions it needs beyond the base ones.
EXECUTOR_PERMISSIONS: dict[str, tuple[Permission, ...]] = {
    "entra.role.assign": (ROLE_ASSIGNMENT_WRITE,),
    "entra.group.add": (PIM_GROUP_ASSIGNMENTS_WRITE,),
}


def required_permissions(
    *, require_pim: bool, executors: Sequence[str] = ()
) -> tuple[Permission, ...]:
    """The application permissions keyturn needs: the base ones, the PIM read when
    policies require PIM, and each configured Entra executor kind's.

    Raises:
        ValueError: an executor kind that is not an Entra one.
    """
    unknown = sorted(set(executors) - set(EXECUTOR_PERMISSIONS))
    if unknown:
        raise ValueError(f"not an Entra executor kind: {', '.join(unknown)}")
    needed = [USER_READ_ALL, GROUP_MEMBER_READ_ALL]
    if require_pim:
        needed.append(PIM_GROUP_ASSIGNMENTS_READ)
    for kind in sorted(set(executors)):
        needed.extend(EXECUTOR_PERMISSIONS[kind])
    return tuple(needed)


@dataclass(frozen=True, slots=True)
class CheckLine:
    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    lines: tuple[CheckLine, ...]

    @property
    def ok(self) -> bool:
        return bool(self.lines) and all(line.ok for line in self.lines)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(line.text for line in self.lines if not line.ok)

    def render(self) -> str:
        out = [f"{'ok  ' if line.ok else 'FAIL'}  {line.text}" for line in self.lines]
        out.append(
            "Entra configuration is complete."
            if self.ok
            else f"Entra configuration is incomplete: {len(self.missing)} problem(s) above."
        )
        return "\n".join(out)


async def check_configuration(
    directory: EntraDirectory,
    group_ids: Sequence[str],
    *,
    require_pim: bool,
    executors: Sequence[str] = (),
) -> CheckReport:
    """Ask the tenant whether ``directory``'s configuration works. Never raises a
    ``DirectoryError``: every failure becomes a line of the report.

    ``executors`` are the configured Entra executor kinds (``entra.role.assign``,
    ``entra.group.add``); their permissions are checked too.

    Raises:
        ValueError: an executor kind that is not an Entra one (before any call).
    """
    permissions = required_permissions(require_pim=require_pim, executors=executors)
    settings = directory.settings
    lines: list[CheckLine] = []
    try:
        roles = await directory.token_roles()
    except DirectoryError as e:
        lines.append(CheckLine(False, f"token for tenant {settings.tenant_id}: {e.message}"))
        return CheckReport(tuple(lines))
    lines.append(
        CheckLine(
            True, f"token acquired for app {settings.client_id} in tenant {settings.tenant_id}"
        )
    )
    for permission in permissions:
        granted = sorted(roles & permission.satisfied_by)
        if granted:
            lines.append(
                CheckLine(True, f"permission {permission.name} (granted: {', '.join(granted)})")
            )
        else:
            lines.append(
                CheckLine(
                    False,
                    f"permission {permission.name} is missing (application permission with admin "
                    f"consent, needed for {permission.needed_for})",
                )
            )
    if not group_ids:
        lines.append(CheckLine(True, "no groups given to check (pass --group ID)"))
    for gid in group_ids:
        try:
            name = await directory.group_display_name(gid)
        except DirectoryError as e:
            lines.append(CheckLine(False, f"group {gid}: {e.message}"))
            continue
        if name is None:
            lines.append(
                CheckLine(False, f"group {gid} does not exist in tenant {settings.tenant_id}")
            )
        else:
            lines.append(CheckLine(True, f"group {gid} exists ({name})"))
    return CheckReport(tuple(lines))
