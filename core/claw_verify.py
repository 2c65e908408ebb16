"""Verifying Claw evidence: envelopes and ``proof_bundle`` v1, in the reference order.

Formats and codes follow CLAW_FORMATS.md (the Claw reference verifier's behaviour); the
JSON Schemas in ``manifests/schemas/claw/`` describe the same payloads and the tests
keep the two in agreement. keyturn differs from the reference on purpose in three
ways, all toward refusing:

* a bare, unsigned payload is ``MALFORMED_ENVELOPE``, never a pass;
* every gateway receipt must verify; one that does not fails the bundle (the reference
  only lowers its trust tier);
* only the evidence keyturn can check is accepted in a bundle (event chain, gateway
  receipts, human approval receipts, metadata); anything else is
  ``SCHEMA_VALIDATION_FAILED`` rather than passed unread.

:func:`verify_claw_bundle` order (first failure wins): the envelope checks of
:func:`core.envelope.verify_envelope` up to the base64url fields; then the payload:
schema (``SCHEMA_VALIDATION_FAILED``), at least one component, at most 1000 events,
metadata ≤ 16 KiB and unique event ids (``MALFORMED_ENVELOPE``), gateway receipt ids
never reused for other content (``CAUSAL_RECEIPT_REPLAY_DETECTED``), ``agent_did`` a
DID and ``signer_did`` = ``payload.agent_did`` (``INVALID_DID_FORMAT``); then payload
hash (``HASH_MISMATCH``) and signature (``SIGNATURE_INVALID``); then the event chain:
linkage and one ``run_id`` (``MALFORMED_ENVELOPE``), each ``event_hash_b64u`` over the
first six fields in order (``HASH_MISMATCH``); then the causal checks over gateway
receipt bindings: span ids (``CAUSAL_BINDING_NORMALIZATION_FAILED``), ``issued_at`` not
before the payload ``timestamp`` and no child before its parent
(``CAUSAL_CLOCK_CONTRADICTION``), parents that exist (``CAUSAL_REFERENCE_DANGLING``),
no cycles (``CAUSAL_CYCLE_DETECTED``); every human approval receipt anchored to a
declared span (``CAUSAL_HUMAN_APPROVAL_ORPHANED``) and not timestamped before it
(``CAUSAL_CLOCK_CONTRADICTION``), for the bundle's agent (``EVIDENCE_MISMATCH``) and run
(``RECEIPT_BINDING_MISMATCH``); finally every gateway receipt envelope verifies (its
own envelope codes), is bound to this run and chain (``RECEIPT_BINDING_MISMATCH``) and,
when gateways are pinned, is signed by one (``UNTRUSTED_SIGNER``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import canonical
from core.claw_schema import (
    DID,
    EVENT_FIELDS,
    GATEWAY_RECEIPT_TYPE,
    HUMAN_APPROVAL_TYPE,
    MAX_EVENTS,
    MAX_METADATA_BYTES,
    MAX_RECEIPTS,
    PROOF_BUNDLE_TYPE,
    SPAN_KEYS,
    Refusal,
    validate_gateway_receipt,
    validate_human_approval,
    validate_proof_bundle,
)
from core.envelope import VerifiedEnvelope, verify_envelope
from core.errors import CanonicalizationError, EnvelopeError, KeyturnError
from core.times import parse_iso

_VALIDATORS = {
    PROOF_BUNDLE_TYPE: validate_proof_bundle,
    GATEWAY_RECEIPT_TYPE: validate_gateway_receipt,
    HUMAN_APPROVAL_TYPE: validate_human_approval,
}


def _refusal_of(e: EnvelopeError) -> EnvelopeError:
    """Give a payload check's own code back to an error verify_envelope wrapped."""
    cause = e.__cause__
    if isinstance(cause, Refusal):
        return EnvelopeError(cause.code, str(cause))
    if e.reason_code == "UNEXPECTED_ENVELOPE_TYPE":  # the reference's code for it
        return EnvelopeError("UNKNOWN_ENVELOPE_TYPE", e.message)
    return e


def verify_claw_envelope(
    unverified: object,
    *,
    now: datetime,
    expected_type: str | None = None,
    trusted_signers: Collection[str] | None = None,
) -> VerifiedEnvelope:
    """Verify one Claw envelope (payload schema checked for the types keyturn knows).

    Raises:
        EnvelopeError: the reference verifier's code (CLAW_FORMATS.md); a bare payload
            is ``MALFORMED_ENVELOPE``.
    """
    declared = unverified.get("envelope_type") if isinstance(unverified, Mapping) else None
    validator = _VALIDATORS.get(expected_type or (declared if isinstance(declared, str) else ""))
    try:
        return verify_envelope(
            unverified,
            now=now,
            expected_type=expected_type,
            trusted_signers=trusted_signers,
            validate_payload=validator,
        )
    except EnvelopeError as e:
        raise _refusal_of(e) from e


# --- proof bundles ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClawBundleReport:
    """What :func:`verify_claw_bundle` established about a Claw proof bundle."""

    bundle_id: str
    agent_did: str
    run_id: str | None
    events: int
    gateway_receipts: int
    human_approvals: int
    spans: tuple[str, ...]
    gateway_signers: tuple[str, ...]
    gateways_pinned: bool


@dataclass(frozen=True, slots=True)
class _Span:
    span_id: str | None
    parent: str | None
    tool: str | None
    at: datetime
    path: str


def verify_claw_bundle(
    unverified: object,
    *,
    now: datetime,
    trusted_gateway_dids: Collection[str] | None = None,
) -> ClawBundleReport:
    """Verify a Claw ``proof_bundle`` envelope (order and codes: module docstring).

    Args:
        unverified: the decoded envelope, key order as received.
        now: the instant at which expiry is judged.
        trusted_gateway_dids: when given, every gateway receipt must be signed by one.

    Raises:
        EnvelopeError: the first failure's reason code.
    """
    signer = unverified.get("signer_did") if isinstance(unverified, Mapping) else None

    def payload_checks(payload: Mapping[str, Any]) -> None:
        validate_proof_bundle(payload)
        _components(payload)
        agent = payload["agent_did"]
        if not DID.match(agent):
            raise Refusal("INVALID_DID_FORMAT", "payload.agent_did is not a DID")
        if signer != agent:
            raise Refusal("INVALID_DID_FORMAT", "signer_did must equal payload.agent_did")

    try:
        verified = verify_envelope(
            unverified, now=now, expected_type=PROOF_BUNDLE_TYPE, validate_payload=payload_checks
        )
    except EnvelopeError as e:
        raise _refusal_of(e) from e
    payload = verified.payload
    try:
        run_id, chain = _event_chain(payload.get("event_chain", ()))
        spans = _causal(payload.get("receipts", ()))
        _human_approvals(payload, spans, run_id, chain)
    except Refusal as e:
        raise EnvelopeError(e.code, str(e)) from e
    signers = _gateway_receipts(
        payload.get("receipts", ()), now, run_id, chain, trusted_gateway_dids
    )
    return ClawBundleReport(
        bundle_id=payload["bundle_id"],
        agent_did=payload["agent_did"],
        run_id=run_id,
        events=len(payload.get("event_chain", ())),
        gateway_receipts=len(payload.get("receipts", ())),
        human_approvals=len(payload.get("human_approval_receipts", ())),
        spans=tuple(sorted(s for s in spans if s is not None)),
        gateway_signers=tuple(signers),
        gateways_pinned=trusted_gateway_dids is not None,
    )


def _components(payload: Mapping[str, Any]) -> None:
    if not any(key in payload for key in ("event_chain", "receipts", "human_approval_receipts")):
        raise Refusal("MALFORMED_ENVELOPE", "a proof bundle carries at least one component")
    events = payload.get("event_chain", ())
    if len(events) > MAX_EVENTS:
        raise Refusal("MALFORMED_ENVELOPE", f"event_chain exceeds {MAX_EVENTS} events")
    receipts = payload.get("receipts", ())
    approvals = payload.get("human_approval_receipts", ())
    if len(receipts) > MAX_RECEIPTS or len(approvals) > MAX_RECEIPTS:
        raise Refusal("MALFORMED_ENVELOPE", f"more than {MAX_RECEIPTS} receipts")
    if "metadata" in payload:
        try:
            size = len(canonical.emission(payload["metadata"]))
        except CanonicalizationError as e:
            raise Refusal("MALFORMED_ENVELOPE", "metadata has no JSON form") from e
        if size > MAX_METADATA_BYTES:
            raise Refusal("MALFORMED_ENVELOPE", f"metadata exceeds {MAX_METADATA_BYTES} bytes")
    ids = [e["event_id"] for e in events]
    if len(set(ids)) != len(ids):
        raise Refusal("MALFORMED_ENVELOPE", "event_id must be unique within event_chain")
    seen: dict[str, bytes] = {}
    for i, receipt in enumerate(receipts):
        content = receipt["payload"]
        try:
            fingerprint = canonical.jcs(content)
        except CanonicalizationError as e:
            raise Refusal("MALFORMED_ENVELOPE", f"receipts[{i}] has no JSON form") from e
        earlier = seen.setdefault(content["receipt_id"], fingerprint)
        if earlier != fingerprint:
            raise Refusal(
                "CAUSAL_RECEIPT_REPLAY_DETECTED",
                f"receipt_id {content['receipt_id']} appears with different content",
            )


def event_hash(event: Mapping[str, Any]) -> str:
    """``event_hash_b64u``: emission-order SHA-256 of the first six fields, in order."""
    header = {key: event.get(key) for key in EVENT_FIELDS[:6]}
    return canonical.emission_sha256_b64u(header)


def _event_chain(events: Sequence[Mapping[str, Any]]) -> tuple[str | None, frozenset[str]]:
    run_id: str | None = None
    previous: str | None = None
    for i, event in enumerate(events):
        if run_id is None:
            run_id = event["run_id"]
        elif event["run_id"] != run_id:
            raise Refusal("MALFORMED_ENVELOPE", f"event {i}: another run_id than {run_id}")
        if event["prev_hash_b64u"] != previous:
            what = "the first event's prev_hash_b64u must be null" if i == 0 else "chain break"
            raise Refusal("MALFORMED_ENVELOPE", f"event {i}: {what}")
        previous = event["event_hash_b64u"]
    for i, event in enumerate(events):
        if not canonical.digests_equal(event_hash(event), event["event_hash_b64u"]):
            raise Refusal("HASH_MISMATCH", f"event {i}: event_hash_b64u does not match")
    return run_id, frozenset(e["event_hash_b64u"] for e in events)


def _span_field(binding: Mapping[str, Any], key: str, path: str) -> str | None:
    if key not in binding:
        return None
    value = binding[key]
    if not isinstance(value, str) or not value.strip():
        raise Refusal("CAUSAL_BINDING_NORMALIZATION_FAILED", f"{path}.{key} is empty or not text")
    return value.strip()


def _causal(receipts: Sequence[Mapping[str, Any]]) -> dict[str | None, _Span]:
    """Check the causal graph of gateway receipt spans; returns the spans by id."""
    entries: list[_Span] = []
    for i, envelope in enumerate(receipts):
        path = f"payload.receipts[{i}].payload"
        payload = envelope["payload"]
        binding = payload.get("binding")
        if not isinstance(binding, Mapping) or not any(k in binding for k in SPAN_KEYS):
            continue
        at = parse_iso(payload["timestamp"])
        try:
            issued = parse_iso(envelope["issued_at"])
        except KeyturnError as e:
            raise Refusal("CAUSAL_CLOCK_CONTRADICTION", f"{path}: issued_at is not a time") from e
        if at > issued:
            raise Refusal(
                "CAUSAL_CLOCK_CONTRADICTION",
                f"{path}.timestamp is after the envelope's issued_at",
            )
        entries.append(
            _Span(
                _span_field(binding, "span_id", f"{path}.binding"),
                _span_field(binding, "parent_span_id", f"{path}.binding"),
                _span_field(binding, "tool_span_id", f"{path}.binding"),
                at,
                path,
            )
        )
    spans: dict[str | None, _Span] = {}
    for entry in entries:
        if entry.span_id is None:
            continue
        earlier = spans.setdefault(entry.span_id, entry)
        if earlier.at != entry.at:
            raise Refusal(
                "CAUSAL_CLOCK_CONTRADICTION", f"span {entry.span_id} has two different times"
            )
        if (earlier.parent, earlier.tool) != (entry.parent, entry.tool):
            raise Refusal("CAUSAL_SPAN_REUSE_CONFLICT", f"span {entry.span_id} is reused")
    for entry in entries:
        for parent in (entry.parent, entry.tool):
            if parent is None:
                continue
            if parent not in spans:
                raise Refusal("CAUSAL_REFERENCE_DANGLING", f"{entry.path}: unknown span {parent}")
            if entry.at < spans[parent].at:
                raise Refusal(
                    "CAUSAL_CLOCK_CONTRADICTION",
                    f"{entry.path} is timestamped before span {parent}",
                )
    for start in spans:
        seen: set[str | None] = set()
        node: str | None = start
        while node is not None:
            if node in seen:
                raise Refusal("CAUSAL_CYCLE_DETECTED", f"span {start} is its own ancestor")
            seen.add(node)
            node = spans[node].parent if node in spans else None
    return spans


def _human_approvals(
    payload: Mapping[str, Any],
    spans: Mapping[str | None, _Span],
    run_id: str | None,
    chain: frozenset[str],
) -> None:
    for i, approval in enumerate(payload.get("human_approval_receipts", ())):
        path = f"payload.human_approval_receipts[{i}]"
        binding = approval.get("binding")
        if not isinstance(binding, Mapping):
            raise Refusal("CAUSAL_HUMAN_APPROVAL_ORPHANED", f"{path} has no binding to anchor it")
        anchors = [_span_field(binding, key, f"{path}.binding") for key in SPAN_KEYS]
        anchor = next((a for a in anchors if a is not None), None)
        if anchor is None or anchor not in spans:
            raise Refusal(
                "CAUSAL_HUMAN_APPROVAL_ORPHANED",
                f"{path} is not anchored to a span declared by a gateway receipt in this bundle",
            )
        if parse_iso(approval["timestamp"]) < spans[anchor].at:
            raise Refusal(
                "CAUSAL_CLOCK_CONTRADICTION", f"{path} is timestamped before span {anchor}"
            )
        if approval["agent_did"] != payload["agent_did"]:
            raise Refusal("EVIDENCE_MISMATCH", f"{path} is for another agent")
        if run_id is not None and binding.get("run_id", run_id) != run_id:
            raise Refusal("RECEIPT_BINDING_MISMATCH", f"{path} is bound to another run")
        if "event_hash_b64u" in binding and binding["event_hash_b64u"] not in chain:
            raise Refusal("RECEIPT_BINDING_MISMATCH", f"{path} names an event not in the chain")


def _gateway_receipts(
    receipts: Sequence[Mapping[str, Any]],
    now: datetime,
    run_id: str | None,
    chain: frozenset[str],
    trusted: Collection[str] | None,
) -> list[str]:
    signers: list[str] = []
    for i, envelope in enumerate(receipts):
        try:
            verified = verify_claw_envelope(
                envelope, now=now, expected_type=GATEWAY_RECEIPT_TYPE, trusted_signers=trusted
            )
        except EnvelopeError as e:
            raise EnvelopeError(e.reason_code, f"payload.receipts[{i}]: {e.message}") from e
        binding = verified.payload.get("binding", {})
        if run_id is not None and binding.get("run_id", run_id) != run_id:
            raise EnvelopeError(
                "RECEIPT_BINDING_MISMATCH", f"payload.receipts[{i}] is bound to another run"
            )
        if chain and "event_hash_b64u" in binding and binding["event_hash_b64u"] not in chain:
            raise EnvelopeError(
                "RECEIPT_BINDING_MISMATCH", f"payload.receipts[{i}] names an event not in the chain"
            )
        if verified.signer_did not in signers:
            signers.append(verified.signer_did)
    return signers
