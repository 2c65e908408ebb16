"""Proactive Teams messages through the shared persistent outbox.

::

    hub event ──TeamsNotifier──▶ outbox row (channel_key "teams:<conversation>")
    adapters.outbox.OutboxWorker ──claim, fold feed lines──▶ TeamsSender.deliver(delivery)
        ok → sent · 429 → RateLimited(Retry-After) · anything else → DeliveryFailed

Kinds (payloads hold ids only — never a token, never card text: the card is rendered
from the store at send time, so a late send shows the latest state):

* ``teams.card.post``   {request_id}  new approval card in the approvers channel;
  the posted activity id is saved as a ``MessageRef`` for later updates.
* ``teams.card.update`` {request_id}  coalesced per request (latest state wins);
  ``update_activity`` on every posted copy.
* ``feed`` (:data:`adapters.outbox.FEED`)  one receipt or checkpoint; the worker folds
  consecutive ones of the security channel into one message (:func:`core.feed.fold`).
* ``teams.dm.outcome``  {request_id}  the requester learns how it ended (1:1).
* ``teams.dm.token``    {request_id}  break-glass: the token is minted at send time by
  the service (requester only) and sent in the 1:1 chat only.
* ``teams.rollback``    {request_id, steps, closed_at}  the rollback checklist.

Teams allows ~7 sends/s per conversation and 30/s per app per tenant (LIMITS.md §6):
a 429 raises :class:`RateLimited` with the ``Retry-After`` seconds, so the worker holds
this and every later message of the conversation back until then (order kept).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from botbuilder.core import MessageFactory, TurnContext  # type: ignore[import-untyped]
from botbuilder.schema import (  # type: ignore[import-untyped]
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
)
from msrest.exceptions import HttpOperationError

from adapters.outbox import (
    FEED,
    Delivery,
    DeliveryFailed,
    RateLimited,
    checkpoint_payload,
    receipt_payload,
)
from adapters.store.chat import MessageRef
from adapters.teams import cards
from adapters.teams.handler import attachment
from adapters.teams.ports import ChatStore, TeamsService
from adapters.teams.references import ConversationBook
from adapters.teams.settings import ConversationTarget, TeamsSettings
from core.errors import KeyturnError
from core.identity import IdentityKind, IdentityRef

log = logging.getLogger(__name__)

CHANNEL = "msteams"
PLATFORM = "teams"
POST, UPDATE = "teams.card.post", "teams.card.update"
DM_OUTCOME, DM_TOKEN, ROLLBACK = "teams.dm.outcome", "teams.dm.token", "teams.rollback"
FINAL = frozenset({"approved", "denied", "expired", "cancelled", "revoked"})
#: An update waits this long for its card's post; a missing install for this long.
NOT_YET_SECONDS = 5.0
NOT_INSTALLED_SECONDS = 300.0
UNKNOWN_KIND_SECONDS = 3600.0


def channel_key(conversation_id: str) -> str:
    return f"{PLATFORM}:{conversation_id}"


class TeamsNotifier:
    """A hub listener that queues Teams messages for every event people should see."""

    def __init__(
        self, store: ChatStore, settings: TeamsSettings, clock: Any, *, signer_did: str
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.signer_did = signer_did

    async def __call__(self, event: Any) -> None:
        items = self.messages_for(event)
        if not items:
            return
        now = self.clock()
        async with self.store.unit_of_work() as uow:
            for key, kind, payload, coalesce in items:
                await uow.outbox.enqueue(key, kind, payload, at=now, coalesce_key=coalesce)
            await uow.commit()

    def messages_for(self, event: Any) -> list[tuple[str, str, dict[str, Any], str | None]]:
        """Pure: the outbox rows (channel key, kind, payload, coalesce key) for ``event``."""
        out: list[tuple[str, str, dict[str, Any], str | None]] = []
        approvers, feed = self.settings.approvers, self.settings.security_channel
        data: Mapping[str, Any] = event.data or {}
        rid = event.request_id
        if event.kind == "request" and rid and approvers is not None:
            key = channel_key(approvers.channel_id)
            if data.get("created"):
                out.append((key, POST, {"request_id": rid}, None))
            else:
                out.append((key, UPDATE, {"request_id": rid}, f"card:{rid}"))
            state = data.get("state")
            if state in FINAL:
                out.append((channel_key(f"dm:{rid}"), DM_OUTCOME, {"request_id": rid}, None))
            if state == "approved":  # the sender checks it is a break-glass window
                out.append((channel_key(f"dm:{rid}"), DM_TOKEN, {"request_id": rid}, None))
        elif event.kind == "receipt" and feed is not None:
            envelope = data.get("envelope")
            if isinstance(envelope, Mapping) and "index" in data:
                payload = receipt_payload(int(data["index"]), envelope)
                out.append((channel_key(feed.channel_id), FEED, payload, None))
        elif event.kind == "checkpoint" and feed is not None and data.get("note"):
            payload = checkpoint_payload(str(data["note"]), self.signer_did)
            out.append((channel_key(feed.channel_id), FEED, payload, None))
        elif event.kind == "rollback_checklist" and rid:
            payload = {
                "request_id": rid,
                "steps": list(data.get("rollback_steps") or []),
                "closed_at": str(data.get("closed_at") or ""),
            }
            if feed is not None:
                out.append((channel_key(feed.channel_id), ROLLBACK, payload, None))
            out.append((channel_key(f"dm:{rid}"), ROLLBACK, {**payload, "dm": True}, None))
        return out


class TeamsSender:
    """Sends what the outbox worker hands it through the Bot Framework connector.

    :meth:`deliver` is an :data:`adapters.outbox.Sender`: it returns when Teams took
    the message and raises :class:`RateLimited` / :class:`DeliveryFailed` otherwise.
    """

    def __init__(
        self,
        adapter: Any,
        service: TeamsService,
        store: ChatStore,
        settings: TeamsSettings,
        clock: Any,
        *,
        references: ConversationBook | None = None,
    ) -> None:
        self.adapter = adapter
        self.service = service
        self.store = store
        self.settings = settings
        self.clock = clock
        self.references = references or ConversationBook(store, clock)

    async def deliver(self, delivery: Delivery) -> None:
        """Send one delivery (a queued item, or feed lines the worker folded).

        Raises:
            RateLimited: Teams answered 429 (``Retry-After`` seconds, else 1 s).
            DeliveryFailed: a 5xx (its ``Retry-After`` honoured), any other HTTP error,
                an update whose card is not posted yet, a channel keyturn cannot reach
                yet (not installed, no service URL), an unknown kind, or a refusal by
                the service (its reason code).
        """
        try:
            await self._send(delivery.kind, dict(delivery.payload))
        except HttpOperationError as e:
            response = getattr(e, "response", None)
            status = int(getattr(response, "status_code", 0) or 0)
            retry = _retry_after(response)
            log.warning("Teams send of %s failed with HTTP %s", delivery.kind, status)
            if status == 429:
                raise RateLimited(retry if retry is not None else 1.0) from e
            raise DeliveryFailed(
                f"HTTP {status}", retry_after=retry if status >= 500 else None
            ) from e
        except _NotYet as e:
            raise DeliveryFailed(str(e), retry_after=e.retry_after) from e
        except KeyturnError as e:
            log.warning("Teams send of %s refused: %s", delivery.kind, e.reason_code)
            raise DeliveryFailed(e.reason_code) from e

    async def _send(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == POST:
            await self._post_card(str(payload["request_id"]))
        elif kind == UPDATE:
            await self._update_cards(str(payload["request_id"]))
        elif kind == FEED:
            target = await self._target(self.settings.security_channel)
            lines = str(payload.get("text") or "").split("\n")
            card = cards.message_card("keyturn security feed", lines, monospace=True)
            await self._send_to_channel(target, card)
        elif kind == DM_OUTCOME:
            await self._dm_outcome(str(payload["request_id"]))
        elif kind == DM_TOKEN:
            await self._dm_token(str(payload["request_id"]))
        elif kind == ROLLBACK:
            rid = str(payload["request_id"])
            card = cards.rollback_card(
                rid,
                [str(s) for s in payload.get("steps") or []],
                closed_line=f"Window closed {payload.get('closed_at', '')} · token revoked",
            )
            if payload.get("dm"):
                view = await self.service.view(rid)
                await self._dm(view.request.binding.requester, card)
            else:
                await self._send_to_channel(
                    await self._target(self.settings.security_channel), card
                )
        else:
            raise _NotYet(f"unknown Teams outbox kind {kind!r}", UNKNOWN_KIND_SECONDS)

    async def _target(self, target: ConversationTarget | None) -> ConversationTarget:
        """``target`` with the service URL to reach it (configured or captured)."""
        if target is None:
            raise KeyturnError("TEAMS_NOT_CONFIGURED", "no Teams channel configured for this")
        service_url = await self.references.service_url(target)
        if service_url is None:
            raise _NotYet(
                f"keyturn is not installed in the team of {target.channel_id} yet (no "
                "service URL captured or configured)",
                NOT_INSTALLED_SECONDS,
            )
        return target.model_copy(update={"service_url": service_url})

    def _card(self, view: Any) -> dict[str, Any]:
        return cards.adaptive_card(view.card, refresh_user_ids=self.settings.refresh_user_ids)

    async def _post_card(self, request_id: str) -> None:
        target = await self._target(self.settings.approvers)
        view = await self.service.view(request_id)
        posted = await self._send_to_channel(target, self._card(view), new_thread=True)
        async with self.store.unit_of_work() as uow:
            await uow.messages.add(
                MessageRef(
                    platform="teams",
                    channel=posted[0],
                    message_id=posted[1],
                    kind="card",
                    posted_at=self.clock(),
                    request_id=request_id,
                    extra={"service_url": target.service_url},
                )
            )
            await uow.commit()

    async def _update_cards(self, request_id: str) -> None:
        async with self.store.unit_of_work(read_only=True) as uow:
            refs = [
                r
                for r in await uow.messages.for_request(request_id, platform="teams")
                if r.kind == "card"
            ]
        if not refs:
            raise _NotYet(f"the card of {request_id} is not posted yet", NOT_YET_SECONDS)
        view = await self.service.view(request_id)
        card = self._card(view)
        for ref in refs:
            service_url = str(ref.extra.get("service_url") or "")

            async def update(tc: TurnContext, ref: Any = ref) -> None:
                activity = MessageFactory.attachment(attachment(card))
                activity.id = ref.message_id
                await tc.update_activity(activity)

            await self.adapter.continue_conversation(
                self._reference(service_url, ref.channel), update, bot_app_id=self.settings.app_id
            )
            async with self.store.unit_of_work() as uow:
                await uow.messages.mark_updated(
                    "teams", ref.channel, ref.message_id, at=self.clock()
                )
                await uow.commit()

    async def _dm_outcome(self, request_id: str) -> None:
        view = await self.service.view(request_id)
        if view.request.binding.requester.startswith("did:"):
            return  # an agent asked: it learns the outcome from its long-poll, not Teams
        card = view.card
        lines = [card.status_line or str(card.state), f"payload hash {card.payload_hash}"]
        await self._dm(
            view.request.binding.requester,
            cards.message_card(f"Your request {request_id} · {card.route}", lines),
        )

    async def _dm_token(self, request_id: str) -> None:
        view = await self.service.view(request_id)
        if not view.card.breakglass:
            return
        requester = view.request.binding.requester
        token = await self.service.breakglass_token(
            request_id, IdentityRef(IdentityKind.OBJECT_ID, requester)
        )
        await self._dm(
            requester,
            cards.message_card(
                f"Your break-glass token · {request_id}",
                [
                    token.token,
                    f"expires {token.expires_at:%H:%M} UTC; "
                    f"window closes {token.window_closes_at:%H:%M} UTC",
                    "Do not share it. It works only for this window and is revoked when it closes.",
                ],
            ),
        )

    def _reference(self, service_url: str | None, conversation_id: str) -> ConversationReference:
        if not service_url:  # _target() always fills it; never post to an unknown URL
            raise _NotYet(f"no service URL for {conversation_id}", NOT_INSTALLED_SECONDS)
        return ConversationReference(
            service_url=service_url,
            channel_id=CHANNEL,
            conversation=ConversationAccount(id=conversation_id),
            bot=ChannelAccount(id=self.settings.app_id),
        )

    async def _send_to_channel(
        self, target: ConversationTarget, card: Mapping[str, Any], *, new_thread: bool = False
    ) -> tuple[str, str]:
        """Post ``card`` into a channel; returns (conversation id, activity id)."""
        message = MessageFactory.attachment(attachment(card))
        if not new_thread:
            sent: list[str] = []

            async def post(tc: TurnContext) -> None:
                response = await tc.send_activity(message)
                sent.append(response.id if response else "")

            await self.adapter.continue_conversation(
                self._reference(target.service_url, target.channel_id),
                post,
                bot_app_id=self.settings.app_id,
            )
            return target.channel_id, sent[0] if sent else ""
        created: list[tuple[str, str]] = []

        async def remember(tc: TurnContext) -> None:
            created.append((tc.activity.conversation.id, tc.activity.id))

        await self.adapter.create_conversation(
            self.settings.app_id,
            remember,
            ConversationParameters(
                is_group=True,
                channel_data={"channel": {"id": target.channel_id}},
                activity=message,
                tenant_id=target.tenant_id,
            ),
            CHANNEL,
            target.service_url,
        )
        return created[0]

    async def _dm(self, person_object_id: str, card: Mapping[str, Any]) -> None:
        """A 1:1 chat with one person (their Entra object id), created if needed."""
        target = await self._target(self.settings.approvers)

        async def send(tc: TurnContext) -> None:
            await tc.send_activity(MessageFactory.attachment(attachment(card)))

        await self.adapter.create_conversation(
            self.settings.app_id,
            send,
            ConversationParameters(
                is_group=False,
                bot=ChannelAccount(id=self.settings.app_id),
                members=[ChannelAccount(id=person_object_id)],
                tenant_id=target.tenant_id,
                channel_data={"tenant": {"id": target.tenant_id}},
            ),
            CHANNEL,
            target.service_url,
        )


class _NotYet(Exception):
    """Not deliverable now (an update before its post, no install yet): retry later."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
