"""Receipts: one signed statement per event, the entries of keyturn's receipt log.

A receipt is a ``keyturn_receipt`` signed envelope (:mod:`core.envelope`) signed with
keyturn's key, with ``issued_at`` equal to the payload's ``timestamp``. Its payload::

    receipt_version     "1"
    receipt_id          unique id chosen by the caller
    kind                one of :class:`ReceiptKind`
    timestamp           when the event happened (RFC 3339, milliseconds, UTC)
    actor               who caused it: a directory object id, an agent DID, or "keyturn"
    actor_name          optional display name (for the security feed)
    policy_hash_b64u    the policy in force
    request_id, request_hash_b64u, job_id, tool_route
                        the request it is about (absent for a policy activation, and
                        for a gate refusal of a grant that did not verify)
    details             kind-specific facts (below)

Receipts never carry secrets: tokens appear as the hex SHA-256 of their compact form
(``token_hash_hex``), never as text, and :class:`Receipt` refuses any detail that looks
like a compact JWS or is named like a secret. Parameters are not in receipts at all:
the payload hash binds them (the proof bundle carries them).

Details by kind (all times RFC 3339):

=====================  ==========================================================
request_created        ``binding`` (the request binding, whose JCS hash is the request
                       hash), ``call`` (route, requester, context… without params),
                       ``requirements`` (names), ``rule_ids``, ``sensitive_params``
approval / denial      ``decision`` (the approver's decision with its eligibility
                       evidence), ``decision_hash_b64u``
expiry                 ``reason``
cancellation           ``reason`` (optional)
grant_minted           ``grant_id``, ``expires_at``, ``approvals``,
                       ``grant_envelope_hash_b64u`` (emission hash of the whole envelope),
                       ``cst_scope_hash_b64u`` (optional)
cst_minted             ``token_hash_hex``, ``jti``, ``token_kind``, ``subject``, ``scope``,
                       ``scope_hash_b64u``, ``expires_at``
cst_revoked            ``token_hash_hex``, ``reason``
gate_passed            ``grant_id``, ``payload_hash_b64u``, ``token_hash_hex``
gate_denied            ``reason_code``, optional ``grant_id``, ``payload_hash_b64u``
breakglass_*           ``token_hash_hex`` / ``until`` / ``reason`` / ``step``…
policy_activated       ``policy_id``, optional ``previous_policy_hash_b64u``
bundle_sealed          ``bundle_id``, ``bundle_hash_b64u``
executor_step          ``executor``, ``step`` (execute, verify, rollback, verify_rollback,
                       resolve), ``outcome`` (ok/failed), ``state`` (after the step),
                       ``attempts``, ``detail``, optional ``status``, ``reference``,
                       ``payload_hash_b64u`` (see :mod:`core.executor`)
=====================  ==========================================================

One constructor per event lives in :mod:`core.receipt_events`. Approvals and denials
are also emitted as Claw ``human_approval_receipt`` v1 payloads
(:func:`core.claw.human_approval_payload`), signed with ``issued_at`` = their timestamp.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from core import canonical
from core.envelope import sign_envelope, verify_envelope
from core.errors import EnvelopeError, KeyturnError, StoreError
from core.ports import Signer
from core.quorum import ApproverDecision, Verdict
from core.records import decision_from_record
from core.times import parse_iso, to_iso, truncate_ms

RECEIPT_TYPE = "keyturn_receipt"
RECEIPT_VERSION = "1"
#: The actor of events keyturn causes by itself (expiry, minting, sealing).
SYSTEM_ACTOR = "keyturn"


class ReceiptKind(StrEnum):
    POLICY_ACTIVATED = "policy_activated"
    REQUEST_CREATED = "request_created"
    APPROVAL = "approval"
    DENIAL = "denial"
    EXPIRY = "expiry"
    CANCELLATION = "cancellation"
    GRANT_MINTED = "grant_minted"
    CST_MINTED = "cst_minted"
    CST_REVOKED = "cst_revoked"
    GATE_PASSED = "gate_passed"
    GATE_DENIED = "gate_denied"
    BREAKGLASS_OPENED = "breakglass_opened"
    BREAKGLASS_EXPIRED = "breakglass_expired"
    BREAKGLASS_REVOKED = "breakglass_revoked"
    BREAKGLASS_ROLLED_BACK = "breakglass_rolled_back"
    BUNDLE_SEALED = "bundle_sealed"
    EXECUTOR_STEP = "executor_step"
    RECONCILE_FINDING = "reconcile_finding"


_PAYLOAD_FIELDS = (
    "receipt_version",
    "receipt_id",
    "kind",
    "timestamp",
    "actor",
    "actor_name",
    "policy_hash_b64u",
    "request_id",
    "request_hash_b64u",
    "job_id",
    "tool_route",
    "details",
)
_REQUEST_FIELDS = ("request_id", "request_hash_b64u", "job_id", "tool_route")
# Events that may happen outside any request: a policy change, a gate refusal of a
# grant that did not verify (so no request can be trusted from it), a reconciliation
# finding (someone holds a watched role or group that no request granted).
_REQUEST_OPTIONAL = frozenset({"policy_activated", "gate_denied", "reconcile_finding"})
# A compact JWS: three base64url segments, the first a JSON header ("eyJ" = '{"').
_COMPACT_JWS = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
_SECRET_NAMES = re.compile(r"(?i)(?:^|_)(?:token|compact|secret|password|seed|private_key)$")


@dataclass(frozen=True, slots=True)
class Receipt:
    """One event, before signing or after verification.

    Raises (from ``__post_init__``):
        ValueError: a missing field, an unknown kind, a bad hash, or a detail that
            looks like a secret (a compact token, or a key named ``token``/``secret``…).
    """

    kind: ReceiptKind
    receipt_id: str
    timestamp: datetime
    actor: str
    policy_hash_b64u: str
    actor_name: str | None = None
    request_id: str | None = None
    request_hash_b64u: str | None = None
    job_id: str | None = None
    tool_route: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ReceiptKind(self.kind))
        object.__setattr__(self, "timestamp", truncate_ms(self.timestamp))
        for name in ("receipt_id", "actor"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"a receipt needs a {name}")
        if not canonical.is_sha256_b64u(self.policy_hash_b64u):
            raise ValueError("policy_hash_b64u is not a base64url SHA-256")
        if self.request_hash_b64u is not None and not canonical.is_sha256_b64u(
            self.request_hash_b64u
        ):
            raise ValueError("request_hash_b64u is not a base64url SHA-256")
        present = [getattr(self, n) is not None for n in _REQUEST_FIELDS]
        if any(present) and not all(present):
            raise ValueError("a receipt names all of its request's fields or none")
        if not any(present) and self.kind not in _REQUEST_OPTIONAL:
            raise ValueError(f"a {self.kind} receipt names its request")
        if not isinstance(self.details, Mapping):
            raise ValueError("details is a JSON object")
        # A private copy: a caller editing its dict later must not change a receipt.
        object.__setattr__(self, "details", json_copy(self.details))
        _refuse_secrets(self.details, "details")

    @property
    def is_about_request(self) -> bool:
        return self.request_hash_b64u is not None

    def to_payload(self) -> dict[str, Any]:
        """The payload in emission order, absent optional fields omitted."""
        data: dict[str, Any] = {
            "receipt_version": RECEIPT_VERSION,
            "receipt_id": self.receipt_id,
            "kind": str(self.kind),
            "timestamp": to_iso(self.timestamp),
            "actor": self.actor,
        }
        if self.actor_name is not None:
            data["actor_name"] = self.actor_name
        data["policy_hash_b64u"] = self.policy_hash_b64u
        for name in _REQUEST_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        data["details"] = json_copy(self.details)
        return data


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value with tuples as lists (what the wire will hold)."""
    if isinstance(value, Mapping):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_copy(v) for v in value]
    return value


def _refuse_secrets(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_NAMES.search(key):
                raise ValueError(f"{path}.{key}: receipts never carry secrets or raw tokens")
            _refuse_secrets(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_secrets(item, f"{path}[{index}]")
    elif isinstance(value, str) and _COMPACT_JWS.search(value):
        raise ValueError(f"{path}: looks like a raw token; log its token_hash_hex instead")


# --- signing and verifying --------------------------------------------------------------


def sign_receipt(receipt: Receipt, signer: Signer) -> dict[str, Any]:
    """The signed ``keyturn_receipt`` envelope; ``issued_at`` is the receipt's timestamp.

    Raises:
        CanonicalizationError: a detail has no canonical JSON form.
    """
    return sign_envelope(RECEIPT_TYPE, receipt.to_payload(), signer, issued_at=receipt.timestamp)


def entry_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The bytes the receipt log stores for an envelope: its emission-order JSON (UTF-8).

    The log's leaf hash is ``SHA-256(0x00 ‖ entry_bytes)``. Emission order keeps the
    key order the envelope was built (or received) in, so a verifier that re-serializes
    a parsed envelope gets these exact bytes back.

    Raises:
        CanonicalizationError: the envelope has no canonical JSON form.
    """
    return canonical.emission(envelope)


def verify_receipt(
    unverified: object, *, trusted_signers: Collection[str], now: datetime | None = None
) -> Receipt:
    """Verify a ``keyturn_receipt`` envelope and rebuild its :class:`Receipt`.

    ``now`` defaults to the envelope's own ``issued_at``: receipts do not expire, and a
    log is verified long after it was written.

    Raises:
        EnvelopeError: the envelope's reason code (``HASH_MISMATCH``,
            ``SIGNATURE_INVALID``, ``UNTRUSTED_SIGNER``…), ``SCHEMA_VALIDATION_FAILED``
            for a payload that is not a receipt, or ``RECEIPT_TIME_MISMATCH`` when
            ``issued_at`` is not the receipt's timestamp.
    """
    if not trusted_signers:
        raise EnvelopeError("UNTRUSTED_SIGNER", "no trusted receipt signers were given")
    at = now
    if at is None:
        at = _issued_at_or_epoch(unverified)
    verified = verify_envelope(
        unverified,
        now=at,
        expected_type=RECEIPT_TYPE,
        trusted_signers=trusted_signers,
        validate_payload=_validate_payload,
    )
    receipt = receipt_from_payload(verified.payload)
    if verified.issued_at != receipt.timestamp:
        raise EnvelopeError("RECEIPT_TIME_MISMATCH", "a receipt's issued_at must be its timestamp")
    return receipt


def _issued_at_or_epoch(unverified: object) -> datetime:
    if isinstance(unverified, Mapping):
        try:
            return parse_iso(unverified.get("issued_at"))
        except KeyturnError:
            pass
    # Malformed: verify_envelope reports it; any instant will do for the expiry check.
    return parse_iso("1970-01-01T00:00:00Z")


def _validate_payload(payload: Mapping[str, Any]) -> None:
    receipt_from_payload(payload)


def receipt_from_payload(payload: Mapping[str, Any]) -> Receipt:
    """Rebuild a receipt from its payload, refusing unknown or missing fields.

    Raises:
        ValueError: the payload is not a version-1 keyturn receipt.
    """
    if not isinstance(payload, Mapping):
        raise ValueError("a receipt payload is a JSON object")
    unknown = set(payload) - set(_PAYLOAD_FIELDS)
    if unknown:
        raise ValueError(f"unknown receipt fields: {sorted(unknown)}")
    if payload.get("receipt_version") != RECEIPT_VERSION:
        raise ValueError('receipt_version must be "1"')
    for name in ("receipt_id", "kind", "timestamp", "actor", "policy_hash_b64u"):
        if not isinstance(payload.get(name), str):
            raise ValueError(f"{name} is missing")
    for name in ("actor_name", *_REQUEST_FIELDS):
        if name in payload and not isinstance(payload[name], str):
            raise ValueError(f"{name} must be text")
    if "details" not in payload or not isinstance(payload["details"], Mapping):
        raise ValueError("details must be a JSON object")
    try:
        kind = ReceiptKind(payload["kind"])
        timestamp = parse_iso(payload["timestamp"])
    except (ValueError, KeyturnError) as e:
        raise ValueError(f"bad kind or timestamp: {e}") from e
    receipt = Receipt(
        kind=kind,
        receipt_id=payload["receipt_id"],
        timestamp=timestamp,
        actor=payload["actor"],
        actor_name=payload.get("actor_name"),
        policy_hash_b64u=payload["policy_hash_b64u"],
        request_id=payload.get("request_id"),
        request_hash_b64u=payload.get("request_hash_b64u"),
        job_id=payload.get("job_id"),
        tool_route=payload.get("tool_route"),
        details=payload["details"],
    )
    if to_iso(receipt.timestamp) != payload["timestamp"]:
        raise ValueError("timestamp is not in keyturn's canonical form (UTC, milliseconds)")
    return receipt


def decisions_of(receipts: Sequence[Receipt]) -> list[ApproverDecision]:
    """The decisions recorded in approval and denial receipts, in receipt order.

    Raises:
        ValueError: a decision record is malformed or its hash is not the recorded one.
    """
    out: list[ApproverDecision] = []
    for receipt in receipts:
        if receipt.kind not in (ReceiptKind.APPROVAL, ReceiptKind.DENIAL):
            continue
        record = receipt.details.get("decision")
        if not isinstance(record, Mapping):
            raise ValueError(f"receipt {receipt.receipt_id} carries no decision")
        try:
            decision = decision_from_record(record)
        except StoreError as e:
            raise ValueError(f"receipt {receipt.receipt_id}: {e.message}") from e
        if decision.to_json() != json_copy(record):
            raise ValueError(f"receipt {receipt.receipt_id}: the decision record is not canonical")
        if receipt.details.get("decision_hash_b64u") != decision.decision_hash_b64u:
            raise ValueError(f"receipt {receipt.receipt_id}: decision hash mismatch")
        approve = decision.verdict is Verdict.APPROVE
        expected = ReceiptKind.APPROVAL if approve else ReceiptKind.DENIAL
        if receipt.kind is not expected or receipt.actor != decision.approver_id:
            raise ValueError(
                f"receipt {receipt.receipt_id}: its kind or actor disagrees with its decision"
            )
        out.append(decision)
    return out
