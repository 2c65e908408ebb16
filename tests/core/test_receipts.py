"""Receipts are signed, never carry secrets, and land in an append-only, checkpointed log."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import receipt_events as events
from core.checkpoint import sign_checkpoint
from core.errors import EnvelopeError, LogError
from core.keys import SigningKey
from core.merkle import leaf_hash, verify_consistency, verify_inclusion
from core.quorum import Verdict
from core.receipt_log import ReceiptLog, verify_log
from core.receipts import (
    Receipt,
    ReceiptKind,
    decisions_of,
    entry_bytes,
    receipt_from_payload,
    sign_receipt,
    verify_receipt,
)
from tests.core.test_bundle_flow import AGENT, KEYTURN, ORIGIN, POLICY, consumed, denied, start
from tests.fakes import T0

TRUST = [KEYTURN.did]
KEYS = {ORIGIN: KEYTURN.public_key}


def _refused(code: str) -> pytest.RaisesExc[LogError]:
    return pytest.raises(LogError, match=f"^{code}:")


# --- receipts ------------------------------------------------------------------------------


def test_every_receipt_of_a_flow_verifies_and_round_trips() -> None:
    flow = consumed()
    kinds = []
    for _, envelope in flow.logged:
        receipt = verify_receipt(envelope, trusted_signers=TRUST)
        assert receipt.to_payload() == envelope["payload"]
        assert envelope["issued_at"] == envelope["payload"]["timestamp"]
        kinds.append(receipt.kind)
    assert kinds == [
        ReceiptKind.REQUEST_CREATED,
        ReceiptKind.APPROVAL,
        ReceiptKind.APPROVAL,
        ReceiptKind.GRANT_MINTED,
        ReceiptKind.CST_MINTED,
        ReceiptKind.GATE_PASSED,
    ]


def test_a_receipt_names_request_hash_job_policy_actor_and_time() -> None:
    flow = consumed()
    _, envelope = flow.logged[1]
    p = envelope["payload"]
    assert p["request_hash_b64u"] == flow.request.request_hash_b64u
    assert p["job_id"] == "j-8f3a21" and p["policy_hash_b64u"] == POLICY.policy_hash_b64u
    assert p["actor"] == "bob-oid" and p["actor_name"] == "Bob Li"
    assert p["timestamp"] == "2026-11-23T10:42:00.000Z"


def test_no_receipt_carries_the_token_only_its_hash() -> None:
    flow = consumed()
    assert flow.token is not None
    log_text = b"".join(entry_bytes(e) for _, e in flow.logged)
    assert flow.token.compact.encode() not in log_text
    assert flow.token.token_hash_hex.encode() in log_text
    assert flow.token.compact.split(".")[2].encode() not in log_text  # not even the signature


def test_a_raw_token_or_secret_cannot_be_put_in_a_receipt() -> None:
    flow = consumed()
    assert flow.token is not None
    receipt = events.expiry(flow.request, at=T0, receipt_id="x", reason="r")
    with pytest.raises(ValueError, match="raw token"):
        replace(receipt, details={"note": f"leaked {flow.token.compact}"})
    for name in ("token", "cst_token", "client_secret", "password", "seed"):
        with pytest.raises(ValueError, match="secrets"):
            replace(receipt, details={"nested": {name: "x"}})


def test_a_receipt_is_about_its_request_or_explicitly_about_none() -> None:
    receipt = events.policy_activated(POLICY, at=T0, actor="admin", receipt_id="p")
    assert not receipt.is_about_request
    with pytest.raises(ValueError, match="names its request"):
        Receipt(
            kind=ReceiptKind.APPROVAL,
            receipt_id="a",
            timestamp=T0,
            actor="bob",
            policy_hash_b64u=POLICY.policy_hash_b64u,
        )
    with pytest.raises(ValueError, match="all of its request's fields"):
        replace(receipt, request_id="r-1")


def test_constructors_refuse_facts_that_do_not_belong_together() -> None:
    flow = consumed()
    other = start({"amount_usd": 900, "to_account": "X", "memo": "m"})
    with pytest.raises(ValueError):
        events.decision_receipt(other.request, flow.decisions[0], receipt_id="x")
    assert flow.grant is not None
    with pytest.raises(ValueError):
        events.grant_minted(other.request, flow.grant, receipt_id="x")
    with pytest.raises(ValueError):
        events.request_created(flow.request, other.call, receipt_id="x")


def test_tampered_receipts_are_refused_with_the_envelope_code() -> None:
    _, envelope = consumed().logged[1]

    def code(changed: Any, **kw: Any) -> str:
        kw.setdefault("trusted_signers", TRUST)
        with pytest.raises(EnvelopeError) as exc:
            verify_receipt(changed, **kw)
        return exc.value.reason_code

    changed = copy.deepcopy(envelope)
    changed["payload"]["actor"] = "mallory-oid"
    assert code(changed) == "HASH_MISMATCH"
    assert code(envelope, trusted_signers=[AGENT.did]) == "UNTRUSTED_SIGNER"
    assert code(envelope["payload"]) == "MALFORMED_ENVELOPE"  # a bare payload is never a pass
    late = {**envelope, "issued_at": "2026-11-23T11:00:00.000Z"}
    assert code(late) == "RECEIPT_TIME_MISMATCH"
    extra = sign_receipt(events.expiry(start().request, at=T0, receipt_id="e", reason="r"), KEYTURN)
    extra["payload"]["surprise"] = 1
    assert code(extra) == "SCHEMA_VALIDATION_FAILED"
    with pytest.raises(EnvelopeError):
        verify_receipt(envelope, trusted_signers=[])


def test_receipt_payloads_must_be_canonical_and_complete() -> None:
    _, envelope = consumed().logged[1]
    payload = envelope["payload"]
    for broken in (
        {**payload, "receipt_version": "2"},
        {**payload, "kind": "approve"},
        {**payload, "timestamp": "2026-11-23T10:42:00Z"},  # not keyturn's canonical form
        {k: v for k, v in payload.items() if k != "details"},
    ):
        with pytest.raises(ValueError):
            receipt_from_payload(broken)


def test_decisions_are_recovered_from_approval_and_denial_receipts() -> None:
    flow = denied()
    receipts = [verify_receipt(e, trusted_signers=TRUST) for _, e in flow.logged]
    decisions = decisions_of(receipts)
    assert [(d.approver_id, d.verdict) for d in decisions] == [
        ("bob-oid", Verdict.APPROVE),
        ("carol-oid", Verdict.DENY),
    ]
    assert decisions == flow.decisions


# --- the log ------------------------------------------------------------------------------


def _log(every: int = 1000, interval: int = 60) -> ReceiptLog:
    return ReceiptLog(
        ORIGIN,
        KEYTURN,
        started_at=T0,
        checkpoint_every=every,
        checkpoint_interval=timedelta(seconds=interval),
    )


def test_append_returns_index_and_rfc9162_leaf_hash() -> None:
    log = _log()
    first = log.append(b"a", now=T0)
    second = log.append(b"b", now=T0)
    assert (first.index, second.index) == (0, 1)
    assert first.leaf_hash == hashlib.sha256(b"\x00a").digest()
    assert log.root() == hashlib.sha256(b"\x01" + first.leaf_hash + second.leaf_hash).digest()


def test_a_checkpoint_is_signed_every_n_entries() -> None:
    log = _log(every=3)
    made = [log.append(bytes([i]), now=T0).checkpoint for i in range(7)]
    sizes = [c.size for c in made if c is not None]
    assert sizes == [3, 6]
    assert log.latest_checkpoint is not None and log.latest_checkpoint.size == 6


def test_a_checkpoint_is_signed_after_t_seconds_even_on_a_quiet_log() -> None:
    log = _log(every=1000, interval=60)
    assert log.append(b"a", now=T0 + timedelta(seconds=10)).checkpoint is None
    assert log.tick(T0 + timedelta(seconds=59)) is None
    cp = log.tick(T0 + timedelta(seconds=60))
    assert cp is not None and cp.size == 1
    assert log.tick(T0 + timedelta(hours=1)) is None  # nothing new to vouch for


def test_the_store_index_must_be_the_trees_next_index() -> None:
    log = _log()
    log.append(b"a", now=T0)
    with _refused("LOG_INDEX_MISMATCH"):
        log.append(b"b", now=T0, expected_index=5)
    assert log.size == 1  # nothing appended
    log.catch_up([leaf_hash(b"x")] * 4)
    assert log.append(b"b", now=T0, expected_index=5).index == 5


def test_proofs_verify_against_the_signed_checkpoints() -> None:
    log = _log(every=5)
    checkpoints = [c for i in range(23) if (c := log.append(b"e%d" % i, now=T0).checkpoint)]
    first, last = checkpoints[0], checkpoints[-1]
    verify_inclusion(
        leaf_hash(b"e3"), 3, last.size, log.inclusion_proof(3, last.size), last.root_hash
    )
    verify_consistency(
        first.size,
        last.size,
        first.root_hash,
        last.root_hash,
        log.consistency_proof(first.size, last.size),
    )


def test_restore_rebuilds_the_tree_and_checks_the_latest_checkpoint() -> None:
    log = _log(every=4)
    entries = [b"e%d" % i for i in range(10)]
    for e in entries:
        log.append(e, now=T0)
    note = log.latest_checkpoint.signed_note if log.latest_checkpoint else None
    restored = ReceiptLog.restore(
        ORIGIN, KEYTURN, [leaf_hash(e) for e in entries], now=T0, latest_checkpoint=note
    )
    assert restored.root() == log.root() and restored.size == 10
    lost = [leaf_hash(e) for e in entries[:5]]
    with _refused("LOG_ROOT_MISMATCH"):
        ReceiptLog.restore(
            ORIGIN, KEYTURN, [leaf_hash(b"x"), *lost[1:], *lost], now=T0, latest_checkpoint=note
        )
    with _refused("LOG_TRUNCATED"):
        ReceiptLog.restore(ORIGIN, KEYTURN, lost[:3], now=T0, latest_checkpoint=note)


def _written(n: int, every: int) -> tuple[list[bytes], list[str]]:
    log = _log(every=every)
    entries = [entry_bytes({"n": i, "pad": "x" * (i % 7)}) for i in range(n)]
    notes = [c.signed_note for e in entries if (c := log.append(e, now=T0).checkpoint)]
    return entries, notes


def test_verify_log_replays_the_log_and_reports_the_unattested_tail() -> None:
    entries, notes = _written(25, 10)
    report = verify_log(entries, notes, KEYS)
    assert report.size == 25 and report.attested_size == 20 and report.unattested == 5
    assert [c.size for c in report.checkpoints] == [10, 20]
    leaves = [leaf_hash(e) for e in entries]
    assert verify_log(entries, notes, KEYS, origin=ORIGIN, leaf_hashes=leaves).size == 25


def test_verify_log_says_which_range_holds_a_changed_entry() -> None:
    entries, notes = _written(30, 10)
    entries[14] = entries[14] + b" "
    with _refused("LOG_ROOT_MISMATCH") as exc:
        verify_log(entries, notes, KEYS)
    assert "entries 10–19" in str(exc.value) and "size 20" in str(exc.value)


def test_verify_log_pinpoints_the_index_when_leaf_hashes_are_stored() -> None:
    entries, notes = _written(30, 10)
    leaves = [leaf_hash(e) for e in entries]
    entries[14] = b"rewritten"
    with _refused("LOG_LEAF_MISMATCH") as exc:
        verify_log(entries, notes, KEYS, leaf_hashes=leaves)
    assert "entry 14" in str(exc.value)


def test_verify_log_refuses_a_truncated_log() -> None:
    entries, notes = _written(30, 10)
    with _refused("LOG_TRUNCATED") as exc:
        verify_log(entries[:25], notes, KEYS)
    assert "size 30" in str(exc.value)


def test_verify_log_refuses_forged_forked_unordered_or_missing_checkpoints() -> None:
    entries, notes = _written(30, 10)
    forged = sign_checkpoint(ORIGIN, 10, leaf_hash(b"x"), SigningKey.generate()).signed_note
    with _refused("CHECKPOINT_UNKNOWN_KEY") as exc:
        verify_log(entries, [notes[0], forged], KEYS)
    assert "checkpoint #2" in str(exc.value)
    fork = sign_checkpoint(ORIGIN, 10, leaf_hash(b"x"), KEYTURN).signed_note
    with _refused("LOG_CHECKPOINT_INCONSISTENT"):
        verify_log(entries, [notes[0], fork], KEYS)
    with _refused("LOG_CHECKPOINT_ORDER"):
        verify_log(entries, [notes[1], notes[0]], KEYS)
    with _refused("LOG_NO_CHECKPOINT"):
        verify_log(entries, [], KEYS)
    with _refused("CHECKPOINT_KEY_INVALID"):
        verify_log(entries, notes, {ORIGIN: KEYTURN.public_key, "other": AGENT.public_key})


def test_a_rewritten_history_is_caught_by_an_earlier_witnessed_checkpoint() -> None:
    entries, notes = _written(20, 10)
    witnessed = notes[0]  # posted to the security channel
    rewritten = list(entries)
    rewritten[3] = b"history rewritten"
    log = _log(every=10)
    resigned = [c.signed_note for e in rewritten if (c := log.append(e, now=T0).checkpoint)]
    verify_log(rewritten, resigned, KEYS)  # consistent with its own new checkpoints…
    with _refused("LOG_ROOT_MISMATCH") as exc:  # …but not with what was witnessed
        verify_log(rewritten, [witnessed, resigned[1]], KEYS)
    assert "size 10" in str(exc.value)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), every=st.integers(1, 9), data=st.data())
def test_any_single_entry_change_is_refused(n: int, every: int, data: st.DataObject) -> None:
    entries, notes = _written(n, every)
    if not notes:
        return
    attested = len(notes) * every
    index = data.draw(st.integers(0, attested - 1))
    entries[index] = entries[index] + b"!"
    with pytest.raises(LogError):
        verify_log(entries, notes, KEYS)
