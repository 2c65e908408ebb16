"""The one Teams handler: card clicks (``adaptiveCard/action``) and messages to the bot.

Identity is ``from.aadObjectId`` → ``IdentityRef(OBJECT_ID, …)``; eligibility and the
decision are the service's (the same person counts once on every platform, because the
directory object id is the identity). The tenant of every activity is checked against
the allowlist before anything else.

Invoke answers work around botbuilder 4.17.1's double serialization (PLATFORMS.md
§B.4): :meth:`KeyturnTeamsBot.on_invoke_activity` returns an ``InvokeResponse`` whose
body is the msrest *model* ``AdaptiveCardInvokeResponse``, never a dict. Decisions are
applied only on ``trigger == "manual"`` (an automatic refresh never decides).
A refusal answers with the current card plus a notice saying why; nothing changes.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from botbuilder.core import InvokeResponse, MessageFactory, TurnContext  # type: ignore[import-untyped]
from botbuilder.core.teams import TeamsActivityHandler  # type: ignore[import-untyped]
from botbuilder.schema import Activity, ActivityTypes, AdaptiveCardInvokeResponse, Attachment  # type: ignore[import-untyped]

from adapters.teams import cards
from adapters.teams.commands import (
    HELP_LINES,
    BreakglassList,
    BreakglassRequest,
    BreakglassRevoke,
    BreakglassTokenRequest,
    Command,
    Help,
    parse_command,
)
from adapters.teams.ports import TeamsService
from adapters.teams.references import CAPTURED_TYPES, ConversationBook
from adapters.teams.settings import TeamsSettings
from core.cards import time_left
from core.errors import KeyturnError
from core.identity import IdentityKind, IdentityRef
from core.quorum import Verdict
from core.requests import RequestState

log = logging.getLogger(__name__)

PLATFORM = "teams"
INVOKE_NAME = "adaptiveCard/action"
ERROR_TYPE = "application/vnd.microsoft.error"

#: Set by the route wrapper; the bot marks it once authentication has passed, so an
#: exception before that point is an authentication failure (401), after it a bug (500).
turn_started: ContextVar[list[bool] | None] = ContextVar("teams_turn_started", default=None)


def attachment(card: Mapping[str, Any]) -> Attachment:
    return Attachment(content_type=cards.CONTENT_TYPE, content=dict(card))


def card_response(card: Mapping[str, Any]) -> InvokeResponse:
    return InvokeResponse(
        status=200,
        body=AdaptiveCardInvokeResponse(status_code=200, type=cards.CONTENT_TYPE, value=dict(card)),
    )


def error_response(status: int, code: str, message: str) -> InvokeResponse:
    return InvokeResponse(
        status=status,
        body=AdaptiveCardInvokeResponse(
            status_code=status, type=ERROR_TYPE, value={"code": code, "message": message}
        ),
    )


def tenant_of(activity: Any) -> str | None:
    conversation = activity.conversation
    if conversation is not None and conversation.tenant_id:
        return str(conversation.tenant_id)
    data = activity.channel_data if isinstance(activity.channel_data, Mapping) else {}
    tenant = data.get("tenant")
    return str(tenant["id"]) if isinstance(tenant, Mapping) and tenant.get("id") else None


def identity_of(activity: Any) -> IdentityRef | None:
    sender = activity.from_property
    aad = getattr(sender, "aad_object_id", None) if sender is not None else None
    return IdentityRef(IdentityKind.OBJECT_ID, aad) if aad else None


class KeyturnTeamsBot(TeamsActivityHandler):  # type: ignore[misc]
    """Translates Teams activities into service calls and service outcomes into cards."""

    def __init__(
        self,
        service: TeamsService,
        settings: TeamsSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        references: ConversationBook | None = None,
    ) -> None:
        super().__init__()
        self.service = service
        self.settings = settings
        self.clock = clock  # only for "time left" in answers; decisions use the service's
        self.references = references

    async def on_turn(self, turn_context: TurnContext) -> None:
        started = turn_started.get()
        if started is not None:
            started.append(True)
        activity = turn_context.activity
        if not self.settings.tenant_allowed(tenant_of(activity)):
            log.warning("refused a Teams activity from tenant %r", tenant_of(activity))
            if activity.type == "invoke":
                await _answer_invoke(
                    turn_context,
                    error_response(403, "TenantNotAllowed", "keyturn does not serve this tenant"),
                )
            return
        if self.references is not None and activity.type in CAPTURED_TYPES:
            # Installed in / added to a team: remember where it can be reached.
            stored = await self.references.capture(activity, tenant_id=tenant_of(activity))
            if stored:
                log.info("Teams conversation references captured: %s", ", ".join(stored))
        await super().on_turn(turn_context)

    # ------------------------------------------------------------------ card clicks

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        activity = turn_context.activity
        if activity.name != INVOKE_NAME:
            return await super().on_invoke_activity(turn_context)
        value = activity.value if isinstance(activity.value, Mapping) else {}
        action = value.get("action")
        if not isinstance(action, Mapping) or action.get("type") != "Action.Execute":
            return error_response(400, "NotSupported", "only Action.Execute is supported")
        raw = action.get("data")
        data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        return await self.on_card_action(
            turn_context,
            verb=str(action.get("verb") or ""),
            data=data,
            manual=value.get("trigger", "manual") == "manual",
        )

    async def on_card_action(
        self, turn_context: TurnContext, *, verb: str, data: Mapping[str, Any], manual: bool
    ) -> InvokeResponse:
        request_id = str(data.get("requestId") or "")
        who = identity_of(turn_context.activity)
        clicker = getattr(turn_context.activity.from_property, "id", None)
        if not request_id:
            return error_response(400, "BadRequest", "the card names no request")
        if verb == cards.VERB_ROLLBACK_DONE:
            return await self._rollback_done(who, request_id, data)
        notice: str | None = None
        if verb in (cards.VERB_APPROVE, cards.VERB_DENY) and manual:
            notice = await self._decide(who, request_id, verb, data)
        elif verb not in (cards.VERB_APPROVE, cards.VERB_DENY, cards.VERB_REFRESH):
            return error_response(400, "BadRequest", f"unknown action {verb!r}")
        try:
            view = await self.service.view(request_id)
        except KeyturnError as e:
            return card_response(cards.message_card("keyturn", [e.message]))
        users = [*self.settings.refresh_user_ids, *([clicker] if clicker else [])]
        return card_response(cards.adaptive_card(view.card, refresh_user_ids=users, notice=notice))

    async def _decide(
        self, who: IdentityRef | None, request_id: str, verb: str, data: Mapping[str, Any]
    ) -> str:
        if who is None:
            return "Teams did not say who you are (no Entra object id), so nothing was recorded."
        verdict = Verdict.APPROVE if verb == cards.VERB_APPROVE else Verdict.DENY
        reason = str(data.get(cards.INPUT_REASON) or "").strip() or None
        typed = str(data.get(cards.INPUT_CONFIRM) or "").strip() or None
        try:
            outcome = await self.service.decide(
                request_id,
                who,
                verdict,
                platform=PLATFORM,
                reason=reason if verdict is Verdict.DENY else None,
                typed_confirmation=typed,
            )
        except KeyturnError as e:
            # Refusals (ApprovalRefusedError, DirectoryError, …) are for the clicker only.
            return e.message
        if verdict is Verdict.DENY:
            return "You denied this request."
        return f"Your approval was recorded ({outcome.approvals} of {outcome.needed})."

    async def _rollback_done(
        self, who: IdentityRef | None, request_id: str, data: Mapping[str, Any]
    ) -> InvokeResponse:
        step = data.get("step")
        if who is None or not isinstance(step, int) or isinstance(step, bool):
            return error_response(400, "BadRequest", "which rollback step?")
        try:
            await self.service.rollback_step_done(request_id, step, who)
        except KeyturnError as e:
            return card_response(cards.message_card("Rollback step not recorded", [e.message]))
        return card_response(
            cards.message_card("Rollback step recorded", [f"{request_id}: step {step + 1} done"])
        )

    # ------------------------------------------------------------------ messages

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        text = TurnContext.remove_recipient_mention(activity) or activity.text or ""
        text = html.unescape(text).strip()
        try:
            command = parse_command(text)
        except KeyturnError as e:
            await _reply(turn_context, "keyturn", e.message.split("\n"))
            return
        title, lines = await self.run_command(command, turn_context)
        await _reply(turn_context, title, lines)

    async def run_command(
        self, command: Command, turn_context: TurnContext
    ) -> tuple[str, Sequence[str]]:
        """Run one parsed command; returns the reply (title, lines)."""
        if isinstance(command, Help):
            return "keyturn commands", HELP_LINES
        who = identity_of(turn_context.activity)
        if who is None:
            return "keyturn", ["Teams did not say who you are (no Entra object id)."]
        try:
            if isinstance(command, BreakglassRequest):
                submitted = await self.service.request_breakglass(
                    who,
                    route=command.route,
                    params=command.params,
                    duration_seconds=command.duration_seconds,
                    reason=command.reason,
                    ticket=command.ticket,
                    rollback_steps=command.rollback_steps,
                )
                return f"Break-glass requested · {submitted.request_id}", [
                    f"{command.route} for {command.duration_seconds // 60} min",
                    *(f"Needs {n}" for n in submitted.needs),
                    "The card is in the approvers' channel; you will get the token here, "
                    "in this 1:1 chat, once it is approved.",
                ]
            if isinstance(command, BreakglassList):
                return "Break-glass windows", await self._list()
            if isinstance(command, BreakglassRevoke):
                await self.service.revoke_breakglass(command.request_id, who, reason="kill switch")
                return "Window closed", [f"{command.request_id}: every token revoked"]
            if isinstance(command, BreakglassTokenRequest):
                return await self._token(command.request_id, who, turn_context)
        except KeyturnError as e:
            return "keyturn refused", [e.message]
        raise AssertionError(f"unhandled command {command!r}")

    async def _list(self) -> list[str]:
        views = await self.service.list_requests(
            states=[RequestState.PENDING, RequestState.APPROVED], limit=100
        )
        now = self.clock()
        lines = []
        for view in views:
            card = view.card
            if not card.breakglass:
                continue
            if card.pending:
                until = view.request.binding.expires_at
                what = "pending approval"
            else:
                until = view.grant.expires_at if view.grant else view.request.binding.expires_at
                what = "window open"
            lines.append(f"{card.request_id}  {card.route}  {what}, {time_left(until, now)}")
        return lines or ["No open or pending break-glass windows."]

    async def _token(
        self, request_id: str, who: IdentityRef, turn_context: TurnContext
    ) -> tuple[str, Sequence[str]]:
        conversation = turn_context.activity.conversation
        if conversation is None or conversation.conversation_type != "personal":
            return "keyturn refused", [
                "Break-glass tokens are only given in a 1:1 chat with me, never in a channel."
            ]
        token = await self.service.breakglass_token(request_id, who)
        return f"Your break-glass token · {request_id}", [
            token.token,
            f"expires {token.expires_at:%H:%M} UTC; "
            f"window closes {token.window_closes_at:%H:%M} UTC",
        ]


async def _reply(turn_context: TurnContext, title: str, lines: Sequence[str]) -> None:
    await turn_context.send_activity(
        MessageFactory.attachment(attachment(cards.message_card(title, lines)))
    )


async def _answer_invoke(turn_context: TurnContext, response: InvokeResponse) -> None:
    await turn_context.send_activity(Activity(type=ActivityTypes.invoke_response, value=response))


__all__ = [
    "KeyturnTeamsBot",
    "attachment",
    "card_response",
    "error_response",
    "identity_of",
    "tenant_of",
    "turn_started",
]
