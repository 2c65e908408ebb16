"""What a proof bundle's verified receipts prove, re-derived from the bundle alone.

:func:`analyze` takes the pieces :mod:`core.bundle_verify` has already authenticated
(a policy whose WPC signature and hash verified, the exact params, a request binding
whose hash was recomputed, receipts whose signatures and inclusion proofs verified) and
re-runs keyturn's rules on them, trusting none of keyturn's own conclusions:

1. the policy, evaluated again for the exact call the request-created receipt records,
   gates it under the same rules and requirements, with the same deadline;
2. every decision is independent of the requester (and the person the agent acts
   for), one per person, made before the deadline on fresh directory evidence, by
   someone eligible under the policy's groups (and PIM, where required);
3. the decisions are replayed in log order through ``core.quorum``: quorum is met (or
   a deny ends the request) exactly where the receipts say;
4. a grant exists only if quorum was met, is bound to the request hash and payload
   hash, lists exactly the approving decisions, was logged, and was minted after
   quorum; the job token's scope hash is the one the grant pins;
5. the gate passed at most once, for the granted payload, while the grant was valid;
6. the request's final state is the one the receipts lead to.

Every failure is a :class:`~core.errors.BundleError` with a ``BUNDLE_*`` reason code.
:func:`core.bundle_summary.summarize` renders the human-readable summary from the same
facts, so the verifier can recompute it and compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core import canonical
from core.checkpoint import Checkpoint
from core.errors import BundleError, GateDeniedError, KeyturnError
from core.grants import Grant, verify_grant
from core.policy import Outcome, Policy, ToolCall
from core.quorum import DEFAULT_MAX_EVIDENCE_AGE, ApproverDecision, Verdict, quorum_met
from core.receipt_events import call_from_json
from core.receipts import Receipt, ReceiptKind, decisions_of
from core.requests import ApprovalRequest, RequestBinding, RequestState
from core.times import parse_iso, require_aware, to_iso

# Directory evidence may be stamped a little after the click that triggered it (judge()
# allows the same skew).
_EVIDENCE_SKEW = timedelta(seconds=5)
_REVOCATIONS = (ReceiptKind.CST_REVOKED, ReceiptKind.BREAKGLASS_REVOKED)


@dataclass(frozen=True, slots=True)
class Evidence:
    """The facts a bundle proves (built by :func:`analyze`)."""

    request: ApprovalRequest
    policy: Policy
    call: ToolCall
    receipts: tuple[tuple[int, Receipt], ...]
    decisions: tuple[ApproverDecision, ...]
    approved_at: datetime | None
    denial: ApproverDecision | None
    grant: Grant | None
    cst_scope_hash_b64u: str | None
    gate_passes: tuple[Receipt, ...]
    gate_denials: tuple[Receipt, ...]
    checkpoint: Checkpoint

    @property
    def approvals(self) -> tuple[ApproverDecision, ...]:
        return tuple(d for d in self.decisions if d.verdict is Verdict.APPROVE)

    @property
    def quorum_met(self) -> bool:
        return self.approved_at is not None


def fail(code: str, message: str) -> BundleError:
    return BundleError(code, message)


def binding_from_json(data: object) -> RequestBinding:
    """Rebuild a request binding, requiring the JSON to be exactly its canonical form.

    Raises:
        BundleError: ``BUNDLE_MALFORMED`` for a binding that is not exactly what
            :meth:`RequestBinding.to_json` writes.
    """
    if not isinstance(data, Mapping):
        raise fail("BUNDLE_MALFORMED", "request.binding is not an object")
    try:
        if data.get("binding_version") != "1":
            raise ValueError('binding_version must be "1"')
        binding = RequestBinding(
            request_id=data["request_id"],
            job_id=data["job_id"],
            policy_hash_b64u=data["wpc_hash"],
            tool_route=data["tool_route"],
            payload_hash_b64u=data["payload_hash"],
            requester=data["requester"],
            created_at=parse_iso(data["created_at"]),
            expires_at=parse_iso(data["expires_at"]),
            on_behalf_of=data.get("on_behalf_of"),
            plan_hash=data.get("plan_hash"),
            span_id=data.get("span_id"),
            breakglass_window_seconds=data.get("breakglass_window_seconds"),
        )
    except (KeyError, TypeError, ValueError, KeyturnError) as e:
        raise fail("BUNDLE_MALFORMED", f"request.binding: {e}") from e
    if binding.to_json() != dict(data):
        raise fail("BUNDLE_MALFORMED", "request.binding is not in canonical form")
    return binding


def analyze(
    *,
    policy: Policy,
    binding: RequestBinding,
    params: Mapping[str, Any],
    state: RequestState,
    state_changed_at: datetime,
    final_reason: str | None,
    receipts: Sequence[tuple[int, Receipt]],
    grant_envelope: Mapping[str, Any] | None,
    cst_scope_hash_b64u: str | None,
    checkpoint: Checkpoint,
    keyturn_did: str,
    max_evidence_age: timedelta = DEFAULT_MAX_EVIDENCE_AGE,
) -> Evidence:
    """Re-derive what the bundle proves (see the module docstring for the rules).

    Raises:
        BundleError: the first rule the evidence breaks.
    """
    only = [r for _, r in receipts]
    call, request = _request(policy, binding, params, (state, state_changed_at, final_reason), only)
    try:
        decisions = decisions_of(only)
    except ValueError as e:
        raise fail("BUNDLE_RECEIPT_MALFORMED", str(e)) from e
    _check_decisions(request, policy, decisions, max_evidence_age)
    approved_at, denial = _replay(request, decisions)
    grant = _grant(request, decisions, only, grant_envelope, keyturn_did, approved_at)
    scope = _token(grant, only, cst_scope_hash_b64u, binding)
    passes, denials = _gate(request, grant, only)
    _final_state(request, approved_at, denial, grant, passes, only)
    return Evidence(
        request=request,
        policy=policy,
        call=call,
        receipts=tuple(receipts),
        decisions=tuple(decisions),
        approved_at=approved_at,
        denial=denial,
        grant=grant,
        cst_scope_hash_b64u=scope,
        gate_passes=passes,
        gate_denials=denials,
        checkpoint=checkpoint,
    )


def _of(receipts: Sequence[Receipt], *kinds: ReceiptKind) -> list[Receipt]:
    return [r for r in receipts if r.kind in kinds]


def _request(
    policy: Policy,
    binding: RequestBinding,
    params: Mapping[str, Any],
    outcome: tuple[RequestState, datetime, str | None],
    receipts: Sequence[Receipt],
) -> tuple[ToolCall, ApprovalRequest]:
    state, state_changed_at, final_reason = outcome
    created = _of(receipts, ReceiptKind.REQUEST_CREATED)
    if len(created) != 1:
        raise fail(
            "BUNDLE_REQUEST_RECEIPT_MISSING",
            f"a bundle holds exactly one request-created receipt, not {len(created)}",
        )
    details = created[0].details
    if details.get("binding") != binding.to_json():
        raise fail(
            "BUNDLE_BINDING_MISMATCH", "the logged request binding differs from the bundle's"
        )
    try:
        call = call_from_json(details["call"], params)
    except (KeyError, TypeError, ValueError, KeyturnError) as e:
        raise fail("BUNDLE_RECEIPT_MALFORMED", f"the request-created receipt's call: {e}") from e
    if (
        call.route != binding.tool_route
        or call.requester != binding.requester
        or call.on_behalf_of != binding.on_behalf_of
        or call.plan_hash != binding.plan_hash
    ):
        raise fail("BUNDLE_BINDING_MISMATCH", "the logged call is not the bound call")
    decision = policy.evaluate(call)
    if decision.outcome is not Outcome.GATED:
        raise fail(
            "BUNDLE_DECISION_MISMATCH",
            f"the policy, evaluated again, does not gate this call ({decision.outcome}: "
            f"{decision.reason_code})",
        )
    names = [r.name for r in decision.requirements]
    rule_ids = [r.rule_id for r in decision.rules]
    if details.get("requirements") != names or details.get("rule_ids") != rule_ids:
        raise fail(
            "BUNDLE_DECISION_MISMATCH",
            f"the policy gates this call by rules {rule_ids} needing {names}; the receipt "
            f"records {details.get('rule_ids')} needing {details.get('requirements')}",
        )
    deadline = timedelta(seconds=min(r.timeout_seconds for r in decision.requirements))
    if binding.expires_at - binding.created_at != deadline:
        raise fail(
            "BUNDLE_DECISION_MISMATCH",
            f"the request deadline is not the policy's ({int(deadline.total_seconds())} s)",
        )
    if binding.breakglass_window_seconds is not None and (
        decision.breakglass is None
        or not 0 < binding.breakglass_window_seconds <= decision.breakglass.max_duration_seconds
    ):
        raise fail("BUNDLE_DECISION_MISMATCH", "the break-glass window is outside the policy")
    try:
        request = ApprovalRequest(
            binding=binding,
            requirements=decision.requirements,
            params=params,
            state=state,
            state_changed_at=require_aware(state_changed_at),
            final_reason=final_reason,
            rules=decision.rules,
            breakglass=decision.breakglass,
            requires_plan_fingerprint=decision.requires_plan_fingerprint,
            sensitive_params=decision.sensitive_params,
        )
    except ValueError as e:
        raise fail("BUNDLE_PAYLOAD_HASH_MISMATCH", str(e)) from e
    if state_changed_at < binding.created_at:
        raise fail("BUNDLE_STATE_INCONSISTENT", "the state changed before the request existed")
    return call, request


def _check_decisions(
    request: ApprovalRequest,
    policy: Policy,
    decisions: Sequence[ApproverDecision],
    max_age: timedelta,
) -> None:
    b = request.binding
    seen: set[str] = set()
    for d in decisions:
        who = f"{d.approver_name} ({d.approver_id})"
        if d.approver_id in request.independent_of:
            raise fail(
                "BUNDLE_APPROVER_NOT_INDEPENDENT",
                f"{who} requested this (or the agent acts for them) and cannot decide it",
            )
        if d.approver_id in seen:
            raise fail("BUNDLE_DUPLICATE_APPROVER", f"{who} decided more than once")
        seen.add(d.approver_id)
        if d.request_hash_b64u != request.request_hash_b64u or d.request_id != b.request_id:
            raise fail("BUNDLE_RECEIPT_FOREIGN", f"{who}'s decision is for another request")
        if not b.created_at <= d.decided_at < b.expires_at:
            raise fail(
                "BUNDLE_DECISION_OUT_OF_TIME",
                f"{who} decided at {to_iso(d.decided_at)}, outside the request's lifetime",
            )
        age = d.decided_at - d.evidence_checked_at
        if age > max_age or age < -_EVIDENCE_SKEW:
            raise fail(
                "BUNDLE_STALE_EVIDENCE",
                f"{who}'s group membership was checked at {to_iso(d.evidence_checked_at)}, "
                f"not at decision time",
            )
        if not _eligible(request, policy, d):
            raise fail(
                "BUNDLE_APPROVER_INELIGIBLE",
                f"{who} is in none of the groups (with PIM where required) that may decide",
            )


def _eligible(request: ApprovalRequest, policy: Policy, d: ApproverDecision) -> bool:
    for requirement in request.requirements:
        counted = set(d.groups) & set(requirement.eligible_groups)
        if requirement.require_pim == "required":
            pim = d.pim_active_until or {}
            counted = {
                key
                for key in counted
                if key in policy.groups
                and policy.groups[key].directory_id in pim
                and _pim_active(pim[policy.groups[key].directory_id], d.decided_at)
            }
        if counted:
            return True
    return False


def _pim_active(until: str | None, at: datetime) -> bool:
    if until is None:
        return True
    try:
        return parse_iso(until) > at
    except KeyturnError:
        return False


def _replay(
    request: ApprovalRequest, decisions: Sequence[ApproverDecision]
) -> tuple[datetime | None, ApproverDecision | None]:
    """Run the decisions through the quorum rules in log order, as ``quorum.apply`` did."""
    seen: list[ApproverDecision] = []
    for d in decisions:
        seen.append(d)
        if d.verdict is Verdict.DENY:
            if d is not decisions[-1]:
                raise fail("BUNDLE_DECISION_AFTER_FINAL", "a decision was recorded after a deny")
            return None, d
        if quorum_met(request, seen):
            if d is not decisions[-1]:
                raise fail(
                    "BUNDLE_DECISION_AFTER_FINAL", "a decision was recorded after quorum was met"
                )
            return d.decided_at, None
    return None, None


def _grant(
    request: ApprovalRequest,
    decisions: Sequence[ApproverDecision],
    receipts: Sequence[Receipt],
    envelope: Mapping[str, Any] | None,
    keyturn_did: str,
    approved_at: datetime | None,
) -> Grant | None:
    logged = _of(receipts, ReceiptKind.GRANT_MINTED)
    if envelope is None:
        if logged:
            raise fail("BUNDLE_GRANT_MISSING", "a grant was logged but the bundle lacks it")
        return None
    try:
        issued = parse_iso(envelope.get("issued_at"))
        # Judged at its own issue time: evidence outlives the grant's short validity.
        grant = verify_grant(envelope, trusted_signers=[keyturn_did], now=issued)
    except (GateDeniedError, KeyturnError) as e:
        raise fail("BUNDLE_GRANT_INVALID", f"the grant does not verify: {e.message}") from e
    b = request.binding
    bound = (
        (grant.request_id, b.request_id),
        (grant.request_hash_b64u, b.request_hash_b64u),
        (grant.job_id, b.job_id),
        (grant.policy_hash_b64u, b.policy_hash_b64u),
        (grant.tool_route, b.tool_route),
        (grant.payload_hash_b64u, b.payload_hash_b64u),
        (grant.plan_hash, b.plan_hash),
    )
    if any(got != want for got, want in bound):
        raise fail("BUNDLE_GRANT_MISMATCH", "the grant is not bound to this request and payload")
    approving = sorted(d.decision_hash_b64u for d in decisions if d.verdict is Verdict.APPROVE)
    if list(grant.approvals) != approving:
        raise fail(
            "BUNDLE_GRANT_APPROVALS_MISMATCH",
            "the grant's approvals are not exactly the approving decisions in the log",
        )
    if approved_at is None:
        raise fail("BUNDLE_QUORUM_NOT_MET", "a grant exists but the approvals do not meet quorum")
    if grant.issued_at < approved_at:
        raise fail("BUNDLE_GRANT_BEFORE_QUORUM", "the grant was minted before quorum was met")
    envelope_hash = canonical.emission_sha256_b64u(envelope)
    matching = [
        r
        for r in logged
        if r.details.get("grant_id") == grant.grant_id
        and r.details.get("grant_envelope_hash_b64u") == envelope_hash
    ]
    if len(logged) != 1 or len(matching) != 1:
        raise fail("BUNDLE_GRANT_NOT_LOGGED", "the grant is not the one grant the log recorded")
    return grant


def _token(
    grant: Grant | None,
    receipts: Sequence[Receipt],
    scope_hash: str | None,
    binding: RequestBinding,
) -> str | None:
    minted = [
        r.details.get("scope_hash_b64u")
        for r in _of(receipts, ReceiptKind.CST_MINTED, ReceiptKind.BREAKGLASS_OPENED)
    ]
    pinned = grant.cst_scope_hash_b64u if grant is not None else None
    if scope_hash is not None and not canonical.is_sha256_b64u(scope_hash):
        raise fail("BUNDLE_MALFORMED", "cst_scope_hash_b64u is not a base64url SHA-256")
    if pinned is not None and pinned != scope_hash:
        raise fail("BUNDLE_CST_MISMATCH", "the bundle's CST scope hash is not the grant's pin")
    if scope_hash is not None and scope_hash not in minted:
        raise fail("BUNDLE_CST_MISMATCH", "no logged token has the bundle's CST scope hash")
    if scope_hash is None and minted:
        raise fail("BUNDLE_CST_MISMATCH", "a token was logged but the bundle names no scope hash")
    return scope_hash


def _gate(
    request: ApprovalRequest, grant: Grant | None, receipts: Sequence[Receipt]
) -> tuple[tuple[Receipt, ...], tuple[Receipt, ...]]:
    passes = tuple(_of(receipts, ReceiptKind.GATE_PASSED))
    denials = tuple(_of(receipts, ReceiptKind.GATE_DENIED))
    if not passes:
        return passes, denials
    if grant is None:
        raise fail("BUNDLE_GATE_WITHOUT_GRANT", "the gate passed a call no grant allowed")
    if len(passes) > 1:
        raise fail("BUNDLE_GRANT_REUSED", f"the single-use grant passed the gate {len(passes)}×")
    gate = passes[0]
    if (
        gate.details.get("grant_id") != grant.grant_id
        or gate.details.get("payload_hash_b64u") != request.binding.payload_hash_b64u
    ):
        raise fail("BUNDLE_GATE_MISMATCH", "the gate pass is not for this grant and payload")
    if not grant.issued_at <= gate.timestamp < grant.expires_at:
        raise fail("BUNDLE_GATE_OUT_OF_TIME", "the gate passed outside the grant's validity")
    return passes, denials


def _final_state(
    request: ApprovalRequest,
    approved_at: datetime | None,
    denial: ApproverDecision | None,
    grant: Grant | None,
    passes: Sequence[Receipt],
    receipts: Sequence[Receipt],
) -> None:
    state = request.state

    def refuse(why: str) -> BundleError:
        return fail("BUNDLE_STATE_INCONSISTENT", f"the request is {state}, but {why}")

    if not request.is_final():
        raise fail("BUNDLE_REQUEST_NOT_FINAL", f"a bundle seals a finished request, not a {state}")
    if approved_at is not None and state not in (
        RequestState.CONSUMED,
        RequestState.REVOKED,
        RequestState.EXPIRED,
    ):
        raise refuse("quorum was met")
    if approved_at is None and state not in (
        RequestState.DENIED,
        RequestState.EXPIRED,
        RequestState.CANCELLED,
    ):
        raise refuse("quorum was never met")
    # A plain request is consumed exactly when the gate passed. A break-glass window
    # stays open after its action ran through the gate, then closes (expired or revoked).
    window_closed = request.breakglass is not None and state in (
        RequestState.REVOKED,
        RequestState.EXPIRED,
    )
    if (state is RequestState.CONSUMED) != bool(passes) and not window_closed:
        raise refuse("the gate log disagrees (consumed exactly when the gate passed once)")
    if state is RequestState.DENIED and denial is None:
        raise refuse("no eligible approver denied it")
    if state is RequestState.EXPIRED and not _of(
        receipts, ReceiptKind.EXPIRY, ReceiptKind.BREAKGLASS_EXPIRED
    ):
        raise refuse("no expiry was logged")
    if state is RequestState.CANCELLED:
        cancelled = _of(receipts, ReceiptKind.CANCELLATION)
        if not cancelled or cancelled[0].actor not in request.independent_of:
            raise refuse("neither the requester nor their principal cancelled it")
    if state is RequestState.REVOKED and (grant is None or not _of(receipts, *_REVOCATIONS)):
        raise refuse("no revocation of its grant's token was logged")
