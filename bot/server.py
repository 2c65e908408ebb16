"""keyturn's one aiohttp server: the agent API now; chat surfaces mount into it too.

Also runs the scheduler (expiry, break-glass windows, checkpoints) next to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.http import Metrics, mount_agent_api
from adapters.web import mount_console
from bot.bootstrap import App, scheduler
from bot.logging_setup import request_id_middleware
from core.outcomes import Submitted

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    """Demo mode: who may sign in to the console, and how it submits a test agent call."""

    people: Sequence[tuple[str, str]]
    submit_test_call: Callable[[str, Mapping[str, Any]], Awaitable[Submitted]]
    secret_key: bytes | None = None  # None: a fresh key per process (sessions end on restart)


#: Where build_web_app keeps the mounted console (tests reach it through the app).
CONSOLE_KEY = web.AppKey("keyturn.console", object)


def build_web_app(
    app: App, *, metrics: Metrics | None = None, console: ConsoleOptions | None = None
) -> web.Application:
    """The aiohttp application for ``app``'s service, with the scheduler as a background task.

    The web console is always mounted; without ``console`` options it is read-only (no
    sign-in, no buttons): in production put it behind the organisation's SSO proxy.
    """
    web_app = web.Application(client_max_size=app.settings.server.max_body_bytes)
    metrics = metrics or Metrics()
    app.service.rt.metrics = metrics
    mount_agent_api(
        web_app,
        app.service,
        max_body_bytes=app.settings.server.max_body_bytes,
        long_poll_max_seconds=app.settings.server.long_poll_max_seconds,
        metrics=metrics,
    )
    web_app.middlewares.append(request_id_middleware())
    web_app[CONSOLE_KEY] = mount_console(
        web_app,
        app.service,
        trusted_did=app.service.rt.signer.did,
        demo_people=console.people if console else None,
        submit_test_call=console.submit_test_call if console else None,
        secret_key=(console.secret_key if console else None) or secrets.token_bytes(32),
    )

    async def background(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(scheduler(app.service))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    web_app.cleanup_ctx.append(background)
    return web_app


async def serve(
    app: App,
    *,
    console: ConsoleOptions | None = None,
    ready: Callable[[str], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or forever); calls ``ready(url)`` once listening."""
    runner = web.AppRunner(build_web_app(app, console=console), access_log=None)
    await runner.setup()
    host, port = app.settings.server.host, app.settings.server.port
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    url = f"http://{host}:{bound}"
    log.info("keyturn listening on %s", url)
    try:
        if ready is not None:
            result = ready(url)
            if asyncio.iscoroutine(result):
                await result
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
