"""Claw interoperability: human approval receipts and the Claw ``proof_bundle`` export.

Approvals and denials are emitted as Claw ``human_approval_receipt`` v1 payloads
(:func:`human_approval_payload`): ``approver_subject`` is the approver's directory
object id, ``scope_hash_b64u`` the request hash, ``policy_hash_b64u`` the WPC hash,
``binding.run_id`` the job id and ``binding.parent_span_id`` the span of the gateway
receipt that led to the tool call (the request binding's ``span_id``). Signed, their
``issued_at`` is their ``timestamp`` (the clock-consistency rule).

:func:`export_claw_bundle` turns a sealed keyturn bundle into a Claw ``proof_bundle``
v1 envelope signed with the agent's key (the Claw rule: ``signer_did`` =
``payload.agent_did``), for the agent's harness:

* ``event_chain``: one event per keyturn receipt of the request, in log order:
  ``event_id`` = receipt id, ``run_id`` = job id, ``event_type`` = ``keyturn.<kind>``,
  ``timestamp`` = the receipt's, ``payload_hash_b64u`` = the receipt envelope's payload
  hash; ``event_hash_b64u`` over the first six fields in order, first ``prev`` null;
* ``receipts``: the gateway receipt envelopes the agent supplies for the job, verified;
* ``human_approval_receipts``: one per decision, bound to its chain event
  (``binding.event_hash_b64u``) and anchored to the request's span;
* ``metadata.keyturn``: the sealed bundle's id and hash, request and policy hashes,
  and the log checkpoint, so the Claw bundle points back at keyturn's proof.

The export verifies the keyturn bundle first and verifies its own result with
:func:`core.claw_verify.verify_claw_bundle` before returning it. It refuses
(:class:`~core.errors.BundleError`) with:

    CLAW_EXPORT_AGENT_MISMATCH      the agent key's DID is not the request's agent
    CLAW_EXPORT_SPAN_MISSING        there are approvals to anchor but the request has no span
    CLAW_EXPORT_SPAN_NOT_FOUND      no supplied gateway receipt declares the request's span
    CLAW_EXPORT_RECEIPT_INVALID     a supplied gateway receipt does not verify
    CLAW_EXPORT_FOREIGN_RECEIPT     a supplied gateway receipt belongs to another run
    CLAW_EXPORT_EVENT_UNKNOWN       a gateway receipt names an event outside the chain
    CLAW_EXPORT_CLOCK_CONTRADICTION an approval is timestamped before the span it answers
    CLAW_EXPORT_INVALID             the result would not verify (the Claw code says why)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from core import canonical
from core.bundle_format import parse_bundle
from core.bundle_verify import verify_bundle
from core.claw_schema import GATEWAY_RECEIPT_TYPE, HUMAN_APPROVAL_TYPE, PROOF_BUNDLE_TYPE
from core.claw_verify import event_hash, verify_claw_bundle, verify_claw_envelope
from core.envelope import sign_envelope
from core.errors import BundleError, EnvelopeError
from core.ports import Signer
from core.quorum import ApproverDecision, Verdict
from core.requests import RequestBinding
from core.times import parse_iso, to_iso

_APPROVER_METHODS = {
    "slack": "ui_click",
    "teams": "ui_click",
    "web": "ui_click",
    "cli": "cli_confirm",
    "api": "api_call",
}


def human_approval_receipt_id(decision: ApproverDecision) -> str:
    """A stable id, so the same decision always yields the same Claw receipt."""
    return "har_" + decision.decision_hash_b64u


def human_approval_payload(
    binding: RequestBinding,
    decision: ApproverDecision,
    *,
    agent_did: str | None = None,
    token_scope_hash_b64u: str | None = None,
    event_hash_b64u: str | None = None,
) -> dict[str, Any]:
    """A Claw ``human_approval_receipt`` v1 payload for one decision.

    ``approver_subject`` is the approver's directory object id, ``scope_hash_b64u`` the
    request hash, ``binding.run_id`` the job id and ``binding.parent_span_id`` the
    request's span (the gateway receipt span that led to the tool call), when known.

    Raises:
        ValueError: the decision is for another request.
    """
    if decision.request_hash_b64u != binding.request_hash_b64u:
        raise ValueError("the decision is for another request")
    approve = decision.verdict is Verdict.APPROVE
    payload: dict[str, Any] = {
        "receipt_version": "1",
        "receipt_id": human_approval_receipt_id(decision),
        "approval_type": "explicit_approve" if approve else "explicit_deny",
        "approver_subject": decision.approver_id,
    }
    method = _APPROVER_METHODS.get(decision.platform)
    if method is not None:
        payload["approver_method"] = method
    payload["agent_did"] = agent_did or binding.requester
    payload["scope_hash_b64u"] = binding.request_hash_b64u
    summary = (
        f"{'approve' if approve else 'deny'} {binding.tool_route} for job {binding.job_id}: "
        f"payload {binding.payload_hash_b64u}"
    )
    payload["scope_summary"] = summary[:1024]
    payload["policy_hash_b64u"] = binding.policy_hash_b64u
    if binding.plan_hash is not None:
        payload["plan_hash_b64u"] = binding.plan_hash
    payload["hash_algorithm"] = "SHA-256"
    payload["timestamp"] = to_iso(decision.decided_at)
    claw_binding: dict[str, Any] = {"run_id": binding.job_id}
    if event_hash_b64u is not None:
        claw_binding["event_hash_b64u"] = event_hash_b64u
    claw_binding["policy_hash"] = binding.policy_hash_b64u
    if token_scope_hash_b64u is not None:
        claw_binding["token_scope_hash_b64u"] = token_scope_hash_b64u
    if binding.span_id is not None:
        claw_binding["parent_span_id"] = binding.span_id
    payload["binding"] = claw_binding
    return payload


def sign_human_approval(payload: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Sign a Claw human approval receipt; ``issued_at`` is its ``timestamp`` (clock rule).

    Raises:
        KeyturnError: ``MALFORMED_TIMESTAMP`` when the payload has no valid timestamp.
    """
    return sign_envelope(
        HUMAN_APPROVAL_TYPE, payload, signer, issued_at=parse_iso(payload.get("timestamp"))
    )


def _fail(code: str, message: str) -> BundleError:
    return BundleError(code, message)


def export_claw_bundle(
    unverified_bundle: bytes | str | Mapping[str, Any],
    *,
    agent: Signer,
    trusted_keyturn_dids: Collection[str],
    now: datetime,
    gateway_receipts: Sequence[Mapping[str, Any]] = (),
    trusted_policy_issuers: Collection[str] | None = None,
    bundle_id: str | None = None,
) -> dict[str, Any]:
    """Export a sealed keyturn bundle as a Claw ``proof_bundle`` signed by the agent.

    Args:
        unverified_bundle: the keyturn bundle (its file bytes, or the decoded envelope).
        agent: the agent's key; its DID must be the request's agent (the requester).
        trusted_keyturn_dids: keyturn keys to trust when verifying the bundle first.
        now: the export time (the Claw envelope's ``issued_at``).
        gateway_receipts: the agent's gateway receipt envelopes for the job.
        trusted_policy_issuers: as for :func:`core.bundle_verify.verify_bundle`.
        bundle_id: the Claw bundle's id (default: the keyturn bundle id + ``-claw``).

    Returns:
        the signed Claw ``proof_bundle`` envelope.

    Raises:
        BundleError: the keyturn bundle's own ``BUNDLE_*`` code, or a ``CLAW_EXPORT_*``
            code (module docstring).
    """
    envelope = (
        parse_bundle(unverified_bundle)
        if isinstance(unverified_bundle, bytes | str)
        else unverified_bundle
    )
    report = verify_bundle(
        envelope,
        trusted_keyturn_dids=trusted_keyturn_dids,
        trusted_policy_issuers=trusted_policy_issuers,
    )
    evidence = report.evidence
    b = evidence.request.binding
    if agent.did != b.requester:
        raise _fail(
            "CLAW_EXPORT_AGENT_MISMATCH",
            f"the agent key is {agent.did}, but the request's agent is {b.requester}",
        )
    events = _events(envelope["payload"]["receipts"], b.job_id)
    chain = {e["event_hash_b64u"] for e in events}
    receipts = _gateway_receipts(gateway_receipts, b.job_id, chain, now)
    anchor_at = _anchor(receipts, b, bool(evidence.decisions))
    by_decision = {
        r["envelope"]["payload"]["details"].get("decision_hash_b64u"): e["event_hash_b64u"]
        for r, e in zip(envelope["payload"]["receipts"], events, strict=True)
    }
    approvals = []
    for d in evidence.decisions:
        if anchor_at is not None and d.decided_at < anchor_at:
            raise _fail(
                "CLAW_EXPORT_CLOCK_CONTRADICTION",
                f"{d.approver_name}'s decision at {to_iso(d.decided_at)} is before the "
                f"gateway receipt of span {b.span_id}",
            )
        approvals.append(
            human_approval_payload(
                b,
                d,
                agent_did=agent.did,
                token_scope_hash_b64u=evidence.cst_scope_hash_b64u,
                event_hash_b64u=by_decision[d.decision_hash_b64u],
            )
        )
    checkpoint = evidence.checkpoint
    payload: dict[str, Any] = {
        "bundle_version": "1",
        "bundle_id": bundle_id or f"{report.bundle_id}-claw",
        "agent_did": agent.did,
        "event_chain": events,
    }
    if receipts:
        payload["receipts"] = [dict(r) for r in receipts]
    if approvals:
        payload["human_approval_receipts"] = approvals
    payload["metadata"] = {
        "keyturn": {
            "bundle_id": report.bundle_id,
            "bundle_hash_b64u": envelope["payload_hash_b64u"],
            "signer_did": report.signer_did,
            "request_hash_b64u": b.request_hash_b64u,
            "policy_hash_b64u": b.policy_hash_b64u,
            "outcome": report.outcome,
            "log_origin": checkpoint.origin,
            "log_size": checkpoint.size,
            "log_root_b64u": canonical.b64u_encode(checkpoint.root_hash),
        }
    }
    result = sign_envelope(PROOF_BUNDLE_TYPE, payload, agent, issued_at=now)
    try:
        verify_claw_bundle(result, now=now)
    except EnvelopeError as e:
        raise _fail("CLAW_EXPORT_INVALID", f"{e.reason_code}: {e.message}") from e
    return result


def _events(receipts: Sequence[Mapping[str, Any]], run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    previous: str | None = None
    for item in receipts:
        receipt = item["envelope"]
        event: dict[str, Any] = {
            "event_id": receipt["payload"]["receipt_id"],
            "run_id": run_id,
            "event_type": "keyturn." + receipt["payload"]["kind"],
            "timestamp": receipt["payload"]["timestamp"],
            "payload_hash_b64u": receipt["payload_hash_b64u"],
            "prev_hash_b64u": previous,
        }
        event["event_hash_b64u"] = event_hash(event)
        previous = event["event_hash_b64u"]
        events.append(event)
    return events


def _gateway_receipts(
    receipts: Sequence[Mapping[str, Any]], run_id: str, chain: set[str], now: datetime
) -> list[Mapping[str, Any]]:
    out = []
    for i, envelope in enumerate(receipts):
        try:
            verified = verify_claw_envelope(envelope, now=now, expected_type=GATEWAY_RECEIPT_TYPE)
        except EnvelopeError as e:
            raise _fail(
                "CLAW_EXPORT_RECEIPT_INVALID", f"gateway receipt {i}: {e.reason_code}: {e.message}"
            ) from e
        binding = verified.payload.get("binding", {})
        if binding.get("run_id", run_id) != run_id:
            raise _fail(
                "CLAW_EXPORT_FOREIGN_RECEIPT",
                f"gateway receipt {i} is for run {binding.get('run_id')!r}, not job {run_id}",
            )
        if "event_hash_b64u" in binding and binding["event_hash_b64u"] not in chain:
            raise _fail(
                "CLAW_EXPORT_EVENT_UNKNOWN",
                f"gateway receipt {i} is bound to an event that is not in the request's chain",
            )
        out.append(envelope)
    return out


def _anchor(
    receipts: Sequence[Mapping[str, Any]], binding: RequestBinding, needed: bool
) -> datetime | None:
    """The time of the gateway receipt declaring the request's span (None if not needed)."""
    if not needed:
        return None
    if binding.span_id is None:
        raise _fail(
            "CLAW_EXPORT_SPAN_MISSING",
            "the request binding names no span_id, so its approvals cannot be anchored to "
            "the gateway receipt that led to the tool call",
        )
    for envelope in receipts:
        payload = envelope["payload"]
        if payload.get("binding", {}).get("span_id") == binding.span_id:
            return parse_iso(payload["timestamp"])
    raise _fail(
        "CLAW_EXPORT_SPAN_NOT_FOUND",
        f"none of the {len(receipts)} gateway receipts supplied declares span "
        f"{binding.span_id!r}; the approvals would be orphaned",
    )
