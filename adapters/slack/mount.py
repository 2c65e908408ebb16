"""Mount the Slack surface on keyturn's one aiohttp application (``POST /slack/events``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.authorization.async_single_team_authorization import (
    AsyncSingleTeamAuthorization,
)
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.outbox import OutboxMetrics, OutboxWorker
from adapters.slack.app import SlackWork, build_slack_app
from adapters.slack.delivery import PLATFORM, SlackPublisher, SlackSender
from adapters.slack.ports import KeyturnService
from adapters.slack.request import to_bolt_request
from adapters.slack.settings import SlackSettings
from adapters.slack.socket import ClaimingSocketModeHandler, run_socket_mode
from adapters.store.slack_claims import SlackEnvelopeClaims

EVENTS_PATH = "/slack/events"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SlackSurface:
    """What :func:`mount_slack` wired, for the caller and the tests."""

    app: AsyncApp
    worker: OutboxWorker
    sender: SlackSender
    publisher: SlackPublisher
    owns_worker: bool
    work: SlackWork
    socket: ClaimingSocketModeHandler | None = None


async def warm_authorization(app: AsyncApp) -> bool:
    """Call ``auth.test`` once at start-up and give the answer to Bolt's authorization.

    ``AsyncApp`` calls ``auth.test`` lazily, on the first request, and keeps the answer;
    every request that arrives before that answer calls it again. A click storm on a
    fresh process would otherwise start with one ``auth.test`` per click, each holding
    its ack (the sync ``App`` does this call in its constructor for the same reason).
    Returns False (and Bolt stays lazy) when Slack cannot be asked now.
    """
    middleware = getattr(app, "_async_middleware_list", [])
    single = [m for m in middleware if isinstance(m, AsyncSingleTeamAuthorization)]
    if not single:
        log.warning("Bolt's single-workspace authorization not found; auth.test stays lazy")
        return False
    try:
        answer = await app.client.auth_test()
    except SlackApiError as e:
        log.warning(
            "auth.test at start-up failed (%s); Bolt will retry per request",
            e.response.get("error"),
        )
        return False
    except (aiohttp.ClientError, SlackClientError, OSError, TimeoutError) as e:
        # Slack unreachable: keyturn still starts (console, Teams, agent API); the
        # first Slack request asks again, as Bolt does without this warm-up.
        log.warning(
            "auth.test at start-up could not reach Slack (%s); Bolt will retry per request",
            type(e).__name__,
        )
        return False
    for m in single:
        if m.auth_test_result is None:
            m.auth_test_result = answer
    return True


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

    The listeners' slow work (identity, eligibility, decisions) runs in an in-process
    queue that starts with the server; on shutdown it drains for up to
    ``settings.shutdown_drain_seconds`` after the server has stopped accepting
    requests (what it records reaches Slack through the durable outbox).

    Raises:
        ConfigError: ``CONFIG_MISSING`` without a signing secret or bot token.
    """
    work = SlackWork.from_settings(settings)
    app = build_slack_app(service, settings=settings, client=client, work=work)
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
        # Bolt checks the signature over the raw body exactly as received
        # (adapters.slack.request only decodes the form faster than Bolt would).
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def drain_work(_: web.Application) -> AsyncIterator[None]:
        await warm_authorization(app)
        yield
        # aiohttp stops accepting before cleanup; the Socket Mode connection (cleaned
        # up before this, registered after) no longer delivers either.
        await work.close(deadline_seconds=settings.shutdown_drain_seconds)

    # Registered before the outbox worker's context, so it is cleaned up after it:
    # the drained decisions' messages wait durably in the outbox for the next start.
    web_app.cleanup_ctx.append(drain_work)
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
    return SlackSurface(app, worker, sender, publisher, owns, work, socket)
