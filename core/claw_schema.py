"""Schemas of the Claw payloads keyturn reads and writes, as plain checks.

The same rules as ``manifests/schemas/claw/*.json`` (kept in agreement by the tests),
written out so ``core`` needs no JSON Schema library: ``human_approval_receipt`` v1,
``gateway_receipt`` v1 (with its binding) and ``proof_bundle`` v1 as far as keyturn
verifies it. A failed check raises :class:`Refusal` carrying a Claw reason code
(``SCHEMA_VALIDATION_FAILED`` here), which :mod:`core.claw_verify` reports.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from core.errors import KeyturnError
from core.times import parse_iso

PROOF_BUNDLE_TYPE = "proof_bundle"
GATEWAY_RECEIPT_TYPE = "gateway_receipt"
HUMAN_APPROVAL_TYPE = "human_approval_receipt"
MAX_EVENTS = 1000
MAX_RECEIPTS = 1000
MAX_METADATA_BYTES = 16 * 1024
EVENT_FIELDS = (
    "event_id",
    "run_id",
    "event_type",
    "timestamp",
    "payload_hash_b64u",
    "prev_hash_b64u",
    "event_hash_b64u",
)

B64U = re.compile(r"\A[A-Za-z0-9_-]{8,}\Z")
DID = re.compile(r"\Adid:[a-z0-9]+:\S+\Z")
ENVELOPE_KEYS = frozenset(
    {
        "envelope_version",
        "envelope_type",
        "payload",
        "payload_hash_b64u",
        "hash_algorithm",
        "signature_b64u",
        "algorithm",
        "signer_did",
        "issued_at",
        "expires_at",
    }
)
BINDING_KEYS = frozenset(
    {
        "run_id",
        "event_hash_b64u",
        "nonce",
        "policy_hash",
        "token_scope_hash_b64u",
        "span_id",
        "parent_span_id",
        "tool_span_id",
    }
)
SPAN_KEYS = ("tool_span_id", "parent_span_id", "span_id")  # anchor preference order


class Refusal(Exception):
    """A payload check with its own reason code, carried out of verify_envelope's hook."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- payload schemas (the same rules as manifests/schemas/claw/*.json) -------------------


def _schema(ok: bool, message: str) -> None:
    if not ok:
        raise Refusal("SCHEMA_VALIDATION_FAILED", message)


def _fields(
    value: object, path: str, required: Collection[str], allowed: Collection[str]
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Refusal("SCHEMA_VALIDATION_FAILED", f"{path} is not an object")
    missing = set(required) - set(value)
    extra = set(value) - set(allowed) - set(required)
    _schema(not missing, f"{path} lacks {sorted(missing)}")
    _schema(not extra, f"{path} has unknown fields {sorted(extra)}")
    return value


def _string(value: object, path: str, *, pattern: re.Pattern[str] | None = None) -> None:
    if not isinstance(value, str) or not value:
        raise Refusal("SCHEMA_VALIDATION_FAILED", f"{path} is not non-empty text")
    if pattern is not None:
        _schema(bool(pattern.match(value)), f"{path} is not well formed")


def _timestamp(value: object, path: str) -> None:
    try:
        parse_iso(value)
    except KeyturnError as e:
        raise Refusal("SCHEMA_VALIDATION_FAILED", f"{path} is not a date-time") from e


def _count(value: object, path: str) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    _schema(ok, f"{path} is not an integer ≥ 0")


def _binding(value: object, path: str) -> None:
    binding = _fields(value, path, (), BINDING_KEYS)
    for key, item in binding.items():
        if key in ("event_hash_b64u", "token_scope_hash_b64u"):
            _string(item, f"{path}.{key}", pattern=B64U)
        elif key not in SPAN_KEYS:  # span ids are normalised by the causal checks
            _string(item, f"{path}.{key}")


def validate_human_approval(payload: object, path: str = "payload") -> None:
    """Schema of a ``human_approval_receipt`` v1 payload.

    Raises:
        Refusal: ``SCHEMA_VALIDATION_FAILED``.
    """
    p = _fields(
        payload,
        path,
        (
            "receipt_version",
            "receipt_id",
            "approval_type",
            "approver_subject",
            "agent_did",
            "scope_hash_b64u",
            "hash_algorithm",
            "timestamp",
        ),
        (
            "approver_method",
            "scope_summary",
            "policy_hash_b64u",
            "minted_capability_id",
            "minted_capability_ttl_seconds",
            "plan_hash_b64u",
            "evidence_required",
            "binding",
        ),
    )
    _schema(p["receipt_version"] == "1", f'{path}.receipt_version must be "1"')
    for key in ("receipt_id", "approver_subject", "agent_did", "scope_hash_b64u"):
        _string(p[key], f"{path}.{key}")
    _schema(
        p["approval_type"] in ("explicit_approve", "explicit_deny", "auto_approve", "timeout_deny"),
        f"{path}.approval_type is not a known approval type",
    )
    _schema(p["hash_algorithm"] == "SHA-256", f"{path}.hash_algorithm must be SHA-256")
    _timestamp(p["timestamp"], f"{path}.timestamp")
    if "approver_method" in p:
        _schema(
            p["approver_method"]
            in ("ui_click", "cli_confirm", "api_call", "policy_auto", "timeout"),
            f"{path}.approver_method is not a known method",
        )
    if "scope_summary" in p:
        _schema(
            isinstance(p["scope_summary"], str) and len(p["scope_summary"]) <= 1024,
            f"{path}.scope_summary",
        )
    for key in ("policy_hash_b64u", "minted_capability_id", "plan_hash_b64u"):
        if key in p:
            _schema(isinstance(p[key], str), f"{path}.{key} is not text")
    if "minted_capability_ttl_seconds" in p:
        ttl = p["minted_capability_ttl_seconds"]
        _schema(
            isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl >= 0, f"{path}.ttl"
        )
    if "evidence_required" in p:
        items = p["evidence_required"]
        _schema(
            isinstance(items, list) and all(isinstance(i, str) for i in items),
            f"{path}.evidence_required",
        )
    if "binding" in p:
        _binding(p["binding"], f"{path}.binding")


def validate_gateway_receipt(payload: object, path: str = "payload") -> None:
    """Schema of a ``gateway_receipt`` v1 payload.

    Raises:
        Refusal: ``SCHEMA_VALIDATION_FAILED``.
    """
    p = _fields(
        payload,
        path,
        (
            "receipt_version",
            "receipt_id",
            "gateway_id",
            "provider",
            "model",
            "request_hash_b64u",
            "response_hash_b64u",
            "tokens_input",
            "tokens_output",
            "latency_ms",
            "timestamp",
        ),
        ("binding", "metadata"),
    )
    _schema(p["receipt_version"] == "1", f'{path}.receipt_version must be "1"')
    for key in ("receipt_id", "gateway_id", "provider", "model"):
        _string(p[key], f"{path}.{key}")
    for key in ("request_hash_b64u", "response_hash_b64u"):
        _string(p[key], f"{path}.{key}", pattern=B64U)
    for key in ("tokens_input", "tokens_output", "latency_ms"):
        _count(p[key], f"{path}.{key}")
    _timestamp(p["timestamp"], f"{path}.timestamp")
    if "binding" in p:
        _binding(p["binding"], f"{path}.binding")
    if "metadata" in p:
        _schema(isinstance(p["metadata"], Mapping), f"{path}.metadata is not an object")


def _validate_envelope_shape(value: object, path: str, envelope_type: str) -> Mapping[str, Any]:
    e = _fields(value, path, ENVELOPE_KEYS - {"expires_at"}, {"expires_at"})
    _schema(e["envelope_type"] == envelope_type, f"{path} is not a {envelope_type}")
    return e


def validate_proof_bundle(payload: object) -> None:
    """Schema of a ``proof_bundle`` v1 payload, as far as keyturn verifies it.

    Raises:
        Refusal: ``SCHEMA_VALIDATION_FAILED``.
    """
    p = _fields(
        payload,
        "payload",
        ("bundle_version", "bundle_id", "agent_did"),
        ("event_chain", "receipts", "human_approval_receipts", "metadata"),
    )
    _schema(p["bundle_version"] == "1", 'payload.bundle_version must be "1"')
    _string(p["bundle_id"], "payload.bundle_id")
    _schema(
        isinstance(p["agent_did"], str) and p["agent_did"].startswith("did:"), "payload.agent_did"
    )
    for key in ("event_chain", "receipts", "human_approval_receipts"):
        if key in p:
            _schema(
                isinstance(p[key], list) and len(p[key]) >= 1, f"payload.{key} is a non-empty list"
            )
    for i, event in enumerate(p.get("event_chain", ())):
        e = _fields(event, f"payload.event_chain[{i}]", EVENT_FIELDS, ())
        for key in ("event_id", "run_id", "event_type"):
            _string(e[key], f"payload.event_chain[{i}].{key}")
        _timestamp(e["timestamp"], f"payload.event_chain[{i}].timestamp")
        for key in ("payload_hash_b64u", "event_hash_b64u"):
            _string(e[key], f"payload.event_chain[{i}].{key}", pattern=B64U)
        prev = e["prev_hash_b64u"]
        _schema(
            prev is None or (isinstance(prev, str) and bool(B64U.match(prev))),
            f"payload.event_chain[{i}].prev_hash_b64u",
        )
    for i, receipt in enumerate(p.get("receipts", ())):
        envelope = _validate_envelope_shape(receipt, f"payload.receipts[{i}]", GATEWAY_RECEIPT_TYPE)
        validate_gateway_receipt(envelope["payload"], f"payload.receipts[{i}].payload")
    for i, approval in enumerate(p.get("human_approval_receipts", ())):
        validate_human_approval(approval, f"payload.human_approval_receipts[{i}]")
    if "metadata" in p:
        _schema(isinstance(p["metadata"], Mapping), "payload.metadata is not an object")
