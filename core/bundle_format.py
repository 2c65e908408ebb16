"""The proof bundle's wire format: constants, canonical bytes, strict parsing, shapes.

A bundle file is exactly :func:`bundle_bytes` of its envelope (emission-order JSON,
no whitespace), optionally followed by one newline; :func:`parse_bundle` refuses any
other spelling, so every byte of a bundle is significant. The field layout is
documented in ``manifests/schemas/keyturn-proof-bundle.schema.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from core import canonical
from core.bundle_evidence import fail
from core.errors import CanonicalizationError, KeyturnError
from core.times import parse_iso, to_iso

BUNDLE_TYPE = "keyturn_proof_bundle"
BUNDLE_VERSION = "1"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_RECEIPTS = 10_000
FUTURE_SKEW = timedelta(minutes=5)

ENVELOPE_FIELDS = (
    "envelope_version",
    "envelope_type",
    "payload",
    "payload_hash_b64u",
    "hash_algorithm",
    "signature_b64u",
    "algorithm",
    "signer_did",
    "issued_at",
)
PAYLOAD_SHAPE = (
    {"bundle_version", "bundle_id", "sealed_at", "request", "policy", "receipts"}
    | {"checkpoint", "summary"},
    {"cst_scope_hash_b64u", "grant"},
)
REQUEST_SHAPE = (
    {"request_id", "request_hash_b64u", "binding", "params", "state", "state_changed_at"},
    {"final_reason"},
)
POLICY_SHAPE = ({"policy_hash_b64u", "wpc"}, set[str]())
RECEIPT_SHAPE = ({"index", "envelope", "inclusion_proof"}, set[str]())
CHECKPOINT_SHAPE = ({"origin", "size", "root_hash_b64u", "signed_note"}, set[str]())


# --- bytes -------------------------------------------------------------------------------


def bundle_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The one byte form of a bundle: its emission-order JSON (what is written to disk).

    Raises:
        CanonicalizationError: the envelope has no canonical JSON form.
    """
    return canonical.emission(envelope)


def parse_bundle(unverified: bytes | str) -> dict[str, Any]:
    """Decode bundle bytes strictly: one JSON object, in its canonical byte form.

    Duplicate keys, NaN/Infinity and any second spelling of the same JSON (spaces,
    escapes, number forms) are refused, so every byte of a bundle file is significant.
    One trailing newline is allowed.

    Raises:
        BundleError: ``BUNDLE_TOO_LARGE``, ``BUNDLE_MALFORMED`` or ``BUNDLE_NOT_CANONICAL``.
    """
    data = unverified.encode("utf-8") if isinstance(unverified, str) else unverified
    if not isinstance(data, bytes):
        raise fail("BUNDLE_MALFORMED", "a bundle is JSON bytes or text")
    if len(data) > MAX_BUNDLE_BYTES:
        raise fail("BUNDLE_TOO_LARGE", f"a bundle is at most {MAX_BUNDLE_BYTES} bytes")
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_nan)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise fail("BUNDLE_MALFORMED", f"not a strict JSON document: {e}") from e
    if not isinstance(document, dict):
        raise fail("BUNDLE_MALFORMED", "a bundle is a JSON object")
    try:
        canonical_form = bundle_bytes(document)
    except CanonicalizationError as e:
        raise fail("BUNDLE_MALFORMED", e.message) from e
    if canonical_form != body:
        raise fail("BUNDLE_NOT_CANONICAL", "the bytes are not the bundle's canonical JSON")
    return document


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _nan(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- structure ---------------------------------------------------------------------------


def require_object(value: object, path: str, shape: tuple[set[str], set[str]]) -> Mapping[str, Any]:
    required, optional = shape
    if not isinstance(value, Mapping):
        raise fail("BUNDLE_MALFORMED", f"{path} is not an object")
    missing = required - set(value)
    unknown = set(value) - required - optional
    if missing or unknown:
        what = ", ".join([*(f"missing {m}" for m in sorted(missing)), *sorted(unknown)])
        raise fail("BUNDLE_MALFORMED", f"{path}: {what}")
    return value


def require_text(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise fail("BUNDLE_MALFORMED", f"{path} is not non-empty text")
    return value


def require_time(value: object, path: str) -> datetime:
    try:
        moment = parse_iso(value)
    except KeyturnError as e:
        raise fail("BUNDLE_MALFORMED", f"{path}: {e.message}") from e
    if to_iso(moment) != value:
        raise fail("BUNDLE_MALFORMED", f"{path} is not in keyturn's canonical time form")
    return moment
