"""A local stand-in for Slack's Web API (bolt-python's mock server, as an aiohttp app).

Records every call (method and its arguments), answers ``auth.test``, ``users.info``
and ``users.lookupByEmail`` from a small user table, hands out increasing ``ts`` for
``chat.postMessage``, and can answer the next call of a method with HTTP 429 and a
``Retry-After`` header. ``response_url`` posts land on ``/webhook/<name>``.

Socket Mode: ``apps.connections.open`` (with the app-level ``xapp-`` token) answers a
``ws://`` URL on the same server; each connection is greeted with ``hello`` as Slack
does, :meth:`SlackStandIn.send_envelope` writes an envelope to every open connection
(as Slack may when connections race), and every acknowledgement received is recorded
with the number of the connection it came on.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

TEAM = "T0KEYTURN"
APP_TOKEN = "xapp-1-AKEYTURN-1-test"
USERS = {
    "UALICE": "alice@corp.example",
    "UBOB": "bob@corp.example",
    "UCAROL": "carol@corp.example",
    "UDAN": "dan@corp.example",
    "UMALLORY": "mallory@corp.example",
}


@dataclass
class Call:
    method: str
    args: dict[str, Any]


@dataclass
class SlackStandIn:
    calls: list[Call] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    limited: dict[tuple[str, str | None], list[int]] = field(default_factory=dict)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    acks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    _ts: int = 1000
    _host: str = ""

    def rate_limit_next(
        self, method: str, retry_after: int = 1, *, channel: str | None = None
    ) -> None:
        """Answer the next ``method`` call (to ``channel``, or any) with 429."""
        self.limited.setdefault((method, channel), []).append(retry_after)

    def of(self, method: str) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.method == method]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/webhook/{name}", self._webhook)
        app.router.add_get("/link", self._link)
        return app

    async def send_envelope(self, envelope: dict[str, Any]) -> int:
        """Write ``envelope`` to every open Socket Mode connection; returns how many."""
        open_ = [ws for ws in self.sockets if not ws.closed]
        text = json.dumps(envelope)
        await asyncio.gather(*(ws.send_str(text) for ws in open_))
        return len(open_)

    def acked(self, envelope_id: str) -> list[int]:
        """The connections that acknowledged ``envelope_id``."""
        return [n for n, ack in self.acks if ack.get("envelope_id") == envelope_id]

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        number = len(self.sockets)
        self.sockets.append(ws)
        hello = {"type": "hello", "num_connections": len(self.sockets), "debug_info": {}}
        await ws.send_str(json.dumps(hello))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.acks.append((number, json.loads(message.data)))
        return ws

    async def _webhook(self, request: web.Request) -> web.Response:
        self.webhooks.append(await request.json())
        return web.Response(text="ok")

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token = "Bearer " + (APP_TOKEN if method == "apps.connections.open" else "xoxb-test")
        if request.headers.get("Authorization") != token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(dict(await request.post()))
        for key in ("blocks", "view"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        queue = self.limited.get((method, args.get("channel"))) or self.limited.get((method, None))
        if queue:
            retry = queue.pop(0)
            self.calls.append(Call(method + "#429", args))
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry)},
            )
        self.calls.append(Call(method, args))
        self._host = request.host
        return web.json_response(self._answer(method, args))

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://{self._host}/link"}
        if method == "auth.test":
            return {"ok": True, "team_id": TEAM, "user_id": "UBOT", "bot_id": "BBOT"}
        if method == "users.info":
            email = USERS.get(args.get("user", ""))
            if email is None:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": {"id": args["user"], "profile": {"email": email}}}
        if method == "users.lookupByEmail":
            for uid, email in USERS.items():
                if email == args.get("email"):
                    return {"ok": True, "user": {"id": uid}}
            return {"ok": False, "error": "users_not_found"}
        if method == "chat.postMessage":
            self._ts += 1
            return {"ok": True, "channel": args.get("channel"), "ts": f"{self._ts}.000100"}
        return {"ok": True}
