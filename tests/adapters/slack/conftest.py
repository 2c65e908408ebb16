"""The real service (SQLite, real keys, demo directory), the real Bolt app mounted on an
aiohttp app, and the Slack Web API stand-in; requests are signed as Slack signs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from adapters.outbox import OutboxWorker
from adapters.signer import FileSigner
from adapters.slack import SlackSettings, SlackSurface, mount_slack
from bot import demo
from bot.bootstrap import App, build
from tests.adapters.slack.standin import TEAM, SlackStandIn

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVERS = "CAPPROVERS"
SECURITY = "CSECURITY"
T = TypeVar("T")


@dataclass
class MovableClock:
    moment: datetime

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class Rig:
    app: App
    clock: MovableClock
    slack: SlackStandIn
    http: TestClient[Any, Any]
    surface: SlackSurface
    webhook_url: str
    sent: list[str] = field(default_factory=list)

    @property
    def worker(self) -> OutboxWorker:
        return self.surface.worker

    async def post(self, body: str, *, headers: dict[str, str] | None = None) -> Any:
        return await self.http.post(
            "/slack/events", data=body.encode(), headers=headers or signed(body)
        )

    async def click(self, user: str, action_id: str, request_id: str, **kw: Any) -> Any:
        return await self.post(block_action(user, action_id, request_id, self.webhook_url), **kw)

    async def submit_view(
        self, user: str, callback_id: str, request_id: str, block: str, value: str, **kw: Any
    ) -> Any:
        return await self.post(view_submission(user, callback_id, request_id, block, value), **kw)

    async def command(self, user: str, text: str) -> Any:
        body = urlencode(
            {
                "command": "/breakglass",
                "text": text,
                "user_id": user,
                "team_id": TEAM,
                "channel_id": APPROVERS,
                "response_url": self.webhook_url,
                "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            }
        )
        return await self.post(body)

    async def agent_request(self, params: dict[str, Any] | None = None) -> str:
        key = FileSigner.load(self.app.settings.data_dir / "keys" / "demo-agent.pem").key
        job = await demo._start_job(self.app.service, key)
        submitted = await self.app.service.submit(
            cst=job.runner_token,
            job_id=job.job_id,
            tool_route="storage.export",
            params=params or {"dataset": "customer_pii", "destination": "s3://exports/q3"},
        )
        assert submitted.outcome == "gated" and submitted.request_id
        return submitted.request_id

    async def deliver(self) -> int:
        """Drain the outbox until nothing due is left."""
        total = 0
        for _ in range(20):
            sent = await self.worker.run_once()
            total += sent
            if not sent:
                return total
        return total


def slack_settings(**changes: Any) -> SlackSettings:
    """The tests' Slack settings: their bot token, signing secret, channels and team."""
    return SlackSettings(
        bot_token=SecretStr("xoxb-test"),
        signing_secret=SecretStr(SECRET),
        approvers_channel=APPROVERS,
        security_channel=SECURITY,
        workspace_id=TEAM,
        **changes,
    )


def signed(body: str, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def block_action(user: str, action_id: str, request_id: str, response_url: str) -> str:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "team_id": TEAM},
        "team": {"id": TEAM, "domain": "corp"},
        "api_app_id": "AKEYTURN",
        "token": "verification-token-unused",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "channel": {"id": APPROVERS, "name": "approvers"},
        "container": {"type": "message", "message_ts": "1001.000100", "channel_id": APPROVERS},
        "message": {"ts": "1001.000100", "text": f"Approval needed: x ({request_id})"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": f"decision:{request_id}",
                "value": request_id,
                "type": "button",
                "action_ts": "1548426417.840180",
            }
        ],
    }
    return "payload=" + quote(json.dumps(payload))


def view_submission(user: str, callback_id: str, request_id: str, block: str, value: str) -> str:
    payload = {
        "type": "view_submission",
        "user": {"id": user, "team_id": TEAM},
        "team": {"id": TEAM, "domain": "corp"},
        "api_app_id": "AKEYTURN",
        "token": "verification-token-unused",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "view": {
            "id": "VKEYTURN",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": json.dumps({"request_id": request_id, "channel": APPROVERS}),
            "state": {"values": {block: {"value": {"type": "plain_text_input", "value": value}}}},
        },
    }
    return "payload=" + quote(json.dumps(payload))


async def eventually(check: Callable[[], Awaitable[T]], *, tries: int = 400) -> T:
    """Wait for work Bolt goes on doing after its ack (not a timing assertion)."""
    for _ in range(tries):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never became true")


@contextlib.asynccontextmanager
async def make_rig(tmp_path: Path, **slack: Any) -> AsyncIterator[Rig]:
    """A rig whose Slack settings take ``slack`` on top of the defaults."""
    settings = demo.demo_settings(tmp_path / "data")
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
    application = await build(settings, create_key=True, clock=clock)
    agent = FileSigner.load(settings.data_dir / "keys" / "demo-agent.pem")
    await application.service.register_agent(agent.did, name="invoice-bot", by="test")
    slack_standin = SlackStandIn()
    slack_server = TestServer(slack_standin.app())
    await slack_server.start_server()
    client = AsyncWebClient(token="xoxb-test", base_url=str(slack_server.make_url("/api/")))
    worker = OutboxWorker(application.store, clock=clock, min_interval_seconds=0)
    web_app = web.Application()
    surface = mount_slack(
        web_app,
        application.service,
        settings=slack_settings(**slack),
        client=client,
        outbox=worker,
    )
    http = TestClient(TestServer(web_app))
    await http.start_server()
    try:
        yield Rig(
            application,
            clock,
            slack_standin,
            http,
            surface,
            str(slack_server.make_url("/webhook/r")),
        )
    finally:
        await http.close()
        await slack_server.close()
        await application.close()


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with make_rig(tmp_path) as made:
        yield made
