"""A real keyturn service with the Teams surface mounted, real botbuilder CloudAdapter
and real JWT validation, talking to a local connector stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication

from adapters.directory import StaticDirectory
from adapters.outbox import OutboxWorker
from adapters.signer import FileSigner
from adapters.teams import TeamsSurface, mount_teams
from adapters.teams.settings import BotFrameworkConfig, ConversationTarget, TeamsSettings
from bot import demo
from bot.bootstrap import App, build
from tests.adapters.teams.standin import (
    APP_ID,
    TENANT,
    Connector,
    Issuer,
    LocalCredentialsFactory,
)

AAD = {
    "alice": "aad00000-0000-4000-8000-0000000a11ce",
    "bob": "aad00000-0000-4000-8000-000000000b0b",
    "carol": "aad00000-0000-4000-8000-00000000ca01",
    "dan": "aad00000-0000-4000-8000-000000000da0",
    "mallory": "aad00000-0000-4000-8000-0000000ba0d0",
}
APPROVERS_CHANNEL = "19:approvers@thread.tacv2"
FEED_CHANNEL = "19:security@thread.tacv2"


@dataclass
class MovableClock:
    moment: datetime

    def now(self) -> datetime:
        return self.moment


def test_directory() -> StaticDirectory:
    """The demo directory, with a Teams aadObjectId alias for each person."""
    doc = yaml.safe_load(demo.asset_text("demo-directory.yaml"))
    for person in doc["people"]:
        person["aad_object_ids"] = [AAD[person["object_id"]]]
    return StaticDirectory.from_text(yaml.safe_dump(doc), name="the Teams test directory")


@dataclass
class Rig:
    app: App
    teams: TeamsSurface
    client: TestClient
    connector: Connector
    issuer: Issuer
    service_url: str
    settings: TeamsSettings
    worker: OutboxWorker

    @property
    def kt(self) -> Any:
        return self.app.service

    async def post(self, activity: dict[str, Any], token: str | None = "valid") -> Any:
        headers = {"Content-Type": "application/json"}
        if token == "valid":
            token = self.issuer.token(self.service_url)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.post("/api/messages", json=activity, headers=headers)

    def activity(self, who: str, **fields: Any) -> dict[str, Any]:
        conversation = fields.pop(
            "conversation",
            {
                "id": f"{APPROVERS_CHANNEL};messageid=1",
                "tenantId": TENANT,
                "conversationType": "channel",
            },
        )
        return {
            "id": "act-in",
            "channelId": "msteams",
            "serviceUrl": self.service_url,
            "from": {"id": f"29:{who}", "aadObjectId": AAD.get(who, who)},
            "recipient": {"id": f"28:{APP_ID}", "name": "keyturn"},
            "conversation": conversation,
            "channelData": {"tenant": {"id": conversation.get("tenantId", TENANT)}},
            **fields,
        }

    def click(self, who: str, request_id: str, verb: str, **inputs: Any) -> dict[str, Any]:
        trigger = inputs.pop("trigger", "manual")
        return self.activity(
            who,
            type="invoke",
            name="adaptiveCard/action",
            value={
                "action": {
                    "type": "Action.Execute",
                    "verb": verb,
                    "data": {"requestId": request_id, **inputs},
                },
                "trigger": trigger,
            },
        )

    def message(self, who: str, text: str, *, personal: bool = True) -> dict[str, Any]:
        conversation = (
            {"id": f"a:dm-{who}", "tenantId": TENANT, "conversationType": "personal"}
            if personal
            else None
        )
        extra = {"conversation": conversation} if conversation else {}
        return self.activity(who, type="message", text=text, **extra)

    async def drain(self) -> int:
        """Run the REAL outbox worker until nothing is due now; returns messages sent."""
        sent = 0
        while True:
            n = await self.worker.run_once()
            sent += n
            if n == 0:
                return sent

    def advance(self, seconds: float) -> None:
        self.kt.rt.clock.moment += timedelta(seconds=seconds)


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    connector = Connector()
    connector_server = TestServer(connector.app())
    await connector_server.start_server()
    service_url = str(connector_server.make_url("/")).rstrip("/") + "/"
    issuer = Issuer()
    issuer.install()
    settings_ = demo.demo_settings(tmp_path / "data")
    clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
    app = await build(settings_, create_key=True, clock=clock, directory=test_directory())
    agent = FileSigner.load(settings_.data_dir / "keys" / "demo-agent.pem")
    await app.service.register_agent(agent.did, name="invoice-bot", by="test")
    teams_settings = TeamsSettings(
        app_id=APP_ID,
        app_password="not-used-offline",
        app_type="SingleTenant",
        app_tenant_id=TENANT,
        allowed_tenants=[TENANT],
        approvers=ConversationTarget(
            service_url=service_url, channel_id=APPROVERS_CHANNEL, tenant_id=TENANT
        ),
        security_channel=ConversationTarget(
            service_url=service_url, channel_id=FEED_CHANNEL, tenant_id=TENANT
        ),
        refresh_user_ids=["29:bob", "29:carol", "29:dan"],
    )
    auth = ConfigurationBotFrameworkAuthentication(
        BotFrameworkConfig(teams_settings), credentials_factory=LocalCredentialsFactory()
    )
    web_app = web.Application()
    teams = mount_teams(
        web_app,
        app.service,
        settings=teams_settings,
        auth=auth,
        host="0.0.0.0",
        store=app.store,
        clock=clock.now,
    )
    app.service.rt.hub.subscribe(teams.notifier)
    # The shared worker exactly as bot/server.py runs it, minus the 1 s pacing.
    worker = OutboxWorker(
        app.store, {"teams": teams.sender.deliver}, clock=clock, min_interval_seconds=0
    )
    client = TestClient(TestServer(web_app))
    await client.start_server()
    try:
        yield Rig(app, teams, client, connector, issuer, service_url, teams_settings, worker)
    finally:
        await client.close()
        await connector_server.close()
        await app.close()
