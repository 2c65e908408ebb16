"""A persistent, per-channel, rate-limit-aware chat outbox shared by Slack and Teams."""

from adapters.outbox.feed import FEED, checkpoint_payload, feed_item, fold_payloads, receipt_payload
from adapters.outbox.worker import (
    Delivery,
    DeliveryFailed,
    OutboxMetrics,
    OutboxWorker,
    RateLimited,
    Sender,
    channel_key,
    split_channel_key,
)

__all__ = [
    "FEED",
    "Delivery",
    "DeliveryFailed",
    "OutboxMetrics",
    "OutboxWorker",
    "RateLimited",
    "Sender",
    "channel_key",
    "checkpoint_payload",
    "feed_item",
    "fold_payloads",
    "receipt_payload",
    "split_channel_key",
]
