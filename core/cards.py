"""The one neutral approval card, rendered as Block Kit, an Adaptive Card and HTML.

Every surface shows the same facts (CARDS.md): the tool route, readable parameters
(sensitive ones masked, long ones folded — never cut silently), the **full** payload
hash and its last 4 characters, the exact canonical JSON that was hashed, the policy
name and hash, the rule that gated the call, requester and principal, expiry in
absolute UTC and relative terms, the quorum in words, who approved so far, and the
final state. The card's job is to make noticing what is wrong easy and rubber-stamping
hard. Everything here is pure: time comes in as ``now``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from core import canonical
from core.policy import Group, Policy
from core.policy.policy import requirement_text
from core.quorum import ApproverDecision, Verdict, progress
from core.requests import ApprovalRequest, RequestState
from core.times import require_aware

#: A value longer than this (as displayed) is folded behind "Show exact payload".
FOLD_AT = 160
MASK = "••••"


class ParamStyle(StrEnum):
    PLAIN = "plain"
    SENSITIVE = "sensitive"
    FOLDED = "folded"


@dataclass(frozen=True, slots=True)
class ParamLine:
    """One parameter as people read it; ``text`` may span several lines."""

    key: str
    text: str
    style: ParamStyle = ParamStyle.PLAIN


@dataclass(frozen=True, slots=True)
class Card:
    request_id: str
    route: str
    title: str
    breakglass: bool
    state: RequestState
    requested_by: str
    job_line: str
    why_gated: str
    policy_line: str
    params: tuple[ParamLine, ...]
    payload_hash: str
    payload_hash_short: str
    exact_payload: str
    needs: tuple[str, ...]
    approved_so_far: tuple[str, ...]
    progress_line: str
    status_line: str | None
    critical: bool
    window_line: str | None = None
    rollback_steps: tuple[str, ...] = ()
    justification: str | None = None

    @property
    def pending(self) -> bool:
        return self.state is RequestState.PENDING

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "route": self.route,
            "title": self.title,
            "breakglass": self.breakglass,
            "state": str(self.state),
            "requested_by": self.requested_by,
            "job_line": self.job_line,
            "why_gated": self.why_gated,
            "policy_line": self.policy_line,
            "params": [{"key": p.key, "text": p.text, "style": str(p.style)} for p in self.params],
            "payload_hash": self.payload_hash,
            "payload_hash_short": self.payload_hash_short,
            "exact_payload": self.exact_payload,
            "needs": list(self.needs),
            "approved_so_far": list(self.approved_so_far),
            "progress_line": self.progress_line,
            "status_line": self.status_line,
            "critical": self.critical,
            "window_line": self.window_line,
            "rollback_steps": list(self.rollback_steps),
            "justification": self.justification,
        }


def hhmm(moment: datetime) -> str:
    return require_aware(moment).strftime("%H:%M")


def time_left(until: datetime, now: datetime) -> str:
    """``in 14 min`` / ``in 2 h 5 min`` / ``in 40 s`` / ``passed``."""
    seconds = int((require_aware(until) - require_aware(now)).total_seconds())
    if seconds <= 0:
        return "passed"
    if seconds < 60:
        return f"in {seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"in {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"in {hours} h {minutes} min" if minutes else f"in {hours} h"


def short_hash(value: str, *, head: int = 4, tail: int = 4) -> str:
    """``3q2-…K9xq``: for feeds and speech only, never the card's payload hash line."""
    return value if len(value) <= head + tail + 1 else f"{value[:head]}…{value[-tail:]}"


def _format_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,}" if value.is_integer() or abs(value) >= 1 else repr(value)
    if value is None:
        return "null"
    return str(value)


def _format_value(value: Any, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        lines = []
        for key, item in value.items():
            rendered = _format_value(item, indent + 1)
            if "\n" in rendered or isinstance(item, Mapping | list):
                lines.append(f"{pad}{key}:\n{rendered}")
            else:
                lines.append(f"{pad}{key}: {rendered}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n".join(f"{pad}- {_format_value(item, indent + 1).lstrip()}" for item in value)
    return _format_scalar(value)


def _lookup(params: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _masked(value: Any) -> str:
    digest = canonical.sha256_b64u(canonical.jcs(value))
    return f"{MASK} (sha256 {short_hash(digest)})"


def param_lines(params: Mapping[str, Any], sensitive: frozenset[str]) -> tuple[ParamLine, ...]:
    """Readable parameters: numbers with separators, lists one item per line, nested
    objects indented; sensitive paths masked; long values folded (never cut)."""
    masked_tops = {p.split(".")[0] for p in sensitive}
    lines: list[ParamLine] = []
    for key, value in params.items():
        if key in sensitive:
            lines.append(ParamLine(key, _masked(value), ParamStyle.SENSITIVE))
            continue
        if key in masked_tops and isinstance(value, Mapping):
            value = _mask_nested(value, key, sensitive)
        text = _format_value(value)
        if len(text) > FOLD_AT:
            folded = text[:FOLD_AT].rstrip()
            lines.append(
                ParamLine(
                    key,
                    f"{folded}… ({len(text):,} characters; see the exact payload)",
                    ParamStyle.FOLDED,
                )
            )
        else:
            lines.append(ParamLine(key, text))
    return tuple(lines)


def _mask_nested(
    value: Mapping[str, Any], prefix: str, sensitive: frozenset[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}.{key}"
        if path in sensitive:
            out[key] = _masked(item)
        elif isinstance(item, Mapping) and any(s.startswith(path + ".") for s in sensitive):
            out[key] = _mask_nested(item, path, sensitive)
        else:
            out[key] = item
    return out


def exact_payload(params: Mapping[str, Any], sensitive: frozenset[str]) -> str:
    """The canonical (JCS key order) JSON that was hashed, for "Show exact payload".

    Values the policy marks sensitive are replaced by their mask even here: chat is not
    the place for them. Without sensitive values anyone can recompute the payload hash
    from this text; with them, the proof bundle (which keeps the exact parameters)
    is where the hash is recomputed, and the text says so.
    """
    ordered = json.loads(canonical.jcs(dict(params)))
    if sensitive:
        ordered = _mask_nested(ordered, "", frozenset(f".{p}" for p in sensitive))
    text = json.dumps(ordered, ensure_ascii=False, indent=2)
    if sensitive:
        text += "\n(sensitive values masked; the payload hash covers their real values)"
    return text


#: Exact payload texts by (payload hash, sensitive paths): a request's card is drawn
#: again on every view and poll, its parameters never change, and a request's params
#: are checked against its payload hash whenever it is built or loaded. Bounded.
_EXACT: OrderedDict[tuple[str, frozenset[str]], str] = OrderedDict()
_EXACT_MAX = 1024


def _exact_payload_of(request: ApprovalRequest) -> str:
    key = (request.binding.payload_hash_b64u, request.sensitive_params)
    text = _EXACT.get(key)
    if text is None:
        text = exact_payload(request.params, request.sensitive_params)
        _EXACT[key] = text
        if len(_EXACT) > _EXACT_MAX:
            _EXACT.popitem(last=False)
    else:
        _EXACT.move_to_end(key)
    return text


def _group_names(keys: Sequence[str], groups: Mapping[str, Group]) -> str:
    return ", ".join(groups[k].display_name if k in groups else k for k in keys)


def build_card(
    request: ApprovalRequest,
    decisions: Sequence[ApproverDecision],
    policy: Policy,
    *,
    now: datetime,
    requester_name: str | None = None,
    on_behalf_of_name: str | None = None,
    grant_id: str | None = None,
    grant_expires_at: datetime | None = None,
    used_at: datetime | None = None,
    revoked_by: str | None = None,
) -> Card:
    """The card for ``request`` as it stands at ``now``."""
    b = request.binding
    bound = [d for d in decisions if d.request_hash_b64u == request.request_hash_b64u]
    approvals = [d for d in bound if d.verdict is Verdict.APPROVE]
    prog = progress(request, approvals)
    who = requester_name or b.requester
    if b.on_behalf_of:
        who += f" acting for {on_behalf_of_name or b.on_behalf_of}"
    rules = "; ".join(
        f'rule "{r.description}"' + (f" ({r.condition_text})" if r.condition_text else "")
        for r in request.rules
    ) or "policy rule " + ", ".join(request.rule_ids)
    approved = tuple(
        f"✅ {d.approver_name} ({_group_names(d.groups, policy.groups)}) {hhmm(d.decided_at)}"
        for d in approvals
    )
    window = None
    if b.breakglass_window_seconds:
        minutes = b.breakglass_window_seconds // 60
        window = f"{minutes} minutes from approval"
        if request.state is RequestState.APPROVED and grant_expires_at is not None:
            window = f"Window open until {hhmm(grant_expires_at)} UTC"
    exact = _exact_payload_of(request)
    return Card(
        request_id=request.request_id,
        route=b.tool_route,
        title=f"🔐 Approval needed · {b.tool_route}",
        breakglass=request.breakglass is not None and b.breakglass_window_seconds is not None,
        state=request.state,
        requested_by=who,
        job_line=(
            f"{b.job_id} · requested {hhmm(b.created_at)} UTC · expires {hhmm(b.expires_at)} UTC "
            f"({time_left(b.expires_at, now)})"
        ),
        why_gated=rules,
        policy_line=f"{policy.name} · hash {b.policy_hash_b64u}",
        params=param_lines(request.params, request.sensitive_params),
        payload_hash=b.payload_hash_b64u,
        payload_hash_short=b.payload_hash_b64u[-4:],
        exact_payload=exact,
        needs=tuple(requirement_text(r, policy.groups) for r in request.requirements),
        approved_so_far=approved,
        progress_line=f"{prog.approvals} of {prog.needed} approvals",
        status_line=status_line(
            request,
            bound,
            grant_id=grant_id,
            grant_expires_at=grant_expires_at,
            used_at=used_at,
            revoked_by=revoked_by,
        ),
        critical=any(r.critical for r in request.requirements),
        window_line=window,
        rollback_steps=request.breakglass.rollback_steps if request.breakglass else (),
        justification=request.justification,
    )


def status_line(
    request: ApprovalRequest,
    decisions: Sequence[ApproverDecision],
    *,
    grant_id: str | None = None,
    grant_expires_at: datetime | None = None,
    used_at: datetime | None = None,
    revoked_by: str | None = None,
) -> str | None:
    """The one line that replaces the buttons once a request is no longer pending."""
    approvals = [d for d in decisions if d.verdict is Verdict.APPROVE]
    names = " and ".join(d.approver_name for d in approvals)
    state = request.state
    if state is RequestState.PENDING:
        return None
    if state in (RequestState.APPROVED, RequestState.CONSUMED):
        text = f"✅ Approved by {names}"
        if grant_id:
            text += f" · grant {grant_id}"
        if grant_expires_at:
            text += f" · valid until {hhmm(grant_expires_at)}"
        if used_at:
            text += f" · used {hhmm(used_at)}"
        return text
    if state is RequestState.DENIED:
        deny = next((d for d in decisions if d.verdict is Verdict.DENY), None)
        if deny is not None:
            return f'❌ Denied by {deny.approver_name}: "{deny.reason}"'
        return "❌ Denied"
    if state is RequestState.EXPIRED:
        at = request.state_changed_at or request.binding.expires_at
        return (
            f"⌛ Expired at {hhmm(at)} with {len(approvals)} of "
            f"{max(r.needed for r in request.requirements)} approvals — nothing ran"
        )
    if state is RequestState.CANCELLED:
        return "⛔ Cancelled by the requester"
    return f"🛑 Revoked by {revoked_by or 'the kill switch'} (kill switch)"
