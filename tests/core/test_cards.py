"""The neutral card shows the facts an approver needs to notice what is wrong."""

from __future__ import annotations

from datetime import timedelta

from core.cards import ParamStyle, build_card, param_lines, time_left
from core.policy import ToolCall
from core.quorum import Verdict, apply, judge
from core.requests import RequestState, open_request
from tests.fakes import T0, eligibility, load_policy

POLICY = load_policy("enterprise-two-person.json")
PAYMENT = {
    "amount_usd": 12_500,
    "to_account": "DE89 3704 0044 0532 0130 00",
    "memo": "Invoice 2026-118",
}


def _request(params=PAYMENT, route="payments.transfer"):
    call = ToolCall(route=route, params=params, requester="agent-1", on_behalf_of="alice")
    return open_request(
        call,
        POLICY.evaluate(call),
        request_id="r-7f2c",
        job_id="j-8f3a21",
        policy_hash_b64u=POLICY.policy_hash_b64u,
        now=T0,
    )


def test_pending_card_shows_full_hash_rule_quorum_and_time_left() -> None:
    request = _request()
    card = build_card(
        request,
        [],
        POLICY,
        now=T0 + timedelta(minutes=1),
        requester_name="invoice-bot",
        on_behalf_of_name="Alice Chen",
    )
    assert card.payload_hash == request.binding.payload_hash_b64u and len(card.payload_hash) == 43
    assert card.payload_hash_short == card.payload_hash[-4:]
    assert card.requested_by == "invoice-bot acting for Alice Chen"
    assert "amount_usd" in card.why_gated and "500" in card.why_gated
    assert "one from Finance-Approvers, one from Security-Approvers" in card.needs[0]
    assert "in 14 min" in card.job_line
    assert card.pending and card.status_line is None and card.critical
    assert {p.key: p.text for p in card.params}["amount_usd"] == "12,500"
    assert '"amount_usd": 12500' in card.exact_payload


def test_sensitive_params_are_masked_but_still_hashed() -> None:
    lines = param_lines(
        {"message": {"body": {"content": "secret text"}, "subject": "hi"}},
        frozenset({"message.body.content"}),
    )
    assert "secret text" not in lines[0].text and "••••" in lines[0].text
    top = param_lines({"token": "s3cr3t"}, frozenset({"token"}))
    assert top[0].style is ParamStyle.SENSITIVE and "s3cr3t" not in top[0].text


def test_long_values_are_folded_never_cut_silently() -> None:
    line = param_lines({"memo": "x" * 500}, frozenset())[0]
    assert line.style is ParamStyle.FOLDED and "500 characters" in line.text


def test_lists_and_nested_objects_are_readable() -> None:
    lines = {
        p.key: p.text
        for p in param_lines({"to": ["a@x", "b@y"], "cfg": {"a": 1, "b": {"c": 2}}}, frozenset())
    }
    assert lines["to"] == "- a@x\n- b@y"
    assert "a: 1" in lines["cfg"] and "  c: 2" in lines["cfg"]


def test_final_states_replace_buttons_with_one_status_line() -> None:
    request = _request(params={"dataset": "customer_pii"}, route="storage.export")
    d = judge(
        request,
        [],
        eligibility(POLICY, "carol", ["Agent-Approvers-Prod"], name="Carol Diaz"),
        Verdict.DENY,
        groups=POLICY.groups,
        now=T0,
        platform="slack",
        reason="wrong beneficiary",
    )
    denied = apply(request, [], d)
    card = build_card(denied, [d], POLICY, now=T0)
    assert card.status_line == '❌ Denied by Carol Diaz: "wrong beneficiary"' and not card.pending
    expired = request.transition(RequestState.EXPIRED, at=request.binding.expires_at)
    assert "Expired at" in (build_card(expired, [], POLICY, now=T0).status_line or "")
    assert "nothing ran" in (build_card(expired, [], POLICY, now=T0).status_line or "")


def test_time_left_in_the_readers_terms() -> None:
    assert time_left(T0 + timedelta(seconds=30), T0) == "in 30 s"
    assert time_left(T0 + timedelta(hours=2, minutes=5), T0) == "in 2 h 5 min"
    assert time_left(T0, T0) == "passed"


def test_exact_payload_masks_sensitive_values_too() -> None:
    from core.cards import exact_payload

    text = exact_payload({"to_account": "DE89", "amount_usd": 5}, frozenset({"to_account"}))
    assert "DE89" not in text and "••••" in text and "masked" in text
    plain = exact_payload({"b": 1, "a": 2}, frozenset())
    assert plain.index('"a"') < plain.index('"b"') and "masked" not in plain
