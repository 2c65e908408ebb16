"""The outbox worker: sends queued chat messages per channel, in order, within limits.

Chat platforms limit how fast a bot may write (Slack: about one ``chat.postMessage``
per second per channel, ``chat.update`` Tier 3 ≈ 50/min; Teams: 7 sends/s per
conversation), so a click storm must never become a 429 storm (LIMITS.md §6). The
store's outbox (``adapters/store/outbox.py``) makes messages durable in the same
commit as the decision; this worker drains it::

    claim due (lease) ─▶ group by channel ─▶ per channel, oldest first:
        feed lines ─▶ folded into one message (core.feed.fold, ≤ max_feed_lines)
        card update ─▶ already coalesced by the store (latest state wins)
        send ─▶ ok ─────────────▶ mark_sent(version)   (a newer version stays due)
             └▶ 429 Retry-After ─▶ this and every later message of the channel wait
                                   until then (order kept), nothing is dropped
             └▶ other failure ───▶ the same, with exponential back-off

Senders are plain async callables per platform (``{"slack": …, "teams": …}``); they
raise :class:`RateLimited` or :class:`DeliveryFailed`. Channel keys are
``"<platform>:<channel>"``.

Order across replicas: each replica holds back a rate-limited channel for its own
claims; rows another replica claims meanwhile carry their own lease, and Slack's 429
applies to the app as a whole, so that replica meets the same limit and backs off too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from adapters.outbox.feed import FEED, fold_payloads
from adapters.store import OutboxItem, SqlStore
from core.feed import DEFAULT_MAX_LINES

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 900.0


class RateLimited(Exception):
    """The platform asked us to wait ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(float(retry_after), 0.0)
        super().__init__(f"rate limited; retry after {self.retry_after:g} s")


class DeliveryFailed(Exception):
    """A send failed; ``retry_after`` (seconds) when the sender knows better than back-off."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to send: a queued item, or several feed lines folded into one."""

    platform: str
    channel: str
    kind: str
    payload: Mapping[str, Any]
    item_ids: tuple[int, ...]


Sender = Callable[[Delivery], Awaitable[None]]


class Clock(Protocol):
    def now(self) -> datetime: ...


class OutboxMetrics(Protocol):
    def feed_failure(self, platform: str) -> None: ...

    def set_outbox_backlog(self, count: int) -> None: ...


def channel_key(platform: str, channel: str) -> str:
    """``slack:C123``: the outbox channel key of a platform channel."""
    if not platform or ":" in platform or not channel:
        raise ValueError("a channel key needs a platform (no colon) and a channel")
    return f"{platform}:{channel}"


def split_channel_key(key: str) -> tuple[str, str]:
    platform, sep, channel = key.partition(":")
    if not sep or not platform or not channel:
        raise ValueError(f"not a channel key: {key!r}")
    return platform, channel


class OutboxWorker:
    """Drains the store's outbox through per-platform senders."""

    def __init__(
        self,
        store: SqlStore,
        senders: Mapping[str, Sender] | None = None,
        *,
        clock: Clock,
        min_interval_seconds: float = 1.0,
        max_feed_lines: int = DEFAULT_MAX_LINES,
        claim_limit: int = 50,
        lease_seconds: float = 300.0,
        poll_seconds: float = 1.0,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        if min_interval_seconds < 0 or max_feed_lines < 2 or poll_seconds <= 0:
            raise ValueError("pace ≥ 0 s, fold ≥ 2 lines, poll > 0 s")
        self._store = store
        self._senders: dict[str, Sender] = dict(senders or {})
        self._clock = clock
        self._min_interval = min_interval_seconds
        self._max_feed_lines = max_feed_lines
        self._claim_limit = claim_limit
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._metrics = metrics
        self._blocked_until: dict[str, datetime] = {}
        self._next_send: dict[str, float] = {}
        self._wake = asyncio.Event()

    def add_sender(self, platform: str, sender: Sender) -> None:
        """Register the sender of ``platform`` (Slack and Teams share one worker)."""
        if platform in self._senders:
            raise ValueError(f"a sender for {platform} is already registered")
        self._senders[platform] = sender

    async def enqueue(
        self,
        key: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        coalesce_key: str | None = None,
    ) -> int:
        """Queue one message durably (its own unit of work) and wake the worker."""
        split_channel_key(key)
        async with self._store.unit_of_work() as uow:
            item_id = await uow.outbox.enqueue(
                key, kind, payload, at=self._clock.now(), coalesce_key=coalesce_key
            )
            await uow.commit()
        self._wake.set()
        return item_id

    async def backlog(self) -> int:
        async with self._store.unit_of_work(read_only=True) as uow:
            return await uow.outbox.backlog()

    async def run_once(self) -> int:
        """Claim what is due and send it; returns how many messages were delivered."""
        now = self._clock.now()
        async with self._store.unit_of_work() as uow:
            items = await uow.outbox.claim_due(
                now=now, limit=self._claim_limit, lease_seconds=self._lease
            )
            await uow.commit()
        by_channel: dict[str, list[OutboxItem]] = {}
        for item in items:  # claim_due sorts by (channel, id): oldest first per channel
            by_channel.setdefault(item.channel_key, []).append(item)
        sent = await asyncio.gather(*(self._drain(k, v) for k, v in by_channel.items()))
        if self._metrics is not None:
            self._metrics.set_outbox_backlog(await self.backlog())
        return sum(sent)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send forever (or until ``stop``): woken by :meth:`enqueue`, else every poll."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("outbox run failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    # ------------------------------------------------------------------ one channel

    async def _drain(self, key: str, items: Sequence[OutboxItem]) -> int:
        platform, channel = split_channel_key(key)
        sender = self._senders.get(platform)
        if sender is None:
            await self._defer(
                items,
                until=self._clock.now() + timedelta(seconds=300),
                error=f"no sender for platform {platform}",
            )
            return 0
        delivered = 0
        i = 0
        while i < len(items):
            now = self._clock.now()
            blocked = self._blocked_until.get(key)
            if blocked is not None and blocked > now:
                await self._defer(items[i:], until=blocked, error="waiting behind a rate limit")
                return delivered
            batch = self._batch(items, i)
            await self._pace(key)
            try:
                await sender(self._delivery(platform, channel, batch))
            except RateLimited as e:
                until = now + timedelta(seconds=e.retry_after)
                self._blocked_until[key] = until
                log.warning("%s: rate limited for %.1f s", key, e.retry_after)
                await self._failed(platform, items[i:], until=until, error=str(e))
                return delivered
            except Exception as e:
                backoff = (
                    e.retry_after
                    if isinstance(e, DeliveryFailed) and e.retry_after is not None
                    else min(2.0 ** min(batch[0].attempts, 16), MAX_BACKOFF_SECONDS)
                )
                until = now + timedelta(seconds=backoff)
                log.warning("%s: delivery failed (%s); retrying in %.0f s", key, e, backoff)
                await self._failed(platform, items[i:], until=until, error=str(e))
                return delivered
            self._blocked_until.pop(key, None)
            self._next_send[key] = asyncio.get_running_loop().time() + self._min_interval
            async with self._store.unit_of_work() as uow:
                for item in batch:
                    await uow.outbox.mark_sent(item.id, version=item.version, at=self._clock.now())
                await uow.commit()
            delivered += 1
            i += len(batch)
        return delivered

    def _batch(self, items: Sequence[OutboxItem], start: int) -> list[OutboxItem]:
        batch = [items[start]]
        if items[start].kind == FEED:
            for item in items[start + 1 :]:
                if item.kind != FEED or len(batch) >= self._max_feed_lines:
                    break
                batch.append(item)
        return batch

    def _delivery(self, platform: str, channel: str, batch: Sequence[OutboxItem]) -> Delivery:
        ids = tuple(item.id for item in batch)
        if batch[0].kind == FEED:
            text = fold_payloads([i.payload for i in batch], max_lines=self._max_feed_lines)
            return Delivery(platform, channel, FEED, {"text": text}, ids)
        return Delivery(platform, channel, batch[0].kind, batch[0].payload, ids)

    async def _pace(self, key: str) -> None:
        wait = self._next_send.get(key, 0.0) - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _failed(
        self, platform: str, items: Sequence[OutboxItem], *, until: datetime, error: str
    ) -> None:
        if self._metrics is not None:
            self._metrics.feed_failure(platform)
        await self._defer(items, until=until, error=error)

    async def _defer(self, items: Sequence[OutboxItem], *, until: datetime, error: str) -> None:
        # Every deferred item gets the same due time, so the next claim (ordered by due
        # time, then id) returns them in their original order.
        async with self._store.unit_of_work() as uow:
            for item in items:
                await uow.outbox.mark_failed(item.id, at=until, error=error, retry_after=0)
            await uow.commit()
