"""The webhook executor against a receiver that follows the documented recipe: it verifies
the Ed25519 signature offline with keyturn's public key and refuses tampered or replayed
calls; keyturn never retries a "no" but does retry a transient failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.executors.webhook import WebhookExecutor
from core.errors import ConfigError, GateDeniedError
from core.executor import Action
from core.webhook_call import verify_webhook_call
from tests.core.test_executor import KEYTURN, PARAMS, ROUTE, grant_for

pytestmark = pytest.mark.asyncio
NOW = datetime(2026, 11, 23, 10, 41, 30, tzinfo=UTC)


@dataclass
class Clock:
    moment: datetime = NOW

    def now(self) -> datetime:
        return self.moment


@dataclass
class Receiver:
    """A receiver built from the recipe in core.webhook_call."""

    seen: set[str] = field(default_factory=set)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    origin: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.raw.append((body, headers))
        if self.fail_next:
            return web.json_response({}, status=self.fail_next.pop(0), headers={"Retry-After": "1"})
        try:
            data = verify_webhook_call(body, headers, KEYTURN.public_key, NOW, self.seen)
        except GateDeniedError as e:
            self.refused.append(e.reason_code)
            status = 409 if e.reason_code == "WEBHOOK_REPLAYED" else 401
            return web.json_response({"error": e.reason_code}, status=status)
        self.accepted.append({**data, "path": request.path})
        return web.json_response({"call_id": data["call_id"], "done": True})


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/run", r.handle)
    app.router.add_post("/undo", r.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield r
    finally:
        await runner.cleanup()


def executor(r: Receiver) -> WebhookExecutor:
    return WebhookExecutor(
        url=f"{r.origin}/run",
        rollback_url=f"{r.origin}/undo",
        signer=KEYTURN,
        clock=Clock(),
        allow_loopback_http=True,
    )


async def repost(url: str, body: bytes, headers: dict[str, str]) -> int:
    """An attacker re-sends a captured call (possibly edited)."""
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status


def action() -> Action:
    return Action("r-1", ROUTE, PARAMS, grant_for(PARAMS), NOW + timedelta(minutes=10))


async def test_execute_sends_a_signed_call_the_receiver_verifies_offline(
    receiver: Receiver,
) -> None:
    ex = executor(receiver)
    try:
        result = await ex.execute(action())
        assert result.ok and result.reference["acknowledged"] == "yes"
        assert receiver.accepted[0]["path"] == "/run"
        assert receiver.accepted[0]["params"] == PARAMS
        assert receiver.accepted[0]["grant"].tool_route == ROUTE
        verified = await ex.verify(replace(action(), reference=result.reference))
        assert verified.ok
    finally:
        await ex.close()


async def test_rollback_is_a_second_signed_call_to_the_declared_rollback_url(
    receiver: Receiver,
) -> None:
    ex = executor(receiver)
    try:
        result = await ex.rollback(action())
        assert result.ok and receiver.accepted[0]["path"] == "/undo"
        assert receiver.accepted[0]["step"] == "rollback"
        assert (await ex.verify_rollback(replace(action(), reference=result.reference))).ok
        assert not (await ex.verify(replace(action(), reference=result.reference))).ok
    finally:
        await ex.close()


async def test_the_receiver_refuses_a_replayed_call(receiver: Receiver) -> None:
    ex = executor(receiver)
    try:
        await ex.execute(action())
        body, headers = receiver.raw[0]
        assert await repost(f"{receiver.origin}/run", body, headers) == 409
        assert receiver.refused == ["WEBHOOK_REPLAYED"] and len(receiver.accepted) == 1
    finally:
        await ex.close()


async def test_the_receiver_refuses_a_tampered_call(receiver: Receiver) -> None:
    ex = executor(receiver)
    try:
        await ex.execute(action())
        body, headers = receiver.raw[0]
        tampered = body.replace(b'"execute"', b'"rollback"')
        assert await repost(f"{receiver.origin}/undo", tampered, headers) == 401
        assert receiver.refused == ["WEBHOOK_SIGNATURE_INVALID"]
    finally:
        await ex.close()


async def test_a_refusal_is_definitive_and_a_5xx_is_transient(receiver: Receiver) -> None:
    ex = executor(receiver)
    try:
        receiver.fail_next = [403]
        no = await ex.execute(action())
        assert not no.ok and not no.transient and no.status == 403
        receiver.fail_next = [503]
        busy = await ex.execute(action())
        assert not busy.ok and busy.transient and busy.retry_after == 1.0
        assert not (await ex.verify(replace(action(), reference=busy.reference))).ok
    finally:
        await ex.close()


async def test_an_unreachable_receiver_is_transient() -> None:
    ex = WebhookExecutor(
        url="http://127.0.0.1:9/run",
        rollback_url="http://127.0.0.1:9/undo",
        signer=KEYTURN,
        clock=Clock(),
        allow_loopback_http=True,
    )
    try:
        result = await ex.execute(action())
        assert not result.ok and result.transient and result.status is None
    finally:
        await ex.close()


async def test_plain_http_is_refused_unless_explicitly_allowed_for_loopback() -> None:
    for url, allow in (
        ("http://127.0.0.1:8080/run", False),
        ("http://hooks.example.com/run", True),
        ("https://user:pw@hooks.example.com/run", False),
        ("ftp://hooks.example.com/run", True),
    ):
        with pytest.raises(ConfigError):
            WebhookExecutor(
                url=url,
                rollback_url="https://hooks.example.com/undo",
                signer=KEYTURN,
                clock=Clock(),
                allow_loopback_http=allow,
            )


async def test_a_webhook_without_a_declared_rollback_url_is_refused() -> None:
    with pytest.raises(ConfigError):
        WebhookExecutor.from_options(
            {"url": "https://hooks.example.com/run"}, signer=KEYTURN, clock=Clock()
        )
