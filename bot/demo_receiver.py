"""The demo's stand-in for your automation: a webhook receiver that follows the README's
recipe, so ``keyturn demo`` shows a break-glass action executed and rolled back for real.

It listens on 127.0.0.1 only, verifies every call offline with keyturn's published key
(:func:`core.webhook_call.verify_webhook_call`: signature, freshness, replay, and the grant
binding route and params), "grants" on ``execute`` and "removes" on ``rollback`` — it
keeps the set of active grants in memory — and answers ``{"call_id", "done": true}``.
A real receiver does the same, then calls its own systems.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.errors import GateDeniedError
from core.ports import Clock
from core.webhook_call import verify_webhook_call

log = logging.getLogger(__name__)


@dataclass
class DemoReceiver:
    """A recipe-following receiver on a loopback port (``start`` / ``close``)."""

    clock: Clock
    #: The routes this automation carries out; anything else is refused.
    routes: frozenset[str] = frozenset({"entra.role.assign"})
    public_key: bytes = b""
    seen: set[str] = field(default_factory=set)
    #: Grant ids whose action is in place (executed and not rolled back).
    active: set[str] = field(default_factory=set)
    #: (step, grant id) of every call it accepted, in order.
    accepted: list[tuple[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    url: str = ""
    _runner: Any = None

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/execute", self.handle)
        app.router.add_post("/rollback", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # the raw bytes: the signature covers exactly these
        if not self.public_key:
            return web.json_response({"error": "no trusted key yet"}, status=503)
        try:
            data = verify_webhook_call(
                body, dict(request.headers), self.public_key, self.clock.now(), self.seen
            )
        except GateDeniedError as e:
            self.refused.append(e.reason_code)
            log.warning("demo receiver refused a call: %s", e.reason_code)
            status = 409 if e.reason_code == "WEBHOOK_REPLAYED" else 401
            return web.json_response({"error": e.reason_code}, status=status)
        if data["route"] not in self.routes:
            self.refused.append("ROUTE_NOT_SERVED")
            return web.json_response({"error": "ROUTE_NOT_SERVED"}, status=403)
        grant_id = data["grant"].grant_id
        if data["step"] == "execute":
            self.active.add(grant_id)
        else:
            self.active.discard(grant_id)  # idempotent: undoing nothing is done
        self.accepted.append((data["step"], grant_id))
        return web.json_response({"call_id": data["call_id"], "done": True})
