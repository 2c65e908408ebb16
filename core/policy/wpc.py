"""Signed Work Policy Contracts: sign, verify, load.

A WPC travels as a signed envelope of type ``work_policy_contract`` whose
``payload_hash_b64u`` is the payload's JCS hash, i.e. the ``policy_hash_b64u``
(:mod:`core.envelope` does the hashing and signature). keyturn accepts a WPC only when:

1. the envelope verifies (hash, signature, DID, no ``expires_at``): else the
   envelope's reason code (``HASH_MISMATCH``, ``SIGNATURE_INVALID``,
   ``MALFORMED_ENVELOPE``…) raised as :class:`~core.errors.PolicyError`;
2. the signer is a trusted issuer: else ``POLICY_UNTRUSTED_ISSUER``;
3. the signer is the payload's ``issuer_did``: else ``POLICY_UNTRUSTED_ISSUER``;
4. the payload is a valid policy: else ``POLICY_INVALID``.

A bare (unsigned) payload is accepted only by :func:`load_policy_document` with
``trusted_issuers=None``, the mode used by ``keyturn policy hash|check`` and tests;
anywhere a trust list is given, an unsigned policy is ``POLICY_UNSIGNED``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from core import canonical
from core.envelope import WPC_TYPE, sign_envelope, verify_envelope
from core.errors import EnvelopeError, PolicyError
from core.policy.model import JSON
from core.policy.policy import Policy, policy_from_payload
from core.ports import Signer

_ENVELOPE_KEYS = frozenset(
    {"envelope_version", "envelope_type", "payload_hash_b64u", "signature_b64u", "signer_did"}
)


def sign_wpc(payload: Mapping[str, JSON], signer: Signer, *, issued_at: datetime) -> dict[str, Any]:
    """Sign a policy payload as a WPC envelope.

    The payload is validated first: keyturn never signs a policy it would refuse.

    Raises:
        PolicyError: ``POLICY_INVALID`` for an invalid payload;
            ``POLICY_UNTRUSTED_ISSUER`` when the signer is not the payload's ``issuer_did``.
    """
    policy = policy_from_payload(payload)
    if policy.issuer_did != signer.did:
        raise PolicyError(
            "POLICY_UNTRUSTED_ISSUER",
            f"the payload names issuer {policy.issuer_did}, but the signing key is {signer.did}",
        )
    # Sign a private deep copy: the envelope must not share nested objects with the
    # caller's dict (core.envelope copies only the top level), or a later edit of the
    # caller's dict would silently change a signed envelope.
    return sign_envelope(WPC_TYPE, policy.payload, signer, issued_at=issued_at)


def verify_wpc(
    unverified_envelope: Mapping[str, JSON], *, trusted_issuers: Collection[str], now: datetime
) -> Policy:
    """Verify a signed WPC envelope and compile its policy.

    Raises:
        PolicyError: the envelope's reason code when it does not verify;
            ``POLICY_UNTRUSTED_ISSUER`` for an empty trust list, an untrusted signer or
            a signer other than ``issuer_did``; ``POLICY_INVALID`` for a bad payload;
            ``POLICY_HASH_MISMATCH`` if the policy hash and the envelope disagree.
    """
    if isinstance(trusted_issuers, str):
        raise TypeError("trusted_issuers is a collection of DIDs, not one string")
    if not trusted_issuers:
        raise PolicyError("POLICY_UNTRUSTED_ISSUER", "no trusted WPC issuers are configured")
    if isinstance(unverified_envelope, Mapping) and "expires_at" in unverified_envelope:
        raise PolicyError("MALFORMED_ENVELOPE", "a WPC envelope has no expires_at")
    try:
        verified = verify_envelope(unverified_envelope, now=now, expected_type=WPC_TYPE)
    except EnvelopeError as e:
        raise PolicyError(e.reason_code, e.message) from e
    if verified.signer_did not in trusted_issuers:
        raise PolicyError(
            "POLICY_UNTRUSTED_ISSUER", f"{verified.signer_did} is not a trusted WPC issuer"
        )
    issuer = verified.payload.get("issuer_did")
    if issuer != verified.signer_did:
        raise PolicyError(
            "POLICY_UNTRUSTED_ISSUER",
            f"the WPC was signed by {verified.signer_did} but names issuer {issuer!r}",
        )
    policy = policy_from_payload(verified.payload)
    if not canonical.digests_equal(policy.policy_hash_b64u, verified.payload_hash_b64u):
        raise PolicyError("POLICY_HASH_MISMATCH", "the envelope does not carry this policy's hash")
    return policy


def is_envelope(document: Mapping[str, JSON]) -> bool:
    """True when ``document`` looks like a signed envelope rather than a bare payload."""
    return any(k in document for k in _ENVELOPE_KEYS)


def load_policy_document(
    unverified: Mapping[str, JSON], *, trusted_issuers: Collection[str] | None, now: datetime
) -> Policy:
    """Load a policy from a signed WPC envelope, or from a bare payload when allowed.

    Args:
        unverified: the decoded document.
        trusted_issuers: DIDs whose WPCs are accepted. ``None`` means "no trust list":
            a bare payload is then accepted as is, and an envelope must still verify
            with its own signer as the issuer.

    Raises:
        PolicyError: ``POLICY_UNSIGNED`` for a bare payload when a trust list is
            given, and everything :func:`verify_wpc` and :func:`policy_from_payload` raise.
    """
    if not isinstance(unverified, Mapping):
        raise PolicyError("POLICY_INVALID", "a policy document is a JSON object")
    if is_envelope(unverified):
        if trusted_issuers is None:
            signer = unverified.get("signer_did")
            trusted: Collection[str] = [signer] if isinstance(signer, str) and signer else []
            if not trusted:
                raise PolicyError("MALFORMED_ENVELOPE", "envelope has no signer_did")
            return verify_wpc(unverified, trusted_issuers=trusted, now=now)
        return verify_wpc(unverified, trusted_issuers=trusted_issuers, now=now)
    if trusted_issuers is not None:
        raise PolicyError(
            "POLICY_UNSIGNED", "a signed WPC envelope is required, not a bare payload"
        )
    return policy_from_payload(unverified)


def parse_policy_json(text: str | bytes) -> dict[str, JSON]:
    """Decode a policy document, refusing what different JSON parsers read differently.

    Duplicate keys (one parser keeps the first, another the last), NaN and Infinity are
    refused, so the bytes that were reviewed mean one thing only.

    Raises:
        PolicyError: ``POLICY_INVALID`` for text that is not such a JSON object.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        document = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise PolicyError("POLICY_INVALID", f"not a JSON document: {e}") from e
    if not isinstance(document, dict):
        raise PolicyError("POLICY_INVALID", "a policy document is a JSON object")
    return document
