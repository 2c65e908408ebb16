"""The plain demo app, for tests of the bot that need no agent and no clock of their own
(modules that do define their own ``app`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot import demo
from bot.bootstrap import App, build


@pytest_asyncio.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    application = await build(demo.demo_settings(tmp_path / "data"), create_key=True)
    try:
        yield application
    finally:
        await application.close()
