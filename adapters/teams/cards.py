"""``core.cards.Card`` → an Adaptive Card 1.5 with Universal Actions (``Action.Execute``).

Pure translation: every fact comes from the neutral card (CARDS.md) and is never
recomputed here — route, readable parameters (masked / folded), the FULL payload hash
and its last 4, policy name + hash, the gating rule, requester, expiry, quorum,
approvals so far, the status line once final, the BREAK-GLASS badge, window and
rollback steps. Pending cards carry Approve (with an ``Input.Text`` for the last 4 of
the hash when the route is critical) and Deny (with a required reason).

Text that came from people or agents is only ever put in ``TextRun`` elements, which
Adaptive Cards never parse as markdown, so ``[click](https://evil)`` or ``**APPROVED**``
in a parameter shows literally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.cards import Card, ParamStyle

VERSION = "1.5"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

VERB_APPROVE = "approve"
VERB_DENY = "deny"
VERB_REFRESH = "refreshCard"
VERB_ROLLBACK_DONE = "rollbackDone"
INPUT_CONFIRM = "confirm"
INPUT_REASON = "reason"


def _run(text: str, **style: Any) -> dict[str, Any]:
    # TextRun is never parsed as markdown, so values from people and agents (names,
    # parameters, reasons) show literally: "[click](https://evil)" stays text.
    return {"type": "TextRun", "text": text, **style}


def _rich(*runs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": list(runs), **extra}


def _line(text: str, **style: Any) -> dict[str, Any]:
    return _rich(_run(text, **style))


def _fact(title: str, value: str) -> dict[str, Any]:
    return _rich(_run(f"{title}  ", weight="Bolder"), _run(value))


def _data(card: Card) -> dict[str, str]:
    # payloadHash travels with every click so a click made on an out-of-date copy can
    # be told apart; the service still decides against the stored request.
    return {"requestId": card.request_id, "payloadHash": card.payload_hash}


def adaptive_card(
    card: Card,
    *,
    refresh_user_ids: Sequence[str] = (),
    notice: str | None = None,
) -> dict[str, Any]:
    """The Adaptive Card for ``card``.

    Args:
        card: the neutral card (``service.view(request_id).card``).
        refresh_user_ids: Teams user MRIs whose clients refresh the card automatically
            (``refresh.userIds``; Teams honours at most 60).
        notice: a line shown above the card to the person who clicked (a refusal or
            a confirmation); it changes nothing else.
    """
    body: list[dict[str, Any]] = []
    if notice:
        body.append(
            {"type": "Container", "style": "warning", "items": [_line(notice, weight="Bolder")]}
        )
    header: list[dict[str, Any]] = [
        {
            "type": "Column",
            "width": "stretch",
            "items": [_line(card.title, size="Medium", weight="Bolder")],
        }
    ]
    if card.breakglass:
        header.append(
            {
                "type": "Column",
                "width": "auto",
                "items": [_line("BREAK-GLASS", color="Attention", weight="Bolder")],
            }
        )
    body.append({"type": "ColumnSet", "columns": header})
    body.append(_fact("Requested by", card.requested_by))
    body.append(_fact("Job", card.job_line))
    body.append(_fact("Why gated", card.why_gated))
    body.append(_fact("Policy", card.policy_line))
    if card.justification:
        body.append(_fact("Reason", card.justification))
    if card.window_line:
        body.append(_fact("Window", card.window_line))
    body.append(_line("Parameters", weight="Bolder"))
    for param in card.params:
        suffix = " (sensitive: hidden, still covered by the payload hash)"
        value = param.text + (suffix if param.style is ParamStyle.SENSITIVE else "")
        body.append(_rich(_run(f"{param.key}  ", fontType="Monospace"), _run(value)))
    body.append(_line("Payload hash (SHA-256 of the canonical parameters)", weight="Bolder"))
    body.append(_line(card.payload_hash, fontType="Monospace"))
    body.append(
        _rich(_run("last 4: ", isSubtle=True), _run(card.payload_hash_short, weight="Bolder"))
    )
    body.append(
        {
            "type": "Container",
            "id": "exactPayload",
            "isVisible": False,
            "items": [_line(card.exact_payload, fontType="Monospace")],
        }
    )
    body.append(_line("Needs", weight="Bolder"))
    body.extend(_line(f"• {need}") for need in card.needs)
    body.append(_line(card.progress_line, isSubtle=True))
    if card.approved_so_far:
        body.append(_line("Approved so far", weight="Bolder"))
        body.extend(_line(a) for a in card.approved_so_far)
    if card.rollback_steps:
        body.append(_line("Rollback steps", weight="Bolder"))
        body.extend(_line(f"{i}. {step}") for i, step in enumerate(card.rollback_steps, 1))
    if card.status_line:
        body.append(_line(card.status_line, weight="Bolder", size="Medium"))
    actions: list[dict[str, Any]] = [
        {
            "type": "Action.ToggleVisibility",
            "title": "Show exact payload",
            "targetElements": ["exactPayload"],
        }
    ]
    if card.pending:
        actions = [_approve_action(card), _deny_action(card), *actions]
    result: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": VERSION,
        "body": body,
        "actions": actions,
    }
    users = list(dict.fromkeys(u for u in refresh_user_ids if u))[:60]
    if users and card.pending:
        result["refresh"] = {
            "action": {"type": "Action.Execute", "verb": VERB_REFRESH, "data": _data(card)},
            "userIds": users,
        }
    return result


def _approve_action(card: Card) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    if card.critical:
        items.append(
            {
                "type": "Input.Text",
                "id": INPUT_CONFIRM,
                "label": "Type the last 4 characters of the payload hash to confirm",
                "isRequired": True,
                "maxLength": 4,
                "errorMessage": "Type the last 4 characters of the payload hash",
            }
        )
    else:
        items.append(_line("Approve this exact payload?"))
    return {
        "type": "Action.ShowCard",
        "title": "Approve",
        "card": {
            "type": "AdaptiveCard",
            "body": items,
            "actions": [
                {
                    "type": "Action.Execute",
                    "title": "Confirm approval",
                    "verb": VERB_APPROVE,
                    "data": _data(card),
                    "style": "positive",
                }
            ],
        },
    }


def _deny_action(card: Card) -> dict[str, Any]:
    return {
        "type": "Action.ShowCard",
        "title": "Deny",
        "card": {
            "type": "AdaptiveCard",
            "body": [
                {
                    "type": "Input.Text",
                    "id": INPUT_REASON,
                    "label": "Why are you denying this? (required)",
                    "isMultiline": True,
                    "isRequired": True,
                    "maxLength": 500,
                    "errorMessage": "A reason is required to deny",
                }
            ],
            "actions": [
                {
                    "type": "Action.Execute",
                    "title": "Deny",
                    "verb": VERB_DENY,
                    "data": _data(card),
                    "style": "destructive",
                }
            ],
        },
    }


def message_card(title: str, lines: Sequence[str], *, monospace: bool = False) -> dict[str, Any]:
    """A plain informational card (command answers, feed messages, notices)."""
    style: dict[str, Any] = {"fontType": "Monospace"} if monospace else {}
    body = [_line(title, weight="Bolder"), *(_line(line, **style) for line in lines)]
    return {"type": "AdaptiveCard", "$schema": SCHEMA, "version": VERSION, "body": body}


def rollback_card(request_id: str, steps: Sequence[str], *, closed_line: str) -> dict[str, Any]:
    """The rollback checklist: each declared step with a "Done" button (receipted)."""
    body: list[dict[str, Any]] = [
        _line(f"Rollback checklist · {request_id}", weight="Bolder"),
        _line(closed_line, isSubtle=True),
    ]
    actions = []
    for index, step in enumerate(steps):
        body.append(_line(f"{index + 1}. {step}"))
        actions.append(
            {
                "type": "Action.Execute",
                "title": f"Done: step {index + 1}",
                "verb": VERB_ROLLBACK_DONE,
                "data": {"requestId": request_id, "step": index},
            }
        )
    return {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": VERSION,
        "body": body,
        "actions": actions,
    }
