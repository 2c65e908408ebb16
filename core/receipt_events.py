"""One receipt constructor per event (the catalogue is in :mod:`core.receipts`).

Each function takes the core values the event is about and returns an unsigned
:class:`~core.receipts.Receipt`; :func:`core.receipts.sign_receipt` signs it. The
constructors check that their arguments belong together (a decision for this request's
hash, a grant for this request, a token for this job) and raise ``ValueError``
otherwise, so a receipt can never tie two unrelated facts together.

Tokens enter receipts only through :class:`~core.tokens.ScopedToken` values, of which
only the hash, id, kind, subject, scope and expiry are kept; never the compact text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from core import canonical
from core.grants import Grant
from core.policy import Policy, ToolCall
from core.quorum import ApproverDecision, Verdict
from core.receipts import SYSTEM_ACTOR, Receipt, ReceiptKind, json_copy
from core.requests import ApprovalRequest, RequestBinding, payload_hash
from core.times import parse_iso, require_aware, to_iso
from core.tokens import ScopedToken


def _about(
    kind: ReceiptKind,
    binding: RequestBinding,
    *,
    receipt_id: str,
    at: datetime,
    actor: str,
    details: Mapping[str, Any],
    actor_name: str | None = None,
) -> Receipt:
    return Receipt(
        kind=kind,
        receipt_id=receipt_id,
        timestamp=require_aware(at),
        actor=actor,
        actor_name=actor_name,
        policy_hash_b64u=binding.policy_hash_b64u,
        request_id=binding.request_id,
        request_hash_b64u=binding.request_hash_b64u,
        job_id=binding.job_id,
        tool_route=binding.tool_route,
        details=details,
    )


def call_to_json(call: ToolCall) -> dict[str, Any]:
    """The call as the request-created receipt records it: everything but the params."""
    data: dict[str, Any] = {"route": call.route, "requester": call.requester}
    if call.on_behalf_of is not None:
        data["on_behalf_of"] = call.on_behalf_of
    data["context"] = json_copy(call.context)
    if call.resource is not None:
        data["resource"] = call.resource
    data["prior_routes"] = sorted(call.prior_routes)
    if call.plan_hash is not None:
        data["plan_hash"] = call.plan_hash
    data["breakglass"] = call.breakglass
    return data


def call_from_json(data: Mapping[str, Any], params: Mapping[str, Any]) -> ToolCall:
    """Rebuild the exact call from :func:`call_to_json` output and its params.

    Raises:
        PolicyError: ``INVALID_CALL`` for a malformed call.
        KeyError, TypeError: a required field is missing.
    """
    prior = data["prior_routes"]
    if not isinstance(prior, list):
        raise TypeError("prior_routes is a list")
    return ToolCall(
        route=data["route"],
        params=params,
        requester=data["requester"],
        on_behalf_of=data.get("on_behalf_of"),
        context=data["context"],
        resource=data.get("resource"),
        prior_routes=frozenset(prior),
        plan_hash=data.get("plan_hash"),
        breakglass=data["breakglass"],
    )


def request_created(request: ApprovalRequest, call: ToolCall, *, receipt_id: str) -> Receipt:
    """The request was opened for exactly ``call``.

    Raises:
        ValueError: ``call`` is not the call the request binds (route, requester,
            principal, plan or payload hash differ).
    """
    b = request.binding
    if (
        call.route != b.tool_route
        or call.requester != b.requester
        or call.on_behalf_of != b.on_behalf_of
        or call.plan_hash != b.plan_hash
        or payload_hash(call.params) != b.payload_hash_b64u
    ):
        raise ValueError("the call is not the one this request binds")
    details = {
        "binding": b.to_json(),
        "call": call_to_json(call),
        "requirements": [r.name for r in request.requirements],
        "rule_ids": list(request.rule_ids),
        "sensitive_params": sorted(request.sensitive_params),
    }
    return _about(
        ReceiptKind.REQUEST_CREATED,
        b,
        receipt_id=receipt_id,
        at=b.created_at,
        actor=b.requester,
        details=details,
    )


def decision_receipt(
    request: ApprovalRequest, decision: ApproverDecision, *, receipt_id: str
) -> Receipt:
    """An approval or a denial, with the eligibility evidence it rests on.

    Raises:
        ValueError: the decision is for another request hash.
    """
    if decision.request_hash_b64u != request.request_hash_b64u:
        raise ValueError("the decision is for another request hash")
    kind = ReceiptKind.APPROVAL if decision.verdict is Verdict.APPROVE else ReceiptKind.DENIAL
    return _about(
        kind,
        request.binding,
        receipt_id=receipt_id,
        at=decision.decided_at,
        actor=decision.approver_id,
        actor_name=decision.approver_name,
        details={"decision": decision.to_json(), "decision_hash_b64u": decision.decision_hash_b64u},
    )


def expiry(request: ApprovalRequest, *, at: datetime, receipt_id: str, reason: str) -> Receipt:
    """The request (or its unused grant) expired."""
    return _about(
        ReceiptKind.EXPIRY,
        request.binding,
        receipt_id=receipt_id,
        at=at,
        actor=SYSTEM_ACTOR,
        details={"reason": reason},
    )


def cancellation(
    request: ApprovalRequest,
    *,
    at: datetime,
    actor: str,
    receipt_id: str,
    reason: str | None = None,
) -> Receipt:
    """The requester (or their operator) cancelled the request."""
    details = {} if reason is None else {"reason": reason}
    return _about(
        ReceiptKind.CANCELLATION,
        request.binding,
        receipt_id=receipt_id,
        at=at,
        actor=actor,
        details=details,
    )


def grant_minted(request: ApprovalRequest, grant: Grant, *, receipt_id: str) -> Receipt:
    """Quorum was met and this grant was signed.

    Raises:
        ValueError: the grant is unsigned or for another request.
    """
    if grant.envelope is None:
        raise ValueError("only a signed grant is receipted")
    if grant.request_hash_b64u != request.request_hash_b64u:
        raise ValueError("the grant is for another request")
    details: dict[str, Any] = {
        "grant_id": grant.grant_id,
        "expires_at": to_iso(grant.expires_at),
        "approvals": list(grant.approvals),
        "grant_envelope_hash_b64u": canonical.emission_sha256_b64u(grant.envelope),
    }
    if grant.cst_scope_hash_b64u is not None:
        details["cst_scope_hash_b64u"] = grant.cst_scope_hash_b64u
    return _about(
        ReceiptKind.GRANT_MINTED,
        request.binding,
        receipt_id=receipt_id,
        at=grant.issued_at,
        actor=SYSTEM_ACTOR,
        details=details,
    )


def _token_details(token: ScopedToken) -> dict[str, Any]:
    details: dict[str, Any] = {
        "token_hash_hex": token.token_hash_hex,
        "token_kind": token.kind,
        "subject": token.sub,
        "scope": list(token.scope),
        "scope_hash_b64u": token.scope_hash_b64u,
        "expires_at": to_iso(token.expires_at),
    }
    if token.jti is not None:
        details["jti"] = token.jti
    return details


def cst_minted(request: ApprovalRequest, token: ScopedToken, *, receipt_id: str) -> Receipt:
    """A job (or break-glass) token was minted for the request; only its hash is kept.

    Raises:
        ValueError: the token belongs to another job.
    """
    if token.mission_id != request.binding.job_id:
        raise ValueError("the token belongs to another job")
    return _about(
        ReceiptKind.CST_MINTED,
        request.binding,
        receipt_id=receipt_id,
        at=token.issued_at,
        actor=SYSTEM_ACTOR,
        details=_token_details(token),
    )


def cst_revoked(
    request: ApprovalRequest,
    *,
    token_hash_hex: str,
    at: datetime,
    actor: str,
    reason: str,
    receipt_id: str,
) -> Receipt:
    """A token of this request was revoked (kill switch, suspected leak…)."""
    if not re.fullmatch(r"[0-9a-f]{64}", token_hash_hex):
        raise ValueError("token_hash_hex is the lowercase hex SHA-256 of the token")
    return _about(
        ReceiptKind.CST_REVOKED,
        request.binding,
        receipt_id=receipt_id,
        at=at,
        actor=actor,
        details={"token_hash_hex": token_hash_hex, "reason": reason},
    )


def gate_passed(
    request: ApprovalRequest, *, grant: Grant, token: ScopedToken, at: datetime, receipt_id: str
) -> Receipt:
    """The gate admitted the call (``core.gate.check`` returned a pass).

    Raises:
        ValueError: the grant is for another request.
    """
    if grant.request_hash_b64u != request.request_hash_b64u:
        raise ValueError("the grant is for another request")
    return _about(
        ReceiptKind.GATE_PASSED,
        request.binding,
        receipt_id=receipt_id,
        at=at,
        actor=token.sub,
        details={
            "grant_id": grant.grant_id,
            "payload_hash_b64u": grant.payload_hash_b64u,
            "token_hash_hex": token.token_hash_hex,
        },
    )


def gate_denied(
    reason_code: str,
    *,
    at: datetime,
    actor: str,
    policy_hash_b64u: str,
    receipt_id: str,
    request: ApprovalRequest | None = None,
    grant_id: str | None = None,
    presented_payload_hash_b64u: str | None = None,
) -> Receipt:
    """The gate refused a call. ``request`` is given when the refused grant was genuine."""
    details: dict[str, Any] = {"reason_code": reason_code}
    if grant_id is not None:
        details["grant_id"] = grant_id
    if presented_payload_hash_b64u is not None:
        details["payload_hash_b64u"] = presented_payload_hash_b64u
    if request is not None:
        return _about(
            ReceiptKind.GATE_DENIED,
            request.binding,
            receipt_id=receipt_id,
            at=at,
            actor=actor,
            details=details,
        )
    return Receipt(
        kind=ReceiptKind.GATE_DENIED,
        receipt_id=receipt_id,
        timestamp=require_aware(at),
        actor=actor,
        policy_hash_b64u=policy_hash_b64u,
        details=details,
    )


def breakglass_opened(request: ApprovalRequest, token: ScopedToken, *, receipt_id: str) -> Receipt:
    """A break-glass window opened: the requester holds ``token`` until it expires."""
    details = _token_details(token)
    details["until"] = details.pop("expires_at")
    return _about(
        ReceiptKind.BREAKGLASS_OPENED,
        request.binding,
        receipt_id=receipt_id,
        at=token.issued_at,
        actor=request.binding.requester,
        details=details,
    )


def breakglass_closed(
    request: ApprovalRequest,
    *,
    revoked_by: str | None,
    token_hash_hex: str,
    at: datetime,
    receipt_id: str,
    reason: str,
) -> Receipt:
    """The window ended: expired (``revoked_by`` None) or revoked by a person (kill switch)."""
    kind = ReceiptKind.BREAKGLASS_EXPIRED if revoked_by is None else ReceiptKind.BREAKGLASS_REVOKED
    return _about(
        kind,
        request.binding,
        receipt_id=receipt_id,
        at=at,
        actor=revoked_by or SYSTEM_ACTOR,
        details={"token_hash_hex": token_hash_hex, "reason": reason},
    )


def breakglass_rolled_back(
    request: ApprovalRequest,
    *,
    step_index: int,
    step: str,
    actor: str,
    actor_name: str | None = None,
    at: datetime,
    receipt_id: str,
) -> Receipt:
    """One declared rollback step was marked done (its "Done" click)."""
    return _about(
        ReceiptKind.BREAKGLASS_ROLLED_BACK,
        request.binding,
        receipt_id=receipt_id,
        at=at,
        actor=actor,
        actor_name=actor_name,
        details={"step_index": step_index, "step": step},
    )


def policy_activated(
    policy: Policy,
    *,
    at: datetime,
    actor: str,
    receipt_id: str,
    previous_policy_hash_b64u: str | None = None,
) -> Receipt:
    """A WPC became the active policy."""
    details: dict[str, Any] = {"policy_id": policy.policy_id}
    if previous_policy_hash_b64u is not None:
        details["previous_policy_hash_b64u"] = previous_policy_hash_b64u
    return Receipt(
        kind=ReceiptKind.POLICY_ACTIVATED,
        receipt_id=receipt_id,
        timestamp=require_aware(at),
        actor=actor,
        policy_hash_b64u=policy.policy_hash_b64u,
        details=details,
    )


def bundle_sealed(
    request: ApprovalRequest, bundle_envelope: Mapping[str, Any], *, receipt_id: str
) -> Receipt:
    """The request's proof bundle was sealed (logged after the bundle, which it names)."""
    payload = bundle_envelope["payload"]
    return _about(
        ReceiptKind.BUNDLE_SEALED,
        request.binding,
        receipt_id=receipt_id,
        at=parse_iso(bundle_envelope["issued_at"]),
        actor=SYSTEM_ACTOR,
        details={
            "bundle_id": payload["bundle_id"],
            "bundle_hash_b64u": bundle_envelope["payload_hash_b64u"],
        },
    )


def executor_step(
    request: ApprovalRequest,
    *,
    executor: str,
    step: str,
    ok: bool,
    state: str,
    attempts: int,
    detail: str,
    at: datetime,
    receipt_id: str,
    actor: str = SYSTEM_ACTOR,
    actor_name: str | None = None,
    status: int | None = None,
    reference: Mapping[str, str] | None = None,
) -> Receipt:
    """One step of an executor ran (execute, verify, rollback, verify_rollback) or a person
    resolved a failed execution (``resolve``); ``state`` is the execution state after it.

    Raises:
        ValueError: an unknown step, or fewer than one attempt.
    """
    if step not in ("execute", "verify", "rollback", "verify_rollback", "resolve"):
        raise ValueError(f"unknown executor step {step!r}")
    if attempts < 1:
        raise ValueError("a step was attempted at least once")
    details: dict[str, Any] = {
        "executor": executor,
        "step": step,
        "outcome": "ok" if ok else "failed",
        "state": state,
        "attempts": attempts,
        "detail": detail,
        "payload_hash_b64u": request.binding.payload_hash_b64u,
    }
    if status is not None:
        details["status"] = status
    if reference:
        details["reference"] = dict(reference)
    return _about(
        ReceiptKind.EXECUTOR_STEP,
        request.binding,
        receipt_id=receipt_id,
        at=at,
        actor=actor,
        actor_name=actor_name,
        details=details,
    )


#: What reconciliation found (``reconcile_finding`` details ``finding``).
FINDINGS = ("unknown_holder",)


def reconcile_finding(
    *,
    policy_hash_b64u: str,
    finding: str,
    executor: str,
    target_id: str,
    principal_id: str,
    at: datetime,
    receipt_id: str,
    ends_at: datetime | None = None,
    assignment_type: str = "",
) -> Receipt:
    """Reconciliation found someone holding a watched role or group that keyturn did not
    grant and that is not a configured standing holder. About no request (none granted
    it); ``policy_hash_b64u`` is the policy in force when it was found.

    Raises:
        ValueError: an unknown finding, or an empty target or principal.
    """
    if finding not in FINDINGS:
        raise ValueError(f"unknown reconciliation finding {finding!r}")
    if not target_id or not principal_id or not executor:
        raise ValueError("a finding names the executor, the target and the principal")
    details: dict[str, Any] = {
        "finding": finding,
        "executor": executor,
        "target_id": target_id,
        "principal_id": principal_id,
        "ends_at": to_iso(require_aware(ends_at)) if ends_at is not None else None,
        "assignment_type": assignment_type,
    }
    return Receipt(
        kind=ReceiptKind.RECONCILE_FINDING,
        receipt_id=receipt_id,
        timestamp=require_aware(at),
        actor=SYSTEM_ACTOR,
        policy_hash_b64u=policy_hash_b64u,
        details=details,
    )
