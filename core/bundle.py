"""Sealing proof bundles: everything needed to prove, offline, how a request ended.

When a request reaches a final state, the service forces a checkpoint of the receipt
log (so every receipt of the request is covered), seals the bundle with
:func:`seal_bundle`, stores it, and logs a ``bundle_sealed`` receipt naming it
(:func:`core.receipt_events.bundle_sealed`)::

    checkpoint = log.checkpoint(now)                       # and store it
    envelope = seal_bundle(request, wpc=wpc_envelope, receipts=logged, proofs=log,
                           checkpoint=checkpoint, signer=keyturn_key,
                           bundle_id=new_id(), now=now, grant=grant,
                           cst_scope_hash_b64u=token.scope_hash_b64u)
    write(bundle_bytes(envelope))

The bundle (a ``keyturn_proof_bundle`` envelope signed by keyturn) carries the WPC
envelope and its hash, the request binding and the exact params (sensitive ones too:
the payload hash can only be recomputed from them), the job token's scope hash, every
receipt of the request with its inclusion proof, the checkpoint they verify against,
the grant, and a human-readable summary. :func:`seal_bundle` runs the verifier's own
content checks before signing, so keyturn never seals a bundle it would refuse.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from core import canonical
from core.bundle_format import BUNDLE_TYPE, BUNDLE_VERSION, bundle_bytes, parse_bundle
from core.bundle_summary import summarize
from core.bundle_verify import BundleReport, verify_bundle, verify_contents
from core.checkpoint import Checkpoint
from core.envelope import encode_payload, sign_encoded
from core.errors import BundleError
from core.grants import Grant
from core.ports import Signer
from core.receipts import json_copy
from core.requests import ApprovalRequest
from core.times import parse_iso, to_iso, truncate_ms

__all__ = [
    "BUNDLE_TYPE",
    "BundleReport",
    "InclusionProofs",
    "bundle_bytes",
    "bundle_payload",
    "checked_bundle",
    "parse_bundle",
    "seal_bundle",
    "sign_bundle",
    "verify_bundle",
]


class InclusionProofs(Protocol):
    """Where inclusion proofs come from (``core.receipt_log.ReceiptLog`` is one)."""

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[bytes, ...]: ...


def bundle_payload(
    request: ApprovalRequest,
    *,
    wpc: Mapping[str, Any],
    receipts: Sequence[tuple[int, Mapping[str, Any]]],
    proofs: InclusionProofs,
    checkpoint: Checkpoint,
    bundle_id: str,
    sealed_at: datetime,
    grant: Grant | None = None,
    cst_scope_hash_b64u: str | None = None,
) -> dict[str, Any]:
    """The bundle payload without its summary, in field order (see :func:`seal_bundle`).

    Nothing is checked here beyond what building it needs; :func:`seal_bundle` is the
    way to make a bundle.

    Raises:
        BundleError: ``BUNDLE_STATE_INCONSISTENT`` for a request with no end time,
            ``BUNDLE_GRANT_INVALID`` for an unsigned grant, or
            ``BUNDLE_INCLUSION_PROOF_INVALID`` when a receipt is not covered by the
            checkpoint.
    """
    if request.state_changed_at is None:
        raise BundleError("BUNDLE_STATE_INCONSISTENT", "a final request records when it ended")
    if grant is not None and grant.envelope is None:
        raise BundleError("BUNDLE_GRANT_INVALID", "only a signed grant can be sealed")
    entries = []
    for index, envelope in sorted(receipts, key=lambda item: item[0]):
        if index >= checkpoint.size:
            raise BundleError(
                "BUNDLE_INCLUSION_PROOF_INVALID",
                f"receipt #{index} is not covered by the checkpoint of size {checkpoint.size}",
            )
        proof = proofs.inclusion_proof(index, checkpoint.size)
        entries.append(
            {
                "index": index,
                "envelope": json_copy(envelope),
                "inclusion_proof": [canonical.b64u_encode(h) for h in proof],
            }
        )
    b = request.binding
    request_section: dict[str, Any] = {
        "request_id": b.request_id,
        "request_hash_b64u": b.request_hash_b64u,
        "binding": b.to_json(),
        "params": json_copy(request.params),
        "state": str(request.state),
        "state_changed_at": to_iso(request.state_changed_at),
    }
    if request.final_reason is not None:
        request_section["final_reason"] = request.final_reason
    payload: dict[str, Any] = {
        "bundle_version": BUNDLE_VERSION,
        "bundle_id": bundle_id,
        "sealed_at": to_iso(sealed_at),
        "request": request_section,
        "policy": {"policy_hash_b64u": b.policy_hash_b64u, "wpc": json_copy(wpc)},
    }
    scope = cst_scope_hash_b64u
    if scope is None and grant is not None:
        scope = grant.cst_scope_hash_b64u
    if scope is None:
        scope = _logged_scope(receipts)
    if scope is not None:
        payload["cst_scope_hash_b64u"] = scope
    if grant is not None and grant.envelope is not None:
        payload["grant"] = json_copy(grant.envelope)
    payload["receipts"] = entries
    payload["checkpoint"] = {
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root_hash_b64u": canonical.b64u_encode(checkpoint.root_hash),
        "signed_note": checkpoint.signed_note,
    }
    return payload


def seal_bundle(
    request: ApprovalRequest,
    *,
    wpc: Mapping[str, Any],
    receipts: Sequence[tuple[int, Mapping[str, Any]]],
    proofs: InclusionProofs,
    checkpoint: Checkpoint,
    signer: Signer,
    bundle_id: str,
    now: datetime,
    grant: Grant | None = None,
    cst_scope_hash_b64u: str | None = None,
    trusted_policy_issuers: Collection[str] | None = None,
) -> dict[str, Any]:
    """Seal the proof bundle of a finished request.

    Three steps, each a function of its own so a service can run the middle one (the
    costly checks, plain data only) in another process: :func:`bundle_payload` (sealed
    at ``now`` to the millisecond, for a final request), :func:`checked_bundle`,
    :func:`sign_bundle`.

    Args:
        request: the request in its final state.
        wpc: the signed WPC envelope the request was decided under.
        receipts: every receipt envelope about the request with its log index.
        proofs: the log (or anything giving inclusion proofs at ``checkpoint.size``).
        checkpoint: a signed checkpoint covering every receipt's index.
        signer: keyturn's key (the one that signed the receipts, grant and checkpoint).
        bundle_id: the bundle's id.
        now: the sealing time.
        grant: the grant, if one was minted.
        cst_scope_hash_b64u: the job token's scope hash (default: the grant's pin, else
            the one scope hash the logged token receipts name).
        trusted_policy_issuers: as for :func:`~core.bundle_verify.verify_bundle`.

    Returns:
        the signed ``keyturn_proof_bundle`` envelope; write it with
        :func:`~core.bundle_format.bundle_bytes`.

    Raises:
        BundleError: ``BUNDLE_REQUEST_NOT_FINAL``, the refusals of
            :func:`bundle_payload`, or any refusal of the verifier's content checks
            (the bundle would not verify, so it is not sealed).
    """
    if not request.is_final():
        raise BundleError("BUNDLE_REQUEST_NOT_FINAL", f"request is {request.state}, not final")
    payload = bundle_payload(
        request,
        wpc=wpc,
        receipts=receipts,
        proofs=proofs,
        checkpoint=checkpoint,
        bundle_id=bundle_id,
        sealed_at=truncate_ms(now),
        grant=grant,
        cst_scope_hash_b64u=cst_scope_hash_b64u,
    )
    checked = checked_bundle(
        payload, signer_did=signer.did, trusted_policy_issuers=trusted_policy_issuers
    )
    return sign_bundle(checked, signer, sealed_at=payload["sealed_at"])


def checked_bundle(
    payload: Mapping[str, Any],
    *,
    signer_did: str,
    trusted_policy_issuers: Collection[str] | None = None,
) -> bytes:
    """Step two of :func:`seal_bundle`: run the verifier's content checks on an unsealed
    payload (as of its ``sealed_at``), add the summary, and encode the result: the exact
    bytes the bundle's signature will cover.

    Plain data in, bytes out, no key: the costly part of sealing, which may run in
    another process.

    Raises:
        BundleError: any refusal of the content checks (the bundle would not verify).
    """
    evidence, _, _ = verify_contents(
        payload,
        signer_did=signer_did,
        trusted_policy_issuers=trusted_policy_issuers,
        now=parse_iso(payload["sealed_at"]),
    )
    return encode_payload(BUNDLE_TYPE, {**payload, "summary": summarize(evidence)})


def sign_bundle(checked: bytes, signer: Signer, *, sealed_at: str) -> dict[str, Any]:
    """Step three of :func:`seal_bundle`: hash and sign the checked bundle's bytes,
    issued at ``sealed_at`` (the unsealed payload's, which the bytes carry too).

    Raises:
        EnvelopeError: ``MALFORMED_ENVELOPE`` when the bytes are not a JSON object.
    """
    return sign_encoded(BUNDLE_TYPE, checked, signer, issued_at=parse_iso(sealed_at))


def _logged_scope(receipts: Sequence[tuple[int, Mapping[str, Any]]]) -> str | None:
    """The scope hash of the tokens logged for the request, when they all share one."""
    scopes = {
        envelope["payload"]["details"].get("scope_hash_b64u")
        for _, envelope in receipts
        if isinstance(envelope.get("payload"), Mapping)
        and envelope["payload"].get("kind") in ("cst_minted", "breakglass_opened")
    }
    return scopes.pop() if len(scopes) == 1 else None
