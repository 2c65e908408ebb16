"""The Block Kit card shows every fact, hides what the policy hides, and only offers
buttons while a decision is possible."""

from __future__ import annotations

import json
from dataclasses import replace

from adapters.slack import blocks as bk
from core.cards import Card, ParamLine, ParamStyle
from core.requests import RequestState

HASH = "3q2-7wKx9QfL0aZ1bY8cW6dV5eU4fT3gS2hR1iQ0K9xq"


def card(**kw: object) -> Card:
    base = Card(
        request_id="r-7f2c",
        route="payments.transfer",
        title="🔐 Approval needed · payments.transfer",
        breakglass=False,
        state=RequestState.PENDING,
        requested_by="invoice-bot <!channel>",
        job_line="j-8f3a21 · requested 10:41 UTC · expires 10:56 UTC (in 14 min)",
        why_gated='rule "payments of $500 or more" (amount_usd ≥ 500)',
        policy_line="keyturn_demo · hash Qm3vZp0w",
        params=(
            ParamLine("amount_usd", "12,500"),
            ParamLine("to_account", "•••• (sha256 abcd…wxyz)", ParamStyle.SENSITIVE),
            ParamLine(
                "memo", "x" * 160 + "… (900 characters; see the exact payload)", ParamStyle.FOLDED
            ),
        ),
        payload_hash=HASH,
        payload_hash_short=HASH[-4:],
        exact_payload=json.dumps(
            {"amount_usd": 12500, "memo": "x" * 900, "to_account": "DE89370400440532013000"}
        ),
        needs=("one from Finance-Approvers", "one from Security-Approvers"),
        approved_so_far=("✅ Bob Li (Finance-Approvers) 10:43",),
        progress_line="1 of 2 approvals",
        status_line=None,
        critical=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def text_of(blocks: list[dict[str, object]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_card_shows_the_full_payload_hash_in_a_code_span_and_its_last_4() -> None:
    rendered = text_of(bk.card_blocks(card()))
    assert f"`{HASH}`" in rendered
    assert "last 4: `K9xq`" in rendered


def test_card_shows_every_fact() -> None:
    rendered = text_of(bk.card_blocks(card()))
    for fact in (
        "j-8f3a21",
        "payments of $500",
        "keyturn_demo",
        "one from Finance-Approvers",
        "Bob Li (Finance-Approvers)",
        "1 of 2 approvals",
        "12,500",
        "amount_usd",
    ):
        assert fact in rendered


def test_untrusted_text_cannot_mention_the_channel() -> None:
    rendered = text_of(bk.card_blocks(card()))
    assert "<!channel>" not in rendered and "&lt;!channel&gt;" in rendered


def test_sensitive_and_folded_values_are_marked() -> None:
    rendered = text_of(bk.card_blocks(card()))
    assert "DE89370400440532013000" not in rendered
    assert "sensitive: hidden from chat" in rendered
    assert "folded: use *Show exact payload*" in rendered


def test_pending_card_offers_approve_with_confirm_deny_and_payload() -> None:
    actions = [b for b in bk.card_blocks(card()) if b["type"] == "actions"]
    assert len(actions) == 1
    elements = actions[0]["elements"]
    assert [e["action_id"] for e in elements] == [bk.APPROVE, bk.DENY, bk.SHOW_PAYLOAD]
    assert "confirm" in elements[0] and elements[0]["value"] == "r-7f2c"


def test_critical_card_approves_through_the_typed_last_4_modal() -> None:
    actions = [b for b in bk.card_blocks(card(critical=True)) if b["type"] == "actions"]
    assert actions[0]["elements"][0]["action_id"] == bk.APPROVE_TYPED
    assert "confirm" not in actions[0]["elements"][0]


def test_final_card_has_a_status_line_and_no_buttons() -> None:
    final = card(state=RequestState.DENIED, status_line='❌ Denied by Carol Diaz: "wrong"')
    rendered = bk.card_blocks(final)
    assert not [b for b in rendered if b["type"] == "actions"]
    assert "Denied by Carol Diaz" in text_of(rendered)
    assert "Denied by Carol Diaz" in bk.fallback_text(final)


def test_breakglass_card_has_badge_window_and_numbered_rollback() -> None:
    bg = card(
        breakglass=True,
        window_line="30 minutes from approval",
        rollback_steps=("Remove the role assignment", "Revoke the CST"),
    )
    rendered = text_of(bk.card_blocks(bg))
    assert "BREAK-GLASS" in rendered and "30 minutes from approval" in rendered
    assert "1. Remove the role assignment" in rendered and "2. Revoke the CST" in rendered
    assert bk.fallback_text(bg).startswith("BREAK-GLASS")


def test_every_section_fits_slack_limits() -> None:
    long = card(
        params=tuple(ParamLine(f"k{i}", "v" * 150) for i in range(40)),
        rollback_steps=("s" * 5000,),
        breakglass=True,
    )
    rendered = bk.card_blocks(long)
    assert len(rendered) <= 50
    for block in rendered:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= bk.SECTION_MAX
        for field in block.get("fields", []):
            assert len(field["text"]) <= bk.FIELD_MAX
        assert len(block.get("fields", [])) <= 10
    assert "s" * 5000 in "".join(
        b["text"]["text"].replace("\n", "")
        for b in rendered
        if "text" in b and b["type"] == "section"
    )  # split, never cut


def test_exact_payload_modal_withholds_sensitive_values() -> None:
    modal = bk.payload_modal(card(), ["to_account"])
    rendered = text_of(modal["blocks"])
    assert "DE89370400440532013000" not in rendered
    assert HASH in rendered and "x" * 900 in rendered.replace("\\n", "")
    plain = bk.payload_modal(card(), [])
    assert "DE89370400440532013000" in text_of(plain["blocks"])
