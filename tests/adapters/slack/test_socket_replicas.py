"""Socket Mode with two replicas, as two OS processes sharing one database.

Each replica (``socket_replica.py``) is a real keyturn process: the real service on
the shared database (a SQLite file, and a fresh PostgreSQL database), the real Bolt
app, and slack_sdk's aiohttp Socket Mode client, which asks the local Slack stand-in
for a WebSocket URL with ``apps.connections.open`` and connects to it as it would to
Slack. The stand-in then writes every envelope to both connections at once, as Slack
may when a connection is slow, and later re-sends some as retries. Each envelope must
be handled once: one acknowledgement, one decision, one answer to a command.

PostgreSQL comes from ``KEYTURN_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each run creates its own
database and drops it. Unreachable: the test FAILS under ``CI=true`` and is skipped,
loudly, elsewhere (the store tests' rule).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.engine import make_url

from adapters.signer import FileSigner
from adapters.slack import blocks as bk
from adapters.store import sqlite_url
from bot import demo
from bot.bootstrap import App, build
from tests.adapters.slack.conftest import APPROVERS
from tests.adapters.slack.standin import TEAM, SlackStandIn
from tests.adapters.store.targets import PG_URL, pg_conninfo, require_postgres

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[3]
REQUESTS = 12
RETRIED = 4


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    require_postgres("SOCKET MODE TEST")
    name = f"kt_slack_{secrets.token_hex(4)}"
    with psycopg.connect(pg_conninfo(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(pg_conninfo(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        (tmp_path / "shared").mkdir()
        return sqlite_url(tmp_path / "shared")
    url: str = request.getfixturevalue("postgres_database")
    return url


def _click(envelope_id: str, request_id: str, *, retry: int = 0) -> dict[str, Any]:
    return {
        "envelope_id": envelope_id,
        "type": "interactive",
        "accepts_response_payload": False,
        "retry_attempt": retry,
        "retry_reason": "timeout" if retry else "",
        "payload": {
            "type": "block_actions",
            "user": {"id": "UBOB", "team_id": TEAM},
            "team": {"id": TEAM},
            "api_app_id": "AKEYTURN",
            "trigger_id": "1.2.3",
            "channel": {"id": APPROVERS},
            "container": {"type": "message", "message_ts": "1.1", "channel_id": APPROVERS},
            "message": {"ts": "1.1", "text": f"Approval needed: x ({request_id})"},
            "actions": [
                {
                    "action_id": bk.APPROVE,
                    "block_id": f"decision:{request_id}",
                    "value": request_id,
                    "type": "button",
                    "action_ts": f"{envelope_id}.1",
                }
            ],
        },
    }


def _command(envelope_id: str, response_url: str) -> dict[str, Any]:
    return {
        "envelope_id": envelope_id,
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": {
            "command": "/breakglass",
            "text": "list",
            "user_id": "UALICE",
            "team_id": TEAM,
            "channel_id": APPROVERS,
            "response_url": response_url,
            "trigger_id": "4.5.6",
        },
    }


async def _until(check: Any, what: str, *, seconds: float = 60.0) -> None:
    """Wait for other processes (not a timing assertion: the bound only ends a hang)."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def _stop(replica: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return replica.communicate("stop\n", timeout=60)
    except subprocess.TimeoutExpired:
        replica.kill()
        return replica.communicate()


async def _gated(app: App, n: int) -> list[str]:
    key = FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem").key
    ids = []
    for _ in range(n):
        job = await demo._start_job(app.service, key)
        submitted = await app.service.submit(
            cst=job.runner_token,
            job_id=job.job_id,
            tool_route="storage.export",
            params={"dataset": "customer_pii", "destination": "s3://exports/q3"},
        )
        ids.append(str(submitted.request_id))
    return ids


async def test_two_replica_processes_handle_each_envelope_once(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    settings = demo.demo_settings(data_dir).model_copy(update={"database_url": database_url})
    app = await build(settings, create_key=True)  # schema, keys; this process only reads
    slack = SlackStandIn()
    server = TestServer(slack.app())
    await server.start_server()
    replicas: list[subprocess.Popen[str]] = []
    try:
        agent = FileSigner.load(data_dir / "keys" / "demo-agent.pem")
        await app.service.register_agent(agent.did, name="invoice-bot", by="test")
        ids = await _gated(app, REQUESTS)
        url = str(server.make_url("")).rstrip("/")
        command = [sys.executable, "-m", "tests.adapters.slack.socket_replica"]
        replicas = [
            subprocess.Popen(
                [*command, str(data_dir), database_url, url],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]

        async def both_connected() -> bool:
            for replica in replicas:
                assert replica.poll() is None, replica.stderr.read() if replica.stderr else ""
            return sum(not ws.closed for ws in slack.sockets) == 2

        await _until(both_connected, "both replicas connected over Socket Mode")

        # Every envelope goes to both connections at once.
        envelopes = [_click(f"env-{n}", request_id) for n, request_id in enumerate(ids)]
        envelopes.append(_command("env-cmd", str(server.make_url("/webhook/cmd"))))
        for envelope in envelopes:
            assert await slack.send_envelope(envelope) == 2

        async def all_acked() -> bool:
            return all(slack.acked(e["envelope_id"]) for e in envelopes)

        await _until(all_acked, "every envelope acknowledged by a replica")

        async def all_decided() -> bool:
            views = [await app.service.view(i) for i in ids]
            return all(v.decisions for v in views) and bool(slack.webhooks)

        await _until(all_decided, "every click recorded and the command answered")
        # Slack re-sends some to both, as after a late acknowledgement.
        for n, request_id in enumerate(ids[:RETRIED]):
            assert await slack.send_envelope(_click(f"env-{n}", request_id, retry=1)) == 2
        await asyncio.sleep(0.5)  # give a wrong second processing the chance to show
    finally:
        # Stopped from threads: the stand-in runs on this loop and must answer the
        # replicas' WebSocket close handshakes while they shut down.
        outputs = await asyncio.gather(*(asyncio.to_thread(_stop, r) for r in replicas))
        await server.close()
    try:
        for replica, (out, err) in zip(replicas, outputs, strict=True):
            assert replica.returncode == 0 and "stopped" in out, err
        for envelope in envelopes:  # one acknowledgement each, retries included
            assert len(slack.acked(envelope["envelope_id"])) == 1, envelope["envelope_id"]
        for request_id in ids:
            view = await app.service.view(request_id)
            assert len(view.decisions) == 1, request_id  # Bob's approval, counted once
        assert len(slack.webhooks) == 1  # the command answered once
        assert "No break-glass windows" in slack.webhooks[0]["text"]
        assert not slack.of("chat.postEphemeral")  # nobody was told "already approved"
        assert len(slack.of("apps.connections.open")) == 2
    finally:
        await app.close()
