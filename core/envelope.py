"""Signed envelopes: the one container for every piece of evidence keyturn signs.

Format (CLAW_FORMATS.md): ``envelope_version`` "1", ``envelope_type``, ``payload``,
``payload_hash_b64u``, ``hash_algorithm`` "SHA-256", ``signature_b64u``, ``algorithm``
"Ed25519", ``signer_did``, ``issued_at``, optional ``expires_at``. The signature covers
the UTF-8 bytes of the ``payload_hash_b64u`` *string*. The payload hash is the
emission-order hash, except for Work Policy Contracts, whose payload hash is the JCS
``policy_hash_b64u``.

Verification follows the reference verifier's order, first failure wins, and then
adds keyturn's own checks (expected type, trusted signer). Unlike the reference, a
bare unsigned payload is never accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import canonical
from core.errors import CanonicalizationError, EnvelopeError, InvalidDidError, KeyturnError
from core.keys import public_key_from_did, verify_signature
from core.ports import Signer
from core.times import parse_iso, require_aware, to_iso

WPC_TYPE = "work_policy_contract"

#: Envelope types keyturn understands: the Claw evidence types and keyturn's own.
KNOWN_TYPES = frozenset(
    {
        WPC_TYPE,
        "human_approval_receipt",
        "proof_bundle",
        "gateway_receipt",
        "tool_receipt",
        "side_effect_receipt",
        "keyturn_receipt",
        "keyturn_grant",
        "keyturn_proof_bundle",
        "keyturn_webhook_call",
    }
)

_REQUIRED = (
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
_ALLOWED = frozenset((*_REQUIRED, "expires_at"))
_DID_FORMAT = re.compile(r"\Adid:key:z[1-9A-HJ-NP-Za-km-z]+\Z")


def payload_hash(envelope_type: str, payload: Mapping[str, Any]) -> str:
    """The ``payload_hash_b64u`` an envelope of this type must carry for ``payload``."""
    if envelope_type == WPC_TYPE:
        return canonical.jcs_sha256_b64u(payload)
    return canonical.emission_sha256_b64u(payload)


def sign_envelope(
    envelope_type: str,
    payload: Mapping[str, Any],
    signer: Signer,
    *,
    issued_at: datetime,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """Build and sign an envelope around ``payload`` (hashed exactly as shipped).

    Raises:
        EnvelopeError: ``UNKNOWN_ENVELOPE_TYPE`` for a type keyturn does not know.
        CanonicalizationError: the payload has no canonical JSON form.
    """
    encoded = encode_payload(envelope_type, payload)
    return sign_encoded(envelope_type, encoded, signer, issued_at=issued_at, expires_at=expires_at)


def encode_payload(envelope_type: str, payload: Mapping[str, Any]) -> bytes:
    """The bytes an envelope of ``envelope_type`` hashes for ``payload`` (JCS for a WPC,
    JSON.stringify order otherwise): the costly half of :func:`sign_envelope`, which
    needs no key.

    Raises:
        EnvelopeError: ``UNKNOWN_ENVELOPE_TYPE`` for a type keyturn does not know.
        CanonicalizationError: the payload has no canonical JSON form.
    """
    if envelope_type not in KNOWN_TYPES:
        raise EnvelopeError("UNKNOWN_ENVELOPE_TYPE", f"unknown envelope type {envelope_type!r}")
    return canonical.jcs(payload) if envelope_type == WPC_TYPE else canonical.emission(payload)


def sign_encoded(
    envelope_type: str,
    encoded: bytes,
    signer: Signer,
    *,
    issued_at: datetime,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """Sign an envelope whose payload is ``encoded`` (from :func:`encode_payload`): the
    hash is taken here, over exactly these bytes.

    Raises:
        EnvelopeError: ``UNKNOWN_ENVELOPE_TYPE``; ``MALFORMED_ENVELOPE`` when the bytes
            are not a JSON object.
    """
    if envelope_type not in KNOWN_TYPES:
        raise EnvelopeError("UNKNOWN_ENVELOPE_TYPE", f"unknown envelope type {envelope_type!r}")
    # The payload shipped is decoded from the very bytes that were hashed: a private
    # copy (a later edit of the caller's dict cannot change what was signed), and
    # exactly what a verifier re-encodes. Decoding is several times faster than a deep
    # copy of a bundle-sized payload.
    try:
        shipped = json.loads(encoded)
    except ValueError as e:
        raise EnvelopeError("MALFORMED_ENVELOPE", f"the payload is not JSON: {e}") from e
    if not isinstance(shipped, dict):
        raise EnvelopeError("MALFORMED_ENVELOPE", "the payload is not a JSON object")
    digest = canonical.sha256_b64u(encoded)
    envelope: dict[str, Any] = {
        "envelope_version": "1",
        "envelope_type": envelope_type,
        "payload": shipped,
        "payload_hash_b64u": digest,
        "hash_algorithm": "SHA-256",
        "signature_b64u": canonical.b64u_encode(signer.sign(digest.encode("ascii"))),
        "algorithm": "Ed25519",
        "signer_did": signer.did,
        "issued_at": to_iso(issued_at),
    }
    if expires_at is not None:
        envelope["expires_at"] = to_iso(expires_at)
    return envelope


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """An envelope whose hash and signature have been checked (built by :func:`verify_envelope`)."""

    envelope_type: str
    payload: Mapping[str, Any]
    payload_hash_b64u: str
    signer_did: str
    issued_at: datetime
    expires_at: datetime | None
    raw: Mapping[str, Any]


def verify_envelope(
    unverified: object,
    *,
    now: datetime,
    expected_type: str | None = None,
    trusted_signers: Collection[str] | None = None,
    validate_payload: Callable[[Mapping[str, Any]], None] | None = None,
) -> VerifiedEnvelope:
    """Verify a signed envelope, in the reference verifier's order.

    Args:
        unverified: the decoded JSON object as received (key order preserved).
        now: the instant at which ``expires_at`` is judged.
        expected_type: refuse any other ``envelope_type``.
        trusted_signers: when given, the signer DID must be one of these.
        validate_payload: schema check; any exception it raises becomes
            ``SCHEMA_VALIDATION_FAILED``.

    Raises:
        EnvelopeError: with the first failing check's reason code.
    """
    now = require_aware(now)
    if not isinstance(unverified, Mapping) or any(k not in unverified for k in _REQUIRED):
        raise EnvelopeError("MALFORMED_ENVELOPE", "envelope is missing required fields")
    env = unverified
    if set(env) - _ALLOWED:
        extra = ", ".join(sorted(set(env) - _ALLOWED))
        raise EnvelopeError("MALFORMED_ENVELOPE", f"envelope has unknown fields: {extra}")
    if not isinstance(env["payload"], Mapping):
        raise EnvelopeError("MALFORMED_ENVELOPE", "envelope payload is not an object")
    if env["envelope_version"] != "1":
        raise EnvelopeError("UNKNOWN_ENVELOPE_VERSION", 'envelope_version must be "1"')
    envelope_type = env["envelope_type"]
    if envelope_type not in KNOWN_TYPES:
        raise EnvelopeError("UNKNOWN_ENVELOPE_TYPE", f"unknown envelope type {envelope_type!r}")
    if expected_type is not None and envelope_type != expected_type:
        raise EnvelopeError(
            "UNEXPECTED_ENVELOPE_TYPE", f"expected a {expected_type}, got a {envelope_type}"
        )
    if env["algorithm"] != "Ed25519":
        raise EnvelopeError("UNKNOWN_ALGORITHM", "only Ed25519 signatures are accepted")
    if env["hash_algorithm"] != "SHA-256":
        raise EnvelopeError("UNKNOWN_HASH_ALGORITHM", "only SHA-256 payload hashes are accepted")
    signer_did = env["signer_did"]
    if not isinstance(signer_did, str) or not _DID_FORMAT.match(signer_did):
        raise EnvelopeError("INVALID_DID_FORMAT", "signer_did is not a did:key")
    try:
        issued_at = parse_iso(env["issued_at"])
        expires_at = parse_iso(env["expires_at"]) if "expires_at" in env else None
    except KeyturnError as e:
        raise EnvelopeError("MALFORMED_ENVELOPE", e.message) from e
    if expires_at is not None and expires_at <= now:
        raise EnvelopeError("EXPIRED_TTL", f"envelope expired at {to_iso(expires_at)}")
    claimed_hash = env["payload_hash_b64u"]
    try:
        signature = canonical.b64u_decode(env["signature_b64u"])
        if len(canonical.b64u_decode(claimed_hash)) != 32:
            raise CanonicalizationError(message="payload hash is not 32 bytes")
    except CanonicalizationError as e:
        raise EnvelopeError("MALFORMED_ENVELOPE", "hash or signature is not base64url") from e
    if validate_payload is not None:
        try:
            validate_payload(env["payload"])
        except Exception as e:
            raise EnvelopeError("SCHEMA_VALIDATION_FAILED", f"payload schema: {e}") from e
    try:
        recomputed = payload_hash(envelope_type, env["payload"])
    except CanonicalizationError as e:
        raise EnvelopeError("HASH_MISMATCH", "payload cannot be hashed canonically") from e
    if not canonical.digests_equal(recomputed, claimed_hash):
        raise EnvelopeError("HASH_MISMATCH", "payload does not match payload_hash_b64u")
    try:
        public_key = public_key_from_did(signer_did)
    except InvalidDidError as e:
        raise EnvelopeError("INVALID_DID_FORMAT", e.message) from e
    if not verify_signature(public_key, claimed_hash.encode("ascii"), signature):
        raise EnvelopeError("SIGNATURE_INVALID", "signature does not verify for signer_did")
    if trusted_signers is not None and signer_did not in trusted_signers:
        raise EnvelopeError("UNTRUSTED_SIGNER", f"{signer_did} is not a trusted signer")
    return VerifiedEnvelope(
        envelope_type=envelope_type,
        payload=env["payload"],
        payload_hash_b64u=claimed_hash,
        signer_did=signer_did,
        issued_at=issued_at,
        expires_at=expires_at,
        raw=env,
    )
