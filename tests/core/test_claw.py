"""Claw interop: human approval receipts and the agent-signed proof_bundle export."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from core.bundle import bundle_bytes
from core.claw import export_claw_bundle, human_approval_payload, sign_human_approval
from core.claw_verify import event_hash, verify_claw_bundle, verify_claw_envelope
from core.envelope import sign_envelope
from core.errors import BundleError
from core.keys import SigningKey
from core.quorum import Verdict
from tests.core.test_bundle_flow import AGENT, KEYTURN, SPAN, Flow, consumed, start
from tests.fakes import T0

SCHEMAS = Path(__file__).resolve().parents[2] / "manifests" / "schemas"
GATEWAY = SigningKey.from_seed(bytes(range(200, 232)))
TRUST = [KEYTURN.did]
LATER = T0 + timedelta(hours=1)


def registry() -> Registry:
    """Every schema file under manifests/schemas, by its $id."""
    resources = []
    for path in sorted(SCHEMAS.rglob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = registry()


def validator(schema_id: str) -> Draft202012Validator:
    schema = REGISTRY.contents(schema_id)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=REGISTRY, format_checker=FormatChecker())


def gateway_receipt(
    *,
    span: str | None = SPAN,
    run_id: str = "j-8f3a21",
    at: Any = T0 - timedelta(seconds=5),
    receipt_id: str = "gw-1",
    key: SigningKey = GATEWAY,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    binding: dict[str, Any] = {"run_id": run_id}
    if span is not None:
        binding["span_id"] = span
    binding.update(extra or {})
    payload = {
        "receipt_version": "1",
        "receipt_id": receipt_id,
        "gateway_id": "clawproxy-eu-1",
        "provider": "openai",
        "model": "gpt-5",
        "request_hash_b64u": "R" * 43,
        "response_hash_b64u": "S" * 43,
        "tokens_input": 812,
        "tokens_output": 96,
        "latency_ms": 1430,
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "binding": binding,
    }
    return sign_envelope("gateway_receipt", payload, key, issued_at=at)


def _export(flow: Flow | None = None, **kw: Any) -> dict[str, Any]:
    sealed = (flow or consumed()).seal()
    kw.setdefault("agent", AGENT)
    kw.setdefault("gateway_receipts", [gateway_receipt()])
    return export_claw_bundle(bundle_bytes(sealed), trusted_keyturn_dids=TRUST, now=LATER, **kw)


def _code(**kw: Any) -> str:
    with pytest.raises(BundleError) as exc:
        _export(**kw)
    return exc.value.reason_code


# --- human approval receipts -----------------------------------------------------------------


def test_approvals_and_denials_are_schema_valid_claw_receipts() -> None:
    flow = start()
    flow.decide("bob-oid")
    flow.decide("carol-oid", Verdict.DENY, reason="wrong beneficiary")
    check = validator("urn:keyturn:claw:human_approval_receipt:1")
    b = flow.request.binding
    for d in flow.decisions:
        payload = human_approval_payload(b, d)
        check.validate(payload)
        assert payload["approver_subject"] == d.approver_id
        assert payload["scope_hash_b64u"] == b.request_hash_b64u
        assert payload["policy_hash_b64u"] == b.policy_hash_b64u
        assert payload["binding"]["run_id"] == b.job_id
        assert payload["binding"]["parent_span_id"] == SPAN
        assert payload["agent_did"] == AGENT.did
    types = [human_approval_payload(b, d)["approval_type"] for d in flow.decisions]
    assert types == ["explicit_approve", "explicit_deny"]


def test_a_signed_approval_is_issued_at_its_timestamp() -> None:
    flow = start()
    flow.decide("bob-oid")
    payload = human_approval_payload(flow.request.binding, flow.decisions[0])
    envelope = sign_human_approval(payload, KEYTURN)
    assert envelope["issued_at"] == payload["timestamp"]
    validator("urn:keyturn:claw:human_approval_receipt_envelope:1").validate(envelope)
    verified = verify_claw_envelope(envelope, now=LATER, expected_type="human_approval_receipt")
    assert verified.payload["receipt_id"] == payload["receipt_id"]


def test_the_same_decision_always_gives_the_same_claw_receipt() -> None:
    flow = start()
    flow.decide("bob-oid")
    b, d = flow.request.binding, flow.decisions[0]
    assert human_approval_payload(b, d) == human_approval_payload(b, d)
    with pytest.raises(ValueError):
        human_approval_payload(
            start({"amount_usd": 900, "to_account": "X", "memo": "m"}).request.binding, d
        )


# --- export ------------------------------------------------------------------------------------


def test_the_export_is_a_schema_valid_agent_signed_proof_bundle_that_verifies() -> None:
    exported = _export()
    validator("urn:keyturn:claw:proof_bundle_envelope:1").validate(exported)
    assert exported["signer_did"] == exported["payload"]["agent_did"] == AGENT.did
    report = verify_claw_bundle(exported, now=LATER, trusted_gateway_dids=[GATEWAY.did])
    assert report.run_id == "j-8f3a21"
    assert (report.events, report.gateway_receipts, report.human_approvals) == (6, 1, 2)
    assert report.spans == (SPAN,)


def test_the_event_chain_follows_the_claw_rules() -> None:
    events = _export()["payload"]["event_chain"]
    assert events[0]["prev_hash_b64u"] is None
    assert {e["run_id"] for e in events} == {"j-8f3a21"}
    assert [e["event_type"] for e in events][:2] == ["keyturn.request_created", "keyturn.approval"]
    for earlier, later in pairwise(events):
        assert later["prev_hash_b64u"] == earlier["event_hash_b64u"]
    first = events[0]
    header = {k: first[k] for k in list(first)[:6]}
    assert list(header) == [
        "event_id",
        "run_id",
        "event_type",
        "timestamp",
        "payload_hash_b64u",
        "prev_hash_b64u",
    ]
    assert event_hash(first) == first["event_hash_b64u"]


def test_each_approval_is_anchored_to_the_span_and_bound_to_its_event() -> None:
    payload = _export()["payload"]
    chain = {e["event_hash_b64u"]: e for e in payload["event_chain"]}
    for approval in payload["human_approval_receipts"]:
        assert approval["binding"]["parent_span_id"] == SPAN
        assert chain[approval["binding"]["event_hash_b64u"]]["event_type"] == "keyturn.approval"
        assert approval["binding"]["token_scope_hash_b64u"] is not None
    keyturn = payload["metadata"]["keyturn"]
    assert keyturn["bundle_id"] == "b-1042" and keyturn["outcome"] == "consumed"


def test_export_refuses_a_key_that_is_not_the_requests_agent() -> None:
    assert _code(agent=GATEWAY) == "CLAW_EXPORT_AGENT_MISMATCH"


def test_export_refuses_receipts_that_lack_the_requests_span() -> None:
    assert _code(gateway_receipts=[gateway_receipt(span="span-other")]) == (
        "CLAW_EXPORT_SPAN_NOT_FOUND"
    )
    assert _code(gateway_receipts=[]) == "CLAW_EXPORT_SPAN_NOT_FOUND"


def test_export_refuses_a_request_with_no_span_to_anchor_to() -> None:
    flow = start(span_id=None)
    flow.decide("bob-oid")
    flow.decide("carol-oid")
    flow.mint()
    flow.run()
    with pytest.raises(BundleError) as exc:
        _export(flow)
    assert exc.value.reason_code == "CLAW_EXPORT_SPAN_MISSING"


def test_export_refuses_gateway_receipts_of_another_run_or_not_verifying() -> None:
    assert _code(gateway_receipts=[gateway_receipt(run_id="j-other")]) == (
        "CLAW_EXPORT_FOREIGN_RECEIPT"
    )
    tampered = gateway_receipt()
    tampered["payload"]["model"] = "gpt-4o-mini"
    assert _code(gateway_receipts=[tampered]) == "CLAW_EXPORT_RECEIPT_INVALID"
    unknown_event = gateway_receipt(extra={"event_hash_b64u": "E" * 43})
    assert _code(gateway_receipts=[unknown_event]) == "CLAW_EXPORT_EVENT_UNKNOWN"


def test_export_refuses_approvals_timestamped_before_their_span() -> None:
    late_span = gateway_receipt(at=T0 + timedelta(minutes=10))
    assert _code(gateway_receipts=[late_span]) == "CLAW_EXPORT_CLOCK_CONTRADICTION"


def test_export_verifies_the_keyturn_bundle_first() -> None:
    sealed = copy.deepcopy(consumed().seal())
    sealed["payload"]["request"]["params"]["amount_usd"] = 99_999
    with pytest.raises(BundleError) as exc:
        export_claw_bundle(
            sealed,
            agent=AGENT,
            trusted_keyturn_dids=TRUST,
            now=LATER,
            gateway_receipts=[gateway_receipt()],
        )
    assert exc.value.reason_code == "BUNDLE_PAYLOAD_HASH_MISMATCH"
