"""StaticDirectory: resolution by every key, transitive groups, emulated PIM, reloads."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.directory import StaticDirectory
from core.errors import ConfigError, DirectoryError
from core.identity import IdentityKind, IdentityRef
from core.ports import Directory

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "directory.example.yaml"
NOW = datetime(2026, 11, 23, 10, 43, tzinfo=UTC)

DOC = """
people:
  - object_id: alice
    display_name: Alice Martin
    emails: [Alice@Example.com]
    slack_user_ids: [U0ALICE]
    teams_user_ids: ["29:1alice"]
    aad_object_ids: ["7C9E6679-7425-40DE-944B-E07FC1F90AE7"]
  - object_id: bob
    display_name: Bob Chen
    emails: [bob@example.com, shared@example.com]
  - object_id: carol
    display_name: Carol Diaz
    emails: [carol@example.com, shared@example.com]
  - object_id: dave
    display_name: Dave Olsen
    emails: [dave@example.com]
    enabled: false
  - object_id: gus
    display_name: Gus External
    emails: [gus@partner.example]
    guest: true
groups:
  - id: approvers
    display_name: Approvers
    members: [alice, gus]
    member_groups: [leads]
  - id: leads
    display_name: Leads
    members: [bob]
    member_groups: [approvers]   # a cycle: must not loop, must not grant anything extra
  - id: admins
    display_name: Admins (PIM)
    pim:
      carol: 2026-11-23T12:00:00Z
      dave: null
  - id: island
    display_name: Island
"""


def _implements_the_port(directory: StaticDirectory) -> Directory:
    return directory  # mypy checks StaticDirectory against core.ports.Directory here


def write(path: Path, text: str, *, mtime_ns: int | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        # Make the change visible even on filesystems with coarse timestamps.
        os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def directory() -> StaticDirectory:
    return StaticDirectory.from_text(DOC)


# -- resolution --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "method"),
    [
        (IdentityKind.OBJECT_ID, "alice", "object_id"),
        (IdentityKind.OBJECT_ID, "ALICE", "object_id"),
        (IdentityKind.OBJECT_ID, "7c9e6679-7425-40de-944b-e07fc1f90ae7", "aad_object_id"),
        (IdentityKind.EMAIL, "alice@EXAMPLE.com", "email"),
        (IdentityKind.SLACK_USER, "U0ALICE", "link:slack"),
        (IdentityKind.TEAMS_USER, "29:1alice", "link:teams"),
    ],
)
async def test_each_key_resolves_to_the_same_person(
    directory: StaticDirectory, kind: IdentityKind, value: str, method: str
) -> None:
    ref = IdentityRef(kind, value)
    res = await directory.resolve(ref, now=NOW)
    assert res.person.object_id == "alice"
    assert res.person.email == "Alice@Example.com"
    assert (res.method, res.source, res.ref, res.resolved_at) == (method, "static", ref, NOW)


async def test_platform_ids_are_matched_exactly(directory: StaticDirectory) -> None:
    for ref in (
        IdentityRef(IdentityKind.SLACK_USER, "u0alice"),
        IdentityRef(IdentityKind.TEAMS_USER, "29:1ALICE"),
    ):
        with pytest.raises(DirectoryError) as err:
            await directory.resolve(ref, now=NOW)
        assert err.value.reason_code == "IDENTITY_NOT_FOUND"


async def test_unknown_identity_is_not_found(directory: StaticDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await directory.resolve(IdentityRef(IdentityKind.EMAIL, "nobody@example.com"), now=NOW)
    assert err.value.reason_code == "IDENTITY_NOT_FOUND"


async def test_shared_email_is_ambiguous(directory: StaticDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await directory.resolve(IdentityRef(IdentityKind.EMAIL, "shared@example.com"), now=NOW)
    assert err.value.reason_code == "IDENTITY_AMBIGUOUS"


async def test_object_id_that_is_also_someone_elses_alias_is_ambiguous() -> None:
    doc = DOC.replace(
        'aad_object_ids: ["7C9E6679-7425-40DE-944B-E07FC1F90AE7"]', 'aad_object_ids: ["bob"]'
    )
    with pytest.raises(DirectoryError) as err:
        await StaticDirectory.from_text(doc).resolve(
            IdentityRef(IdentityKind.OBJECT_ID, "bob"), now=NOW
        )
    assert err.value.reason_code == "IDENTITY_AMBIGUOUS"


async def test_disabled_account_is_refused(directory: StaticDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await directory.resolve(IdentityRef(IdentityKind.OBJECT_ID, "dave"), now=NOW)
    assert err.value.reason_code == "ACCOUNT_DISABLED"


async def test_guest_is_refused_unless_allowed(directory: StaticDirectory) -> None:
    ref = IdentityRef(IdentityKind.EMAIL, "gus@partner.example")
    with pytest.raises(DirectoryError) as err:
        await directory.resolve(ref, now=NOW)
    assert err.value.reason_code == "GUEST_NOT_ALLOWED"
    assert (await directory.resolve(ref, now=NOW, allow_guests=True)).person.is_guest


# -- eligibility -------------------------------------------------------------------


async def test_direct_and_nested_members_are_confirmed(directory: StaticDirectory) -> None:
    alice = await directory.eligibility("alice", ["approvers", "leads", "island"], now=NOW)
    bob = await directory.eligibility("bob", ["approvers", "leads", "island"], now=NOW)
    assert alice.member_of == {"approvers", "leads"}  # leads nests approvers (the cycle)
    assert bob.member_of == {"approvers", "leads"}  # approvers nests leads
    assert bob.checked_groups == {"approvers", "leads", "island"}
    assert bob.source == "static" and bob.checked_at == NOW


async def test_cycle_grants_nothing_to_outsiders(directory: StaticDirectory) -> None:
    carol = await directory.eligibility("carol", ["approvers", "leads"], now=NOW)
    assert carol.member_of == frozenset()


async def test_groups_are_matched_case_insensitively_and_reported_as_asked(
    directory: StaticDirectory,
) -> None:
    result = await directory.eligibility("ALICE", ["Approvers", "approvers"], now=NOW)
    assert result.member_of == {"Approvers"} and result.checked_groups == {"Approvers"}
    assert result.object_id == "alice"


async def test_unknown_group_cannot_be_checked_and_is_refused(directory: StaticDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await directory.eligibility("alice", ["approvers", "typo-group"], now=NOW)
    assert err.value.reason_code == "GROUP_NOT_FOUND"


async def test_unknown_person_is_not_found(directory: StaticDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await directory.eligibility("mallory", ["approvers"], now=NOW)
    assert err.value.reason_code == "IDENTITY_NOT_FOUND"


async def test_eligibility_reports_disabled_and_guest(directory: StaticDirectory) -> None:
    gus = await directory.eligibility("gus", ["approvers"], now=NOW)
    dave = await directory.eligibility("dave", ["admins"], now=NOW, check_pim=True)
    assert gus.is_guest and gus.member_of == {"approvers"}
    assert dave.enabled is False


async def test_active_pim_makes_a_member_and_records_its_end(directory: StaticDirectory) -> None:
    carol = await directory.eligibility("carol", ["admins"], now=NOW, check_pim=True)
    assert carol.member_of == {"admins"}
    assert carol.pim_checked
    assert carol.pim_active_until == {"admins": datetime(2026, 11, 23, 12, 0, tzinfo=UTC)}
    dave = await directory.eligibility("dave", ["admins"], now=NOW, check_pim=True)
    assert dave.pim_active_until == {"admins": None}


async def test_ended_pim_is_neither_active_nor_membership(directory: StaticDirectory) -> None:
    later = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    carol = await directory.eligibility("carol", ["admins"], now=later, check_pim=True)
    assert carol.member_of == frozenset() and carol.pim_active_until == {}


async def test_pim_is_not_reported_unless_asked(directory: StaticDirectory) -> None:
    carol = await directory.eligibility("carol", ["admins"], now=NOW)
    assert not carol.pim_checked and carol.pim_active_until == {}


async def test_naive_time_is_refused(directory: StaticDirectory) -> None:
    with pytest.raises(ValueError, match="naive"):
        await directory.eligibility("alice", ["approvers"], now=datetime(2026, 11, 23))


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=15),
    home=st.integers(0, 5),
    asked=st.integers(0, 5),
)
async def test_membership_is_reachability_in_any_nesting_graph(
    edges: list[tuple[int, int]], home: int, asked: int
) -> None:
    # Property: a person is a member of group G exactly when their home group can be
    # reached from G through member_groups, whatever cycles the graph has.
    nested: dict[int, set[int]] = {i: set() for i in range(6)}
    for parent, child in edges:
        nested[parent].add(child)
    groups = "\n".join(
        f"  - id: g{i}\n    display_name: G{i}\n"
        f"    members: [{'p' if i == home else ''}]\n"
        f"    member_groups: [{', '.join(f'g{c}' for c in sorted(nested[i]))}]"
        for i in range(6)
    )
    doc = f"people:\n  - object_id: p\n    display_name: P\ngroups:\n{groups}\n"
    result = await StaticDirectory.from_text(doc).eligibility("p", [f"g{asked}"], now=NOW)
    seen, stack = set(), [asked]
    while stack:
        g = stack.pop()
        if g not in seen:
            seen.add(g)
            stack.extend(nested[g])
    assert (f"g{asked}" in result.member_of) == (home in seen)


# -- the file: validation, reload, failing closed -------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("    guest: true\n", "    guest: true\n    admin: true\n"), "admin"),
        (("version: 1\n", "version: 1\nowner: me\n"), "owner"),
        (("members: [bob]", "members: [bob, mallory]"), "mallory"),
        (("member_groups: [leads]", "member_groups: [ghosts]"), "ghosts"),
        (("dave: null", "erin: null"), "erin"),
        (("2026-11-23T12:00:00Z", "2026-11-23T12:00:00"), "timezone"),
        (("object_id: bob", "object_id: 42"), "string"),
        (("object_id: bob", "object_id: alice"), "twice"),
        (("    enabled: false\n", "    enabled: false\n    enabled: true\n"), "duplicate key"),
        (("version: 1\n", "version: 2\n"), "version"),
        (("version: 1\n", "version: 1\npeople: [\n"), "YAML"),
    ],
    ids=[
        "unknown-person-field",
        "unknown-top-field",
        "unknown-member",
        "unknown-nested-group",
        "unknown-pim-person",
        "naive-timestamp",
        "numeric-id",
        "duplicate-person",
        "duplicate-yaml-key",
        "future-version",
        "bad-yaml",
    ],
)
async def test_broken_files_are_refused_with_the_reason(
    change: tuple[str, str], problem: str
) -> None:
    base = "version: 1\n" + DOC.lstrip("\n")
    old, new = change
    assert old in base
    with pytest.raises(ConfigError) as err:
        StaticDirectory.from_text(base.replace(old, new, 1))
    assert err.value.reason_code == "CONFIG_INVALID"
    assert problem.lower() in err.value.message.lower()


async def test_missing_file_at_start_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        StaticDirectory(tmp_path / "absent.yaml")


async def test_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    write(path, DOC, mtime_ns=1_000_000_000)
    directory = StaticDirectory(path)
    assert (await directory.eligibility("bob", ["leads"], now=NOW)).member_of == {"leads"}
    write(path, DOC.replace("members: [bob]", "members: []"), mtime_ns=2_000_000_000)
    assert (await directory.eligibility("bob", ["leads"], now=NOW)).member_of == frozenset()


async def test_broken_new_file_fails_closed_instead_of_using_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    write(path, DOC, mtime_ns=1_000_000_000)
    directory = StaticDirectory(path)
    await directory.resolve(IdentityRef(IdentityKind.OBJECT_ID, "alice"), now=NOW)
    # Someone removes Alice but leaves a typo behind: the old file must not answer.
    write(
        path,
        DOC.replace("members: [alice, gus]", "members: [gus]\n    colour: red"),
        mtime_ns=2_000_000_000,
    )
    for _ in range(2):  # and it keeps refusing on every use, not only the first
        with pytest.raises(DirectoryError) as err:
            await directory.eligibility("alice", ["approvers"], now=NOW)
        assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
        assert "colour" in err.value.message
        with pytest.raises(DirectoryError):
            await directory.resolve(IdentityRef(IdentityKind.OBJECT_ID, "alice"), now=NOW)
    # Once fixed, the new content (without Alice in approvers) is what counts.
    write(path, DOC.replace("members: [alice, gus]", "members: [gus]"), mtime_ns=3_000_000_000)
    result = await directory.eligibility("alice", ["approvers"], now=NOW)
    assert result.member_of == frozenset()


async def test_deleted_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    write(path, DOC)
    directory = StaticDirectory(path)
    path.unlink()
    with pytest.raises(DirectoryError) as err:
        await directory.eligibility("alice", ["approvers"], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    write(path, DOC)
    assert (await directory.eligibility("alice", ["approvers"], now=NOW)).member_of == {"approvers"}


async def test_atomically_replaced_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    write(path, DOC, mtime_ns=1_000_000_000)
    directory = StaticDirectory(path)
    staged = tmp_path / "directory.yaml.new"
    # Same size and mtime as the old file: only the inode tells them apart.
    write(staged, DOC.replace("[alice, gus]", "[gus, gus]"), mtime_ns=1_000_000_000)
    os.replace(staged, path)
    assert (await directory.eligibility("alice", ["approvers"], now=NOW)).member_of == frozenset()


async def test_unchanged_file_is_not_parsed_again(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    write(path, DOC)
    directory = StaticDirectory(path)
    first = directory._current()
    assert directory._current() is first


async def test_example_manifest_is_a_valid_directory() -> None:
    directory = StaticDirectory(EXAMPLE)
    res = await directory.resolve(IdentityRef(IdentityKind.SLACK_USER, "U0BOB0002"), now=NOW)
    assert res.person.object_id == "bob"
    result = await directory.eligibility(
        "bob", ["payments-approvers", "prod-admins"], now=NOW, check_pim=True
    )
    assert result.member_of == {"payments-approvers", "prod-admins"}
    assert result.pim_active_until == {"prod-admins": None}
    carol = await directory.eligibility("carol", ["prod-admins"], now=NOW, check_pim=True)
    assert carol.pim_active_until == {"prod-admins": datetime(2026, 12, 31, 18, tzinfo=UTC)}
    later = NOW + timedelta(days=60)
    carol = await directory.eligibility("carol", ["prod-admins"], now=later, check_pim=True)
    assert carol.member_of == frozenset()
