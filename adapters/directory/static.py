"""``StaticDirectory``: the ``core.ports.Directory`` port on a YAML file of people and groups.

For the embedded default, the demo, tests and small teams without Entra ID. Same port
and same fail-closed rules as ``EntraDirectory``: resolve by object id (or a Teams
``aadObjectId`` alias), email, Slack user id or Teams user id; membership is transitive
through nested groups (cycles are harmless); ``pim`` entries emulate PIM for Groups (an
active entry makes the person a member and records its end, an ended one does not).

Reloading. The file is checked on every use (``stat``: mtime, size, inode, ctime); a
changed file is read and validated whole before it replaces the old one. **A broken new
file is not replaced by the last good one**: until it is fixed, every call raises
``DirectoryError("DIRECTORY_UNAVAILABLE")``. The edit that broke it may have been the
removal of an approver; answering from the stale copy would keep honouring them. A
file that disappears is refused the same way. Write the file atomically (write a
temporary file, then rename) so a half-written file is never read.

A file that is broken when the directory is constructed raises ``ConfigError`` so
keyturn refuses to start with a message naming the problem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adapters.directory.schema import DirectoryFile, GroupEntry, PersonEntry, pim_is_active
from core.errors import ConfigError, DirectoryError
from core.identity import Eligibility, IdentityKind, IdentityRef, Person, Resolution
from core.times import require_aware

log = logging.getLogger(__name__)

SOURCE = "static"
MAX_FILE_BYTES = 16 * 1024 * 1024
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader, except that a repeated key is an error.

    Plain PyYAML keeps the last of two ``enabled:`` keys; in a directory file that
    ambiguity must stop the load instead.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class _Group:
    id: str
    members: frozenset[str]  # casefolded person ids
    pim: Mapping[str, datetime | None]  # casefolded person id -> active until


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    """One validated version of the file, indexed for lookups."""

    people: Mapping[str, PersonEntry]  # casefolded object id -> person
    keys: Mapping[tuple[IdentityKind, str], frozenset[str]]  # lookup key -> person ids
    aliases: Mapping[str, frozenset[str]]  # casefolded aad object id -> person ids
    groups: Mapping[str, _Group]  # casefolded group id -> group
    closure: Mapping[str, frozenset[str]]  # group -> itself and every group nested in it

    @classmethod
    def build(cls, doc: DirectoryFile) -> DirectorySnapshot:
        people = {p.object_id.casefold(): p for p in doc.people}
        keys: dict[tuple[IdentityKind, str], set[str]] = {}
        aliases: dict[str, set[str]] = {}
        for pid, p in people.items():
            for email in p.emails:
                keys.setdefault((IdentityKind.EMAIL, email.casefold()), set()).add(pid)
            for slack in p.slack_user_ids:
                keys.setdefault((IdentityKind.SLACK_USER, slack), set()).add(pid)
            for teams in p.teams_user_ids:
                keys.setdefault((IdentityKind.TEAMS_USER, teams), set()).add(pid)
            for aad in p.aad_object_ids:
                aliases.setdefault(aad.casefold(), set()).add(pid)
        groups = {g.id.casefold(): _group(g) for g in doc.groups}
        nested = {g.id.casefold(): [n.casefold() for n in g.member_groups] for g in doc.groups}
        return cls(
            people=people,
            keys={k: frozenset(v) for k, v in keys.items()},
            aliases={k: frozenset(v) for k, v in aliases.items()},
            groups=groups,
            closure={gid: _reachable(gid, nested) for gid in groups},
        )


def _group(entry: GroupEntry) -> _Group:
    return _Group(
        id=entry.id,
        members=frozenset(m.casefold() for m in entry.members),
        pim={k.casefold(): v for k, v in entry.pim.items()},
    )


def _reachable(start: str, nested: Mapping[str, list[str]]) -> frozenset[str]:
    """``start`` and every group nested in it at any depth; a cycle ends the walk."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        gid = stack.pop()
        if gid in seen:
            continue
        seen.add(gid)
        stack.extend(nested.get(gid, ()))
    return frozenset(seen)


def parse_directory(data: bytes | str, *, name: str) -> DirectorySnapshot:
    """Parse and validate a directory document.

    Raises:
        DirectoryError: DIRECTORY_UNAVAILABLE naming the first problems found.
    """
    try:
        raw = yaml.load(data, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise _unavailable(f"{name} is not valid YAML{where}: {problem}") from e
    try:
        doc = DirectoryFile.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in e.errors()[:5]
        )
        raise _unavailable(f"{name} is not a valid directory: {problems}") from e
    return DirectorySnapshot.build(doc)


def _unavailable(why: str) -> DirectoryError:
    return DirectoryError("DIRECTORY_UNAVAILABLE", f"The directory could not be read: {why}.")


class StaticDirectory:
    """People and groups from a YAML file (reloaded on change) or fixed text.

    Args:
        path: the YAML file.

    Raises:
        ConfigError: CONFIG_INVALID when the file is missing or broken at start.
    """

    source = SOURCE

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path: Path | None = Path(path)
        self._fingerprint: tuple[int, int, int, int] | None = None
        self._snapshot: DirectorySnapshot | None = None
        self._broken: DirectoryError | None = None
        try:
            self._current()
        except DirectoryError as e:
            raise ConfigError("CONFIG_INVALID", e.message) from e

    @classmethod
    def from_text(cls, text: str, *, name: str = "the embedded directory") -> StaticDirectory:
        """A directory with fixed content (the embedded default, tests); never reloads.

        Raises:
            ConfigError: CONFIG_INVALID when the text is not a valid directory.
        """
        try:
            snapshot = parse_directory(text, name=name)
        except DirectoryError as e:
            raise ConfigError("CONFIG_INVALID", e.message) from e
        self = cls.__new__(cls)
        self._path = None
        self._fingerprint = None
        self._snapshot = snapshot
        self._broken = None
        return self

    # -- the Directory port -------------------------------------------------------

    async def resolve(
        self, ref: IdentityRef, *, now: datetime, allow_guests: bool = False
    ) -> Resolution:
        """Find the one person ``ref`` names.

        Raises:
            DirectoryError: IDENTITY_NOT_FOUND, IDENTITY_AMBIGUOUS, ACCOUNT_DISABLED,
                GUEST_NOT_ALLOWED, DIRECTORY_UNAVAILABLE (file missing or broken).
        """
        now = require_aware(now)
        snap = self._current()
        value = ref.value.strip()
        method: str
        found: frozenset[str]
        if ref.kind is IdentityKind.OBJECT_ID:
            primary = frozenset({value.casefold()} & snap.people.keys())
            found = primary | snap.aliases.get(value.casefold(), frozenset())
            method = "object_id" if primary else "aad_object_id"
        elif ref.kind is IdentityKind.EMAIL:
            found = snap.keys.get((IdentityKind.EMAIL, value.casefold()), frozenset())
            method = "email"
        else:
            found = snap.keys.get((ref.kind, value), frozenset())
            method = "link:slack" if ref.kind is IdentityKind.SLACK_USER else "link:teams"
        if not found:
            raise DirectoryError(
                "IDENTITY_NOT_FOUND", f"No one in the directory has the {ref.kind.value} {value!r}."
            )
        if len(found) > 1:
            raise DirectoryError(
                "IDENTITY_AMBIGUOUS",
                f"Several people in the directory have the {ref.kind.value} {value!r}; "
                "keyturn will not guess which one clicked.",
            )
        entry = snap.people[next(iter(found))]
        if not entry.enabled:
            raise DirectoryError(
                "ACCOUNT_DISABLED", f"{entry.display_name}'s account is disabled in the directory."
            )
        if entry.guest and not allow_guests:
            raise DirectoryError(
                "GUEST_NOT_ALLOWED",
                f"{entry.display_name} is a guest; guests may not approve here.",
            )
        return Resolution(
            person=_person(entry), ref=ref, method=method, source=SOURCE, resolved_at=now
        )

    async def eligibility(
        self,
        object_id: str,
        group_ids: Sequence[str],
        *,
        now: datetime,
        check_pim: bool = False,
        bypass_cache: bool = False,
    ) -> Eligibility:
        """Which of ``group_ids`` the person is a (transitive) member of at ``now``.

        ``bypass_cache`` is accepted for the port; the file is always checked anyway.

        Raises:
            DirectoryError: IDENTITY_NOT_FOUND, GROUP_NOT_FOUND (a group the file does not
                define: it cannot be checked, so no answer is given), DIRECTORY_UNAVAILABLE.
        """
        now = require_aware(now)
        if isinstance(group_ids, str):
            raise TypeError("group_ids must be a sequence of ids, not one string")
        snap = self._current()
        pid = object_id.strip().casefold()
        entry = snap.people.get(pid)
        if entry is None:
            raise DirectoryError(
                "IDENTITY_NOT_FOUND", f"No one in the directory has the object id {object_id!r}."
            )
        checked: dict[str, str] = {}  # casefolded -> as asked (first spelling wins)
        for gid in group_ids:
            checked.setdefault(gid.strip().casefold(), gid.strip())
        member_of: set[str] = set()
        pim_active_until: dict[str, datetime | None] = {}
        for key, asked in checked.items():
            if key not in snap.groups:
                raise DirectoryError(
                    "GROUP_NOT_FOUND",
                    f"The directory could not confirm eligibility: group {asked!r} is not defined.",
                )
            if any(self._is_member(snap.groups[g], pid, now) for g in snap.closure[key]):
                member_of.add(asked)
            group = snap.groups[key]
            if check_pim and pid in group.pim and pim_is_active(group.pim[pid], now):
                pim_active_until[asked] = group.pim[pid]
        return Eligibility(
            object_id=entry.object_id,
            display_name=entry.display_name,
            checked_groups=frozenset(checked.values()),
            member_of=frozenset(member_of),
            checked_at=now,
            source=SOURCE,
            enabled=entry.enabled,
            is_guest=entry.guest,
            pim_checked=check_pim,
            pim_active_until=pim_active_until,
        )

    # -- file handling -------------------------------------------------------------

    @staticmethod
    def _is_member(group: _Group, pid: str, now: datetime) -> bool:
        # An active PIM assignment makes the person a member, as in Entra ID.
        return pid in group.members or (pid in group.pim and pim_is_active(group.pim[pid], now))

    def _current(self) -> DirectorySnapshot:
        """The snapshot for the file as it is now, reloading it if it changed.

        Raises:
            DirectoryError: DIRECTORY_UNAVAILABLE when the file is missing or broken.
        """
        if self._path is None:
            assert self._snapshot is not None
            return self._snapshot
        name = str(self._path)
        try:
            st = os.stat(self._path)
        except OSError as e:
            self._forget(_unavailable(f"{name} cannot be read ({e.strerror})"), None)
            raise self._broken from e  # type: ignore[misc]
        if _fingerprint(st) == self._fingerprint:
            if self._broken is not None:
                raise self._broken
            assert self._snapshot is not None
            return self._snapshot
        try:
            with open(self._path, "rb") as f:
                fingerprint = _fingerprint(os.fstat(f.fileno()))
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            self._forget(_unavailable(f"{name} cannot be read ({e.strerror})"), None)
            raise self._broken from e  # type: ignore[misc]
        try:
            if len(data) > MAX_FILE_BYTES:
                raise _unavailable(f"{name} is larger than {MAX_FILE_BYTES} bytes")
            snapshot = parse_directory(data, name=name)
        except DirectoryError as e:
            self._forget(e, fingerprint)
            log.error("static directory %s refused: %s", name, e.message)
            raise
        if self._fingerprint is not None:
            log.info("static directory %s reloaded", name)
        self._fingerprint, self._snapshot, self._broken = fingerprint, snapshot, None
        return snapshot

    def _forget(self, error: DirectoryError, fingerprint: tuple[int, int, int, int] | None) -> None:
        # Drop the old snapshot: a broken or missing file is never answered from stale data.
        self._fingerprint, self._snapshot, self._broken = fingerprint, None, error


def _fingerprint(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _person(entry: PersonEntry) -> Person:
    return Person(
        object_id=entry.object_id,
        display_name=entry.display_name,
        email=entry.emails[0] if entry.emails else None,
        is_guest=entry.guest,
        enabled=entry.enabled,
    )
