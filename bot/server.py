"""keyturn's one aiohttp server: the agent API now; chat surfaces mount into it too.

Also runs the scheduler (expiry, break-glass windows, checkpoints) next to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from adapters.http import Metrics, mount_agent_api
from adapters.outbox.worker import OutboxWorker
from adapters.slack import mount_slack
from adapters.teams import bot_authentication, mount_teams
from adapters.teams.settings import check_startup
from adapters.web import mount_console
from bot.bootstrap import App, scheduler
from bot.logging_setup import request_id_middleware
from bot.service.reconcile import reconcile_forever
from core.outcomes import Submitted

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        executions=app.executions,
    )

    async def background(_: web.Application) -> AsyncIterator[None]:
        await app.service.seal_checks.start()  # spawned now, not at the first seal
        tasks = [asyncio.create_task(scheduler(app.service))]
        if app.reconciler is not None:
            tasks.append(asyncio.create_task(reconcile_forever(app.reconciler)))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    web_app.cleanup_ctx.append(background)
    _mount_chat(web_app, app, metrics)
    return web_app


def _mount_chat(web_app: web.Application, app: App, metrics: Metrics) -> None:
    """Slack and Teams, when configured, sharing one persistent outbox worker."""
    settings = app.settings
    if settings.slack is None and settings.teams is None:
        return
    worker = OutboxWorker(app.store, clock=app.service.rt.clock, metrics=metrics)
    if settings.slack is not None:
        mount_slack(web_app, app.service, settings=settings.slack, outbox=worker, metrics=metrics)
    if settings.teams is not None:
        teams_settings = settings.teams
        check_startup(teams_settings, host=settings.server.host)  # before botbuilder sees it
        if teams_settings.insecure_dev_no_auth and not teams_settings.app_id:
            # botbuilder insists on an app id for single-tenant bots even when auth is
            # off; the loopback-only dev mode has none.
            teams_settings = teams_settings.model_copy(update={"app_type": "MultiTenant"})
        teams = mount_teams(
            web_app,
            app.service,
            settings=teams_settings,
            auth=bot_authentication(teams_settings),
            host=settings.server.host,
            store=app.store,
        )
        app.service.rt.hub.subscribe(teams.notifier)
        worker.add_sender("teams", teams.sender.deliver)

    async def run_outbox(_: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    web_app.cleanup_ctx.append(run_outbox)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run the server's event loop: uvloop where it is installed (about 15% less CPU per
    request on the service load benchmark), else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or a trimmed install
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


#: Middle-generation collections between two full ones once the heap is settled
#: (CPython's default is 10).
FULL_COLLECTION_EVERY = 100


def settle_heap() -> None:
    """Move everything built at start-up out of the garbage collector's way.

    A serving process holds a few hundred thousand long-lived objects (the libraries,
    the compiled policy, SQLAlchemy's metadata); every full collection walked them all,
    stalling the event loop for 100–200 ms under load (``tests/bench/bench_service.py``).
    Frozen objects are never collected again, so call this once, after start-up.
    """
    gc.collect()
    gc.freeze()
    # A full collection walks every object that outlived two younger ones since the
    # freeze (caches, open requests): 10–20 ms of a stalled loop under load, and with
    # nothing left to count as long-lived after the freeze CPython ran one every 10
    # middle-generation collections, about every 10 s (bench_service). Every 100:
    # garbage in reference cycles that old waits longer; everything else is freed by
    # reference counting as before.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


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
    settle_heap()
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
