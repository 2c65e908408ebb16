"""Bundles signed with keyturn's own key but telling an impossible story are refused.

These model a keyturn bug or an insider with the signing key who writes receipts the
rules never allowed: the verifier re-derives approvers, quorum, grant, gate and final
state from the bundle alone instead of trusting keyturn's conclusions.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from core import receipt_events as events
from core.bundle import bundle_payload, seal_bundle, verify_bundle
from core.envelope import sign_envelope
from core.errors import BundleError
from core.grants import GRANT_TYPE, Grant
from core.keys import SigningKey
from core.policy import sign_wpc
from core.quorum import ApproverDecision, Verdict, apply, judge
from core.receipts import sign_receipt
from core.requests import ApprovalRequest, RequestState
from core.times import truncate_ms
from core.tokens import mint_cst
from tests.core.test_bundle_flow import AGENT, ISSUER, KEYTURN, WPC, Flow, consumed, start
from tests.fakes import T0, eligibility, load_policy

TRUST = [KEYTURN.did]


def _forge(flow: Flow, **kw: Any) -> dict[str, Any]:
    """Sign the flow's bundle without seal_bundle's checks (summary left empty).

    A request still pending is expired first, so that only the rule under test fails.
    """
    if flow.request.state is RequestState.PENDING:
        _expire(flow)
    checkpoint = flow.checkpoint()
    sealed_at = truncate_ms(flow.at(1))
    payload = bundle_payload(
        flow.request,
        wpc=kw.pop("wpc", WPC),
        receipts=flow.logged,
        proofs=flow.log,
        checkpoint=checkpoint,
        bundle_id="b-forged",
        sealed_at=sealed_at,
        grant=kw.pop("grant", flow.grant),
        **kw,
    )
    payload["summary"] = {"outcome": str(flow.request.state), "lines": []}
    return sign_envelope("keyturn_proof_bundle", payload, KEYTURN, issued_at=sealed_at)


def _code(flow: Flow, **kw: Any) -> str:
    with pytest.raises(BundleError) as exc:
        verify_bundle(_forge(flow, **kw), trusted_keyturn_dids=TRUST)
    return exc.value.reason_code


def _decision(
    flow: Flow,
    person: str,
    groups: tuple[str, ...],
    *,
    at: datetime | None = None,
    checked_at: datetime | None = None,
    verdict: Verdict = Verdict.APPROVE,
) -> ApproverDecision:
    when = at or flow.at(60)
    return ApproverDecision(
        request_id=flow.request.request_id,
        request_hash_b64u=flow.request.request_hash_b64u,
        approver_id=person,
        approver_name=person.title(),
        verdict=verdict,
        decided_at=when,
        groups=groups,
        evidence_checked_at=checked_at or when,
        evidence_source="static",
        platform="web",
        reason="no" if verdict is Verdict.DENY else None,
    )


def _log_decision(flow: Flow, decision: ApproverDecision) -> None:
    flow.decisions.append(decision)
    flow.record(events.decision_receipt(flow.request, decision, receipt_id=flow.next_id()))


def _expire(flow: Flow) -> None:
    at = flow.request.binding.expires_at
    flow.now = at
    flow.request = replace(
        flow.request, state=RequestState.EXPIRED, state_changed_at=at, final_reason="deadline"
    )
    flow.record(events.expiry(flow.request, at=at, receipt_id=flow.next_id(), reason="deadline"))


def _forged_grant(flow: Flow, decisions: list[ApproverDecision], *, at: datetime) -> Grant:
    b = flow.request.binding
    grant = Grant(
        grant_id="g-forged",
        request_id=b.request_id,
        request_hash_b64u=b.request_hash_b64u,
        job_id=b.job_id,
        policy_hash_b64u=b.policy_hash_b64u,
        tool_route=b.tool_route,
        payload_hash_b64u=b.payload_hash_b64u,
        approvals=tuple(sorted(d.decision_hash_b64u for d in decisions)),
        issued_at=at,
        expires_at=at + timedelta(minutes=5),
    )
    envelope = sign_envelope(
        GRANT_TYPE, grant.to_payload(), KEYTURN, issued_at=at, expires_at=grant.expires_at
    )
    return replace(grant, envelope=envelope)


# --- approvers ----------------------------------------------------------------------------


def test_the_requester_approving_their_own_request_is_refused() -> None:
    flow = start()
    _log_decision(flow, _decision(flow, AGENT.did, ("Finance-Approvers",)))
    assert _code(flow) == "BUNDLE_APPROVER_NOT_INDEPENDENT"


def test_the_person_the_agent_acts_for_cannot_approve() -> None:
    flow = start()
    _log_decision(flow, _decision(flow, "alice-oid", ("Security-Approvers",)))
    assert _code(flow) == "BUNDLE_APPROVER_NOT_INDEPENDENT"


def test_one_person_counts_once() -> None:
    flow = start()
    _log_decision(flow, _decision(flow, "bob-oid", ("Finance-Approvers",)))
    _log_decision(flow, _decision(flow, "bob-oid", ("Security-Approvers",)))
    assert _code(flow) == "BUNDLE_DUPLICATE_APPROVER"


def test_an_approver_outside_the_policy_groups_is_ineligible() -> None:
    flow = start()
    _log_decision(flow, _decision(flow, "mallory-oid", ("Agent-Approvers-Prod",)))
    assert _code(flow) == "BUNDLE_APPROVER_INELIGIBLE"


def test_stale_directory_evidence_does_not_count() -> None:
    flow = start()
    at = flow.at(600)
    _log_decision(
        flow,
        _decision(
            flow, "bob-oid", ("Finance-Approvers",), at=at, checked_at=at - timedelta(minutes=9)
        ),
    )
    assert _code(flow) == "BUNDLE_STALE_EVIDENCE"


def test_a_decision_after_the_deadline_is_refused() -> None:
    flow = start()
    late = flow.request.binding.expires_at + timedelta(seconds=1)
    _log_decision(flow, _decision(flow, "bob-oid", ("Finance-Approvers",), at=late))
    assert _code(flow) == "BUNDLE_DECISION_OUT_OF_TIME"


def test_a_decision_after_a_deny_is_refused() -> None:
    flow = start()
    _log_decision(flow, _decision(flow, "carol-oid", ("Security-Approvers",), verdict=Verdict.DENY))
    _log_decision(flow, _decision(flow, "bob-oid", ("Finance-Approvers",)))
    assert _code(flow) == "BUNDLE_DECISION_AFTER_FINAL"


def test_a_decision_whose_record_was_rewritten_is_malformed() -> None:
    flow = start()
    d = _decision(flow, "bob-oid", ("Finance-Approvers",))
    receipt = events.decision_receipt(flow.request, d, receipt_id="x")
    details = dict(receipt.details)
    details["decision"] = {**details["decision"], "groups": ["Security-Approvers"]}
    flow.record(replace(receipt, details=details))
    assert _code(flow) == "BUNDLE_RECEIPT_MALFORMED"


# --- policy decision -------------------------------------------------------------------------


def test_a_request_recorded_with_weaker_requirements_is_refused() -> None:
    flow = start(noise=0)
    _, created = flow.logged[0]
    receipt = events.request_created(flow.request, flow.call, receipt_id="rc-weak")
    weaker = replace(receipt, details={**receipt.details, "requirements": ["two_person"]})
    flow.log = type(flow.log)(flow.log.origin, KEYTURN, started_at=flow.now)
    flow.logged.clear()
    flow.record(weaker)
    assert created["payload"]["details"]["requirements"] == ["payments_two_person"]
    assert _code(flow) == "BUNDLE_DECISION_MISMATCH"


def test_a_request_with_a_longer_deadline_than_the_policy_is_refused() -> None:
    flow = start(noise=0)
    b = flow.request.binding
    longer = replace(b, expires_at=b.expires_at + timedelta(hours=8))
    flow.request = ApprovalRequest(
        binding=longer,
        requirements=flow.request.requirements,
        params=flow.request.params,
        rules=flow.request.rules,
    )
    flow.log = type(flow.log)(flow.log.origin, KEYTURN, started_at=flow.now)
    flow.logged.clear()
    flow.record(events.request_created(flow.request, flow.call, receipt_id="rc-long"))
    _expire(flow)
    assert _code(flow) == "BUNDLE_DECISION_MISMATCH"


# --- grant, token, gate ------------------------------------------------------------------------


def test_a_grant_without_quorum_is_refused_even_when_keyturn_signed_it() -> None:
    flow = start()
    bob = _decision(flow, "bob-oid", ("Finance-Approvers",))
    _log_decision(flow, bob)
    flow.grant = _forged_grant(flow, [bob], at=flow.at(1))
    flow.record(events.grant_minted(flow.request, flow.grant, receipt_id=flow.next_id()))
    _expire(flow)
    assert _code(flow) == "BUNDLE_QUORUM_NOT_MET"


def test_a_grant_minted_before_quorum_is_refused() -> None:
    flow = start()
    early = flow.at(30)
    bob = _decision(flow, "bob-oid", ("Finance-Approvers",))
    carol = _decision(flow, "carol-oid", ("Security-Approvers",))
    _log_decision(flow, bob)
    _log_decision(flow, carol)
    flow.grant = _forged_grant(flow, [bob, carol], at=early)
    flow.record(events.grant_minted(flow.request, flow.grant, receipt_id=flow.next_id()))
    _expire(flow)
    assert _code(flow) == "BUNDLE_GRANT_BEFORE_QUORUM"


def test_a_grant_not_in_the_log_is_refused() -> None:
    flow = consumed()
    assert flow.grant is not None
    other = _forged_grant(flow, [d for d in flow.decisions], at=flow.grant.issued_at)
    assert _code(flow, grant=other) == "BUNDLE_GRANT_NOT_LOGGED"


def test_a_grant_used_twice_is_refused() -> None:
    flow = consumed()
    assert flow.grant is not None and flow.token is not None
    flow.record(
        events.gate_passed(
            flow.request, grant=flow.grant, token=flow.token, at=flow.at(5), receipt_id="again"
        )
    )
    assert _code(flow) == "BUNDLE_GRANT_REUSED"


def test_a_gate_pass_after_the_grant_expired_is_refused() -> None:
    flow = start()
    flow.decide("bob-oid")
    flow.decide("carol-oid")
    flow.mint()
    assert flow.grant is not None and flow.token is not None
    late = flow.grant.expires_at + timedelta(seconds=1)
    flow.now = late
    flow.record(
        events.gate_passed(
            flow.request, grant=flow.grant, token=flow.token, at=late, receipt_id="late"
        )
    )
    flow.request = flow.request.transition(RequestState.CONSUMED, at=late)
    assert _code(flow) == "BUNDLE_GATE_OUT_OF_TIME"


def test_a_gate_pass_without_a_grant_is_refused() -> None:
    flow = consumed()
    flow.logged = [
        (i, e) for i, e in flow.logged if e["payload"]["kind"] not in ("grant_minted", "cst_minted")
    ]
    assert _code(flow, grant=None, cst_scope_hash_b64u=None) == "BUNDLE_GATE_WITHOUT_GRANT"


def test_a_token_scope_the_grant_does_not_pin_is_refused() -> None:
    flow = consumed()
    assert _code(flow, cst_scope_hash_b64u="A" * 43) == "BUNDLE_CST_MISMATCH"


# --- final state ------------------------------------------------------------------------------


def test_consumed_without_a_gate_pass_is_inconsistent() -> None:
    flow = start()
    flow.decide("bob-oid")
    flow.decide("carol-oid")
    flow.mint()
    flow.request = flow.request.transition(RequestState.CONSUMED, at=flow.at(1))
    assert _code(flow) == "BUNDLE_STATE_INCONSISTENT"


def test_denied_is_not_what_a_met_quorum_leads_to() -> None:
    flow = consumed()
    flow.request = replace(flow.request, state=RequestState.DENIED)
    assert _code(flow) == "BUNDLE_STATE_INCONSISTENT"


def test_a_cancellation_by_someone_else_is_inconsistent() -> None:
    flow = start()
    flow.request = flow.request.transition(RequestState.CANCELLED, at=flow.at(10))
    flow.record(
        events.cancellation(flow.request, at=flow.now, actor="mallory-oid", receipt_id="c1")
    )
    assert _code(flow) == "BUNDLE_STATE_INCONSISTENT"


def test_a_receipt_signed_by_another_key_is_refused_inside_a_keyturn_bundle() -> None:
    flow = start()
    other = SigningKey.generate()
    d = _decision(flow, "bob-oid", ("Finance-Approvers",))
    envelope = sign_receipt(events.decision_receipt(flow.request, d, receipt_id="o"), other)
    appended = flow.log.append_receipt(envelope, now=flow.now)
    flow.logged.append((appended.index, envelope))
    _expire(flow)
    assert _code(flow) == "BUNDLE_RECEIPT_INVALID"


# --- sealing -----------------------------------------------------------------------------------


def test_keyturn_never_seals_a_bundle_it_would_refuse() -> None:
    flow = start()
    _log_decision(flow, _decision(flow, AGENT.did, ("Finance-Approvers",)))
    _expire(flow)
    with pytest.raises(BundleError) as exc:
        flow.seal()
    assert exc.value.reason_code == "BUNDLE_APPROVER_NOT_INDEPENDENT"


def test_a_pending_request_is_not_sealed() -> None:
    flow = start()
    with pytest.raises(BundleError) as exc:
        flow.seal()
    assert exc.value.reason_code == "BUNDLE_REQUEST_NOT_FINAL"


def test_a_receipt_beyond_the_checkpoint_is_not_sealed() -> None:
    flow = consumed()
    checkpoint = flow.log.checkpoint(flow.now)
    flow.record(events.expiry(flow.request, at=flow.now, receipt_id="late", reason="x"))
    with pytest.raises(BundleError) as exc:
        seal_bundle(
            flow.request,
            wpc=WPC,
            receipts=flow.logged,
            proofs=flow.log,
            checkpoint=checkpoint,
            signer=KEYTURN,
            bundle_id="b",
            now=flow.now,
            grant=flow.grant,
        )
    assert exc.value.reason_code == "BUNDLE_INCLUSION_PROOF_INVALID"


def test_cancelled_and_revoked_requests_seal_and_verify() -> None:
    flow = start()
    flow.request = flow.request.transition(RequestState.CANCELLED, at=flow.at(10), reason="typo")
    flow.record(
        events.cancellation(
            flow.request, at=flow.now, actor=AGENT.did, receipt_id="c", reason="typo"
        )
    )
    assert verify_bundle(flow.seal(), trusted_keyturn_dids=TRUST).outcome == "cancelled"

    flow = start()
    flow.decide("bob-oid")
    flow.decide("carol-oid")
    flow.mint()
    assert flow.token is not None
    flow.request = flow.request.transition(
        RequestState.REVOKED, at=flow.at(5), reason="kill switch"
    )
    flow.record(
        events.cst_revoked(
            flow.request,
            token_hash_hex=flow.token.token_hash_hex,
            at=flow.now,
            actor="dan-oid",
            reason="kill switch",
            receipt_id="rv",
        )
    )
    report = verify_bundle(flow.seal(), trusted_keyturn_dids=TRUST)
    assert report.outcome == "revoked" and report.evidence.quorum_met


def test_a_gate_denial_before_the_pass_is_part_of_the_story() -> None:
    flow = start()
    flow.decide("bob-oid")
    flow.decide("carol-oid")
    flow.mint()
    flow.run({"amount_usd": 12_500, "to_account": "GB33BUKB20201555555555", "memo": "x"})
    flow.run()
    sealed = flow.seal()
    report = verify_bundle(sealed, trusted_keyturn_dids=TRUST)
    assert len(report.evidence.gate_denials) == 1 and len(report.evidence.gate_passes) == 1
    assert any("PAYLOAD_HASH_MISMATCH" in line for line in sealed["payload"]["summary"]["lines"])


def test_a_breakglass_window_seals_and_verifies_with_pim_evidence() -> None:
    policy = load_policy("breakglass-timeboxed.json")
    params = {
        "tenant_id": "00000000-0000-4000-8000-0000000000aa",
        "principal": "user:alice@corp.example",
        "role": "Privileged Role Administrator",
    }
    flow = start(params, route="entra.role.assign", policy=policy, span_id=None, breakglass=True)
    group = "Breakglass-Approvers"
    for person in ("bob-oid", "carol-oid"):
        at = flow.at(60)
        d = judge(
            flow.request,
            flow.decisions,
            eligibility(policy, person, [group], at=at, pim_active=[group]),
            Verdict.APPROVE,
            groups=policy.groups,
            now=at,
            platform="teams",
            typed_confirmation=flow.request.binding.payload_hash_b64u[-4:],
        )
        flow.request = apply(flow.request, flow.decisions, d)
        flow.decisions.append(d)
        flow.record(events.decision_receipt(flow.request, d, receipt_id=flow.next_id()))
    at = flow.at(1)
    flow.grant = _forged_grant(flow, flow.decisions, at=at)
    flow.record(events.grant_minted(flow.request, flow.grant, receipt_id=flow.next_id()))
    token = mint_cst(
        KEYTURN,
        sub=flow.request.binding.requester,
        audience="keyturn-gate",
        scope=["entra.role.assign"],
        now=at,
        ttl_seconds=1800,
        policy_hash_b64u=policy.policy_hash_b64u,
        mission_id=flow.request.binding.job_id,
        kind="breakglass",
    )
    flow.record(events.breakglass_opened(flow.request, token, receipt_id=flow.next_id()))
    end = token.expires_at
    flow.now = end
    flow.request = flow.request.transition(RequestState.EXPIRED, at=end, reason="window closed")
    flow.record(
        events.breakglass_closed(
            flow.request,
            revoked_by=None,
            token_hash_hex=token.token_hash_hex,
            at=end,
            receipt_id=flow.next_id(),
            reason="timebox expired",
        )
    )
    wpc = sign_wpc(policy.payload, ISSUER, issued_at=T0 - timedelta(days=1))
    report = verify_bundle(flow.seal(wpc=wpc), trusted_keyturn_dids=TRUST)
    assert report.outcome == "expired" and report.evidence.quorum_met
    assert report.evidence.cst_scope_hash_b64u == token.scope_hash_b64u


def test_a_breakglass_approver_without_active_pim_is_ineligible() -> None:
    policy = load_policy("breakglass-timeboxed.json")
    params = {
        "tenant_id": "00000000-0000-4000-8000-0000000000aa",
        "principal": "alice@corp.example",
        "role": "Privileged Role Administrator",
    }
    flow = start(params, route="entra.role.assign", policy=policy, span_id=None, breakglass=True)
    _log_decision(flow, _decision(flow, "bob-oid", ("Breakglass-Approvers",)))
    wpc = sign_wpc(policy.payload, ISSUER, issued_at=T0)
    assert _code(flow, wpc=wpc) == "BUNDLE_APPROVER_INELIGIBLE"
