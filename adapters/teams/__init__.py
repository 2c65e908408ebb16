"""keyturn's Microsoft Teams surface (Bot Framework SDK, botbuilder 4.17.1).

Kept thin so a move to the SDK's successor touches only this folder: pure translation
(:mod:`.cards`: Card → Adaptive Card 1.5; :mod:`.commands`: text → command), one handler
(:mod:`.handler`), the outbox sender and event listener (:mod:`.outbound`), settings and
the start-up check (:mod:`.settings`), the app package (:mod:`.package`).

Mounting (``bot/`` does this)::

    teams = mount_teams(web_app, service, settings=teams_settings,
                        auth=bot_authentication(teams_settings), host=server_host,
                        store=app.store)
    service.rt.hub.subscribe(teams.notifier)       # cards, feed, DMs → outbox
    worker.add_sender("teams", teams.sender.deliver)   # adapters.outbox.OutboxWorker

When keyturn is installed in a team, the ``installationUpdate`` / ``conversationUpdate``
activities' service URL is remembered (:mod:`.references`), so the configured channels
need no ``service_url``.

``POST /api/messages`` answers 401 (never 500) for every authentication failure —
missing, forged, expired, malformed, unknown-kid or wrong-audience tokens — because
botbuilder raises non-``PermissionError`` exceptions for several of them (PLATFORMS.md
§0.6): anything raised before the bot's turn starts is an authentication failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from adapters.teams.handler import KeyturnTeamsBot, turn_started
from adapters.teams.outbound import TeamsNotifier, TeamsSender
from adapters.teams.ports import ChatStore, TeamsService
from adapters.teams.references import ConversationBook
from adapters.teams.settings import (
    ConversationTarget,
    TeamsSettings,
    bot_authentication,
    check_startup,
)

log = logging.getLogger(__name__)

ROUTE = "/api/messages"


@dataclass(frozen=True, slots=True)
class TeamsSurface:
    adapter: Any  # botbuilder CloudAdapter
    bot: KeyturnTeamsBot
    notifier: TeamsNotifier
    sender: TeamsSender


TEAMS_KEY: web.AppKey[TeamsSurface] = web.AppKey("keyturn_teams", TeamsSurface)


def mount_teams(
    web_app: web.Application,
    service: TeamsService,
    *,
    settings: TeamsSettings,
    auth: Any,
    host: str,
    store: ChatStore,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    signer_did: str | None = None,
) -> TeamsSurface:
    """Add ``POST /api/messages`` to keyturn's one aiohttp app.

    Args:
        auth: a botbuilder ``BotFrameworkAuthentication`` (production:
            :func:`bot_authentication`; tests: one with a local credentials factory).
        host: the address the server binds (the insecure dev mode needs loopback).
        store: the SQL store (outbox, message and conversation references).
        signer_did: the DID that signs checkpoints (shown in feed lines); default
            ``service.rt.signer.did``.

    Raises:
        ConfigError: see :func:`check_startup` — no credentials, insecure mode off
            loopback, or no tenant allowlist.
    """
    from botbuilder.integration.aiohttp import CloudAdapter  # type: ignore[import-untyped]

    check_startup(settings, host=host)
    adapter = CloudAdapter(auth)
    references = ConversationBook(store, clock)
    bot = KeyturnTeamsBot(service, settings, clock=clock, references=references)
    did = signer_did if signer_did is not None else service.rt.signer.did
    surface = TeamsSurface(
        adapter=adapter,
        bot=bot,
        notifier=TeamsNotifier(store, settings, clock, signer_did=did),
        sender=TeamsSender(adapter, service, store, settings, clock, references=references),
    )

    async def messages(request: web.Request) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "")
        if "application/json" not in content_type:
            raise web.HTTPUnsupportedMediaType()
        started: list[bool] = []
        token = turn_started.set(started)
        try:
            response = await adapter.process(request, bot)
        except web.HTTPException:
            raise
        except Exception as e:
            if started:
                log.exception("the Teams handler failed")
                raise web.HTTPInternalServerError() from e
            # Expired (ExpiredSignatureError), malformed (DecodeError), unknown kid
            # (IndexError), failed endorsement (bare Exception), …: all 401.
            log.info("Teams request refused before the turn: %s", type(e).__name__)
            raise web.HTTPUnauthorized() from e
        finally:
            turn_started.reset(token)
        return response if response is not None else web.Response(status=201)

    web_app.router.add_post(ROUTE, messages)
    web_app[TEAMS_KEY] = surface
    return surface


__all__ = [
    "ROUTE",
    "TEAMS_KEY",
    "ConversationBook",
    "ConversationTarget",
    "KeyturnTeamsBot",
    "TeamsNotifier",
    "TeamsSender",
    "TeamsService",
    "TeamsSettings",
    "TeamsSurface",
    "bot_authentication",
    "check_startup",
    "mount_teams",
]
