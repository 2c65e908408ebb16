from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.adapters.http.harness import Api, running_api


@pytest_asyncio.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as running:
        yield running
