"""keyturn's Claw verifier: the reference order and codes, minus the reference's fail-opens."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import ValidationError

from core.canonical import b64u_encode
from core.claw_schema import Refusal, validate_gateway_receipt, validate_human_approval
from core.claw_verify import event_hash, verify_claw_bundle
from core.envelope import sign_envelope
from core.errors import EnvelopeError
from core.keys import SigningKey
from tests.core.test_bundle_flow import AGENT, KEYTURN, SPAN
from tests.core.test_claw import GATEWAY, LATER, _export, gateway_receipt, validator
from tests.fakes import T0

EXPORTED = _export()
OTHER_SIGNATURE = b64u_encode(AGENT.sign(b"another message"))


def _resigned(change: Callable[[dict[str, Any]], None], key: SigningKey = AGENT) -> dict[str, Any]:
    """The export with its payload changed and signed again by the agent (a valid envelope)."""
    payload = copy.deepcopy(EXPORTED["payload"])
    change(payload)
    return sign_envelope("proof_bundle", payload, key, issued_at=LATER)


def _rechained(payload: dict[str, Any]) -> None:
    previous = None
    for event in payload["event_chain"]:
        event["prev_hash_b64u"] = previous
        event["event_hash_b64u"] = event_hash(event)
        previous = event["event_hash_b64u"]


def _code(envelope: Any, **kw: Any) -> str:
    with pytest.raises(EnvelopeError) as exc:
        verify_claw_bundle(envelope, now=LATER, **kw)
    return exc.value.reason_code


# --- the envelope, in the reference order ------------------------------------------------------


def test_a_bare_unsigned_payload_is_refused() -> None:
    assert _code(EXPORTED["payload"]) == "MALFORMED_ENVELOPE"
    assert _code("not an envelope") == "MALFORMED_ENVELOPE"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda e: e.pop("signature_b64u"), "MALFORMED_ENVELOPE"),
        (lambda e: e.update(envelope_version="2"), "UNKNOWN_ENVELOPE_VERSION"),
        (lambda e: e.update(envelope_type="mystery_bundle"), "UNKNOWN_ENVELOPE_TYPE"),
        (lambda e: e.update(envelope_type="gateway_receipt"), "UNKNOWN_ENVELOPE_TYPE"),
        (lambda e: e.update(algorithm="ES256"), "UNKNOWN_ALGORITHM"),
        (lambda e: e.update(hash_algorithm="BLAKE3"), "UNKNOWN_HASH_ALGORITHM"),
        (lambda e: e.update(signer_did="did:web:example.com"), "INVALID_DID_FORMAT"),
        (lambda e: e.update(issued_at="yesterday"), "MALFORMED_ENVELOPE"),
        (lambda e: e.update(expires_at="2026-01-01T00:00:00.000Z"), "EXPIRED_TTL"),
        (lambda e: e.update(signature_b64u="not base64!"), "MALFORMED_ENVELOPE"),
        (lambda e: e["payload"].update(bundle_version="2"), "SCHEMA_VALIDATION_FAILED"),
        (lambda e: e["payload"].update(bundle_id="other"), "HASH_MISMATCH"),
        (lambda e: e.update(signature_b64u=OTHER_SIGNATURE), "SIGNATURE_INVALID"),
    ],
)
def test_each_envelope_defect_has_the_reference_code(
    change: Callable[[dict[str, Any]], None], code: str
) -> None:
    envelope = copy.deepcopy(EXPORTED)
    change(envelope)
    assert _code(envelope) == code


def test_the_first_failure_in_the_reference_order_wins() -> None:
    both = copy.deepcopy(EXPORTED)
    both["payload"]["bundle_version"] = "2"  # schema …
    both["signature_b64u"] = OTHER_SIGNATURE  # … before signature
    assert _code(both) == "SCHEMA_VALIDATION_FAILED"
    algorithm_and_did = copy.deepcopy(EXPORTED)
    algorithm_and_did["algorithm"] = "RS256"
    algorithm_and_did["signer_did"] = "nonsense"
    assert _code(algorithm_and_did) == "UNKNOWN_ALGORITHM"


def test_signer_did_must_equal_the_bundles_agent_did() -> None:
    assert _code(_resigned(lambda p: None, key=GATEWAY)) == "INVALID_DID_FORMAT"
    swapped = _resigned(lambda p: p.update(agent_did=KEYTURN.did), key=AGENT)
    assert _code(swapped) == "INVALID_DID_FORMAT"


def test_components_keyturn_cannot_check_are_refused_not_passed() -> None:
    assert _code(_resigned(lambda p: p.update(tool_receipts=[{}]))) == "SCHEMA_VALIDATION_FAILED"
    only_meta = _resigned(
        lambda p: [p.pop(k) for k in ("event_chain", "receipts", "human_approval_receipts")]
    )
    assert _code(only_meta) == "MALFORMED_ENVELOPE"


def test_oversized_metadata_and_duplicate_event_ids_are_malformed() -> None:
    assert _code(_resigned(lambda p: p.update(metadata={"x": "y" * 17_000}))) == (
        "MALFORMED_ENVELOPE"
    )

    def duplicate(p: dict[str, Any]) -> None:
        p["event_chain"][1]["event_id"] = p["event_chain"][0]["event_id"]

    assert _code(_resigned(duplicate)) == "MALFORMED_ENVELOPE"


# --- the event chain ---------------------------------------------------------------------------


def test_a_broken_chain_is_malformed_and_a_wrong_event_hash_is_a_hash_mismatch() -> None:
    assert _code(_resigned(lambda p: p["event_chain"].pop(1))) == "MALFORMED_ENVELOPE"

    def first_prev(p: dict[str, Any]) -> None:
        p["event_chain"][0]["prev_hash_b64u"] = "A" * 43

    assert _code(_resigned(first_prev)) == "MALFORMED_ENVELOPE"

    def two_runs(p: dict[str, Any]) -> None:
        p["event_chain"][2]["run_id"] = "j-other"
        _rechained(p)

    assert _code(_resigned(two_runs)) == "MALFORMED_ENVELOPE"

    def edited(p: dict[str, Any]) -> None:
        p["event_chain"][2]["timestamp"] = "2026-11-23T10:00:00.000Z"

    assert _code(_resigned(edited)) == "HASH_MISMATCH"


# --- causal checks -----------------------------------------------------------------------------


def test_an_approval_without_the_gateway_span_is_orphaned() -> None:
    assert _code(_resigned(lambda p: p.pop("receipts"))) == "CAUSAL_HUMAN_APPROVAL_ORPHANED"

    def unknown(p: dict[str, Any]) -> None:
        p["human_approval_receipts"][0]["binding"]["parent_span_id"] = "span-nowhere"

    assert _code(_resigned(unknown)) == "CAUSAL_HUMAN_APPROVAL_ORPHANED"

    def unbound(p: dict[str, Any]) -> None:
        p["human_approval_receipts"][1].pop("binding")

    assert _code(_resigned(unbound)) == "CAUSAL_HUMAN_APPROVAL_ORPHANED"


def test_clock_contradictions_are_refused() -> None:
    def approval_before_span(p: dict[str, Any]) -> None:
        p["human_approval_receipts"][0]["timestamp"] = "2026-11-23T10:00:00.000Z"

    assert _code(_resigned(approval_before_span)) == "CAUSAL_CLOCK_CONTRADICTION"

    issued_early = gateway_receipt()
    issued_early = sign_envelope(
        "gateway_receipt", issued_early["payload"], GATEWAY, issued_at=T0 - timedelta(minutes=1)
    )
    assert _code(_resigned(lambda p: p.update(receipts=[issued_early]))) == (
        "CAUSAL_CLOCK_CONTRADICTION"
    )
    child_first = gateway_receipt(
        span="span-child",
        receipt_id="gw-2",
        at=T0 - timedelta(minutes=2),
        extra={"parent_span_id": SPAN},
    )
    assert _code(_resigned(lambda p: p["receipts"].append(child_first))) == (
        "CAUSAL_CLOCK_CONTRADICTION"
    )


def test_dangling_parents_cycles_and_blank_spans_are_refused() -> None:
    dangling = gateway_receipt(span="span-b", receipt_id="gw-2", extra={"parent_span_id": "x"})
    assert _code(_resigned(lambda p: p["receipts"].append(dangling))) == (
        "CAUSAL_REFERENCE_DANGLING"
    )
    a = gateway_receipt(span="span-a", receipt_id="gw-a", extra={"parent_span_id": "span-b"})
    b = gateway_receipt(span="span-b", receipt_id="gw-b", extra={"parent_span_id": "span-a"})
    assert _code(_resigned(lambda p: p["receipts"].extend([a, b]))) == "CAUSAL_CYCLE_DETECTED"
    blank = gateway_receipt(span="  ", receipt_id="gw-blank")
    assert _code(_resigned(lambda p: p["receipts"].append(blank))) == (
        "CAUSAL_BINDING_NORMALIZATION_FAILED"
    )


def test_a_receipt_id_reused_for_other_content_is_a_replay() -> None:
    other = gateway_receipt(at=T0 - timedelta(seconds=9))  # same receipt_id, other content
    assert _code(_resigned(lambda p: p["receipts"].append(other))) == (
        "CAUSAL_RECEIPT_REPLAY_DETECTED"
    )


def test_an_approval_for_another_agent_or_run_is_refused() -> None:
    def other_agent(p: dict[str, Any]) -> None:
        p["human_approval_receipts"][0]["agent_did"] = KEYTURN.did

    assert _code(_resigned(other_agent)) == "EVIDENCE_MISMATCH"

    def other_run(p: dict[str, Any]) -> None:
        p["human_approval_receipts"][0]["binding"]["run_id"] = "j-other"

    assert _code(_resigned(other_run)) == "RECEIPT_BINDING_MISMATCH"


# --- gateway receipts (stricter than the reference: every one must verify) ------------------


def test_every_gateway_receipt_must_verify_and_belong_to_the_run() -> None:
    def tampered(p: dict[str, Any]) -> None:
        p["receipts"][0]["payload"]["tokens_output"] = 1

    assert _code(_resigned(tampered)) == "HASH_MISMATCH"
    assert _code(EXPORTED, trusted_gateway_dids=[KEYTURN.did]) == "UNTRUSTED_SIGNER"
    foreign = gateway_receipt(span="span-x", receipt_id="gw-x", run_id="j-other")
    assert _code(_resigned(lambda p: p["receipts"].append(foreign))) == ("RECEIPT_BINDING_MISMATCH")


# --- the core checks agree with the JSON Schemas -----------------------------------------------

HAR = EXPORTED["payload"]["human_approval_receipts"][0]
GATEWAY_PAYLOAD = EXPORTED["payload"]["receipts"][0]["payload"]
MUTATIONS = st.sampled_from(
    [
        ("drop", None),
        ("extra", "surprise"),
        ("set", ""),
        ("set", 7),
        ("set", -1),
        ("set", None),
        ("set", "not-a-date"),
        ("set", {"nested": True}),
        ("set", "ab"),
    ]
)


def _agree(payload: dict[str, Any], schema_id: str, check: Callable[[Any], None]) -> None:
    try:
        validator(schema_id).validate(payload)
        schema_ok = True
    except ValidationError:
        schema_ok = False
    try:
        check(payload)
        core_ok = True
    except Refusal:
        core_ok = False
    assert schema_ok == core_ok, payload


@given(key=st.sampled_from(sorted(HAR)), mutation=MUTATIONS)
def test_core_and_schema_agree_on_human_approval_receipts(key: str, mutation: Any) -> None:
    payload = copy.deepcopy(HAR)
    action, value = mutation
    if action == "drop":
        payload.pop(key)
    elif action == "extra":
        payload[value] = 1
    else:
        payload[key] = value
    _agree(payload, "urn:keyturn:claw:human_approval_receipt:1", validate_human_approval)


@given(key=st.sampled_from(sorted(GATEWAY_PAYLOAD)), mutation=MUTATIONS)
def test_core_and_schema_agree_on_gateway_receipts(key: str, mutation: Any) -> None:
    payload = copy.deepcopy(GATEWAY_PAYLOAD)
    action, value = mutation
    if action == "drop":
        payload.pop(key)
    elif action == "extra":
        payload[value] = 1
    else:
        payload[key] = value
    _agree(payload, "urn:keyturn:claw:gateway_receipt:1", validate_gateway_receipt)


def test_the_unmutated_samples_are_valid_for_both() -> None:
    _agree(copy.deepcopy(HAR), "urn:keyturn:claw:human_approval_receipt:1", validate_human_approval)
    validate_human_approval(HAR)
    validate_gateway_receipt(GATEWAY_PAYLOAD)
    validator("urn:keyturn:claw:gateway_receipt:1").validate(GATEWAY_PAYLOAD)
