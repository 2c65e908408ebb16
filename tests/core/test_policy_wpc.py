"""Signed WPCs: only a complete, untampered envelope from a trusted issuer is a policy."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core import canonical
from core.envelope import sign_envelope
from core.errors import PolicyError
from core.keys import SigningKey
from core.policy import load_policy_document, sign_wpc, verify_wpc

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "policies"
PAYLOAD = json.loads((MANIFESTS / "enterprise-two-person.json").read_text(encoding="utf-8"))
ISSUER = SigningKey.from_seed(bytes(range(1, 33)))
OTHER = SigningKey.from_seed(bytes(range(100, 132)))
NOW = datetime(2026, 11, 23, 10, 41, tzinfo=UTC)


def signed(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return sign_wpc(payload or PAYLOAD, ISSUER, issued_at=NOW)


def refusal(envelope: Any, trusted: Any = (ISSUER.did,)) -> str:
    with pytest.raises(PolicyError) as e:
        verify_wpc(envelope, trusted_issuers=trusted, now=NOW)
    return e.value.reason_code


def test_demo_issuer_key_is_the_one_the_manifests_name() -> None:
    assert ISSUER.did == "did:key:z6MkneMkZqwqRiU5mJzSG3kDwzt9P8C59N4NGTfBLfSGE7c7"
    assert PAYLOAD["issuer_did"] == ISSUER.did


def test_signed_wpc_verifies_and_its_payload_hash_is_the_policy_hash() -> None:
    envelope = signed()
    assert envelope["envelope_type"] == "work_policy_contract"
    assert "expires_at" not in envelope
    policy = verify_wpc(envelope, trusted_issuers={ISSUER.did}, now=NOW)
    assert envelope["payload_hash_b64u"] == policy.policy_hash_b64u
    assert policy.policy_hash_b64u == canonical.jcs_sha256_b64u(PAYLOAD)


def test_envelope_survives_a_json_round_trip_with_reordered_keys() -> None:
    envelope = json.loads(json.dumps(signed(), sort_keys=True))
    assert (
        verify_wpc(envelope, trusted_issuers=[ISSUER.did], now=NOW).policy_id
        == PAYLOAD["policy_id"]
    )


def test_tampered_payload_is_refused_hash_mismatch() -> None:
    envelope = signed()
    envelope["payload"]["rules"][3]["when"]["gte"] = 50000  # raise the payments threshold
    assert refusal(envelope) == "HASH_MISMATCH"


def test_tampered_payload_with_recomputed_hash_is_refused_signature_invalid() -> None:
    envelope = signed()
    envelope["payload"]["rules"][3]["when"]["gte"] = 50000
    envelope["payload_hash_b64u"] = canonical.jcs_sha256_b64u(envelope["payload"])
    assert refusal(envelope) == "SIGNATURE_INVALID"


def test_signature_from_another_key_claiming_the_issuer_is_refused() -> None:
    envelope = signed()
    forged = sign_envelope("work_policy_contract", PAYLOAD, OTHER, issued_at=NOW)
    envelope["signature_b64u"] = forged["signature_b64u"]
    assert refusal(envelope) == "SIGNATURE_INVALID"


def test_unsigned_payload_is_refused_by_verify() -> None:
    assert refusal(copy.deepcopy(PAYLOAD)) == "MALFORMED_ENVELOPE"


def test_untrusted_issuer_is_refused() -> None:
    payload = {**PAYLOAD, "issuer_did": OTHER.did}
    envelope = sign_wpc(payload, OTHER, issued_at=NOW)
    assert refusal(envelope, trusted=[ISSUER.did]) == "POLICY_UNTRUSTED_ISSUER"


def test_empty_trust_list_trusts_no_one() -> None:
    assert refusal(signed(), trusted=[]) == "POLICY_UNTRUSTED_ISSUER"


def test_signer_other_than_payload_issuer_is_refused_even_if_trusted() -> None:
    envelope = sign_envelope("work_policy_contract", PAYLOAD, OTHER, issued_at=NOW)
    assert refusal(envelope, trusted=[ISSUER.did, OTHER.did]) == "POLICY_UNTRUSTED_ISSUER"


def test_envelope_of_another_type_is_refused() -> None:
    envelope = sign_envelope("keyturn_receipt", PAYLOAD, ISSUER, issued_at=NOW)
    assert refusal(envelope) == "UNEXPECTED_ENVELOPE_TYPE"


def test_wpc_envelope_with_expiry_is_refused() -> None:
    envelope = {**signed(), "expires_at": "2030-01-01T00:00:00.000Z"}
    assert refusal(envelope) == "MALFORMED_ENVELOPE"


def test_signed_but_invalid_policy_is_refused_policy_invalid() -> None:
    bad = copy.deepcopy(PAYLOAD)
    bad["approvals"]["two_person"]["min_approvers"] = 1
    envelope = sign_envelope("work_policy_contract", bad, ISSUER, issued_at=NOW)
    assert refusal(envelope) == "POLICY_INVALID"


def test_keyturn_will_not_sign_an_invalid_policy() -> None:
    bad = copy.deepcopy(PAYLOAD)
    bad["rules"][0]["surprise"] = True
    with pytest.raises(PolicyError) as e:
        sign_wpc(bad, ISSUER, issued_at=NOW)
    assert e.value.reason_code == "POLICY_INVALID"


def test_keyturn_will_not_sign_for_another_issuer() -> None:
    with pytest.raises(PolicyError) as e:
        sign_wpc(PAYLOAD, OTHER, issued_at=NOW)
    assert e.value.reason_code == "POLICY_UNTRUSTED_ISSUER"


# -- load_policy_document ------------------------------------------------------------------


def test_bare_payload_loads_only_without_a_trust_list() -> None:
    policy = load_policy_document(PAYLOAD, trusted_issuers=None, now=NOW)
    assert policy.policy_hash_b64u == canonical.jcs_sha256_b64u(PAYLOAD)
    with pytest.raises(PolicyError) as e:
        load_policy_document(PAYLOAD, trusted_issuers=[ISSUER.did], now=NOW)
    assert e.value.reason_code == "POLICY_UNSIGNED"


def test_envelope_without_trust_list_still_verifies_with_its_signer_as_issuer() -> None:
    assert load_policy_document(signed(), trusted_issuers=None, now=NOW).issuer_did == ISSUER.did
    tampered = signed()
    tampered["payload"]["policy_name"] = "relaxed"
    with pytest.raises(PolicyError) as e:
        load_policy_document(tampered, trusted_issuers=None, now=NOW)
    assert e.value.reason_code == "HASH_MISMATCH"


def test_envelope_without_trust_list_signed_by_someone_else_than_the_issuer_is_refused() -> None:
    envelope = sign_envelope("work_policy_contract", PAYLOAD, OTHER, issued_at=NOW)
    with pytest.raises(PolicyError) as e:
        load_policy_document(envelope, trusted_issuers=None, now=NOW)
    assert e.value.reason_code == "POLICY_UNTRUSTED_ISSUER"


def test_partial_envelope_is_not_mistaken_for_a_bare_payload() -> None:
    envelope = signed()
    del envelope["signature_b64u"]
    with pytest.raises(PolicyError) as e:
        load_policy_document(envelope, trusted_issuers=None, now=NOW)
    assert e.value.reason_code == "MALFORMED_ENVELOPE"


def test_signed_claw_v2_policy_verifies() -> None:
    payload = json.loads((MANIFESTS / "claw-v2-example.json").read_text(encoding="utf-8"))
    policy = verify_wpc(
        sign_wpc(payload, ISSUER, issued_at=NOW), trusted_issuers=[ISSUER.did], now=NOW
    )
    assert policy.policy_version == "2"


def test_editing_the_source_dict_after_signing_does_not_change_the_envelope() -> None:
    source = copy.deepcopy(PAYLOAD)
    envelope = sign_wpc(source, ISSUER, issued_at=NOW)
    source["rules"][3]["when"]["gte"] = 50000
    policy = verify_wpc(envelope, trusted_issuers=[ISSUER.did], now=NOW)
    assert policy.payload["rules"][3]["when"]["gte"] == 500


def test_a_wpc_met_again_reuses_its_compiled_policy_and_any_change_compiles_anew() -> None:
    first = verify_wpc(signed(), trusted_issuers=[ISSUER.did], now=NOW)
    again = verify_wpc(json.loads(json.dumps(signed())), trusted_issuers=[ISSUER.did], now=NOW)
    assert again is first  # the same canonical bytes: compiled once
    changed = copy.deepcopy(PAYLOAD)
    changed["policy_name"] = str(changed.get("policy_name", "")) + " (edited)"
    other = verify_wpc(signed(changed), trusted_issuers=[ISSUER.did], now=NOW)
    assert other is not first
    assert other.policy_hash_b64u != first.policy_hash_b64u
    assert other.name != first.name


def test_a_reused_policy_cannot_be_changed_through_its_payload() -> None:
    policy = verify_wpc(signed(), trusted_issuers=[ISSUER.did], now=NOW)
    leaked = policy.payload
    leaked["policy_name"] = "tampered"
    assert verify_wpc(signed(), trusted_issuers=[ISSUER.did], now=NOW).payload != leaked
