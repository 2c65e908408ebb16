"""Outbound Slack: hub events → outbox messages → Web API calls.

* A request event queues one coalesced ``card`` message per request for the approvers
  channel (key ``card:<request id>``): the sender draws the card as it is *when sent*,
  posts it if Slack has no copy yet (and remembers the ``ts`` with ``uow.messages``),
  else ``chat.update``s it in place. A click storm on one card is one update.
* Receipts and checkpoints queue ``feed`` lines for the security channel; the worker
  folds consecutive ones into one message.
* A request that ends (approved, denied, expired) queues a DM to its requester when
  the requester is a person in the directory (agents have no Slack account).
* A break-glass rollback checklist (key ``checklist:<request id>``) is posted to the
  security channel with one Done button per step, and a copy (key
  ``checklist_dm:<request id>``) goes to the requester by DM when the window closes,
  on expiry or revoke. Both carry the same buttons; a click on either is receipted
  once, and both are redrawn in place after it (who did which step is read back from
  the step's receipt, never from Slack).
* ``chat.update`` is Tier 3 (about 50 per minute for the whole app): updates are
  spaced by :class:`MethodPace` on top of the worker's per-channel pace, so a storm of
  card changes never turns into 429s.

Tokens never enter the outbox: a break-glass requester fetches theirs with
``/breakglass token <id>``, answered ephemerally.
"""

from __future__ import annotations

import asyncio
import json
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
from adapters.slack.blocks import (
    card_blocks,
    checklist_blocks,
    checklist_text,
    escape,
    fallback_text,
    feed_blocks,
    sections,
)
from adapters.slack.ports import KeyturnService, View
from adapters.slack.settings import SlackSettings
from adapters.store import MessageRef
from core.identity import IdentityKind, IdentityRef
from core.receipts import ReceiptKind, receipt_from_payload

log = logging.getLogger(__name__)

PLATFORM = "slack"
CARD = "card"
TEXT = "text"
OUTCOME_DM = "outcome_dm"
CHECKLIST = "checklist"
CHECKLIST_DM = "checklist_dm"
#: Slack's Tier 3 is "50+ per minute"; 1.25 s apart stays under 50 in any minute.
UPDATE_INTERVAL_SECONDS = 1.25
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


class MethodPace:
    """Spaces calls of one Web API method app-wide (the worker paces per channel)."""

    def __init__(self, interval_seconds: float) -> None:
        if interval_seconds < 0:
            raise ValueError("a pace is ≥ 0 s")
        self._interval = interval_seconds
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when the next call may go out (and book that slot)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            delay = self._next - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = loop.time() + self._interval


class SlackSender:
    """The outbox sender for ``slack:*`` channels."""

    def __init__(
        self,
        service: KeyturnService,
        client: AsyncWebClient,
        *,
        update_interval_seconds: float = UPDATE_INTERVAL_SECONDS,
    ) -> None:
        self._service = service
        self._client = client
        self._updates = MethodPace(update_interval_seconds)

    async def __call__(self, delivery: Delivery) -> None:
        try:
            if delivery.kind == CARD:
                await self._card(delivery.channel, str(delivery.payload["request_id"]))
            elif delivery.kind == CHECKLIST:
                await self._checklist(delivery.channel, str(delivery.payload["request_id"]))
            elif delivery.kind == CHECKLIST_DM:
                await self._checklist_dm(str(delivery.payload["request_id"]))
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
        await self._post_or_update(
            channel, request_id, CARD, fallback_text(card), card_blocks(card)
        )

    async def _checklist(self, channel: str, request_id: str) -> None:
        drawn = await self._draw_checklist(request_id)
        if drawn is not None:
            await self._post_or_update(channel, request_id, CHECKLIST, *drawn)

    async def _checklist_dm(self, request_id: str) -> None:
        """The requester's copy: posted to them once, then updated where it was posted."""
        drawn = await self._draw_checklist(request_id)
        if drawn is None:
            return
        ref = await self._latest(request_id, CHECKLIST_DM)
        if ref is not None:
            await self._update(ref, *drawn)
            return
        user_id = await self._requester_user(await self._service.view(request_id))
        if user_id is not None:
            await self._post(user_id, request_id, CHECKLIST_DM, *drawn)

    async def _draw_checklist(self, request_id: str) -> tuple[str, list[dict[str, Any]]] | None:
        view = await self._service.view(request_id)
        steps = list(view.card.rollback_steps)
        if not steps:
            return None  # nothing was declared: nothing to tick off
        done = await self.steps_done(request_id)
        return (
            checklist_text(request_id, steps, done),
            checklist_blocks(request_id, view.card.route, steps, done),
        )

    async def steps_done(self, request_id: str) -> dict[int, str]:
        """Who marked which rollback step done, read from the request's receipts."""
        done: dict[int, str] = {}
        async with self._service.rt.store.unit_of_work(read_only=True) as uow:
            for _, entry in await uow.jobs.receipt_entries(request_id):
                try:
                    receipt = receipt_from_payload(json.loads(entry)["payload"])
                except (KeyError, TypeError, ValueError):
                    continue
                if receipt.kind is not ReceiptKind.BREAKGLASS_ROLLED_BACK:
                    continue
                step = receipt.details.get("step_index")
                if isinstance(step, int) and step not in done:
                    who = receipt.actor_name or receipt.actor
                    done[step] = f"{who} at {receipt.timestamp:%H:%M} UTC"
        return done

    async def _post_or_update(
        self, channel: str, request_id: str, kind: str, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        ref = await self._latest(request_id, kind, channel=channel)
        if ref is not None:
            await self._update(ref, text, blocks)
        else:
            await self._post(channel, request_id, kind, text, blocks)

    async def _latest(
        self, request_id: str, kind: str, *, channel: str | None = None
    ) -> MessageRef | None:
        """The last message of ``kind`` posted for the request (in ``channel``, if given)."""
        async with self._service.rt.store.unit_of_work(read_only=True) as uow:
            refs = [
                r
                for r in await uow.messages.for_request(request_id, platform=PLATFORM)
                if r.kind == kind and (channel is None or r.channel == channel)
            ]
        return refs[-1] if refs else None

    async def _update(self, ref: MessageRef, text: str, blocks: list[dict[str, Any]]) -> None:
        await self._updates.wait()
        await self._client.chat_update(
            channel=ref.channel, ts=ref.message_id, text=text, blocks=blocks
        )
        async with self._service.rt.store.unit_of_work() as uow:
            await uow.messages.mark_updated(
                PLATFORM, ref.channel, ref.message_id, at=self._service.rt.clock.now()
            )
            await uow.commit()

    async def _post(
        self, channel: str, request_id: str, kind: str, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        posted = await self._client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        async with self._service.rt.store.unit_of_work() as uow:
            await uow.messages.add(
                MessageRef(
                    platform=PLATFORM,
                    # a DM posted to a user id lands in the D… channel Slack answers with
                    channel=str(posted.get("channel") or channel),
                    message_id=str(posted["ts"]),
                    kind=kind,
                    posted_at=self._service.rt.clock.now(),
                    request_id=request_id,
                )
            )
            await uow.commit()

    async def _requester_user(self, view: View) -> str | None:
        """The requester's Slack user id, or None (an agent, no email, not in Slack)."""
        request_id = view.request.binding.request_id
        requester = view.request.binding.requester
        if requester.startswith("did:"):
            return None  # an agent: its operator reads the card and the feed
        person = (
            await self._service.resolve(IdentityRef(IdentityKind.OBJECT_ID, requester))
        ).person
        if not person.email:
            log.info("request %s: requester has no email; no DM", request_id)
            return None
        try:
            found = await self._client.users_lookupByEmail(email=person.email)
        except SlackApiError as e:
            if e.response.get("error") == "users_not_found":
                return None  # not in this workspace: nobody to tell here
            raise
        return str(found["user"]["id"])

    async def _outcome_dm(self, request_id: str) -> None:
        view = await self._service.view(request_id)
        request, card = view.request, view.card
        user_id = await self._requester_user(view)
        if user_id is None:
            return
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
            await self._checklist(request_id)
        if kind == "request" and request_id and "rollback_step_done" in data:
            await self._checklist(request_id)

    async def _checklist(self, request_id: str) -> None:
        # One pending message per copy and request: a burst of Done clicks is one update
        # of the security channel's copy and one of the requester's.
        await self._worker.enqueue(
            self._security,
            CHECKLIST,
            {"request_id": request_id},
            coalesce_key=f"checklist:{request_id}",
        )
        await self._worker.enqueue(
            channel_key(PLATFORM, f"{DM_CHANNEL}:{request_id}"),
            CHECKLIST_DM,
            {"request_id": request_id},
            coalesce_key=f"checklist_dm:{request_id}",
        )
