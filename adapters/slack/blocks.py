"""Block Kit for keyturn's card, its modals and feed messages (pure: Card in, JSON out).

Renders :class:`core.cards.Card` and never recomputes a fact. Slack limits that shape
this module [A.4]: section text ≤ 3000 characters, ≤ 10 fields of ≤ 2000, header ≤ 150,
button text ≤ 75, confirm texts ≤ 30, ``private_metadata`` ≤ 3000, ≤ 50 blocks per
message and 100 per modal. Long text is split across blocks, never cut silently.

Everything that came from people or agents is escaped for mrkdwn (``& < >``), so a
parameter cannot ping ``<!channel>`` or forge a link.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.cards import Card, ParamStyle
from core.requests import RequestState

APPROVE = "keyturn_approve"
APPROVE_TYPED = "keyturn_approve_typed"
DENY = "keyturn_deny"
SHOW_PAYLOAD = "keyturn_show_payload"
REVOKE = "keyturn_revoke"
ROLLBACK_DONE = "keyturn_rollback_done"
DENY_VIEW = "keyturn_deny_reason"
CONFIRM_VIEW = "keyturn_confirm_last4"
REASON_BLOCK = "reason"
LAST4_BLOCK = "last4"
INPUT_ACTION = "value"

SECTION_MAX = 3000
FIELD_MAX = 2000
HEADER_MAX = 150
SENSITIVE_HIDDEN = "•••• (sensitive: hidden from chat, covered by the payload hash)"

Block = dict[str, Any]


def escape(text: str) -> str:
    """mrkdwn-escape untrusted text (Slack's three control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sections(lines: Iterable[str]) -> list[Block]:
    """Pack mrkdwn lines into as few sections as fit; an over-long line is split."""
    blocks: list[Block] = []
    current = ""
    for line in lines:
        for piece in _chunks(line, SECTION_MAX):
            candidate = f"{current}\n{piece}" if current else piece
            if len(candidate) > SECTION_MAX:
                blocks.append(_section(current))
                current = piece
            else:
                current = candidate
    if current:
        blocks.append(_section(current))
    return blocks


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _code(text: str) -> str:
    # A backtick inside a code span would end it; none occur in base64url hashes, and
    # other values are shown in fenced blocks where Slack keeps them verbatim.
    return f"`{text.replace('`', 'ˋ')}`"


def _param_fields(card: Card) -> list[Block]:
    fields: list[dict[str, Any]] = []
    for param in card.params:
        value = escape(param.text)
        if param.style is ParamStyle.FOLDED:
            value += "\n_(folded: use *Show exact payload*)_"
        elif param.style is ParamStyle.SENSITIVE:
            value += "\n_(sensitive: hidden from chat)_"
        text = f"*{escape(param.key)}*\n{value}"
        for piece in _chunks(text, FIELD_MAX):
            fields.append({"type": "mrkdwn", "text": piece})
    if not fields:
        return sections(["*Parameters*  _(none)_"])
    blocks: list[Block] = [_section("*Parameters*")]
    for start in range(0, len(fields), 10):
        blocks.append({"type": "section", "fields": fields[start : start + 10]})
    return blocks


def fallback_text(card: Card) -> str:
    """The notification text (also what screen readers and old clients show)."""
    head = f"Approval needed: {card.route} ({card.request_id})"
    if card.breakglass:
        head = "BREAK-GLASS " + head
    return head if card.status_line is None else f"{head} · {card.status_line}"


def card_blocks(card: Card) -> list[Block]:
    """The approval card: every fact of CARDS.md; buttons only while pending."""
    blocks: list[Block] = []
    if card.breakglass:
        blocks.append({"type": "header", "text": _plain(f"🚨 BREAK-GLASS · {card.route}", 150)})
    blocks.append({"type": "header", "text": _plain(card.title, HEADER_MAX)})
    facts = [
        f"*Requested by*  {escape(card.requested_by)}",
        f"*Job*  {escape(card.job_line)}",
        f"*Why gated*  {escape(card.why_gated)}",
        f"*Policy*  {escape(card.policy_line)}",
    ]
    if card.justification:
        facts.append(f"*Reason*  {escape(card.justification)}")
    blocks.extend(sections(facts))
    if card.breakglass:
        window = [f"*Window*  {escape(card.window_line or 'unknown')}"]
        if card.rollback_steps:
            window.append("*Rollback steps*")
            window.extend(
                f"{n}. {escape(step)}" for n, step in enumerate(card.rollback_steps, start=1)
            )
        blocks.extend(sections(window))
    blocks.extend(_param_fields(card))
    blocks.extend(
        sections(
            [
                "*Payload hash*  SHA-256 of the canonical parameters",
                f"{_code(card.payload_hash)}   (last 4: {_code(card.payload_hash_short)})",
            ]
        )
    )
    needs = ["*Needs*", *(f"• {escape(n)}" for n in card.needs)]
    so_far = (
        ["*Approved so far*", *(escape(a) for a in card.approved_so_far)]
        if (card.approved_so_far)
        else ["*Approved so far*  nobody yet"]
    )
    blocks.extend(sections([*needs, *so_far, f"_{escape(card.progress_line)}_"]))
    if card.status_line is not None:
        blocks.extend(sections([f"*{escape(card.status_line)}*"]))
    if window_open(card):
        blocks.append(_window_block(card))
    if card.pending:
        blocks.append(_actions(card))
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"request {escape(card.request_id)}"}],
        }
    )
    return blocks


def window_open(card: Card) -> bool:
    """A break-glass window is open: the card carries the kill switch."""
    return card.breakglass and card.state is RequestState.APPROVED and bool(card.window_line)


def _window_block(card: Card) -> Block:
    # "Window open until 11:32 UTC · [Revoke]": the kill switch sits next to the window.
    return {
        "type": "section",
        "block_id": f"window:{card.request_id}"[:255],
        "text": {"type": "mrkdwn", "text": f"*{escape(card.window_line or '')}*"},
        "accessory": {
            "type": "button",
            "action_id": REVOKE,
            "value": card.request_id,
            "style": "danger",
            "text": _plain("Revoke"),
            "confirm": {
                "title": _plain("Revoke this window?", 100),
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        f"Close the break-glass window of *{escape(card.route)}* now and "
                        "revoke its token?"
                    )[:300],
                },
                "confirm": _plain("Revoke", 30),
                "deny": _plain("Cancel", 30),
                "style": "danger",
            },
        },
    }


def step_value(request_id: str, index: int) -> str:
    """The ``value`` of a rollback step's Done button."""
    return f"{request_id}#{index}"


def read_step_value(value: str) -> tuple[str, int]:
    """``(request_id, step index)`` from a Done button's value.

    Raises:
        ValueError: the value is not keyturn's.
    """
    request_id, sep, index = value.rpartition("#")
    if not sep or not request_id or not index.isdigit() or len(index) > 4:
        raise ValueError("not a rollback step button")
    return request_id, int(index)


def checklist_text(request_id: str, steps: Sequence[str], done: Mapping[int, str]) -> str:
    """The notification text of a rollback checklist."""
    return f"Rollback checklist for {request_id}: {len(done)} of {len(steps)} steps done"


def checklist_blocks(
    request_id: str, route: str, steps: Sequence[str], done: Mapping[int, str]
) -> list[Block]:
    """The rollback checklist: one Done button per step; a done step shows who did it.

    ``done`` maps a step index to its line ("Carol Diaz at 11:40 UTC").
    """
    blocks: list[Block] = [
        {"type": "header", "text": _plain(f"Rollback checklist · {route}", HEADER_MAX)},
        _section(
            f"The break-glass window of request {_code(request_id)} is closed. Mark each "
            "declared rollback step done when it is; every click is receipted."
        ),
    ]
    for index, step in enumerate(steps[:45]):
        line = f"{index + 1}. {escape(step)}"[: SECTION_MAX - 200]
        if index in done:
            blocks.append(_section(f"~{line}~\n✅ done by {escape(done[index])}"))
            continue
        block = _section(line)
        block["block_id"] = f"step:{index}"
        block["accessory"] = {
            "type": "button",
            "action_id": ROLLBACK_DONE,
            "value": step_value(request_id, index),
            "style": "primary",
            "text": _plain("Done"),
        }
        blocks.append(block)
    if len(steps) > 45:
        blocks.append(_section("More steps than Slack can show; see the web console."))
    blocks.append(_section(f"_{len(done)} of {len(steps)} steps done_"))
    return blocks


def _actions(card: Card) -> Block:
    approve: dict[str, Any] = {
        "type": "button",
        "action_id": APPROVE_TYPED if card.critical else APPROVE,
        "value": card.request_id,
        "style": "primary",
        "text": _plain("Approve"),
    }
    if not card.critical:  # critical routes confirm by typing the last 4 in a modal
        approve["confirm"] = {
            "title": _plain("Approve this request?", 100),
            "text": {
                "type": "mrkdwn",
                "text": (
                    f"Approve *{escape(card.route)}* with payload hash ending "
                    f"{_code(card.payload_hash_short)}?"
                )[:300],
            },
            "confirm": _plain("Approve", 30),
            "deny": _plain("Cancel", 30),
            "style": "primary",
        }
    return {
        "type": "actions",
        "block_id": f"decision:{card.request_id}"[:255],
        "elements": [
            approve,
            {
                "type": "button",
                "action_id": DENY,
                "value": card.request_id,
                "style": "danger",
                "text": _plain("Deny"),
            },
            {
                "type": "button",
                "action_id": SHOW_PAYLOAD,
                "value": card.request_id,
                "text": _plain("Show exact payload"),
            },
        ],
    }


def _metadata(request_id: str, channel: str | None) -> str:
    return json.dumps({"request_id": request_id, "channel": channel})


def read_metadata(private_metadata: str) -> tuple[str, str | None]:
    """``(request_id, channel)`` from a modal's metadata.

    Raises:
        ValueError: the metadata is not keyturn's.
    """
    data = json.loads(private_metadata)
    if not isinstance(data, Mapping) or not isinstance(data.get("request_id"), str):
        raise ValueError("not keyturn's modal metadata")
    channel = data.get("channel")
    return data["request_id"], channel if isinstance(channel, str) else None


def deny_modal(request_id: str, channel: str | None) -> dict[str, Any]:
    """Deny asks for a reason (required); the requester and the feed see it."""
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": _metadata(request_id, channel),
        "title": _plain("Deny request", 24),
        "submit": _plain("Deny", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            _section(f"You are denying request {_code(request_id)}."),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": _plain("Reason (the requester sees it)", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": INPUT_ACTION,
                    "multiline": True,
                    "max_length": 500,
                },
            },
        ],
    }


def confirm_modal(request_id: str, channel: str | None, route: str) -> dict[str, Any]:
    """For critical routes: type the last 4 characters of the payload hash to approve."""
    return {
        "type": "modal",
        "callback_id": CONFIRM_VIEW,
        "private_metadata": _metadata(request_id, channel),
        "title": _plain("Confirm approval", 24),
        "submit": _plain("Approve", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            _section(
                f"*{escape(route)}* is critical. Type the last 4 characters of the payload "
                "hash shown on the card to approve exactly that payload."
            ),
            {
                "type": "input",
                "block_id": LAST4_BLOCK,
                "label": _plain("Last 4 characters of the payload hash", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": INPUT_ACTION,
                    "min_length": 4,
                    "max_length": 4,
                },
            },
        ],
    }


def mask_paths(value: Any, paths: Iterable[str]) -> Any:
    """``value`` with every dotted path in ``paths`` replaced by :data:`SENSITIVE_HIDDEN`."""
    wanted = set(paths)

    def walk(node: Any, prefix: str) -> Any:
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, item in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out[key] = SENSITIVE_HIDDEN if path in wanted else walk(item, path)
        return out

    return walk(value, "")


def payload_modal(card: Card, sensitive_paths: Sequence[str]) -> dict[str, Any]:
    """The exact canonical JSON that was hashed (sensitive values withheld from chat)."""
    exact = card.exact_payload
    note = "This is the exact canonical JSON whose SHA-256 is the payload hash."
    if sensitive_paths:
        exact = json.dumps(
            mask_paths(json.loads(exact), sensitive_paths), ensure_ascii=False, indent=2
        )
        note = (
            "The exact canonical JSON, with the values the policy marks sensitive withheld "
            "from chat (the hash covers them; recompute it on the web console)."
        )
    fence = "```"
    pieces = _chunks(escape(exact), SECTION_MAX - 2 * len(fence) - 2)
    blocks: list[Block] = [
        _section(note),
        _section(f"*Payload hash*\n{_code(card.payload_hash)}"),
        *(_section(f"{fence}\n{piece}\n{fence}") for piece in pieces[:95]),
    ]
    if len(pieces) > 95:
        blocks.append(_section("The payload is too long for Slack; open it on the web console."))
    return {
        "type": "modal",
        "title": _plain("Exact payload", 24),
        "close": _plain("Close", 24),
        "blocks": blocks,
    }


def feed_blocks(text: str) -> list[Block]:
    """Feed lines in a preformatted block (keeps the columns aligned)."""
    fence = "```"
    return [_section(f"{fence}\n{piece}\n{fence}") for piece in _chunks(escape(text), 2900)]
