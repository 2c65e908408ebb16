"""Mount the Slack surface on keyturn's one aiohttp application (``POST /slack/events``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from adapters.outbox import OutboxMetrics, OutboxWorker
from adapters.slack.app import build_slack_app
from adapters.slack.delivery import PLATFORM, SlackPublisher, SlackSender
from adapters.slack.ports import KeyturnService
from adapters.slack.settings import SlackSettings
from adapters.slack.socket import ClaimingSocketModeHandler, run_socket_mode
from adapters.store.slack_claims import SlackEnvelopeClaims

EVENTS_PATH = "/slack/events"


@dataclass(frozen=True, slots=True)
class SlackSurface:
    """What :func:`mount_slack` wired, for the caller and the tests."""

    app: AsyncApp
    worker: OutboxWorker
    sender: SlackSender
    publisher: SlackPublisher
    owns_worker: bool
    socket: ClaimingSocketModeHandler | None = None


def mount_slack(
    web_app: web.Application,
    service: KeyturnService,
    *,
    settings: SlackSettings,
    client: AsyncWebClient | None = None,
    outbox: OutboxWorker | None = None,
    metrics: OutboxMetrics | None = None,
    path: str = EVENTS_PATH,
) -> SlackSurface:
    """Add ``POST {path}`` for Slack's events, interactivity and slash commands.

    With ``settings.socket_mode`` no route is added: a Socket Mode connection runs
    with ``web_app`` instead (each envelope claimed once across replicas).

    Subscribes to the service's hub (cards, feed, DMs go through the outbox). With
    ``outbox`` given (shared with Teams), the Slack sender is registered on it and the
    caller runs it; otherwise a worker is created and runs with ``web_app``.

    Raises:
        ConfigError: ``CONFIG_MISSING`` without a signing secret or bot token.
    """
    app = build_slack_app(service, settings=settings, client=client)
    sender = SlackSender(service, app.client)
    owns = outbox is None
    worker = outbox or OutboxWorker(
        service.rt.store,
        clock=service.rt.clock,
        min_interval_seconds=settings.min_interval_seconds,
        metrics=metrics,
    )
    worker.add_sender(PLATFORM, sender)
    publisher = SlackPublisher(worker, settings, signer_did=service.rt.signer.did)
    service.rt.hub.subscribe(publisher)

    async def events(request: web.Request) -> web.Response:
        # Bolt sees the raw body exactly as received: the signature covers those bytes.
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    socket: ClaimingSocketModeHandler | None = None
    if settings.socket_mode and settings.app_token is not None:
        socket = ClaimingSocketModeHandler(
            app,
            settings.app_token.get_secret_value(),
            claims=SlackEnvelopeClaims(service.rt.store),
            clock=service.rt.clock,
        )
        handler = socket

        async def run_socket(_: web.Application) -> AsyncIterator[None]:
            stop = asyncio.Event()
            task = asyncio.create_task(run_socket_mode(handler, stop))
            yield
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        web_app.cleanup_ctx.append(run_socket)
    else:
        web_app.router.add_post(path, events)
    if owns:

        async def run_worker(_: web.Application) -> AsyncIterator[None]:
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            yield
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        web_app.cleanup_ctx.append(run_worker)
    return SlackSurface(app, worker, sender, publisher, owns, socket)
