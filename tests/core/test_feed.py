"""The security feed: compact, aligned, folded, and impossible to forge lines into."""

from __future__ import annotations

import re

import pytest

from core import receipt_events as events
from core.feed import CheckpointPosted, checkpoint_line, clean, feed_line, fold, short_did
from core.receipts import Receipt, verify_receipt
from tests.core.test_bundle_flow import KEYTURN, POLICY, consumed, denied, start
from tests.fakes import T0

TRUST = [KEYTURN.did]


def _receipts(flow: object) -> list[tuple[int, Receipt]]:
    logged = flow.logged  # type: ignore[attr-defined]
    return [(i, verify_receipt(e, trusted_signers=TRUST)) for i, e in logged]


def test_each_receipt_is_one_line_with_the_cards_columns() -> None:
    flow = consumed()
    lines = [feed_line(i, r) for i, r in _receipts(flow)]
    request_hash = flow.request.request_hash_b64u
    policy_hash = POLICY.policy_hash_b64u
    approve = lines[1]
    assert approve.startswith("#4 approve")
    assert "payments.transfer" in approve and "r-7f2c" in approve and "Bob Li" in approve
    assert f"req {request_hash[:4]}…{request_hash[-4:]}" in approve
    assert f"pol {policy_hash[:4]}…{policy_hash[-4:]}" in approve
    assert re.search(r"#6 grant +payments\.transfer +r-7f2c +g-5d1e +until 10:48$", lines[3])
    assert re.search(r"#8 gate-pass +payments\.transfer +r-7f2c +g-5d1e +payload ✓$", lines[5])
    assert all("\n" not in line for line in lines)


def test_a_gate_denial_shows_its_reason_code() -> None:
    receipt = events.gate_denied(
        "PAYLOAD_HASH_MISMATCH",
        at=T0,
        actor="did:key:agent",
        policy_hash_b64u=POLICY.policy_hash_b64u,
        receipt_id="d",
        request=start().request,
    )
    assert re.fullmatch(
        r"#1046 gate-deny +payments\.transfer +r-7f2c +PAYLOAD_HASH_MISMATCH",
        feed_line(1046, receipt),
    )
    outside = events.gate_denied(
        "GRANT_INVALID", at=T0, actor="x", policy_hash_b64u=POLICY.policy_hash_b64u, receipt_id="e"
    )
    assert feed_line(7, outside).endswith("GRANT_INVALID")


def test_a_deny_shows_the_reason_in_quotes() -> None:
    line = feed_line(*_receipts(denied())[-1])
    assert "deny" in line and "Carol Diaz" in line and '"wrong beneficiary"' in line


def test_a_checkpoint_line_names_origin_size_root_and_signer() -> None:
    flow = consumed()
    cp = flow.checkpoint()
    line = checkpoint_line(cp, KEYTURN.did)
    assert line.startswith("checkpoint  keyturn/acme-prod  size 9  root ")
    assert line.endswith(f"signed by did:key:z6Mk…{KEYTURN.did[-5:]}")


def test_a_newline_or_bidi_override_in_a_name_cannot_forge_a_feed_line() -> None:
    flow = start()
    hostile = "Bob\n#9999 approve    payments.transfer  r-0000  Mallory\u202e"
    flow.decide("bob-oid")
    receipt = _receipts(flow)[-1][1]
    forged = Receipt(
        **{**{f: getattr(receipt, f) for f in Receipt.__slots__}, "actor_name": hostile}
    )
    line = feed_line(5, forged)
    assert "\n" not in line and "\u202e" not in line
    assert clean("a\u2028b\u0000c\u200fd") == "a b cd"
    assert len(clean("x" * 500)) == 48


def test_many_receipts_fold_into_one_aligned_message_newest_last() -> None:
    flow = consumed()
    items = [*_receipts(flow), CheckpointPosted(flow.checkpoint(), KEYTURN.did)]
    message = fold(items)
    lines = message.split("\n")
    assert len(lines) == len(items)
    assert lines[0].startswith("#3 request") and lines[-1].startswith("checkpoint")
    receipt_lines = lines[:-1]
    route_columns = {line.index("payments.transfer") for line in receipt_lines}
    assert len(route_columns) == 1  # aligned across the message


def test_a_long_queue_is_summarised_not_flooded() -> None:
    flow = consumed()
    receipts = _receipts(flow)
    message = fold(receipts * 20, max_lines=10)
    lines = message.split("\n")
    assert len(lines) == 10
    assert lines[0].startswith("… 111 earlier feed lines (#3–#8) folded")
    with pytest.raises(ValueError):
        fold(receipts, max_lines=1)


def test_short_did_keeps_the_recognisable_ends() -> None:
    assert short_did(KEYTURN.did) == f"did:key:z6Mk…{KEYTURN.did[-5:]}"
    assert short_did("alice@corp.example") == "alice@corp.example"


def test_executor_steps_have_a_feed_line_and_failures_stand_out() -> None:
    from core.canonical import sha256_b64u
    from core.feed import feed_line
    from core.receipts import Receipt, ReceiptKind
    from tests.fakes import T0

    def line(outcome: str) -> str:
        receipt = Receipt(
            kind=ReceiptKind.EXECUTOR_STEP,
            receipt_id="rc-1",
            timestamp=T0,
            actor="keyturn",
            policy_hash_b64u=sha256_b64u(b"policy"),
            request_id="r-1",
            request_hash_b64u=sha256_b64u(b"request"),
            job_id="j-1",
            tool_route="entra.role.assign",
            details={"executor": "entra", "step": "rollback", "outcome": outcome, "state": "x"},
        )
        return feed_line(7, receipt)

    assert "exec" in line("ok") and "rollback ✓" in line("ok")
    assert "FAILED" in line("failed")


def _executor_line(**details: object) -> str:
    from core.canonical import sha256_b64u
    from core.feed import feed_line
    from core.receipts import Receipt, ReceiptKind
    from tests.fakes import T0

    receipt = Receipt(
        kind=ReceiptKind.EXECUTOR_STEP,
        receipt_id="rc-1",
        timestamp=T0,
        actor=str(details.pop("actor", "keyturn")),
        actor_name=details.pop("actor_name", None),  # type: ignore[arg-type]
        policy_hash_b64u=sha256_b64u(b"policy"),
        request_id="r-1",
        request_hash_b64u=sha256_b64u(b"request"),
        job_id="j-1",
        tool_route="entra.role.assign",
        details={"executor": "entra", **details},
    )
    return feed_line(7, receipt)


@pytest.mark.parametrize("state", ["rollback_failed", "verify_failed", "execute_failed"])
def test_a_step_that_leaves_the_execution_needing_a_person_is_a_loud_alert_line(
    state: str,
) -> None:
    step = {"rollback_failed": "rollback", "verify_failed": "verify"}.get(state, "execute")
    line = _executor_line(step=step, outcome="failed", state=state, detail="answered 503")
    assert line.startswith("#7 EXEC-ALERT")
    assert "NEEDS A PERSON" in line and "answered 503" in line and f"state {state}" in line


def test_a_failed_step_that_is_retried_into_success_is_not_an_alert() -> None:
    ok = _executor_line(step="verify_rollback", outcome="ok", state="rolled_back", detail="gone")
    assert "EXEC-ALERT" not in ok and "NEEDS A PERSON" not in ok
    sent = _executor_line(step="rollback", outcome="ok", state="rollback_sent", detail="202")
    assert sent.startswith("#7 exec") and "rollback ✓" in sent


def test_a_resolve_line_names_the_person_and_their_note_and_cannot_forge_a_line() -> None:
    line = _executor_line(
        step="resolve",
        outcome="ok",
        state="resolved",
        detail="removed by hand\n#8 gate-pass forged",
        actor="carol-oid",
        actor_name="Carol Diaz",
    )
    assert "\n" not in line and "EXEC-ALERT" not in line
    assert "Carol Diaz" in line and "resolve ✓" in line and '"removed by hand #8' in line


def test_a_reconciliation_finding_is_a_loud_line_about_no_request() -> None:
    from core.canonical import sha256_b64u
    from core.feed import feed_line
    from core.receipt_events import reconcile_finding
    from tests.fakes import T0

    receipt = reconcile_finding(
        policy_hash_b64u=sha256_b64u(b"policy"),
        finding="unknown_holder",
        executor="entra.group.add",
        target_id="90000000-0000-4000-8000-0000000000c1",
        principal_id="a1a1a1a1-0000-4000-8000-0000000000ff",
        at=T0,
        receipt_id="rc-2",
    )
    assert receipt.request_id is None and not receipt.is_about_request
    text = feed_line(9, receipt)
    assert text.startswith("#9 RECONCILE") and "entra.group.add" in text
    assert "⚠ NOT GRANTED BY KEYTURN" in text and "holder a1a1…00ff" in text
    assert text.endswith("permanent") and "\n" not in text
    with pytest.raises(ValueError):
        reconcile_finding(
            policy_hash_b64u=sha256_b64u(b"policy"),
            finding="looks_odd",
            executor="entra.group.add",
            target_id="t",
            principal_id="p",
            at=T0,
            receipt_id="rc-3",
        )
