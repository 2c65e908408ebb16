from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from adapters.agents.sdk import Backoff, Gate
from tests.adapters.http.fake_service import FakeAgentService
from tests.adapters.http.harness import AGENT_KEY, Api, running_api

QUICK = Backoff(initial=0.01, maximum=0.05)


def quick_gate(url: str, **options: object) -> Gate:
    """A gate with short polls and retries, so that refusals come fast in tests."""
    defaults: dict[str, object] = {
        "agent_key": AGENT_KEY,
        "poll_seconds": 1.0,
        "min_poll_interval": 0.01,
        "request_timeout": 5.0,
        "backoff": QUICK,
    }
    return Gate(url, **{**defaults, **options})  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as running:
        yield running


@pytest_asyncio.fixture
async def gate(api: Api) -> AsyncIterator[Gate]:
    async with quick_gate(api.url) as g:
        yield g


def when_pending(service: FakeAgentService, act: Callable[[str], object]) -> Awaitable[None]:
    """A task that waits for the next pending request and then acts on it (a person)."""

    async def person() -> None:
        request_id = await service.next_pending()
        result = act(request_id)
        if asyncio.iscoroutine(result):
            await result

    return asyncio.create_task(person())
