"""One keyturn replica in Socket Mode, as its own OS process (test_socket_replicas.py).

Run: ``python -m tests.adapters.slack.socket_replica DATA_DIR DATABASE_URL SLACK_URL``

Builds keyturn from the demo settings in ``DATA_DIR`` against the shared database,
mounts the Slack surface with ``socket_mode = true`` and the Web API pointed at the
stand-in, and starts the aiohttp application (no HTTP listener: Socket Mode needs
none), which connects to the stand-in's WebSocket through ``apps.connections.open``
exactly as it would to Slack. Serves until a line arrives on stdin, then shuts down
(the Socket Mode connection closes, the work queue drains) and prints ``stopped``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import mount_slack
from bot import demo
from bot.bootstrap import build
from tests.adapters.slack.conftest import slack_settings
from tests.adapters.slack.standin import APP_TOKEN


async def serve(data_dir: Path, database_url: str, slack_url: str) -> None:
    settings = demo.demo_settings(data_dir).model_copy(update={"database_url": database_url})
    application = await build(settings)
    try:
        web_app = web.Application()
        mount_slack(
            web_app,
            application.service,
            settings=slack_settings(
                socket_mode=True, app_token=SecretStr(APP_TOKEN), min_interval_seconds=0
            ),
            client=AsyncWebClient(token="xoxb-test", base_url=f"{slack_url}/api/"),
        )
        runner = web.AppRunner(web_app)
        await runner.setup()  # start-up: auth.test, the Socket Mode connection, the outbox
        print("started", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await runner.cleanup()
    finally:
        await application.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
