"""A sealed proof bundle: a change anywhere is refused with the code of the part changed."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import canonical
from core.bundle import bundle_bytes, parse_bundle, verify_bundle
from core.envelope import sign_envelope
from core.errors import BundleError
from core.keys import SigningKey
from core.policy import sign_wpc
from tests.core.test_bundle_flow import ISSUER, KEYTURN, WPC, consumed
from tests.fakes import T0, load_policy

TRUST = [KEYTURN.did]
FLOW = consumed()
SEALED = FLOW.seal()
BYTES = bundle_bytes(SEALED)


def _code(unverified: Any, **kw: Any) -> str:
    kw.setdefault("trusted_keyturn_dids", TRUST)
    with pytest.raises(BundleError) as exc:
        verify_bundle(unverified, **kw)
    return exc.value.reason_code


def _tampered(change: Callable[[dict[str, Any]], None]) -> bytes:
    envelope = copy.deepcopy(SEALED)
    change(envelope)
    return bundle_bytes(envelope)


def _flip(text: str, at: int = 5) -> str:
    """Change one character of base64url-ish text to another of the same alphabet."""
    ch = "A" if text[at] != "A" else "B"
    return text[:at] + ch + text[at + 1 :]


def _receipt(envelope: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(
        r for r in envelope["payload"]["receipts"] if r["envelope"]["payload"]["kind"] == kind
    )


def test_the_sealed_bundle_verifies_from_its_bytes() -> None:
    report = verify_bundle(BYTES, trusted_keyturn_dids=TRUST, now=T0 + timedelta(hours=1))
    assert report.bundle_id == "b-1042" and report.outcome == "consumed"
    assert report.to_json()["verdict"] == "PASS"
    assert report.to_json()["approvers"] == ["bob-oid", "carol-oid"]


def test_a_trailing_newline_is_the_only_other_accepted_spelling() -> None:
    verify_bundle(BYTES + b"\n", trusted_keyturn_dids=TRUST)
    assert _code(BYTES + b"\n\n") == "BUNDLE_NOT_CANONICAL"
    assert _code(json.dumps(SEALED, indent=2).encode()) == "BUNDLE_NOT_CANONICAL"
    assert _code(BYTES.replace(b'"bundle_id":"b-1042"', b'"bundle_id":"b-\\u0031042"')) == (
        "BUNDLE_NOT_CANONICAL"
    )


def test_duplicate_keys_and_nan_are_refused_as_malformed() -> None:
    dup = BYTES.replace(
        b'{"envelope_version":"1",', b'{"envelope_version":"1","envelope_version":"1",', 1
    )
    assert _code(dup) == "BUNDLE_MALFORMED"
    assert _code(b'{"x": NaN}') == "BUNDLE_MALFORMED"
    assert _code(b"[]") == "BUNDLE_MALFORMED"
    assert _code(b"\xff") == "BUNDLE_MALFORMED"


def test_without_a_trust_anchor_nothing_verifies() -> None:
    assert _code(BYTES, trusted_keyturn_dids=[]) == "BUNDLE_NO_TRUST_ANCHOR"


def test_a_bundle_signed_by_another_key_is_untrusted() -> None:
    assert _code(BYTES, trusted_keyturn_dids=[ISSUER.did]) == "BUNDLE_UNTRUSTED_SIGNER"
    forger = SigningKey.generate()
    forged = sign_envelope(
        "keyturn_proof_bundle", SEALED["payload"], forger, issued_at=T0 + timedelta(minutes=5)
    )
    assert _code(bundle_bytes(forged)) == "BUNDLE_UNTRUSTED_SIGNER"


def test_a_bundle_sealed_in_the_future_is_refused() -> None:
    assert _code(BYTES, now=T0 - timedelta(hours=1)) == "BUNDLE_FROM_THE_FUTURE"


def test_another_envelope_type_is_refused() -> None:
    assert _code(_tampered(lambda e: e.update(envelope_type="keyturn_grant"))) == (
        "BUNDLE_WRONG_TYPE"
    )


# --- one test per part -------------------------------------------------------------------


def test_tampered_policy_is_refused() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["policy"]["wpc"]["payload"]["description"] = "weakened"

    assert _code(_tampered(change)) == "BUNDLE_POLICY_INVALID"


def test_a_policy_from_an_untrusted_issuer_is_refused_when_issuers_are_pinned() -> None:
    assert _code(BYTES, trusted_policy_issuers=[KEYTURN.did]) == "BUNDLE_POLICY_UNTRUSTED"
    report = verify_bundle(BYTES, trusted_keyturn_dids=TRUST, trusted_policy_issuers=[ISSUER.did])
    assert report.policy_issuer_pinned


def test_a_swapped_policy_is_not_the_one_the_request_was_bound_to() -> None:
    other = load_policy("change-management.json")
    wpc = sign_wpc(other.payload, ISSUER, issued_at=T0)

    def change(e: dict[str, Any]) -> None:
        e["payload"]["policy"] = {"policy_hash_b64u": other.policy_hash_b64u, "wpc": wpc}

    assert _code(_tampered(change)) == "BUNDLE_POLICY_HASH_MISMATCH"

    def stated_hash_only(e: dict[str, Any]) -> None:
        e["payload"]["policy"]["policy_hash_b64u"] = other.policy_hash_b64u

    assert _code(_tampered(stated_hash_only)) == "BUNDLE_POLICY_HASH_MISMATCH"


def test_tampered_params_are_refused() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["request"]["params"]["to_account"] = "GB33BUKB20201555555555"

    assert _code(_tampered(change)) == "BUNDLE_PAYLOAD_HASH_MISMATCH"


def test_reordered_params_keep_their_payload_hash_but_not_the_bundle_signature() -> None:
    def change(e: dict[str, Any]) -> None:
        params = e["payload"]["request"]["params"]
        e["payload"]["request"]["params"] = dict(reversed(list(params.items())))

    assert _code(_tampered(change)) == "BUNDLE_HASH_MISMATCH"


def test_tampered_binding_is_refused() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["request"]["binding"]["job_id"] = "j-other"

    assert _code(_tampered(change)) == "BUNDLE_REQUEST_HASH_MISMATCH"


def test_a_rebound_request_hash_does_not_match_the_receipts() -> None:
    def change(e: dict[str, Any]) -> None:
        binding = e["payload"]["request"]["binding"]
        binding["job_id"] = "j-other"
        e["payload"]["request"]["request_hash_b64u"] = canonical.jcs_sha256_b64u(binding)

    assert _code(_tampered(change)) == "BUNDLE_RECEIPT_FOREIGN"


@pytest.mark.parametrize("position", range(len(SEALED["payload"]["receipts"])))
def test_each_tampered_receipt_is_refused(position: int) -> None:
    def payload_change(e: dict[str, Any]) -> None:
        receipt = e["payload"]["receipts"][position]["envelope"]
        receipt["payload"]["actor"] += "x"

    def issued_at_change(e: dict[str, Any]) -> None:
        receipt = e["payload"]["receipts"][position]["envelope"]
        receipt["issued_at"] = "2030-01-01T00:00:00.000Z"

    assert _code(_tampered(payload_change)) == "BUNDLE_RECEIPT_INVALID"
    assert _code(_tampered(issued_at_change)) == "BUNDLE_RECEIPT_INVALID"


@pytest.mark.parametrize("position", range(len(SEALED["payload"]["receipts"])))
def test_each_tampered_inclusion_proof_is_refused(position: int) -> None:
    def change(e: dict[str, Any]) -> None:
        proof = e["payload"]["receipts"][position]["inclusion_proof"]
        proof[0] = _flip(proof[0])

    assert _code(_tampered(change)) == "BUNDLE_INCLUSION_PROOF_INVALID"


def test_a_receipt_moved_to_another_index_is_not_in_the_log_there() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["receipts"][0]["index"] -= 1

    assert _code(_tampered(change)) == "BUNDLE_INCLUSION_PROOF_INVALID"


def test_a_dropped_approval_receipt_no_longer_matches_the_grant() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["receipts"].remove(_receipt(e, "approval"))

    assert _code(_tampered(change)) == "BUNDLE_GRANT_APPROVALS_MISMATCH"


def test_a_dropped_gate_receipt_contradicts_the_consumed_state() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["receipts"].remove(_receipt(e, "gate_passed"))

    assert _code(_tampered(change)) == "BUNDLE_STATE_INCONSISTENT"


def test_tampered_grant_is_refused() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["grant"]["payload"]["payload_hash_b64u"] = "A" * 43

    assert _code(_tampered(change)) == "BUNDLE_GRANT_INVALID"

    def envelope_time(e: dict[str, Any]) -> None:
        e["payload"]["grant"]["issued_at"] = "2026-11-23T10:43:02.000Z"

    # outside the grant's signature, but inside the logged envelope hash
    assert _code(_tampered(envelope_time)) == "BUNDLE_GRANT_NOT_LOGGED"


def test_a_removed_grant_is_still_in_the_log() -> None:
    assert _code(_tampered(lambda e: e["payload"].pop("grant"))) == "BUNDLE_GRANT_MISSING"


def test_tampered_cst_scope_hash_is_refused() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["cst_scope_hash_b64u"] = _flip(e["payload"]["cst_scope_hash_b64u"])

    assert _code(_tampered(change)) == "BUNDLE_CST_MISMATCH"


def test_tampered_checkpoint_is_refused() -> None:
    def note(e: dict[str, Any]) -> None:
        cp = e["payload"]["checkpoint"]
        cp["signed_note"] = cp["signed_note"].replace("\n9\n", "\n10\n", 1)

    def size(e: dict[str, Any]) -> None:
        e["payload"]["checkpoint"]["size"] += 1

    def root(e: dict[str, Any]) -> None:
        cp = e["payload"]["checkpoint"]
        cp["root_hash_b64u"] = _flip(cp["root_hash_b64u"])

    assert _code(_tampered(note)) == "BUNDLE_CHECKPOINT_INVALID"
    assert _code(_tampered(size)) == "BUNDLE_CHECKPOINT_MISMATCH"
    assert _code(_tampered(root)) == "BUNDLE_CHECKPOINT_MISMATCH"


def test_tampered_summary_is_refused() -> None:
    def change(e: dict[str, Any]) -> None:
        e["payload"]["summary"]["lines"][5] = "Approved by Mallory (Security-Approvers)"

    assert _code(_tampered(change)) == "BUNDLE_SUMMARY_MISMATCH"
    assert _code(_tampered(lambda e: e["payload"]["summary"].update(outcome="denied"))) == (
        "BUNDLE_SUMMARY_MISMATCH"
    )


def test_tampered_signature_is_refused() -> None:
    def change(e: dict[str, Any]) -> None:
        e["signature_b64u"] = _flip(e["signature_b64u"], 10)

    assert _code(_tampered(change)) == "BUNDLE_SIGNATURE_INVALID"


def test_tampered_bundle_fields_outside_any_part_break_the_bundle_hash() -> None:
    assert _code(_tampered(lambda e: e["payload"].update(bundle_id="b-9999"))) == (
        "BUNDLE_HASH_MISMATCH"
    )

    def hash_text(e: dict[str, Any]) -> None:
        e["payload_hash_b64u"] = _flip(e["payload_hash_b64u"])

    assert _code(_tampered(hash_text)) == "BUNDLE_HASH_MISMATCH"

    def wpc_time(e: dict[str, Any]) -> None:
        e["payload"]["policy"]["wpc"]["issued_at"] = "2026-01-01T00:00:00.000Z"

    assert _code(_tampered(wpc_time)) == "BUNDLE_HASH_MISMATCH"


def test_issued_at_must_be_the_sealing_time() -> None:
    assert _code(_tampered(lambda e: e.update(issued_at="2026-11-23T10:44:00.000Z"))) == (
        "BUNDLE_MALFORMED"
    )


def test_unknown_fields_are_refused() -> None:
    assert _code(_tampered(lambda e: e["payload"].update(note="trust me"))) == "BUNDLE_MALFORMED"
    assert _code(_tampered(lambda e: e["payload"]["request"].update(x=1))) == "BUNDLE_MALFORMED"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(BYTES) - 1), replacement=st.integers(0, 255))
def test_any_changed_byte_is_refused(position: int, replacement: int) -> None:
    if BYTES[position] == replacement:
        replacement = (replacement + 1) % 256
    changed = BYTES[:position] + bytes([replacement]) + BYTES[position + 1 :]
    with pytest.raises(BundleError):
        verify_bundle(changed, trusted_keyturn_dids=TRUST)


def test_parse_bundle_returns_the_envelope_it_was_given() -> None:
    assert parse_bundle(BYTES) == SEALED
    assert SEALED["payload"]["policy"]["wpc"] == WPC


def test_sealed_bundles_validate_against_the_documented_schema() -> None:
    from tests.core.test_bundle_flow import denied, expired
    from tests.core.test_claw import validator

    check = validator("urn:keyturn:proof-bundle:1")
    for envelope in (SEALED, denied().seal(), expired().seal()):
        check.validate(envelope)
    broken = copy.deepcopy(SEALED)
    broken["payload"]["receipts"][0]["envelope"]["payload"]["kind"] = "approve"
    assert not check.is_valid(broken)
    broken = copy.deepcopy(SEALED)
    broken["payload"]["surprise"] = True
    assert not check.is_valid(broken)
