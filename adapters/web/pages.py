"""The console's HTML: pure functions from values to escaped strings.

Every value that reaches a page goes through :func:`e` (``html.escape``), including
everything that came from agents and people (routes, parameters, reasons, names). The
approval card is drawn from :class:`core.cards.Card` only, so the console shows the
same facts as Slack and Teams; nothing here recomputes a fact or decides eligibility.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from adapters.web.feed import CheckpointView, FeedEntry
from core.cards import Card, ParamStyle, time_left
from core.quorum import ApproverDecision, Verdict
from core.times import to_iso

STATIC = "/console/static"

READ_ONLY_NOTE = (
    "This console is read-only: nobody can sign in, approve, deny or request anything "
    "here. In production it is for auditors to read; put it behind your organization's "
    "SSO proxy. People decide in Slack or Teams, where their identity is verified."
)


def e(value: object) -> str:
    """HTML-escape anything (quotes too, so the result is safe inside attributes)."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: a signed-in directory person, or nobody; and the form token."""

    csrf: str
    object_id: str | None = None
    display_name: str | None = None
    demo: bool = True
    people: tuple[tuple[str, str], ...] = ()

    @property
    def signed_in(self) -> bool:
        return self.demo and self.object_id is not None


@dataclass(frozen=True, slots=True)
class Notice:
    text: str
    kind: str = "info"  # "info" | "error" | "success"
    code: str | None = None


@dataclass(frozen=True, slots=True)
class FormValues:
    """What a person typed into a form, kept when the form is shown again after an error."""

    values: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)


def hidden_csrf(viewer: Viewer) -> str:
    return f'<input type="hidden" name="csrf" value="{e(viewer.csrf)}">'


def when(moment: datetime) -> str:
    """``2026-11-23 10:56:00 UTC`` inside a machine-readable ``<time>``."""
    iso = to_iso(moment)
    return f'<time datetime="{e(iso)}">{e(moment.strftime("%Y-%m-%d %H:%M:%S"))} UTC</time>'


def notice_html(notice: Notice | None) -> str:
    if notice is None:
        return ""
    role = "alert" if notice.kind == "error" else "status"
    code = f' <span class="code">({e(notice.code)})</span>' if notice.code else ""
    return f'<p class="notice {e(notice.kind)}" role="{role}">{e(notice.text)}{code}</p>'


def layout(title: str, body: str, viewer: Viewer, *, notice: Notice | None = None) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · keyturn</title>"
        f'<link rel="stylesheet" href="{STATIC}/console.css">'
        f'<script src="{STATIC}/console.js" defer></script>'
        "</head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        '<header class="top"><nav aria-label="Console">'
        '<a class="brand" href="/">🔐 keyturn</a> <a href="/">Inbox</a> '
        '<a href="/feed">Receipts feed</a></nav>'
        f"{_who(viewer)}</header>"
        f'<main id="main">{notice_html(notice)}{body}</main>'
        "</body></html>\n"
    )


def _who(viewer: Viewer) -> str:
    if not viewer.demo:
        return '<p class="who">Read-only console</p>'
    if viewer.signed_in:
        return (
            '<form class="who" method="post" action="/signout">'
            f"<span>Signed in as <strong>{e(viewer.display_name or viewer.object_id)}</strong>"
            f' <span class="oid">({e(viewer.object_id)})</span></span> '
            f'{hidden_csrf(viewer)}<button type="submit">Sign out</button></form>'
        )
    options = "".join(
        f'<option value="{e(oid)}">{e(name)} ({e(oid)})</option>' for oid, name in viewer.people
    )
    return (
        '<form class="who" method="post" action="/signin">'
        f'{hidden_csrf(viewer)}<label for="signin-person">Sign in as (demo)</label> '
        f'<select id="signin-person" name="person">{options}</select> '
        '<button type="submit">Sign in</button></form>'
    )


# --------------------------------------------------------------------------- the card


def card_html(
    card: Card,
    *,
    created_at: datetime,
    expires_at: datetime,
    now: datetime,
    actions: str = "",
    heading: str = "h2",
) -> str:
    rid = card.request_id
    badge = ' <span class="badge">BREAK-GLASS</span>' if card.breakglass else ""
    rows = [
        (
            "Request",
            f'<a href="/requests/{e(rid)}">{e(rid)}</a> · <strong>{e(card.state)}</strong>',
        ),
        ("Requested by", e(card.requested_by)),
        ("Job", e(card.job_line)),
        ("Requested", when(created_at)),
        ("Expires", f"{when(expires_at)} ({e(time_left(expires_at, now))})"),
        ("Why gated", e(card.why_gated)),
        ("Policy", f'<span class="mono">{e(card.policy_line)}</span>'),
        ("Parameters", _params(card)),
        (
            "Payload hash",
            "SHA-256 of the canonical parameters<br>"
            f'<code class="hash">{e(card.payload_hash)}</code> '
            f'(last 4: <code class="last4">{e(card.payload_hash_short)}</code>)',
        ),
        ("Needs", _list(card.needs, "ul")),
        (
            "Approved so far",
            f"{e(card.progress_line)}"
            + (_list(card.approved_so_far, "ul") if card.approved_so_far else " · nobody yet"),
        ),
    ]
    if card.breakglass:
        rows.append(("Window", e(card.window_line or "—")))
        rows.append(("Justification", e(card.justification or "—")))
        rows.append(("Rollback steps", _list(card.rollback_steps, "ol") or "—"))
    elif card.justification:
        rows.append(("Justification", e(card.justification)))
    facts = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    status = f'<p class="status-line">{e(card.status_line)}</p>' if card.status_line else ""
    classes = "card breakglass" if card.breakglass else "card"
    return (
        f'<article class="{classes}" aria-labelledby="title-{e(rid)}" data-request="{e(rid)}">'
        f'<{heading} id="title-{e(rid)}">{e(card.title)}{badge}</{heading}>'
        f'<dl class="facts">{facts}</dl>'
        '<details class="exact"><summary>Show exact payload</summary>'
        "<p>The exact canonical JSON that was hashed (recompute the hash from it):</p>"
        f'<pre class="payload">{e(card.exact_payload)}</pre></details>'
        f"{status}{actions}</article>"
    )


def _list(items: Sequence[str], tag: str) -> str:
    if not items:
        return ""
    return f"<{tag}>" + "".join(f"<li>{e(i)}</li>" for i in items) + f"</{tag}>"


def _params(card: Card) -> str:
    if not card.params:
        return "(none)"
    rows = []
    for p in card.params:
        note = ""
        if p.style is ParamStyle.SENSITIVE:
            note = ' <span class="note">sensitive: hidden here, covered by the hash</span>'
        elif p.style is ParamStyle.FOLDED:
            note = ' <span class="note">folded: see the exact payload</span>'
        rows.append(
            f'<tr><th scope="row">{e(p.key)}</th>'
            f'<td><pre class="value">{e(p.text)}</pre>{note}</td></tr>'
        )
    return f'<table class="params"><tbody>{"".join(rows)}</tbody></table>'


def decision_forms(card: Card, viewer: Viewer) -> str:
    """Approve (with confirmation) and Deny (reason required) for one pending card."""
    rid = e(card.request_id)
    action = f"/requests/{rid}/decide"
    if card.critical:
        confirm = (
            f'<label for="confirm-{rid}">Type the last 4 characters of the payload hash '
            "to approve</label> "
            f'<input id="confirm-{rid}" name="confirmation" required minlength="4" '
            'maxlength="4" size="6" autocomplete="off" autocapitalize="off" spellcheck="false"> '
        )
    else:
        confirm = (
            f'<input type="checkbox" id="confirm-{rid}" name="confirmed" value="yes" required> '
            f'<label for="confirm-{rid}">I checked the exact action above</label> '
        )
    return (
        '<div class="actions">'
        f'<form method="post" action="{action}" class="approve">{hidden_csrf(viewer)}'
        f'{confirm}<button type="submit" name="verdict" value="approve">Approve</button></form>'
        f'<form method="post" action="{action}" class="deny">{hidden_csrf(viewer)}'
        f'<label for="reason-{rid}">Reason for denying (required)</label> '
        f'<input id="reason-{rid}" name="reason" required maxlength="500" size="30"> '
        '<button type="submit" name="verdict" value="deny">Deny</button></form>'
        "</div>"
    )


def card_actions(card: Card, viewer: Viewer, *, requesters: Iterable[str]) -> str:
    """The buttons a viewer gets on a pending card (the service still decides)."""
    if not card.pending or not viewer.demo:
        return ""
    if not viewer.signed_in:
        return '<p class="hint">Sign in to approve or deny.</p>'
    if viewer.object_id in set(requesters):
        return (
            '<p class="hint own">You requested this, so you can\'t approve it. '
            "Two different people must.</p>"
        )
    return decision_forms(card, viewer)


# --------------------------------------------------------------------------- feed


def feed_html(lines: Sequence[FeedEntry], checkpoint: CheckpointView | None) -> str:
    items = "".join(_feed_item(entry) for entry in lines)
    empty = "" if lines else '<li class="empty">No receipts since the console started.</li>'
    return (
        '<section class="feed" aria-labelledby="feed-title">'
        '<h2 id="feed-title">Receipts feed</h2>'
        '<p class="hint">One line per signed receipt, newest last; updates every 2 seconds. '
        'The receipt log keeps every receipt. <a href="/feed.json">JSON</a></p>'
        f'<ol class="feed-lines" id="feed-lines" data-feed-url="/feed.json" '
        f'aria-live="polite">{items}{empty}</ol>'
        f'<p class="checkpoint" id="feed-checkpoint">{_checkpoint(checkpoint)}</p>'
        "</section>"
    )


def _feed_item(entry: FeedEntry) -> str:
    text = f"<code>{e(entry.text)}</code>"
    if entry.request_id:
        text = f'<a href="/requests/{e(entry.request_id)}">{text}</a>'
    return f'<li data-index="{entry.index}">{text}</li>'


def _checkpoint(checkpoint: CheckpointView | None) -> str:
    if checkpoint is None:
        return "No signed checkpoint yet."
    return f"Latest signed checkpoint: <code>{e(checkpoint.line)}</code>"


# --------------------------------------------------------------------------- timeline


def timeline_html(
    *,
    created_at: datetime,
    requester: str,
    decisions: Sequence[ApproverDecision],
    grant: tuple[str, datetime, datetime] | None,
    state: str,
    state_changed_at: datetime | None,
    final_reason: str | None,
) -> str:
    events: list[tuple[datetime, str]] = [(created_at, f"requested by {requester}")]
    for d in decisions:
        groups = ", ".join(d.groups)
        if d.verdict is Verdict.APPROVE:
            text = f"✅ approved by {d.approver_name} ({groups}) on {d.platform}"
        else:
            text = f'❌ denied by {d.approver_name} on {d.platform}: "{d.reason or ""}"'
        events.append((d.decided_at, text))
    if grant is not None:
        grant_id, issued, expires = grant
        events.append((issued, f"grant {grant_id} minted, valid until {to_iso(expires)}"))
    if state != "pending" and state_changed_at is not None:
        reason = f" ({final_reason})" if final_reason else ""
        events.append((state_changed_at, f"now {state}{reason}"))
    events.sort(key=lambda item: item[0])
    items = "".join(f"<li>{when(at)} — {e(text)}</li>" for at, text in events)
    return (
        '<section aria-labelledby="timeline-title"><h2 id="timeline-title">Timeline</h2>'
        f'<ol class="timeline">{items}</ol></section>'
    )
