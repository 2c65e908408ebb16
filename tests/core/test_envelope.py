"""Signed envelopes, checked in the Claw reference verifier's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import canonical
from core.envelope import sign_envelope, verify_envelope
from core.errors import EnvelopeError
from core.keys import SigningKey

NOW = datetime(2026, 11, 23, 10, 41, tzinfo=UTC)
KEY = SigningKey.from_seed(bytes(range(1, 33)))


def _envelope(**kw: Any) -> dict[str, Any]:
    return sign_envelope("keyturn_receipt", {"b": 1, "a": "é"}, KEY, issued_at=NOW, **kw)


def _code(env: object, **kw: Any) -> str:
    with pytest.raises(EnvelopeError) as exc:
        verify_envelope(env, now=NOW, **kw)
    return exc.value.reason_code


def test_signed_envelope_verifies_and_keeps_payload_order() -> None:
    verified = verify_envelope(_envelope(), now=NOW, trusted_signers={KEY.did})
    assert list(verified.payload) == ["b", "a"]
    assert verified.signer_did == KEY.did
    assert verified.payload_hash_b64u == canonical.sha256_b64u('{"b":1,"a":"é"}'.encode())


def test_signature_covers_the_hash_string() -> None:
    env = _envelope()
    sig = canonical.b64u_decode(env["signature_b64u"])
    from core.keys import verify_signature

    assert verify_signature(KEY.public_key, env["payload_hash_b64u"].encode("ascii"), sig)


def test_bare_unsigned_payload_is_refused() -> None:
    assert _code({"b": 1, "a": "é"}) == "MALFORMED_ENVELOPE"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("envelope_version", "2", "UNKNOWN_ENVELOPE_VERSION"),
        ("envelope_type", "mystery", "UNKNOWN_ENVELOPE_TYPE"),
        ("algorithm", "ES256", "UNKNOWN_ALGORITHM"),
        ("hash_algorithm", "SHA-1", "UNKNOWN_HASH_ALGORITHM"),
        ("signer_did", "did:web:x", "INVALID_DID_FORMAT"),
        ("issued_at", "yesterday", "MALFORMED_ENVELOPE"),
        ("signature_b64u", "***", "MALFORMED_ENVELOPE"),
        ("payload_hash_b64u", canonical.sha256_b64u(b"other"), "HASH_MISMATCH"),
    ],
)
def test_each_field_tamper_has_its_reason_code(field: str, value: str, code: str) -> None:
    env = _envelope()
    env[field] = value
    assert _code(env) == code


def test_tampered_payload_is_a_hash_mismatch() -> None:
    env = _envelope()
    env["payload"]["b"] = 2
    assert _code(env) == "HASH_MISMATCH"


def test_reordered_payload_is_a_hash_mismatch() -> None:
    env = _envelope()
    env["payload"] = dict(reversed(list(env["payload"].items())))
    assert _code(env) == "HASH_MISMATCH"


def test_signature_by_another_key_is_invalid() -> None:
    env = _envelope()
    other = sign_envelope("keyturn_receipt", env["payload"], SigningKey.generate(), issued_at=NOW)
    env["signature_b64u"] = other["signature_b64u"]
    assert _code(env) == "SIGNATURE_INVALID"


def test_unparseable_did_after_hash_check_is_invalid_did() -> None:
    env = _envelope()
    env["signer_did"] = "did:key:z" + "1" * 40
    assert _code(env) == "INVALID_DID_FORMAT"


def test_expired_envelope_is_refused() -> None:
    env = _envelope(expires_at=NOW + timedelta(seconds=1))
    verify_envelope(env, now=NOW)
    with pytest.raises(EnvelopeError) as exc:
        verify_envelope(env, now=NOW + timedelta(seconds=1))
    assert exc.value.reason_code == "EXPIRED_TTL"


def test_untrusted_signer_and_unexpected_type_are_refused() -> None:
    assert _code(_envelope(), trusted_signers={SigningKey.generate().did}) == "UNTRUSTED_SIGNER"
    assert _code(_envelope(), expected_type="keyturn_grant") == "UNEXPECTED_ENVELOPE_TYPE"


def test_unknown_top_level_field_is_refused() -> None:
    env = _envelope()
    env["note"] = "trust me"
    assert _code(env) == "MALFORMED_ENVELOPE"


def test_schema_failure_is_reported_before_the_hash() -> None:
    def schema(payload: Any) -> None:
        raise ValueError("nope")

    assert _code(_envelope(), validate_payload=schema) == "SCHEMA_VALIDATION_FAILED"


def test_editing_the_callers_payload_after_signing_does_not_change_the_envelope() -> None:
    payload = {"nested": {"amount": 1}}
    env = sign_envelope("keyturn_receipt", payload, KEY, issued_at=NOW)
    payload["nested"]["amount"] = 2
    assert verify_envelope(env, now=NOW).payload["nested"]["amount"] == 1
