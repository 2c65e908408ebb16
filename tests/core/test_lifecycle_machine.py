"""Property test of the approval lifecycle (STYLE.md): whatever people click, and
whenever, a grant exists only if quorum was met for this exact request hash before its
deadline, and a request has at most one grant."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core.errors import ApprovalRefusedError, IllegalTransitionError
from core.grants import Grant, mint_grant
from core.keys import SigningKey
from core.policy import ToolCall
from core.quorum import ApproverDecision, Verdict, apply, expire_if_due, judge, quorum_met
from core.requests import ApprovalRequest, RequestState, open_request
from tests.fakes import T0, eligibility, load_policy

POLICY = load_policy("enterprise-two-person.json")
KEY = SigningKey.from_seed(bytes(range(1, 33)))
PEOPLE = {
    "agent-1": ["Finance-Approvers"],  # the requester, even if in a group
    "alice": ["Security-Approvers"],  # the person the agent acts for
    "bob": ["Finance-Approvers"],
    "dave": ["Finance-Approvers"],
    "carol": ["Security-Approvers"],
    "erin": ["Finance-Approvers", "Security-Approvers"],
    "mallory": [],
}


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        call = ToolCall(
            route="payments.transfer",
            params={"amount_usd": 900, "to_account": "DE89", "memo": "m"},
            requester="agent-1",
            on_behalf_of="alice",
        )
        self.request: ApprovalRequest = open_request(
            call,
            POLICY.evaluate(call),
            request_id="r",
            job_id="j",
            policy_hash_b64u=POLICY.policy_hash_b64u,
            now=T0,
        )
        self.now = T0
        self.decisions: list[ApproverDecision] = []
        self.grants: list[Grant] = []

    @rule(
        person=st.sampled_from(sorted(PEOPLE)),
        verdict=st.sampled_from([Verdict.APPROVE] * 5 + [Verdict.DENY]),
        confirm=st.integers(0, 5).map(bool),
        stale=st.integers(0, 5).map(lambda n: n == 0),
    )
    def click(self, person: str, verdict: Verdict, confirm: bool, stale: bool) -> None:
        evidence_at = self.now - timedelta(minutes=5) if stale else self.now
        typed = self.request.binding.payload_hash_b64u[-4:] if confirm else "nope"
        before = (self.request, list(self.decisions))
        try:
            decision = judge(
                self.request,
                self.decisions,
                eligibility(POLICY, person, PEOPLE[person], at=evidence_at),
                verdict,
                groups=POLICY.groups,
                now=self.now,
                platform="slack",
                reason="looks wrong" if verdict is Verdict.DENY else None,
                typed_confirmation=typed,
            )
        except ApprovalRefusedError:
            assert (self.request, self.decisions) == before  # a refusal records nothing
            return
        self.request = apply(self.request, self.decisions, decision)
        self.decisions.append(decision)

    @rule(seconds=st.integers(min_value=1, max_value=300))
    def wait(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.request = expire_if_due(self.request, now=self.now)

    @rule()
    def mint(self) -> None:
        try:
            grant = mint_grant(
                self.request,
                self.decisions,
                KEY,
                grant_id=f"g{len(self.grants)}",
                now=self.now,
                ttl_seconds=60,
            )
        except ApprovalRefusedError:
            assert self.request.state is not RequestState.APPROVED
            return
        self.grants.append(grant)
        # the service consumes the approval into exactly one grant
        self.request = self.request.transition(RequestState.CONSUMED, at=self.now)

    @precondition(lambda self: self.request.state is RequestState.CONSUMED)
    @rule()
    def consumed_cannot_be_granted_again(self) -> None:
        try:
            mint_grant(
                self.request, self.decisions, KEY, grant_id="again", now=self.now, ttl_seconds=60
            )
        except ApprovalRefusedError:
            return
        raise AssertionError("a second grant was minted")

    @rule(state=st.sampled_from(RequestState), often=st.integers(0, 4))
    def arbitrary_transition(self, state: RequestState, often: int) -> None:
        if often:
            return  # rare: most runs should reach quorum
        try:
            moved = self.request.transition(state, at=self.now)
        except IllegalTransitionError:
            return
        if state in (RequestState.APPROVED, RequestState.CONSUMED):
            return  # only quorum (apply) may approve; don't let the test itself cheat
        self.request = moved

    @invariant()
    def grants_only_after_quorum_before_deadline(self) -> None:
        assert len(self.grants) <= 1
        for grant in self.grants:
            assert grant.request_hash_b64u == self.request.request_hash_b64u
            counted = [d for d in self.decisions if d.decision_hash_b64u in grant.approvals]
            assert counted and quorum_met(self.request, counted)
            assert all(d.decided_at < self.request.binding.expires_at for d in counted)

    @invariant()
    def nobody_counts_twice_and_requester_never_counts(self) -> None:
        ids = [d.approver_id for d in self.decisions]
        assert len(ids) == len(set(ids))
        assert not set(ids) & {"agent-1", "alice", "mallory"}

    @invariant()
    def approved_means_quorum(self) -> None:
        if self.request.state is RequestState.APPROVED:
            assert quorum_met(self.request, self.decisions)
        denied = any(d.verdict is Verdict.DENY for d in self.decisions)
        if denied:
            assert self.request.state is RequestState.DENIED


Lifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
TestLifecycle = Lifecycle.TestCase
