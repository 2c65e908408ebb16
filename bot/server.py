"""keyturn's one aiohttp server: the agent API now; chat surfaces mount into it too.

Also runs the scheduler (expiry, break-glass windows, checkpoints) next to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from adapters.http import Metrics, mount_agent_api
from bot.bootstrap import App, scheduler

log = logging.getLogger(__name__)


def build_web_app(app: App, *, metrics: Metrics | None = None) -> web.Application:
    """The aiohttp application for ``app``'s service, with the scheduler as a background task."""
    web_app = web.Application(client_max_size=app.settings.server.max_body_bytes)
    mount_agent_api(
        web_app,
        app.service,
        max_body_bytes=app.settings.server.max_body_bytes,
        long_poll_max_seconds=app.settings.server.long_poll_max_seconds,
        metrics=metrics or Metrics(),
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
    ready: Callable[[str], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or forever); calls ``ready(url)`` once listening."""
    runner = web.AppRunner(build_web_app(app), access_log=None)
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
