"""keyturn serve mounts exactly the surfaces that are configured, in one aiohttp app."""

from __future__ import annotations

import pytest

from adapters.slack import SlackSettings
from adapters.teams import TeamsSettings
from bot.bootstrap import App
from bot.server import build_web_app
from core.errors import ConfigError

pytestmark = pytest.mark.asyncio


def _paths(web_app: object) -> set[str]:
    return {r.resource.canonical for r in web_app.router.routes() if r.resource}  # type: ignore[attr-defined]


async def test_without_chat_settings_only_api_and_console_are_served(app: App) -> None:
    paths = _paths(build_web_app(app))
    assert {"/v1/requests", "/healthz", "/"} <= paths
    assert "/slack/events" not in paths and "/api/messages" not in paths


async def test_configured_slack_and_teams_are_mounted(app: App) -> None:
    app.settings = app.settings.model_copy(
        update={
            "slack": SlackSettings(
                bot_token="xoxb-test",
                signing_secret="secret",
                approvers_channel="C1",
                security_channel="C2",
                workspace_id="T1",
            ),
            "teams": TeamsSettings(insecure_dev_no_auth=True),
        }
    )
    paths = _paths(build_web_app(app))
    assert {"/slack/events", "/api/messages"} <= paths


async def test_teams_without_credentials_refuses_to_start(app: App) -> None:
    app.settings = app.settings.model_copy(update={"teams": TeamsSettings()})
    with pytest.raises(ConfigError):
        build_web_app(app)


async def test_settle_heap_freezes_start_up_and_spaces_out_full_collections() -> None:
    import gc

    from bot.server import FULL_COLLECTION_EVERY, settle_heap

    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (before[0], before[1], FULL_COLLECTION_EVERY)
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
