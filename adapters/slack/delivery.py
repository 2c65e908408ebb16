"""Outbound Slack: hub events → outbox messages → Web API calls.

* A request event queues one coalesced ``card`` message per request for the approvers
  channel (key ``card:<request id>``): the sender draws the card as it is *when sent*,
  posts it if Slack has no copy yet (and remembers the ``ts`` with ``uow.messages``),
  else ``chat.update``s it in place. A click storm on one card is one update.
* Receipts and checkpoints queue ``feed`` lines for the security channel; the worker
  folds consecutive ones into one message.
* A request that ends (approved, denied, expired) queues a DM to its requester when
  the requester is a person in the directory (agents have no Slack account).
* A break-glass rollback checklist is posted to the security feed.

Tokens never enter the outbox: a break-glass requester fetches theirs with
``/breakglass token <id>``, answered ephemerally.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.outbox import (
    FEED,
    Delivery,
    DeliveryFailed,
    OutboxWorker,
    RateLimited,
    channel_key,
    checkpoint_payload,
    receipt_payload,
)
from adapters.slack.blocks import card_blocks, escape, fallback_text, feed_blocks, sections
from adapters.slack.ports import KeyturnService
from adapters.slack.settings import SlackSettings
from adapters.store import MessageRef
from core.identity import IdentityKind, IdentityRef

log = logging.getLogger(__name__)

PLATFORM = "slack"
CARD = "card"
TEXT = "text"
OUTCOME_DM = "outcome_dm"
DM_CHANNEL = "dm"  # outbox channel "slack:dm:<object id>": DMs queue per person
FINAL_STATES = frozenset({"approved", "denied", "expired"})


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name:
            return str(value[0] if isinstance(value, list | tuple) else value)
    return None


def translate_error(e: SlackApiError) -> Exception:
    """A Slack Web API error as the outbox understands it (429 → :class:`RateLimited`)."""
    status = getattr(e.response, "status_code", None)
    if status == 429:
        retry = _header(getattr(e.response, "headers", None), "retry-after")
        try:
            return RateLimited(float(retry) if retry is not None else 1.0)
        except ValueError:
            return RateLimited(1.0)
    code = e.response.get("error") if hasattr(e.response, "get") else None
    return DeliveryFailed(f"slack error {code or status}")


class SlackSender:
    """The outbox sender for ``slack:*`` channels."""

    def __init__(self, service: KeyturnService, client: AsyncWebClient) -> None:
        self._service = service
        self._client = client

    async def __call__(self, delivery: Delivery) -> None:
        try:
            if delivery.kind == CARD:
                await self._card(delivery.channel, str(delivery.payload["request_id"]))
            elif delivery.kind == OUTCOME_DM:
                await self._outcome_dm(str(delivery.payload["request_id"]))
            elif delivery.kind in (FEED, TEXT):
                text = str(delivery.payload["text"])
                blocks = feed_blocks(text) if delivery.kind == FEED else sections([escape(text)])
                await self._client.chat_postMessage(
                    channel=delivery.channel, text=text[:3000], blocks=blocks
                )
            else:
                raise DeliveryFailed(f"unknown message kind {delivery.kind}", retry_after=3600)
        except SlackApiError as e:
            raise translate_error(e) from e

    async def _card(self, channel: str, request_id: str) -> None:
        view = await self._service.view(request_id)
        card = view.card
        text, blocks = fallback_text(card), card_blocks(card)
        store = self._service.rt.store
        now = self._service.rt.clock.now()
        async with store.unit_of_work(read_only=True) as uow:
            refs = [
                r
                for r in await uow.messages.for_request(request_id, platform=PLATFORM)
                if r.channel == channel and r.kind == CARD
            ]
        if refs:
            ref = refs[-1]
            await self._client.chat_update(
                channel=channel, ts=ref.message_id, text=text, blocks=blocks
            )
            async with store.unit_of_work() as uow:
                await uow.messages.mark_updated(PLATFORM, channel, ref.message_id, at=now)
                await uow.commit()
            return
        posted = await self._client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        ts = str(posted["ts"])
        async with store.unit_of_work() as uow:
            await uow.messages.add(
                MessageRef(
                    platform=PLATFORM,
                    channel=str(posted.get("channel") or channel),
                    message_id=ts,
                    kind=CARD,
                    posted_at=now,
                    request_id=request_id,
                )
            )
            await uow.commit()

    async def _outcome_dm(self, request_id: str) -> None:
        view = await self._service.view(request_id)
        request, card = view.request, view.card
        requester = request.binding.requester
        if requester.startswith("did:"):
            return  # an agent: its operator reads the card and the feed
        person = (
            await self._service.resolve(IdentityRef(IdentityKind.OBJECT_ID, requester))
        ).person
        if not person.email:
            log.info("request %s: requester has no email; no DM", request_id)
            return
        try:
            found = await self._client.users_lookupByEmail(email=person.email)
        except SlackApiError as e:
            if e.response.get("error") == "users_not_found":
                return  # not in this workspace: nobody to tell here
            raise
        user_id = str(found["user"]["id"])
        lines = [f"Your request {request_id} ({card.route}): {card.status_line or card.state}"]
        if card.breakglass and request.state.value == "approved":
            lines.append(
                f"{card.window_line or 'Your window is open'}. Run `/breakglass token "
                f"{request_id}` to receive your token (shown only to you)."
            )
        text = "\n".join(lines)
        await self._client.chat_postMessage(
            channel=user_id, text=text, blocks=sections([escape(text)])
        )


class SlackPublisher:
    """The hub listener: turns keyturn events into outbox messages for Slack."""

    def __init__(self, worker: OutboxWorker, settings: SlackSettings, *, signer_did: str) -> None:
        self._worker = worker
        self._approvers = channel_key(PLATFORM, settings.approvers_channel)
        self._security = channel_key(PLATFORM, settings.security_channel)
        self._signer_did = signer_did

    async def __call__(self, event: Any) -> None:
        kind: str = event.kind
        data: Mapping[str, Any] = event.data
        request_id: str | None = event.request_id
        if kind == "request" and request_id:
            await self._worker.enqueue(
                self._approvers, CARD, {"request_id": request_id}, coalesce_key=f"card:{request_id}"
            )
            if data.get("state") in FINAL_STATES:
                await self._worker.enqueue(
                    channel_key(PLATFORM, f"{DM_CHANNEL}:{request_id}"),
                    OUTCOME_DM,
                    {"request_id": request_id},
                    coalesce_key=f"outcome:{request_id}",
                )
        elif kind == "receipt":
            await self._worker.enqueue(
                self._security, FEED, receipt_payload(data["index"], data["envelope"])
            )
        elif kind == "checkpoint":
            await self._worker.enqueue(
                self._security, FEED, checkpoint_payload(data["note"], self._signer_did)
            )
        elif kind == "rollback_checklist" and request_id:
            steps = data.get("rollback_steps") or []
            text = "\n".join(
                [f"Rollback checklist for {request_id}:"]
                + [f"{n}. {step}" for n, step in enumerate(steps, start=1)]
            )
            await self._worker.enqueue(self._security, TEXT, {"text": text})
