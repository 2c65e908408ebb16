"""The two-person rule: who may decide, and when enough people have (seed 000, 001)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import ApprovalRefusedError, IllegalTransitionError
from core.policy import Outcome, ToolCall
from core.quorum import Verdict, apply, expire_if_due, judge, progress, quorum_met
from core.requests import ApprovalRequest, RequestState, open_request, payload_hash
from tests.fakes import T0, eligibility, load_policy

POLICY = load_policy("enterprise-two-person.json")
GROUPS = POLICY.groups


def _request(
    route: str = "storage.export", params: dict | None = None, **kw: object
) -> ApprovalRequest:
    params = params or {"dataset": "customer_pii", "destination": "s3://exports/q4"}
    call = ToolCall(route=route, params=params, requester="agent-1", on_behalf_of="alice", **kw)  # type: ignore[arg-type]
    decision = POLICY.evaluate(call)
    assert decision.outcome is Outcome.GATED
    return open_request(
        call,
        decision,
        request_id="r-1",
        job_id="j-1",
        policy_hash_b64u=POLICY.policy_hash_b64u,
        now=T0,
    )


def _approve(request, decisions, person, groups, *, at=T0, platform="slack", **kw):
    decision = judge(
        request,
        decisions,
        eligibility(POLICY, person, groups, at=at),
        Verdict.APPROVE,
        groups=GROUPS,
        now=at,
        platform=platform,
        **kw,
    )
    return apply(request, decisions, decision), [*decisions, decision]


def _refusal(
    request, decisions, person, groups, verdict=Verdict.APPROVE, *, at=T0, **kw
) -> ApprovalRefusedError:
    with pytest.raises(ApprovalRefusedError) as exc:
        judge(
            request,
            decisions,
            eligibility(POLICY, person, groups, at=kw.pop("evidence_at", at)),
            verdict,
            groups=GROUPS,
            now=at,
            platform="slack",
            **kw,
        )
    return exc.value


def test_two_eligible_people_approve_and_the_request_is_approved() -> None:
    request = _request()
    request, decisions = _approve(request, [], "bob", ["Agent-Approvers-Prod"])
    assert request.state is RequestState.PENDING
    assert progress(request, decisions).approvals == 1
    request, decisions = _approve(request, decisions, "carol", ["Agent-Approvers-Prod"])
    assert request.state is RequestState.APPROVED
    assert quorum_met(request, decisions)


def test_requester_cannot_approve_own_request() -> None:
    err = _refusal(_request(), [], "agent-1", ["Agent-Approvers-Prod"])
    assert err.reason_code == "REQUESTER_CANNOT_APPROVE"
    assert "Two different people" in err.message


def test_person_the_agent_acts_for_cannot_approve() -> None:
    assert (
        _refusal(_request(), [], "alice", ["Agent-Approvers-Prod"]).reason_code
        == "REQUESTER_CANNOT_APPROVE"
    )


def test_one_person_counts_once_across_platforms() -> None:
    request = _request()
    request, decisions = _approve(request, [], "bob", ["Agent-Approvers-Prod"], platform="slack")
    err = _refusal(request, decisions, "bob", ["Agent-Approvers-Prod"])
    assert err.reason_code == "ALREADY_DECIDED"
    assert "one person counts once" in err.message


def test_non_member_is_refused_with_the_real_group_names() -> None:
    err = _refusal(_request(), [], "mallory", [])
    assert err.reason_code == "APPROVER_NOT_IN_GROUP"
    assert "Agent-Approvers-Prod" in err.message and "checked in static" in err.message


def test_stale_directory_evidence_is_not_evidence_at_decision_time() -> None:
    err = _refusal(
        _request(),
        [],
        "bob",
        ["Agent-Approvers-Prod"],
        at=T0 + timedelta(minutes=10),
        evidence_at=T0,
    )
    assert err.reason_code == "STALE_ELIGIBILITY"


def test_disabled_and_guest_accounts_are_refused() -> None:
    request = _request()
    for kwargs, code in (
        ({"enabled": False}, "ACCOUNT_DISABLED"),
        ({"is_guest": True}, "GUEST_NOT_ALLOWED"),
    ):
        with pytest.raises(ApprovalRefusedError) as exc:
            judge(
                request,
                [],
                eligibility(POLICY, "bob", ["Agent-Approvers-Prod"], **kwargs),
                Verdict.APPROVE,
                groups=GROUPS,
                now=T0,
                platform="web",
            )
        assert exc.value.reason_code == code


def _payment(amount: int = 12_500) -> ApprovalRequest:
    return _request(
        "payments.transfer",
        {"amount_usd": amount, "to_account": "DE89370400440532013000", "memo": "Invoice 2026-118"},
    )


def test_payments_need_one_approver_from_each_group() -> None:
    request = _payment()
    confirm = request.binding.payload_hash_b64u[-4:]
    request, decisions = _approve(
        request, [], "bob", ["Finance-Approvers"], typed_confirmation=confirm
    )
    err = _refusal(request, decisions, "dave", ["Finance-Approvers"], typed_confirmation=confirm)
    assert err.reason_code == "GROUP_ALREADY_COVERED"
    assert "Finance-Approvers is already covered by Bob" in err.message
    assert "still needs someone from Security-Approvers" in err.message
    request, decisions = _approve(
        request, decisions, "carol", ["Security-Approvers"], typed_confirmation=confirm
    )
    assert request.state is RequestState.APPROVED


def test_one_person_in_both_groups_cannot_cover_both() -> None:
    request = _payment()
    confirm = request.binding.payload_hash_b64u[-4:]
    request, decisions = _approve(
        request, [], "erin", ["Finance-Approvers", "Security-Approvers"], typed_confirmation=confirm
    )
    assert request.state is RequestState.PENDING
    assert progress(request, decisions).requirements[0].remaining == 1
    # a second person from either group completes the matching
    request, decisions = _approve(
        request, decisions, "bob", ["Finance-Approvers"], typed_confirmation=confirm
    )
    assert request.state is RequestState.APPROVED


def test_critical_route_needs_the_last_four_characters_of_the_payload_hash() -> None:
    request = _payment()
    assert (
        _refusal(request, [], "bob", ["Finance-Approvers"]).reason_code == "CONFIRMATION_REQUIRED"
    )
    assert (
        _refusal(request, [], "bob", ["Finance-Approvers"], typed_confirmation="zzzz").reason_code
        == "CONFIRMATION_MISMATCH"
    )


def test_deny_by_an_eligible_approver_ends_the_request() -> None:
    request = _request()
    assert (
        _refusal(request, [], "bob", ["Agent-Approvers-Prod"], Verdict.DENY).reason_code
        == "DENY_REASON_REQUIRED"
    )
    decision = judge(
        request,
        [],
        eligibility(POLICY, "bob", ["Agent-Approvers-Prod"]),
        Verdict.DENY,
        groups=GROUPS,
        now=T0,
        platform="teams",
        reason="wrong beneficiary",
    )
    denied = apply(request, [], decision)
    assert denied.state is RequestState.DENIED
    assert "wrong beneficiary" in (denied.final_reason or "")
    assert (
        _refusal(denied, [decision], "carol", ["Agent-Approvers-Prod"]).reason_code
        == "REQUEST_NOT_PENDING"
    )


def test_outsider_deny_changes_nothing() -> None:
    assert (
        _refusal(_request(), [], "mallory", [], Verdict.DENY, reason="no").reason_code
        == "APPROVER_NOT_IN_GROUP"
    )


def test_approval_after_the_deadline_is_refused_and_the_request_expires() -> None:
    request = _request()
    late = request.binding.expires_at
    err = _refusal(request, [], "bob", ["Agent-Approvers-Prod"], at=late)
    assert err.reason_code == "REQUEST_EXPIRED"
    assert expire_if_due(request, now=late - timedelta(seconds=1)).state is RequestState.PENDING
    assert expire_if_due(request, now=late).state is RequestState.EXPIRED


def test_pim_required_needs_an_active_assignment() -> None:
    call = ToolCall(
        route="keyturn.policy.activate", params={"new_policy_hash": "x" * 43}, requester="alice"
    )
    decision = POLICY.evaluate(call)
    assert decision.outcome is Outcome.GATED
    request = open_request(
        call,
        decision,
        request_id="r-p",
        job_id="j-p",
        policy_hash_b64u=POLICY.policy_hash_b64u,
        now=T0,
    )
    confirm = request.binding.payload_hash_b64u[-4:]
    with pytest.raises(ApprovalRefusedError) as exc:
        judge(
            request,
            [],
            eligibility(POLICY, "bob", ["Security-Approvers"], pim_checked=True),
            Verdict.APPROVE,
            groups=GROUPS,
            now=T0,
            platform="web",
            typed_confirmation=confirm,
        )
    assert exc.value.reason_code == "PIM_NOT_ACTIVE"
    ok = judge(
        request,
        [],
        eligibility(POLICY, "bob", ["Security-Approvers"], pim_active=["Security-Approvers"]),
        Verdict.APPROVE,
        groups=GROUPS,
        now=T0,
        platform="web",
        typed_confirmation=confirm,
    )
    assert ok.pim_active_until == {GROUPS["Security-Approvers"].directory_id: None}


def test_decisions_for_another_request_hash_do_not_count() -> None:
    request = _request()
    other = _request(params={"dataset": "customer_pii", "destination": "s3://elsewhere"})
    _, decisions = _approve(other, [], "bob", ["Agent-Approvers-Prod"])
    _, decisions = _approve(other, decisions, "carol", ["Agent-Approvers-Prod"])
    assert not quorum_met(request, decisions)
    with pytest.raises(ValueError):
        apply(request, [], decisions[0])


def test_illegal_transitions_raise() -> None:
    request = _request()
    with pytest.raises(IllegalTransitionError):
        request.transition(RequestState.CONSUMED, at=T0)
    denied = request.transition(RequestState.DENIED, at=T0)
    for state in RequestState:
        with pytest.raises(IllegalTransitionError):
            denied.transition(state, at=T0)


def test_request_hash_binds_every_field() -> None:
    base = _request().binding
    from dataclasses import replace

    variants = [
        replace(base, job_id="j-2"),
        replace(base, tool_route="payments.transfer"),
        replace(base, payload_hash_b64u=payload_hash({"x": 1})),
        replace(base, policy_hash_b64u=payload_hash({"p": 1})),
        replace(base, expires_at=base.expires_at + timedelta(seconds=1)),
        replace(base, requester="agent-2"),
        replace(base, on_behalf_of="bob"),
        replace(base, request_id="r-2"),
        replace(base, plan_hash="p"),
    ]
    hashes = {v.request_hash_b64u for v in variants}
    assert base.request_hash_b64u not in hashes and len(hashes) == len(variants)


def test_a_request_refuses_params_that_do_not_match_its_payload_hash() -> None:
    from dataclasses import replace

    request = _request()
    with pytest.raises(ValueError):
        replace(request, params={"dataset": "customer_pii", "destination": "s3://attacker"})
