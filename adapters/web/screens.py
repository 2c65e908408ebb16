"""Whole console pages: the inbox, the request page, the feed, and the two demo forms."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from adapters.web.feed import CheckpointView, FeedEntry
from adapters.web.pages import (
    READ_ONLY_NOTE,
    FormValues,
    Notice,
    Viewer,
    card_actions,
    card_html,
    e,
    feed_html,
    hidden_csrf,
    layout,
    timeline_html,
    when,
)
from adapters.web.ports import RequestViewLike, StepRecordLike
from core.bundle_verify import BundleReport
from core.executor import ExecutionStatus
from core.requests import ApprovalRequest

DEFAULT_TEST_ROUTE = "payments.transfer"
DEFAULT_TEST_PARAMS = {
    "amount_usd": 12_500,
    "to_account": "DE89 3704 0044 0532 0130 00",
    "memo": "Invoice 2026-118",
}
DEFAULT_BREAKGLASS_ROUTE = "entra.role.assign"
DEFAULT_BREAKGLASS_PARAMS = {
    "tenant_id": "00000000-0000-4000-8000-0000000000aa",
    "principal": "alice@corp.example",
    "role": "Privileged Role Administrator",
}


@dataclass(frozen=True, slots=True)
class BundleSummary:
    """What the request page says about the proof bundle (``keyturn verify``, server-side)."""

    available: bool
    note: str
    report: BundleReport | None = None
    failure: tuple[str, str] | None = None  # (reason_code, message)


@dataclass(frozen=True, slots=True)
class ExecutionPanel:
    """What keyturn's executor did for a request it executes itself."""

    status: ExecutionStatus
    steps: Sequence[StepRecordLike]


#: What each alerting state means for the person reading it.
ALERT_TEXT = {
    "execute_failed": "keyturn could not carry out the approved action (or cannot tell "
    "whether it happened).",
    "verify_failed": "the action was sent, but keyturn could not confirm it took effect.",
    "rollback_failed": "keyturn could not undo the action: the change may still be in place.",
}


@dataclass(frozen=True, slots=True)
class SecretToken:
    """A break-glass token for the page of its requester, shown once."""

    token: str
    expires_at: datetime
    window_closes_at: datetime


def requesters(view: RequestViewLike) -> tuple[str, ...]:
    """Who asked: the requester and the person an agent acts for (neither may approve)."""
    b = view.request.binding
    return tuple(x for x in (b.requester, b.on_behalf_of) if x)


def view_card(view: RequestViewLike, viewer: Viewer, now: datetime, *, heading: str = "h2") -> str:
    b = view.request.binding
    return card_html(
        view.card,
        created_at=b.created_at,
        expires_at=b.expires_at,
        now=now,
        actions=card_actions(view.card, viewer, requesters=requesters(view)),
        heading=heading,
    )


def inbox_page(
    viewer: Viewer,
    *,
    pending: Sequence[RequestViewLike],
    recent: Sequence[RequestViewLike],
    lines: Sequence[FeedEntry],
    checkpoint: CheckpointView | None,
    now: datetime,
    can_submit_test_call: bool,
    notice: Notice | None = None,
    form: FormValues | None = None,
    form_name: str | None = None,
    alerts: Sequence[tuple[ApprovalRequest, ExecutionStatus]] = (),
) -> str:
    parts = ["<h1>Inbox</h1>"]
    if not viewer.demo:
        parts.append(f'<p class="notice info read-only" role="note">{e(READ_ONLY_NOTE)}</p>')
    parts.append(alerts_html(alerts))
    parts.append('<section aria-labelledby="pending-title">')
    parts.append(f'<h2 id="pending-title">Waiting for approval ({len(pending)})</h2>')
    if pending:
        parts.extend(view_card(v, viewer, now, heading="h3") for v in pending)
    else:
        parts.append("<p>Nothing is waiting for approval.</p>")
    parts.append("</section>")
    parts.append(_recent(recent))
    if viewer.signed_in:
        if can_submit_test_call:
            parts.append(test_call_form(viewer, form if form_name == "test-call" else None))
        parts.append(breakglass_form(viewer, form if form_name == "breakglass" else None))
    elif viewer.demo:
        parts.append('<p class="hint">Sign in (top right) to approve, deny or submit.</p>')
    parts.append(feed_html(lines, checkpoint))
    return layout("Inbox", "".join(parts), viewer, notice=notice)


def alerts_html(alerts: Sequence[tuple[ApprovalRequest, ExecutionStatus]]) -> str:
    """Executions that need a person, loud, at the top of the inbox."""
    if not alerts:
        return ""
    items = "".join(
        f'<li><a href="/requests/{e(r.request_id)}">{e(r.request_id)}</a> · '
        f"{e(r.binding.tool_route)} · <strong>{e(s.state)}</strong>: "
        f'{e(ALERT_TEXT.get(str(s.state), ""))} <span class="note">{e(s.last_detail)}</span></li>'
        for r, s in alerts
    )
    return (
        '<section class="alert" role="alert" aria-labelledby="alerts-title">'
        f'<h2 id="alerts-title">Executions that need a person ({len(alerts)})</h2>'
        f"<ul>{items}</ul><p>Check each target by hand, then resolve it on its request page "
        "(or <code>keyturn executions resolve</code>); the note is receipted.</p></section>"
    )


def _recent(recent: Sequence[RequestViewLike]) -> str:
    if not recent:
        return ""
    rows = "".join(
        "<tr>"
        f'<td><a href="/requests/{e(v.card.request_id)}">{e(v.card.request_id)}</a></td>'
        f"<td>{e(v.card.route)}{' · BREAK-GLASS' if v.card.breakglass else ''}</td>"
        f"<td>{e(v.card.state)}</td>"
        f"<td>{e(v.card.status_line or v.card.progress_line)}</td></tr>"
        for v in recent
    )
    return (
        '<section aria-labelledby="recent-title"><h2 id="recent-title">Recent requests</h2>'
        '<table class="recent"><thead><tr><th scope="col">Request</th><th scope="col">Route</th>'
        '<th scope="col">State</th><th scope="col">Status</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


def test_call_form(viewer: Viewer, form: FormValues | None) -> str:
    values = form or FormValues()
    params = values.get("params", json.dumps(DEFAULT_TEST_PARAMS, indent=2))
    return (
        '<section aria-labelledby="test-call-title"><h2 id="test-call-title">'
        "Submit a test agent call</h2>"
        "<p>Sent as the demo agent (invoice-bot) through the same use case agents call; "
        "the policy decides whether it is allowed, gated or denied.</p>"
        f'<form method="post" action="/test-call" class="stack">{hidden_csrf(viewer)}'
        '<label for="tc-route">Tool route</label>'
        f'<input id="tc-route" name="route" required maxlength="200" '
        f'value="{e(values.get("route", DEFAULT_TEST_ROUTE))}">'
        '<label for="tc-params">Parameters (JSON object)</label>'
        f'<textarea id="tc-params" name="params" rows="6" required>{e(params)}</textarea>'
        '<button type="submit">Submit test call</button></form></section>'
    )


def breakglass_form(viewer: Viewer, form: FormValues | None) -> str:
    values = form or FormValues()
    params = values.get("params", json.dumps(DEFAULT_BREAKGLASS_PARAMS, indent=2))
    return (
        '<section aria-labelledby="bg-title"><h2 id="bg-title">Request break-glass</h2>'
        f"<p>A time-boxed privilege for you ({e(viewer.display_name or viewer.object_id)}): "
        "two approvers, a token only you receive, auto-expiry and a kill switch.</p>"
        f'<form method="post" action="/breakglass" class="stack">{hidden_csrf(viewer)}'
        '<label for="bg-route">Tool route</label>'
        f'<input id="bg-route" name="route" required maxlength="200" '
        f'value="{e(values.get("route", DEFAULT_BREAKGLASS_ROUTE))}">'
        '<label for="bg-params">Parameters (JSON object)</label>'
        f'<textarea id="bg-params" name="params" rows="5" required>{e(params)}</textarea>'
        '<label for="bg-minutes">Window (minutes)</label>'
        f'<input id="bg-minutes" name="minutes" type="number" min="1" max="1440" required '
        f'value="{e(values.get("minutes", "30"))}">'
        '<label for="bg-reason">Reason (required; it goes on the card)</label>'
        f'<input id="bg-reason" name="reason" required maxlength="500" '
        f'value="{e(values.get("reason"))}">'
        '<label for="bg-ticket">Ticket (optional)</label>'
        f'<input id="bg-ticket" name="ticket" maxlength="100" value="{e(values.get("ticket"))}">'
        '<label for="bg-rollback">Rollback steps, one per line (empty: the policy\'s own)</label>'
        f'<textarea id="bg-rollback" name="rollback" rows="4">{e(values.get("rollback"))}'
        "</textarea>"
        '<button type="submit">Request break-glass</button></form></section>'
    )


def request_page(
    view: RequestViewLike,
    viewer: Viewer,
    *,
    now: datetime,
    bundle: BundleSummary,
    lines: Sequence[FeedEntry],
    notice: Notice | None = None,
    secret: SecretToken | None = None,
    execution: ExecutionPanel | None = None,
) -> str:
    card = view.card
    request = view.request
    parts = [f"<h1>Request {e(card.request_id)}</h1>"]
    parts.append(
        f'<p class="status" id="request-status">Status: <strong>{e(card.state)}</strong>'
        + (f" — {e(card.status_line)}" if card.status_line else f" — {e(card.progress_line)}")
        + "</p>"
    )
    if secret is not None:
        parts.append(_secret(secret))
    if execution is not None:
        parts.append(execution_html(view, viewer, execution))
    parts.append(view_card(view, viewer, now))
    parts.append(_window_actions(view, viewer))
    grant = view.grant
    parts.append(
        timeline_html(
            created_at=request.binding.created_at,
            requester=card.requested_by,
            decisions=view.decisions,
            grant=(grant.grant_id, grant.issued_at, grant.expires_at) if grant else None,
            state=str(request.state),
            state_changed_at=request.state_changed_at,
            final_reason=request.final_reason,
        )
    )
    parts.append(_bundle(card.request_id, bundle))
    items = "".join(f"<li><code>{e(line.text)}</code></li>" for line in lines)
    parts.append(
        '<section aria-labelledby="receipts-title"><h2 id="receipts-title">Receipts</h2>'
        + (f'<ol class="feed-lines">{items}</ol>' if items else "<p>None seen yet.</p>")
        + "</section>"
    )
    return layout(f"Request {card.request_id}", "".join(parts), viewer, notice=notice)


def execution_html(view: RequestViewLike, viewer: Viewer, panel: ExecutionPanel) -> str:
    """The executor's state and steps; a failure is an alert with the resolve form."""
    status = panel.status
    state = str(status.state)
    rid = e(view.card.request_id)
    alerting = status.alerting
    loud = ' alert" role="alert' if alerting else ""
    parts = [
        f'<section class="execution{loud}" id="execution" aria-labelledby="execution-title">'
        '<h2 id="execution-title">Executed by keyturn</h2>'
        f"<p>Executor <code>{e(status.executor or '—')}</code> · state "
        f'<strong class="execution-state">{e(state)}</strong></p>'
    ]
    if alerting:
        parts.append(
            f"<p><strong>Needs a person:</strong> {e(ALERT_TEXT.get(state, ''))} "
            f"{e(status.last_detail)}</p>"
        )
        if viewer.signed_in and viewer.object_id not in requesters(view):
            parts.append(
                f'<form method="post" action="/requests/{rid}/resolve" class="stack">'
                f"{hidden_csrf(viewer)}"
                f'<label for="resolve-note-{rid}">What did you check and do? (receipted)</label>'
                f'<textarea id="resolve-note-{rid}" name="note" rows="3" required '
                'maxlength="500"></textarea>'
                '<button type="submit" class="danger">Resolve</button></form>'
            )
        elif viewer.signed_in:
            parts.append('<p class="hint">An eligible approver other than you must resolve it.</p>')
    elif state == "not_started":
        parts.append("<p>Nothing executed yet: keyturn runs it once the window opens.</p>")
    if panel.steps:
        rows = "".join(
            f"<li>#{s.index} {when(s.at)} <code>{e(s.step)}</code> "
            f"{'✓' if s.outcome == 'ok' else '✗ FAILED'}"
            f"{f' ×{s.attempts}' if s.attempts > 1 else ''} · "
            f"{e(s.actor_name or s.actor)}: {e(s.detail)}</li>"
            for s in panel.steps
        )
        parts.append(f'<ol class="execution-steps">{rows}</ol>')
    parts.append("</section>")
    return "".join(parts)


def _secret(secret: SecretToken) -> str:
    return (
        '<section class="secret" role="alert" aria-labelledby="secret-title">'
        '<h2 id="secret-title">Your break-glass token</h2>'
        "<p>Shown once, only to you: copy it now. It is not stored in the page again. "
        f"Valid until {when(secret.expires_at)}; the window closes {when(secret.window_closes_at)}."
        "</p>"
        '<label for="secret-token">Token</label>'
        f'<textarea id="secret-token" readonly rows="4">{e(secret.token)}</textarea></section>'
    )


def _window_actions(view: RequestViewLike, viewer: Viewer) -> str:
    """Get token (the requester only) and Revoke, while a break-glass window is open."""
    card = view.card
    if not (card.breakglass and str(card.state) == "approved" and viewer.signed_in):
        return ""
    rid = e(card.request_id)
    parts = [
        '<section class="window" aria-labelledby="window-title">'
        '<h2 id="window-title">Break-glass window</h2>'
    ]
    if viewer.object_id in requesters(view):
        parts.append(
            f'<form method="post" action="/requests/{rid}/token">{hidden_csrf(viewer)}'
            '<button type="submit">Get my token (shown once)</button></form>'
        )
    parts.append(
        f'<form method="post" action="/requests/{rid}/revoke">{hidden_csrf(viewer)}'
        f'<label for="revoke-reason-{rid}">Why revoke</label> '
        f'<input id="revoke-reason-{rid}" name="reason" required maxlength="200" '
        'value="kill switch"> <button type="submit" class="danger">Revoke</button></form>'
    )
    parts.append("</section>")
    return "".join(parts)


def _bundle(request_id: str, bundle: BundleSummary) -> str:
    parts = ['<section aria-labelledby="bundle-title"><h2 id="bundle-title">Proof bundle</h2>']
    if not bundle.available:
        parts.append(f"<p>{e(bundle.note)}</p></section>")
        return "".join(parts)
    parts.append(
        f'<p><a href="/requests/{e(request_id)}/bundle.json" download>'
        f"Download the proof bundle (bundle-{e(request_id)}.json)</a> · verify it offline "
        f"with <code>keyturn verify</code>.</p>"
    )
    if bundle.report is not None:
        report = bundle.report
        checks = "".join(f"<li>{e(c)}</li>" for c in report.checks)
        parts.append(
            '<div class="verify pass" id="verify-result">'
            '<p><strong class="verdict">PASS</strong> · keyturn verify, run on this server '
            f"against keyturn's key {e(report.signer_did)} · outcome "
            f"<strong>{e(report.outcome)}</strong> · {len(report.checks)} checks</p>"
            f"<ol>{checks}</ol></div>"
        )
    elif bundle.failure is not None:
        code, message = bundle.failure
        parts.append(
            '<div class="verify fail" id="verify-result" role="alert">'
            f'<p><strong class="verdict">FAIL</strong> · {e(code)}: {e(message)}</p></div>'
        )
    parts.append("</section>")
    return "".join(parts)


def feed_page(viewer: Viewer, lines: Sequence[FeedEntry], checkpoint: CheckpointView | None) -> str:
    body = "<h1>Receipts feed</h1>" + feed_html(lines, checkpoint)
    if checkpoint is not None:
        body += (
            "<details><summary>Signed checkpoint note</summary>"
            f'<pre class="payload">{e(checkpoint.note)}</pre></details>'
        )
    return layout("Receipts feed", body, viewer)


def feed_json(
    lines: Sequence[FeedEntry], checkpoint: CheckpointView | None
) -> Mapping[str, object]:
    return {
        "lines": [
            {
                **line.to_json(),
                "url": f"/requests/{line.request_id}" if line.request_id else None,
            }
            for line in lines
        ],
        "checkpoint": (
            None
            if checkpoint is None
            else {"size": checkpoint.size, "line": checkpoint.line, "note": checkpoint.note}
        ),
    }
