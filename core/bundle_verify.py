"""Offline verification of keyturn proof bundles (``keyturn verify``).

A proof bundle is a ``keyturn_proof_bundle`` signed envelope (format: ``manifests/
schemas/keyturn-proof-bundle.schema.json`` and its README). On disk it is exactly
:func:`core.bundle_format.bundle_bytes`: the envelope's emission-order JSON, optionally
followed by one newline. :func:`verify_bundle` needs nothing but the bundle and the
keys it is told to trust, and raises :class:`~core.errors.BundleError` on the first
failure, in this order (each part is checked with its own signature or hash first, so
a change anywhere is refused with the code of the part that changed; the bundle's own
signature, which also covers every part, is checked last):

====================================  ==================================================
BUNDLE_MALFORMED, BUNDLE_NOT_CANONICAL  not strict JSON, not the canonical bytes, a
BUNDLE_TOO_LARGE                      missing/unknown field, a wrong type
BUNDLE_NO_TRUST_ANCHOR                no trusted keyturn DID was given
BUNDLE_WRONG_TYPE                     not a ``keyturn_proof_bundle`` envelope
BUNDLE_UNTRUSTED_SIGNER               signed by a key that is not trusted
BUNDLE_FROM_THE_FUTURE                sealed after ``now`` (beyond 5 minutes of skew)
BUNDLE_POLICY_INVALID / _UNTRUSTED    the WPC envelope does not verify / its issuer is not
                                      trusted
BUNDLE_POLICY_HASH_MISMATCH           the WPC is not the policy the request was bound to
BUNDLE_PAYLOAD_HASH_MISMATCH          the params do not hash to the bound payload hash
BUNDLE_REQUEST_HASH_MISMATCH          the binding does not hash to the request hash
BUNDLE_CHECKPOINT_INVALID / _MISMATCH the signed checkpoint does not verify / disagrees
                                      with the fields beside it
BUNDLE_RECEIPTS_UNORDERED             receipt indexes are not strictly increasing
BUNDLE_RECEIPT_INVALID                a receipt's signature, hash or payload is bad
BUNDLE_INCLUSION_PROOF_INVALID        a receipt is not in the log at that checkpoint
BUNDLE_RECEIPT_FOREIGN, _DUPLICATE    a receipt is about another request / repeated
BUNDLE_* from core.bundle_evidence    policy decision, approvers, quorum, grant, token,
                                      gate and final state, re-derived from the bundle
BUNDLE_SUMMARY_MISMATCH               the summary is not the one the evidence gives
BUNDLE_HASH_MISMATCH                  the bundle's payload hash is wrong
BUNDLE_SIGNATURE_INVALID              the bundle's signature does not verify
====================================  ==================================================

Parameters the policy marks sensitive are masked on cards but kept whole in the
bundle: the payload hash can only be recomputed from the exact parameters. Treat a
bundle as being as confidential as the action it proves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core import canonical
from core.bundle_evidence import Evidence, analyze, binding_from_json, fail
from core.bundle_format import (
    BUNDLE_TYPE,
    BUNDLE_VERSION,
    CHECKPOINT_SHAPE,
    ENVELOPE_FIELDS,
    FUTURE_SKEW,
    MAX_RECEIPTS,
    PAYLOAD_SHAPE,
    POLICY_SHAPE,
    RECEIPT_SHAPE,
    REQUEST_SHAPE,
    parse_bundle,
    require_object,
    require_text,
    require_time,
)
from core.bundle_summary import summarize
from core.checkpoint import Checkpoint, verify_checkpoint
from core.envelope import verify_envelope
from core.errors import (
    CanonicalizationError,
    EnvelopeError,
    InvalidDidError,
    LogError,
    PolicyError,
)
from core.keys import public_key_from_did
from core.merkle import leaf_hash, verify_inclusion
from core.policy import Policy, verify_wpc
from core.quorum import DEFAULT_MAX_EVIDENCE_AGE
from core.receipts import Receipt, entry_bytes, verify_receipt
from core.requests import RequestState, payload_hash
from core.times import parse_iso, require_aware, to_iso


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What a bundle was verified to prove (returned by :func:`verify_bundle`).

    ``checks`` lists, in order, every check that passed, in words.
    """

    bundle_id: str
    signer_did: str
    sealed_at: datetime
    evidence: Evidence
    policy_issuer_did: str
    policy_issuer_pinned: bool
    checks: tuple[str, ...]

    @property
    def outcome(self) -> str:
        return str(self.evidence.request.state)

    def to_json(self) -> dict[str, Any]:
        e = self.evidence
        b = e.request.binding
        return {
            "verdict": "PASS",
            "bundle_id": self.bundle_id,
            "signer_did": self.signer_did,
            "sealed_at": to_iso(self.sealed_at),
            "outcome": self.outcome,
            "request_id": b.request_id,
            "job_id": b.job_id,
            "tool_route": b.tool_route,
            "request_hash_b64u": b.request_hash_b64u,
            "payload_hash_b64u": b.payload_hash_b64u,
            "policy_hash_b64u": e.policy.policy_hash_b64u,
            "policy_issuer_did": self.policy_issuer_did,
            "policy_issuer_pinned": self.policy_issuer_pinned,
            "approvers": [d.approver_id for d in e.approvals],
            "quorum_met": e.quorum_met,
            "grant_id": e.grant.grant_id if e.grant else None,
            "cst_scope_hash_b64u": e.cst_scope_hash_b64u,
            "gate_passes": len(e.gate_passes),
            "gate_denials": len(e.gate_denials),
            "receipts": len(e.receipts),
            "checkpoint": {"origin": e.checkpoint.origin, "size": e.checkpoint.size},
            "checks": list(self.checks),
        }


# --- verification ---------------------------------------------------------------------------


def verify_bundle(
    unverified: bytes | str | Mapping[str, Any],
    *,
    trusted_keyturn_dids: Collection[str],
    trusted_policy_issuers: Collection[str] | None = None,
    now: datetime | None = None,
    max_evidence_age: timedelta = DEFAULT_MAX_EVIDENCE_AGE,
) -> BundleReport:
    """Verify a proof bundle offline.

    Args:
        unverified: the bundle file's bytes (strictly canonical), or the decoded envelope.
        trusted_keyturn_dids: the keyturn signing keys to trust; the bundle, its receipts,
            its grant and its checkpoint must all be signed by one of them.
        trusted_policy_issuers: WPC issuers to trust; ``None`` accepts the WPC's own
            issuer (its signature must still verify) and the report says it is unpinned.
        now: when given, a bundle sealed more than 5 minutes after it is refused.
        max_evidence_age: how old an approver's directory evidence may be at decision time.

    Returns:
        a :class:`BundleReport` listing what was checked.

    Raises:
        BundleError: the first failure's ``BUNDLE_*`` reason code (module docstring).
    """
    envelope = parse_bundle(unverified) if isinstance(unverified, bytes | str) else unverified
    if isinstance(trusted_keyturn_dids, str):
        raise TypeError("trusted_keyturn_dids is a collection of DIDs, not one string")
    if not trusted_keyturn_dids:
        raise fail("BUNDLE_NO_TRUST_ANCHOR", "no trusted keyturn DID: nothing can verify")
    signer_did, sealed_at = _outer_structure(envelope, trusted_keyturn_dids, now)
    checks = [f"bundle envelope: {BUNDLE_TYPE} v1 by trusted key {signer_did}"]
    payload = envelope["payload"]
    evidence, policy_pinned, more = verify_contents(
        payload,
        signer_did=signer_did,
        trusted_policy_issuers=trusted_policy_issuers,
        now=now,
        max_evidence_age=max_evidence_age,
    )
    checks += more
    if summarize(evidence) != payload["summary"]:
        raise fail("BUNDLE_SUMMARY_MISMATCH", "the summary is not what the evidence shows")
    checks.append("summary: recomputed from the verified evidence, identical")
    _outer_signature(envelope, signer_did, sealed_at)
    checks.append("bundle signature: payload hash recomputed, Ed25519 signature verified")
    return BundleReport(
        bundle_id=payload["bundle_id"],
        signer_did=signer_did,
        sealed_at=sealed_at,
        evidence=evidence,
        policy_issuer_did=evidence.policy.issuer_did,
        policy_issuer_pinned=policy_pinned,
        checks=tuple(checks),
    )


def _outer_structure(
    envelope: object, trusted: Collection[str], now: datetime | None
) -> tuple[str, datetime]:
    if not isinstance(envelope, Mapping) or set(envelope) != set(ENVELOPE_FIELDS):
        raise fail("BUNDLE_MALFORMED", "not a signed envelope with exactly the nine fields")
    if envelope["envelope_type"] != BUNDLE_TYPE:
        raise fail(
            "BUNDLE_WRONG_TYPE", f"expected a {BUNDLE_TYPE}, got {envelope['envelope_type']!r}"
        )
    if (
        envelope["envelope_version"] != "1"
        or envelope["algorithm"] != "Ed25519"
        or envelope["hash_algorithm"] != "SHA-256"
    ):
        raise fail("BUNDLE_MALFORMED", "unsupported envelope version or algorithm")
    signer = envelope["signer_did"]
    try:
        public_key_from_did(signer)
    except InvalidDidError as e:
        raise fail("BUNDLE_MALFORMED", f"signer_did: {e.message}") from e
    if signer not in trusted:
        raise fail(
            "BUNDLE_UNTRUSTED_SIGNER", f"the bundle is signed by {signer}, not a trusted key"
        )
    payload = require_object(envelope["payload"], "payload", PAYLOAD_SHAPE)
    if payload["bundle_version"] != BUNDLE_VERSION:
        raise fail("BUNDLE_MALFORMED", 'bundle_version must be "1"')
    require_text(payload["bundle_id"], "payload.bundle_id")
    sealed_at = require_time(payload["sealed_at"], "payload.sealed_at")
    if envelope["issued_at"] != payload["sealed_at"]:
        raise fail("BUNDLE_MALFORMED", "issued_at must be the bundle's sealed_at")
    if now is not None and sealed_at > require_aware(now) + FUTURE_SKEW:
        raise fail("BUNDLE_FROM_THE_FUTURE", f"sealed at {payload['sealed_at']}, after now")
    return signer, sealed_at


def verify_contents(
    payload: Mapping[str, Any],
    *,
    signer_did: str,
    trusted_policy_issuers: Collection[str] | None,
    now: datetime | None = None,
    max_evidence_age: timedelta = DEFAULT_MAX_EVIDENCE_AGE,
) -> tuple[Evidence, bool, list[str]]:
    """Verify every part of a bundle payload but its summary (sealing uses this too).

    Returns:
        the evidence, whether the policy issuer was pinned, and the checks in words.

    Raises:
        BundleError: the first failure (module docstring, from the policy onwards).
    """
    checks: list[str] = []
    request = require_object(payload["request"], "payload.request", REQUEST_SHAPE)
    policy, pinned = _policy(payload, trusted_policy_issuers, now)
    checks.append(
        f"policy: WPC signature by {policy.issuer_did} "
        f"({'trusted issuer' if pinned else 'issuer not pinned'}), hash {policy.policy_hash_b64u}"
    )
    binding = binding_from_json(request["binding"])
    if binding.policy_hash_b64u != policy.policy_hash_b64u:
        raise fail("BUNDLE_POLICY_HASH_MISMATCH", "the request was bound to another policy")
    params = request["params"]
    if not isinstance(params, Mapping):
        raise fail("BUNDLE_MALFORMED", "payload.request.params is not an object")
    try:
        recomputed = payload_hash(params)
    except CanonicalizationError as e:
        raise fail("BUNDLE_PAYLOAD_HASH_MISMATCH", f"the params cannot be hashed: {e}") from e
    if not canonical.digests_equal(recomputed, binding.payload_hash_b64u):
        raise fail(
            "BUNDLE_PAYLOAD_HASH_MISMATCH", "the params do not hash to the bound payload hash"
        )
    checks.append(f"params: payload hash recomputed from the exact parameters = {recomputed}")
    if binding.request_id != request["request_id"] or not canonical.digests_equal(
        binding.request_hash_b64u, require_text(request["request_hash_b64u"], "request_hash_b64u")
    ):
        raise fail("BUNDLE_REQUEST_HASH_MISMATCH", "the binding does not hash to the request hash")
    checks.append(f"binding: request hash recomputed (JCS) = {binding.request_hash_b64u}")
    checkpoint = _checkpoint(payload["checkpoint"], signer_did)
    checks.append(f"checkpoint: {checkpoint.origin} size {checkpoint.size} signed note verified")
    receipts = _receipts(payload["receipts"], checkpoint, signer_did, binding.request_hash_b64u)
    checks.append(
        f"receipts: {len(receipts)} signatures verified, {len(receipts)} inclusion proofs "
        f"against checkpoint size {checkpoint.size}"
    )
    try:
        state = RequestState(request["state"])
    except ValueError as e:
        raise fail("BUNDLE_MALFORMED", "payload.request.state is not a request state") from e
    final_reason = request.get("final_reason")
    if final_reason is not None and not isinstance(final_reason, str):
        raise fail("BUNDLE_MALFORMED", "payload.request.final_reason is not text")
    grant = payload.get("grant")
    if grant is not None and not isinstance(grant, Mapping):
        raise fail("BUNDLE_MALFORMED", "payload.grant is not an object")
    evidence = analyze(
        policy=policy,
        binding=binding,
        params=params,
        state=state,
        state_changed_at=require_time(request["state_changed_at"], "request.state_changed_at"),
        final_reason=final_reason,
        receipts=receipts,
        grant_envelope=grant,
        cst_scope_hash_b64u=payload.get("cst_scope_hash_b64u"),
        checkpoint=checkpoint,
        keyturn_did=signer_did,
        max_evidence_age=max_evidence_age,
    )
    checks += _evidence_checks(evidence)
    return evidence, pinned, checks


def _policy(
    payload: Mapping[str, Any], issuers: Collection[str] | None, now: datetime | None
) -> tuple[Policy, bool]:
    section = require_object(payload["policy"], "payload.policy", POLICY_SHAPE)
    wpc = section["wpc"]
    if not isinstance(wpc, Mapping):
        raise fail("BUNDLE_MALFORMED", "payload.policy.wpc is not a signed envelope")
    pinned = issuers is not None
    trusted = issuers if issuers is not None else [wpc.get("signer_did")]
    try:
        at = now or parse_iso(payload["sealed_at"])
        policy = verify_wpc(wpc, trusted_issuers=[t for t in trusted if isinstance(t, str)], now=at)
    except PolicyError as e:
        code = "BUNDLE_POLICY_UNTRUSTED" if e.reason_code == "POLICY_UNTRUSTED_ISSUER" else None
        raise fail(code or "BUNDLE_POLICY_INVALID", f"WPC: {e.reason_code}: {e.message}") from e
    if section["policy_hash_b64u"] != policy.policy_hash_b64u:
        raise fail("BUNDLE_POLICY_HASH_MISMATCH", "the WPC does not have the stated policy hash")
    return policy, pinned


def _checkpoint(section: object, signer_did: str) -> Checkpoint:
    fields = require_object(section, "payload.checkpoint", CHECKPOINT_SHAPE)
    origin = require_text(fields["origin"], "checkpoint.origin")
    try:
        checkpoint = verify_checkpoint(
            require_text(fields["signed_note"], "checkpoint.signed_note"),
            origin=origin,
            public_keys={origin: public_key_from_did(signer_did)},
        )
    except LogError as e:
        raise fail("BUNDLE_CHECKPOINT_INVALID", f"{e.reason_code}: {e.message}") from e
    if fields["size"] != checkpoint.size or fields["root_hash_b64u"] != canonical.b64u_encode(
        checkpoint.root_hash
    ):
        raise fail("BUNDLE_CHECKPOINT_MISMATCH", "size or root differs from the signed note")
    return checkpoint


def _receipts(
    section: object, checkpoint: Checkpoint, signer_did: str, request_hash: str
) -> list[tuple[int, Receipt]]:
    if not isinstance(section, Sequence) or isinstance(section, str) or not section:
        raise fail("BUNDLE_MALFORMED", "payload.receipts is a non-empty list")
    if len(section) > MAX_RECEIPTS:
        raise fail("BUNDLE_TOO_LARGE", f"a bundle holds at most {MAX_RECEIPTS} receipts")
    out: list[tuple[int, Receipt]] = []
    ids: set[str] = set()
    for position, item in enumerate(section):
        fields = require_object(item, f"payload.receipts[{position}]", RECEIPT_SHAPE)
        index = fields["index"]
        if type(index) is not int or index < 0:
            raise fail("BUNDLE_MALFORMED", f"payload.receipts[{position}].index is not an index")
        if out and index <= out[-1][0]:
            raise fail("BUNDLE_RECEIPTS_UNORDERED", "receipt indexes must strictly increase")
        envelope = fields["envelope"]
        try:
            receipt = verify_receipt(envelope, trusted_signers=[signer_did])
        except EnvelopeError as e:
            raise fail(
                "BUNDLE_RECEIPT_INVALID", f"receipt #{index}: {e.reason_code}: {e.message}"
            ) from e
        proof = _proof(fields["inclusion_proof"], index)
        try:
            leaf = leaf_hash(entry_bytes(envelope))
            verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root_hash)
        except (LogError, CanonicalizationError) as e:
            raise fail(
                "BUNDLE_INCLUSION_PROOF_INVALID",
                f"receipt #{index} is not in the log at checkpoint size {checkpoint.size}: "
                f"{e.message}",
            ) from e
        if receipt.request_hash_b64u != request_hash:
            raise fail("BUNDLE_RECEIPT_FOREIGN", f"receipt #{index} is about another request")
        if receipt.receipt_id in ids:
            raise fail("BUNDLE_RECEIPT_DUPLICATE", f"receipt id {receipt.receipt_id} repeats")
        ids.add(receipt.receipt_id)
        out.append((index, receipt))
    return out


def _proof(value: object, index: int) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise fail("BUNDLE_MALFORMED", f"receipt #{index}: inclusion_proof is a list of hashes")
    try:
        return [canonical.b64u_decode(h) for h in value]
    except CanonicalizationError as e:
        raise fail(
            "BUNDLE_INCLUSION_PROOF_INVALID", f"receipt #{index}: a proof hash is not base64url"
        ) from e


def _evidence_checks(e: Evidence) -> list[str]:
    rules = ", ".join(e.request.rule_ids)
    needs = ", ".join(q.name for q in e.request.requirements)
    checks = [
        f"policy decision: the exact call re-evaluated: gated by {rules}, needing {needs}",
        f"approvers: {len(e.decisions)} decisions, each independent of the requester, one per "
        "person, in time, on fresh directory evidence, eligible under the policy",
        "quorum: re-run on the decisions: "
        + (f"met at {to_iso(e.approved_at)}" if e.approved_at else "not met"),
    ]
    if e.grant is not None:
        checks.append(
            f"grant: {e.grant.grant_id} signature, bound to the request and payload hash, "
            "approvals = the approving decisions, minted after quorum, logged once"
        )
    if e.cst_scope_hash_b64u is not None:
        checks.append(f"token: CST scope hash {e.cst_scope_hash_b64u} pinned by the grant, logged")
    checks.append(
        f"gate: {len(e.gate_passes)} pass(es) with the granted payload while the grant was valid, "
        f"{len(e.gate_denials)} denial(s)"
    )
    checks.append(f"state: {e.request.state}, consistent with the receipts")
    return checks


def _outer_signature(envelope: Mapping[str, Any], signer_did: str, sealed_at: datetime) -> None:
    for name, code in (
        ("payload_hash_b64u", "BUNDLE_HASH_MISMATCH"),
        ("signature_b64u", "BUNDLE_SIGNATURE_INVALID"),
    ):
        try:
            canonical.b64u_decode(envelope[name])
        except CanonicalizationError as e:
            raise fail(code, f"{name} is not base64url") from e
    try:
        verify_envelope(
            envelope, now=sealed_at, expected_type=BUNDLE_TYPE, trusted_signers=[signer_did]
        )
    except EnvelopeError as e:
        mapped = {
            "HASH_MISMATCH": "BUNDLE_HASH_MISMATCH",
            "SIGNATURE_INVALID": "BUNDLE_SIGNATURE_INVALID",
        }.get(e.reason_code, "BUNDLE_MALFORMED")
        raise fail(mapped, f"{e.reason_code}: {e.message}") from e
