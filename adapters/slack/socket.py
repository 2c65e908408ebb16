"""Socket Mode: Slack's requests over a WebSocket, for workspaces with no public URL.

``AsyncSocketModeHandler`` (slack_bolt, aiohttp-based) connects with the app-level
``xapp-`` token and hands each envelope to the same Bolt app the HTTP endpoint uses.
Slack signs nothing in Socket Mode (the authenticated WebSocket is the trust), so Bolt
skips request verification for these requests only.

Several replicas may each hold a connection, and Slack may re-send an envelope whose
acknowledgement was late to another connection. Each replica claims the envelope id
in the database first (``slack_envelopes``); only the one that wins dispatches and
acknowledges it, so every envelope is processed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.request import SocketModeRequest

from core.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

#: Claims older than this are forgotten (Slack stops re-sending within minutes).
CLAIM_RETENTION = timedelta(hours=1)


class Clock(Protocol):
    def now(self) -> datetime: ...


class EnvelopeClaims(Protocol):
    async def claim(self, envelope_id: str, *, at: datetime) -> bool: ...

    async def prune(self, *, before: datetime) -> int: ...


class ClaimingSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler that processes an envelope only once it is claimed."""

    def __init__(
        self, app: AsyncApp, app_token: str, *, claims: EnvelopeClaims, clock: Clock
    ) -> None:
        if not app_token.startswith("xapp-"):
            raise ConfigError("CONFIG_INVALID", "Socket Mode needs an app-level xapp- token")
        super().__init__(app, app_token)
        self._claims = claims
        self._clock = clock

    async def handle(self, client: Any, req: SocketModeRequest) -> None:
        try:
            won = await self._claims.claim(req.envelope_id, at=self._clock.now())
        except StoreError as e:
            # Not claimed, not processed, not acknowledged: Slack re-sends it.
            log.warning("socket mode envelope not claimed (%s)", e.reason_code)
            return
        if not won:
            log.debug("socket mode envelope %s is another replica's", req.envelope_id)
            return
        await super().handle(client, req)

    async def prune(self) -> int:
        """Forget claims older than :data:`CLAIM_RETENTION`."""
        return await self._claims.prune(before=self._clock.now() - CLAIM_RETENTION)


async def run_socket_mode(
    handler: ClaimingSocketModeHandler,
    stop: asyncio.Event,
    *,
    prune_every_seconds: float = 600.0,
) -> None:
    """Connect, prune old claims now and then, and disconnect when ``stop`` is set."""
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        while not stop.is_set():
            try:
                await handler.prune()
            except StoreError as e:
                log.warning("could not prune socket mode claims (%s)", e.reason_code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=prune_every_seconds)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
