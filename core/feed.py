"""The security feed: one compact line per receipt, checkpoint lines, folded messages.

Pure text, no chat-platform markup (adapters wrap it in a code block or the like)::

    #1042 approve    payments.transfer  r-7f2c  Bob Li      req 3q2-…K9xq  pol Qm3v…Zp0w
    #1044 grant      payments.transfer  r-7f2c  g-5d1e      until 11:01
    #1045 gate-pass  payments.transfer  r-7f2c  g-5d1e      payload ✓
    #1046 gate-deny  payments.transfer  r-9a01  PAYLOAD_HASH_MISMATCH
    #1050 EXEC-ALERT entra.role.assign  r-5c7e  entra.role.assign  rollback ✗ FAILED
          state rollback_failed  !! NEEDS A PERSON  the receiver answered 503
    #1051 exec       entra.role.assign  r-5c7e  Carol Diaz  resolve ✓  state resolved  "…"
    checkpoint  keyturn/acme-prod  size 1046  root Hq8x…21A=  signed by did:key:z6Mk…GE7c7

Checkpoint lines make the chat workspace an outside witness of the log: a consistency
proof against a posted checkpoint later shows the log was not rewritten.

Every value that comes from people or agents (names, routes, reasons, ids) is
sanitised before it is printed: control, format and line-separator characters (a
newline, or a right-to-left override) are removed, so no value can forge a second feed
line or reorder what a reader sees, and long values are shortened with an ellipsis.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.checkpoint import Checkpoint
from core.executor import ALERTING
from core.receipts import Receipt, ReceiptKind

#: The most lines one folded message holds; older lines are summarised in one line.
DEFAULT_MAX_LINES = 40

_LABELS: dict[ReceiptKind, str] = {
    ReceiptKind.POLICY_ACTIVATED: "policy",
    ReceiptKind.REQUEST_CREATED: "request",
    ReceiptKind.APPROVAL: "approve",
    ReceiptKind.DENIAL: "deny",
    ReceiptKind.EXPIRY: "expire",
    ReceiptKind.CANCELLATION: "cancel",
    ReceiptKind.GRANT_MINTED: "grant",
    ReceiptKind.CST_MINTED: "cst-mint",
    ReceiptKind.CST_REVOKED: "cst-revoke",
    ReceiptKind.GATE_PASSED: "gate-pass",
    ReceiptKind.GATE_DENIED: "gate-deny",
    ReceiptKind.BREAKGLASS_OPENED: "bg-open",
    ReceiptKind.BREAKGLASS_EXPIRED: "bg-expire",
    ReceiptKind.BREAKGLASS_REVOKED: "bg-revoke",
    ReceiptKind.BREAKGLASS_ROLLED_BACK: "bg-rollback",
    ReceiptKind.BUNDLE_SEALED: "sealed",
    ReceiptKind.EXECUTOR_STEP: "exec",
    ReceiptKind.RECONCILE_FINDING: "RECONCILE",
}
#: The label of an executor step that left the execution needing a person.
ALERT_LABEL = "EXEC-ALERT"
_ALERTING_STATES = frozenset(str(s) for s in ALERTING)
# Minimum widths of the aligned columns: #index, kind, route, request, who.
_WIDTHS = (0, 9, 17, 6, 10)
_GAP = "  "


@dataclass(frozen=True, slots=True)
class CheckpointPosted:
    """A checkpoint to announce in the feed, with the DID of the key that signed it."""

    checkpoint: Checkpoint
    signer_did: str


FeedItem = tuple[int, Receipt] | CheckpointPosted
"""A receipt with its log index, or a checkpoint to post."""


def clean(text: object, limit: int = 48) -> str:
    """``text`` safe for one feed line: no control/format characters, at most ``limit`` chars."""
    raw = str(text)
    kept = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in raw
        if unicodedata.category(ch) not in ("Cf", "Cs", "Co", "Cn")
    )
    flat = " ".join(kept.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def short_hash(value: object) -> str:
    """``3q2-…K9xq``: the first and last four characters of a hash (for speech and feeds)."""
    text = clean(value, 200)
    return text if len(text) <= 10 else f"{text[:4]}…{text[-4:]}"


def short_did(did: object) -> str:
    """``did:key:z6Mk…GE7c7``; anything that is not a did:key is only cleaned."""
    text = clean(did, 200)
    prefix = "did:key:z6Mk"
    if text.startswith(prefix) and len(text) > len(prefix) + 5:
        return f"{prefix}…{text[-5:]}"
    return clean(text, 24)


def _who(receipt: Receipt) -> str:
    if receipt.actor_name:
        return clean(receipt.actor_name, 24)
    return short_did(receipt.actor)


def _hhmm(iso: object) -> str:
    text = clean(iso, 40)
    # RFC 3339 as keyturn writes it: 2026-11-23T11:01:00.000Z → 11:01 (UTC)
    return text[11:16] if len(text) >= 16 and text[10] == "T" else text


def _detail(receipt: Receipt, name: str, limit: int = 48) -> str:
    value = receipt.details.get(name)
    return "" if value is None else clean(value, limit)


def receipt_cells(index: int, receipt: Receipt) -> tuple[str, ...]:
    """The columns of one receipt's feed line: index, kind, route, request, who, notes…"""
    kind = receipt.kind
    route = clean(receipt.tool_route or "—", 40)
    request = clean(receipt.request_id or "—", 12)
    req = f"req {short_hash(receipt.request_hash_b64u)}" if receipt.request_hash_b64u else ""
    pol = f"pol {short_hash(receipt.policy_hash_b64u)}"
    cells: tuple[str, ...]
    label = _LABELS[kind]
    if kind is ReceiptKind.POLICY_ACTIVATED:
        route = _detail(receipt, "policy_id", 40) or "—"
        cells = (_who(receipt), pol)
    elif kind in (ReceiptKind.REQUEST_CREATED, ReceiptKind.APPROVAL):
        cells = (_who(receipt), req, pol)
    elif kind is ReceiptKind.DENIAL:
        decision = receipt.details.get("decision")
        reason = decision.get("reason") if isinstance(decision, Mapping) else None
        cells = (_who(receipt), req, f'"{clean(reason or "", 60)}"')
    elif kind is ReceiptKind.EXPIRY:
        cells = ("expired", _detail(receipt, "reason"))
    elif kind is ReceiptKind.CANCELLATION:
        cells = (_who(receipt), "cancelled", _detail(receipt, "reason"))
    elif kind is ReceiptKind.GRANT_MINTED:
        cells = (
            _detail(receipt, "grant_id", 16),
            f"until {_hhmm(receipt.details.get('expires_at'))}",
        )
    elif kind in (ReceiptKind.CST_MINTED, ReceiptKind.BREAKGLASS_OPENED):
        until = receipt.details.get("expires_at") or receipt.details.get("until")
        token = f"cst {_detail(receipt, 'token_hash_hex', 64)[:8]}"
        cells = (token, f"until {_hhmm(until)}", short_did(receipt.details.get("subject", "")))
    elif kind in (
        ReceiptKind.CST_REVOKED,
        ReceiptKind.BREAKGLASS_EXPIRED,
        ReceiptKind.BREAKGLASS_REVOKED,
    ):
        token = f"cst {_detail(receipt, 'token_hash_hex', 64)[:8]}"
        cells = (_who(receipt), token, _detail(receipt, "reason"))
    elif kind is ReceiptKind.GATE_PASSED:
        cells = (_detail(receipt, "grant_id", 16), "payload ✓")
    elif kind is ReceiptKind.GATE_DENIED:
        cells = (_detail(receipt, "reason_code", 40),)
    elif kind is ReceiptKind.BREAKGLASS_ROLLED_BACK:
        step = receipt.details.get("step_index")
        number = step + 1 if isinstance(step, int) and not isinstance(step, bool) else "?"
        cells = (_who(receipt), f"step {number} done", _detail(receipt, "step"))
    elif kind is ReceiptKind.EXECUTOR_STEP:
        outcome = _detail(receipt, "outcome", 8)
        step = _detail(receipt, "step", 16)
        state = _detail(receipt, "state", 24)
        mark = "✓" if outcome == "ok" else "✗ FAILED"
        if step == "resolve":  # a person's word on a failure: who, and what they said
            cells = (_who(receipt), f"resolve {mark}", f"state {state}")
            cells += (f'"{_detail(receipt, "detail", 60)}"',)
        else:
            cells = (_detail(receipt, "executor", 24), f"{step} {mark}", f"state {state}")
        if state in _ALERTING_STATES:
            # Loud on purpose: the feed is where the security team is paged.
            label = ALERT_LABEL
            cells += ("!! NEEDS A PERSON", _detail(receipt, "detail", 120))
    elif kind is ReceiptKind.RECONCILE_FINDING:
        route = _detail(receipt, "executor", 40) or "—"
        end = receipt.details.get("ends_at")
        cells = (
            "⚠ NOT GRANTED BY KEYTURN",
            f"target {short_hash(receipt.details.get('target_id'))}",
            f"holder {short_hash(receipt.details.get('principal_id'))}",
            _detail(receipt, "assignment_type", 16),
            f"until {_hhmm(end)}" if end else "permanent",
        )
    else:  # BUNDLE_SEALED
        cells = (
            _detail(receipt, "bundle_id", 24),
            f"bundle {short_hash(receipt.details.get('bundle_hash_b64u'))}",
        )
    return (f"#{index}", label, route, request, *(c for c in cells if c))


def _render(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = list(_WIDTHS)
    for row in rows:
        for column, cell in enumerate(row[: len(widths)]):
            widths[column] = max(widths[column], len(cell))
    lines = []
    for row in rows:
        padded = [
            cell.ljust(widths[c]) if c < len(widths) and c < len(row) - 1 else cell
            for c, cell in enumerate(row)
        ]
        # The index and the kind sit one space apart, as in the card mock-up.
        head = padded[0] + " " + padded[1] if len(padded) > 1 else padded[0]
        lines.append(_GAP.join([head, *padded[2:]]).rstrip())
    return lines


def feed_line(index: int, receipt: Receipt) -> str:
    """One receipt as one line (columns padded to the default widths)."""
    return _render([receipt_cells(index, receipt)])[0]


def checkpoint_line(checkpoint: Checkpoint, signer_did: str) -> str:
    """``checkpoint  keyturn/acme-prod  size 1046  root Hq8x…21A=  signed by did:key:z6Mk…``."""
    root = base64.b64encode(checkpoint.root_hash).decode("ascii")
    return _GAP.join(
        (
            "checkpoint",
            clean(checkpoint.origin, 60),
            f"size {checkpoint.size}",
            f"root {short_hash(root)}",
            f"signed by {short_did(signer_did)}",
        )
    )


def fold(items: Sequence[FeedItem], *, max_lines: int = DEFAULT_MAX_LINES) -> str:
    """Fold queued receipts (and checkpoints) into one message, oldest first, newest last.

    Receipt lines are aligned across the whole message. When there are more than
    ``max_lines`` items, the oldest are summarised in one leading line and the newest
    ``max_lines - 1`` are shown: the feed never floods a channel, and nothing is
    dropped silently (the log keeps every receipt).

    Raises:
        ValueError: ``max_lines`` < 2.
    """
    if max_lines < 2:
        raise ValueError("a folded message shows at least two lines")
    shown = list(items)
    header: list[str] = []
    if len(shown) > max_lines:
        hidden, shown = shown[: len(shown) - (max_lines - 1)], shown[-(max_lines - 1) :]
        indexes = [item[0] for item in hidden if isinstance(item, tuple)]
        span = f" (#{min(indexes)}–#{max(indexes)})" if indexes else ""
        header.append(f"… {len(hidden)} earlier feed lines{span} folded; the log has them all")
    rows = [receipt_cells(*item) for item in shown if isinstance(item, tuple)]
    rendered = iter(_render(rows))
    lines = [
        next(rendered)
        if isinstance(item, tuple)
        else checkpoint_line(item.checkpoint, item.signer_did)
        for item in shown
    ]
    return "\n".join(header + lines)
