"""A running agent API on the fake service, and small helpers to talk to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from adapters.http import Metrics, build_agent_app
from core import canonical
from core.keys import SigningKey
from tests.adapters.http.fake_service import JOB_PREFIX, FakeAgentService

AGENT_KEY = SigningKey.from_seed(bytes([7]) * 32)
BODY_LIMIT = 4096
LONG_POLL_MAX = 2.0
PAYMENT = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": "Invoice 118"}
SMALL_PAYMENT = {"amount_usd": 20, "to_account": "DE89370400440532013000", "memo": "coffee"}


@dataclass
class Api:
    service: FakeAgentService
    client: TestClient[Any, Any]
    metrics: Metrics

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def start_job(self, key: SigningKey = AGENT_KEY) -> tuple[str, str]:
        """(job id, runner token) for ``key``, through the real endpoints."""
        r = await self.client.post("/v1/agents/challenge", json={"agent_did": key.did})
        assert r.status == 200, await r.text()
        challenge = (await r.json())["challenge"]
        signature = canonical.b64u_encode(key.sign(JOB_PREFIX + challenge.encode()))
        r = await self.client.post(
            "/v1/jobs",
            json={"agent_did": key.did, "challenge": challenge, "signature_b64u": signature},
        )
        assert r.status == 201, await r.text()
        job = await r.json()
        return job["job_id"], job["runner_token"]

    async def submit(
        self, token: str, job_id: str, route: str, params: dict[str, Any], **extra: Any
    ) -> ClientResponse:
        return await self.client.post(
            "/v1/requests",
            json={"job_id": job_id, "tool_route": route, "params": params, **extra},
            headers={"Authorization": f"Bearer {token}"},
        )


@asynccontextmanager
async def running_api(
    service: FakeAgentService | None = None,
    *,
    body_limit: int = BODY_LIMIT,
    long_poll_max: float = LONG_POLL_MAX,
) -> AsyncIterator[Api]:
    service = service or FakeAgentService()
    service.register(AGENT_KEY.did)
    metrics = Metrics()
    app = build_agent_app(
        service, max_body_bytes=body_limit, long_poll_max_seconds=long_poll_max, metrics=metrics
    )
    async with TestClient(TestServer(app)) as client:
        yield Api(service, client, metrics)
