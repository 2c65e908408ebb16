"""EntraDirectory against a local Graph + token endpoint stand-in.

Each test names the rule it defends. The stand-in checks bearer tokens and
permissions, so a passing test also shows the msal → token → Graph path is real.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio

from adapters.entra import EntraDirectory
from core.errors import DirectoryError
from core.identity import IdentityKind, IdentityRef
from core.ports import Directory
from tests.adapters.graph_standin import (
    ALICE,
    APPROVERS,
    BOB,
    CAROL,
    CLIENT,
    DAVE,
    ERIN,
    GUEST,
    LEADS,
    NOW,
    OTHER,
    PIM_GROUP,
    SECRET,
    TENANT,
    FakeTimer,
    GraphStandIn,
    Reply,
    directory,
    graph_error,
    populate,
    throttled,
)

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[GraphStandIn]:
    async with GraphStandIn(tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET) as s:
        populate(s)
        yield s


@pytest_asyncio.fixture
async def timer() -> FakeTimer:
    return FakeTimer()


@pytest_asyncio.fixture
async def entra(standin: GraphStandIn, timer: FakeTimer) -> AsyncIterator[EntraDirectory]:
    async with directory(standin, timer=timer) as d:
        yield d


def _implements_the_port(entra: EntraDirectory) -> Directory:
    return entra  # mypy checks EntraDirectory against core.ports.Directory here


def graph_calls(standin: GraphStandIn) -> int:
    return sum(len(standin.calls_to(r)) for r in ("user", "users", "checkMemberGroups", "pim"))


# -- membership ------------------------------------------------------------------------


async def test_direct_member_is_confirmed(entra: EntraDirectory, standin: GraphStandIn) -> None:
    result = await entra.eligibility(ALICE, [APPROVERS, OTHER], now=NOW)
    assert result.member_of == {APPROVERS}
    assert result.checked_groups == {APPROVERS, OTHER}
    assert result.object_id == ALICE and result.display_name == "Alice Martin"
    assert result.source == "entra" and result.checked_at == NOW
    assert result.enabled and not result.is_guest and not result.pim_checked
    (call,) = standin.calls_to("checkMemberGroups")
    assert call.body == {"groupIds": [APPROVERS, OTHER]}
    assert call.path == f"/v1.0/users/{ALICE}/checkMemberGroups"


async def test_non_member_is_not_confirmed(entra: EntraDirectory) -> None:
    result = await entra.eligibility(CAROL, [APPROVERS], now=NOW)
    assert result.member_of == frozenset()
    assert result.checked_groups == {APPROVERS}


async def test_nested_group_member_is_confirmed_transitively(entra: EntraDirectory) -> None:
    result = await entra.eligibility(BOB, [APPROVERS, LEADS], now=NOW)
    assert result.member_of == {APPROVERS, LEADS}


async def test_more_than_twenty_groups_are_checked_in_batches_of_twenty(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    many = [f"80000000-0000-4000-8000-{i:012d}" for i in range(43)]
    for gid in many:
        standin.add_group(gid, gid)
    standin.groups[many[0]]["members"].add(ALICE)
    standin.groups[many[42]]["members"].add(ALICE)
    result = await entra.eligibility(ALICE, [*many, APPROVERS], now=NOW)
    sizes = sorted(len(c.body["groupIds"]) for c in standin.calls_to("checkMemberGroups"))
    assert sizes == [4, 20, 20]
    assert result.member_of == {many[0], many[42], APPROVERS}
    assert len(result.checked_groups) == 44


async def test_duplicate_group_ids_are_asked_once(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    result = await entra.eligibility(ALICE, [APPROVERS, APPROVERS.upper(), APPROVERS], now=NOW)
    (call,) = standin.calls_to("checkMemberGroups")
    assert call.body == {"groupIds": [APPROVERS]}
    assert result.member_of == {APPROVERS}


async def test_partial_answer_means_not_a_member_of_the_rest(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script("checkMemberGroups", Reply(200, {"value": [APPROVERS]}))
    result = await entra.eligibility(BOB, [APPROVERS, LEADS], now=NOW)
    assert result.member_of == {APPROVERS}


async def test_answer_naming_a_group_that_was_not_asked_is_refused(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script("checkMemberGroups", Reply(200, {"value": [APPROVERS, OTHER]}))
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>gateway</html>",
        {"values": [APPROVERS]},
        {"value": APPROVERS},
        {"value": [1, 2]},
        ["not", "an", "object"],
    ],
    ids=["not-json", "missing-value", "value-not-list", "value-not-strings", "json-array"],
)
async def test_malformed_membership_answer_is_refused(
    entra: EntraDirectory, standin: GraphStandIn, body: object
) -> None:
    standin.script("checkMemberGroups", Reply(200, body))
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert "could not confirm eligibility" in err.value.message


async def test_user_answer_without_account_enabled_is_refused(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script("user", Reply(200, {"id": ALICE, "displayName": "Alice", "userType": "Member"}))
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert "enabled" in err.value.message


async def test_account_enabled_as_a_string_is_not_read_as_true(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script(
        "user", Reply(200, {"id": ALICE, "accountEnabled": "true", "userType": "Member"})
    )
    with pytest.raises(DirectoryError):
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)


async def test_answer_about_another_user_is_refused(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script("user", Reply(200, {"id": BOB, "accountEnabled": True, "userType": "Member"}))
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"


async def test_eligibility_reports_disabled_and_guest_accounts(entra: EntraDirectory) -> None:
    disabled = await entra.eligibility(DAVE, [APPROVERS], now=NOW)
    guest = await entra.eligibility(GUEST, [APPROVERS], now=NOW)
    assert disabled.enabled is False
    assert guest.is_guest is True and guest.member_of == {APPROVERS}


async def test_unknown_user_is_not_found(entra: EntraDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility("0badc0de-0000-4000-8000-000000000000", [APPROVERS], now=NOW)
    assert err.value.reason_code == "IDENTITY_NOT_FOUND"


async def test_malformed_ids_are_refused_before_any_call(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility("../groups/x", [APPROVERS], now=NOW)
    assert err.value.reason_code == "IDENTITY_NOT_FOUND"
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, ["Payments-Approvers"], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert standin.calls == []


# -- PIM for Groups --------------------------------------------------------------------


async def test_eligible_but_not_active_pim_is_not_active(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    # Eligible only: Entra neither lists Carol as a member nor has an active instance;
    # an activation that already ended is all the schedule shows.
    standin.add_pim(PIM_GROUP, CAROL, start=NOW - timedelta(hours=9), end=NOW - timedelta(hours=1))
    result = await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)
    assert result.pim_checked is True
    assert result.pim_active_until == {}
    assert result.member_of == frozenset()
    (call,) = standin.calls_to("pim")
    assert call.query["$filter"] == f"principalId eq '{CAROL}'"


async def test_active_pim_assignment_records_its_end_time(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    ends = NOW + timedelta(hours=4)
    standin.groups[PIM_GROUP]["members"].add(CAROL)  # activation makes Carol a member
    standin.add_pim(PIM_GROUP, CAROL, start=NOW - timedelta(minutes=5), end=ends)
    result = await entra.eligibility(CAROL, [PIM_GROUP, APPROVERS], now=NOW, check_pim=True)
    assert result.pim_active_until == {PIM_GROUP: ends}
    assert result.member_of == {PIM_GROUP}


async def test_permanent_active_assignment_has_no_end(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.add_pim(PIM_GROUP, CAROL, end=NOW + timedelta(hours=1))
    standin.add_pim(PIM_GROUP, CAROL, start=None, end=None, assignment_type="Assigned")
    result = await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)
    assert result.pim_active_until == {PIM_GROUP: None}


async def test_owner_future_and_unasked_assignments_are_not_active_membership(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.add_pim(PIM_GROUP, CAROL, access="owner", end=NOW + timedelta(hours=1))
    standin.add_pim(PIM_GROUP, CAROL, start=NOW + timedelta(minutes=1))
    standin.add_pim(OTHER, CAROL, end=NOW + timedelta(hours=1))
    result = await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)
    assert result.pim_active_until == {}


async def test_pim_answer_pages_are_followed(entra: EntraDirectory, standin: GraphStandIn) -> None:
    standin.pim_page_size = 1
    standin.add_pim(OTHER, CAROL, end=NOW + timedelta(hours=1))
    standin.add_pim(PIM_GROUP, CAROL, end=NOW + timedelta(hours=2))
    result = await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)
    assert result.pim_active_until == {PIM_GROUP: NOW + timedelta(hours=2)}
    assert len(standin.calls_to("pim")) == 2


async def test_next_link_to_another_host_is_refused_and_gets_no_token(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script(
        "pim",
        Reply(200, {"value": [], "@odata.nextLink": "https://attacker.test/v1.0/steal"}),
    )
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert len(standin.calls_to("pim")) == 1


async def test_pim_assignments_of_another_principal_are_refused(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.add_pim(PIM_GROUP, BOB, end=NOW + timedelta(hours=1))
    standin.script("pim", Reply(200, {"value": standin.pim}))
    with pytest.raises(DirectoryError):
        await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)


async def test_missing_pim_permission_is_an_auth_failure(standin: GraphStandIn) -> None:
    standin.roles = ["User.Read.All", "GroupMember.Read.All"]
    async with directory(standin) as entra:
        with pytest.raises(DirectoryError) as err:
            await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)
    assert err.value.reason_code == "DIRECTORY_AUTH_FAILED"
    assert "keyturn entra check" in err.value.message


# -- resolution ------------------------------------------------------------------------


async def test_object_id_resolves_to_the_person(entra: EntraDirectory) -> None:
    ref = IdentityRef(IdentityKind.OBJECT_ID, ALICE.upper())
    res = await entra.resolve(ref, now=NOW)
    assert res.person.object_id == ALICE
    assert res.person.email == "alice@contoso.test"
    assert (res.method, res.source, res.ref, res.resolved_at) == ("object_id", "entra", ref, NOW)


async def test_email_resolves_case_insensitively(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    res = await entra.resolve(IdentityRef(IdentityKind.EMAIL, "Bob@Contoso.TEST"), now=NOW)
    assert res.person.object_id == BOB and res.method == "email"
    (call,) = standin.calls_to("users")
    assert call.query["$filter"] == (
        "mail eq 'Bob@Contoso.TEST' or userPrincipalName eq 'Bob@Contoso.TEST'"
    )


async def test_quote_in_email_is_escaped_not_injected(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.add_user(
        "0a0a0a0a-0000-4000-8000-00000000000a", "Pat O'Brien", mail="o'brien@contoso.test"
    )
    res = await entra.resolve(IdentityRef(IdentityKind.EMAIL, "o'brien@contoso.test"), now=NOW)
    assert res.person.display_name == "Pat O'Brien"
    assert "o''brien@contoso.test" in standin.calls_to("users")[0].query["$filter"]


async def test_ambiguous_email_is_refused(entra: EntraDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(IdentityRef(IdentityKind.EMAIL, "ops@contoso.test"), now=NOW)
    assert err.value.reason_code == "IDENTITY_AMBIGUOUS"


async def test_more_matches_than_one_page_is_ambiguous(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    user = dict(standin.users[ERIN])
    standin.script(
        "users", Reply(200, {"value": [user], "@odata.nextLink": f"{standin.graph_base}/users?x"})
    )
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(IdentityRef(IdentityKind.EMAIL, "ops@contoso.test"), now=NOW)
    assert err.value.reason_code == "IDENTITY_AMBIGUOUS"


async def test_users_that_do_not_match_the_email_are_refused(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script("users", Reply(200, {"value": [dict(standin.users[ALICE])]}))
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(IdentityRef(IdentityKind.EMAIL, "carol@contoso.test"), now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"


async def test_unknown_email_and_object_id_are_not_found(entra: EntraDirectory) -> None:
    for ref in (
        IdentityRef(IdentityKind.EMAIL, "nobody@contoso.test"),
        IdentityRef(IdentityKind.OBJECT_ID, "0badc0de-0000-4000-8000-000000000000"),
        IdentityRef(IdentityKind.EMAIL, "not-an-email"),
    ):
        with pytest.raises(DirectoryError) as err:
            await entra.resolve(ref, now=NOW)
        assert err.value.reason_code == "IDENTITY_NOT_FOUND"


async def test_slack_user_id_cannot_be_resolved_by_entra(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(IdentityRef(IdentityKind.SLACK_USER, "U012ABC"), now=NOW)
    assert err.value.reason_code == "IDENTITY_NOT_FOUND"
    assert graph_calls(standin) == 0


async def test_disabled_account_is_refused(entra: EntraDirectory) -> None:
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(IdentityRef(IdentityKind.EMAIL, "dave@contoso.test"), now=NOW)
    assert err.value.reason_code == "ACCOUNT_DISABLED"


async def test_guest_is_refused_unless_guests_are_allowed(entra: EntraDirectory) -> None:
    ref = IdentityRef(IdentityKind.EMAIL, "gus@partner.test")
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(ref, now=NOW)
    assert err.value.reason_code == "GUEST_NOT_ALLOWED"
    res = await entra.resolve(ref, now=NOW, allow_guests=True)
    assert res.person.object_id == GUEST and res.person.is_guest


async def test_external_upn_counts_as_guest_even_if_typed_member(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.users[GUEST]["userType"] = "Member"
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(IdentityRef(IdentityKind.OBJECT_ID, GUEST), now=NOW)
    assert err.value.reason_code == "GUEST_NOT_ALLOWED"


async def test_missing_user_type_counts_as_guest(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.users[ALICE]["userType"] = None
    with pytest.raises(DirectoryError) as err:
        await entra.resolve(IdentityRef(IdentityKind.OBJECT_ID, ALICE), now=NOW)
    assert err.value.reason_code == "GUEST_NOT_ALLOWED"


# -- throttling, outages ---------------------------------------------------------------


async def test_throttled_then_success_honours_retry_after(
    entra: EntraDirectory, standin: GraphStandIn, timer: FakeTimer
) -> None:
    standin.script("checkMemberGroups", throttled("1"))
    result = await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert result.member_of == {APPROVERS}
    assert timer.slept == [1.0]
    assert len(standin.calls_to("checkMemberGroups")) == 2


async def test_retry_after_as_http_date_is_honoured(
    entra: EntraDirectory, standin: GraphStandIn, timer: FakeTimer
) -> None:
    standin.script("user", throttled("Wed, 21 Oct 2015 07:28:00 GMT"))  # in the past: retry now
    result = await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert result.enabled and timer.slept == [0.0]


async def test_throttled_past_the_deadline_is_refused_without_waiting(
    entra: EntraDirectory, standin: GraphStandIn, timer: FakeTimer
) -> None:
    standin.script("checkMemberGroups", throttled("5"))
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert "could not confirm eligibility" in err.value.message
    assert "throttling" in err.value.message
    assert timer.slept == []
    assert len(standin.calls_to("checkMemberGroups")) == 1


async def test_repeated_throttling_uses_up_the_deadline_and_is_refused(
    entra: EntraDirectory, standin: GraphStandIn, timer: FakeTimer
) -> None:
    standin.script("checkMemberGroups", *[throttled("1")] * 5)
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert sum(timer.slept) <= 2.0
    assert len(standin.calls_to("checkMemberGroups")) == 3


async def test_a_zero_retry_after_cannot_loop_forever(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script("checkMemberGroups", *[throttled("0")] * 50)
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert "5 attempts" in err.value.message
    assert len(standin.calls_to("checkMemberGroups")) == 5


async def test_service_unavailable_is_refused(
    entra: EntraDirectory, standin: GraphStandIn, timer: FakeTimer
) -> None:
    standin.script("checkMemberGroups", *[graph_error(503, "serviceNotAvailable")] * 10)
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert "503" in err.value.message
    assert 0 < sum(timer.slept) <= 2.0


async def test_server_error_is_refused_at_once(
    entra: EntraDirectory, standin: GraphStandIn, timer: FakeTimer
) -> None:
    standin.script("user", graph_error(500, "generalException"))
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert "500 generalException" in err.value.message
    assert timer.slept == []


async def test_unreachable_graph_is_refused(standin: GraphStandIn) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    timer = FakeTimer()
    async with directory(
        standin, timer=timer, graph_base=f"http://127.0.0.1:{closed_port}/v1.0"
    ) as entra:
        with pytest.raises(DirectoryError) as err:
            await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_UNAVAILABLE"
    assert "could not be reached" in err.value.message
    assert sum(timer.slept) <= 2.0


async def test_graph_refusing_the_token_is_an_auth_failure(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    standin.script("user", graph_error(401, "InvalidAuthenticationToken"))
    with pytest.raises(DirectoryError) as err:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert err.value.reason_code == "DIRECTORY_AUTH_FAILED"


# -- cache -----------------------------------------------------------------------------


async def test_answer_is_reused_within_the_ttl(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    first = await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    before = graph_calls(standin)
    second = await entra.eligibility(ALICE, [APPROVERS], now=NOW + timedelta(seconds=59))
    assert second == first and second.checked_at == NOW
    assert graph_calls(standin) == before


async def test_answer_expires_after_the_ttl(entra: EntraDirectory, standin: GraphStandIn) -> None:
    await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    standin.groups[APPROVERS]["members"].discard(ALICE)
    later = await entra.eligibility(ALICE, [APPROVERS], now=NOW + timedelta(seconds=60))
    assert later.member_of == frozenset() and later.checked_at == NOW + timedelta(seconds=60)


async def test_break_glass_bypasses_the_cache(entra: EntraDirectory, standin: GraphStandIn) -> None:
    await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    standin.groups[APPROVERS]["members"].discard(ALICE)  # removed a second ago
    fresh = await entra.eligibility(
        ALICE, [APPROVERS], now=NOW + timedelta(seconds=1), bypass_cache=True
    )
    assert fresh.member_of == frozenset()
    assert len(standin.calls_to("checkMemberGroups")) == 2


async def test_cache_disabled_with_zero_asks_every_time(standin: GraphStandIn) -> None:
    async with directory(standin, cache_seconds=0) as entra:
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert len(standin.calls_to("checkMemberGroups")) == 2
    assert len(standin.calls_to("token")) == 1  # msal's token cache still answers


async def test_a_different_question_is_not_answered_from_the_cache(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    with_pim = await entra.eligibility(ALICE, [APPROVERS], now=NOW, check_pim=True)
    other = await entra.eligibility(ALICE, [APPROVERS, OTHER], now=NOW)
    assert with_pim.pim_checked and other.checked_groups == {APPROVERS, OTHER}
    assert len(standin.calls_to("checkMemberGroups")) == 3


async def test_errors_are_not_cached(entra: EntraDirectory, standin: GraphStandIn) -> None:
    standin.script("user", graph_error(500, "generalException"))
    with pytest.raises(DirectoryError):
        await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    result = await entra.eligibility(ALICE, [APPROVERS], now=NOW)
    assert result.member_of == {APPROVERS}


async def test_cached_answer_is_dropped_when_its_pim_activation_ends(
    entra: EntraDirectory, standin: GraphStandIn
) -> None:
    ends = NOW + timedelta(seconds=30)
    standin.groups[PIM_GROUP]["members"].add(CAROL)
    standin.add_pim(PIM_GROUP, CAROL, end=ends)
    await entra.eligibility(CAROL, [PIM_GROUP], now=NOW, check_pim=True)
    standin.groups[PIM_GROUP]["members"].discard(CAROL)
    standin.pim.clear()
    after = await entra.eligibility(CAROL, [PIM_GROUP], now=ends, check_pim=True)
    assert after.member_of == frozenset() and after.pim_active_until == {}
