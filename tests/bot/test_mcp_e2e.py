"""``keyturn mcp`` end to end: the real service on a loopback TCP port, the MCP server
spawned as ``keyturn mcp`` over stdio and driven by the official MCP client, and two
people approving through the same use case every chat surface calls."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from mcp import ClientSession, StdioServerParameters, stdio_client

from adapters.signer import FileSigner
from bot import cli as cli_module
from bot import demo
from bot.bootstrap import App, build
from bot.server import build_web_app
from core.bundle_verify import verify_bundle
from core.quorum import Verdict

ROOT = Path(__file__).resolve().parents[2]
PAYMENT = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": "Invoice 2026-118"}

# ``keyturn mcp`` as the console script runs it; the mcp group is added to the command
# list if bot/cli.py does not list it yet.
KEYTURN = (
    "import sys, bot.cli as c\n"
    "if 'bot.cli_mcp' not in c.COMMAND_MODULES: c.COMMAND_MODULES.append('bot.cli_mcp')\n"
    "raise SystemExit(c.main(sys.argv[1:]))\n"
)


@pytest_asyncio.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    settings = demo.demo_settings(tmp_path / "data")
    application = await build(settings, create_key=True)
    agent = FileSigner.load(settings.data_dir / "keys" / "demo-agent.pem")
    await application.service.register_agent(agent.did, name="invoice-bot", by="test")
    try:
        yield application
    finally:
        await application.close()


@asynccontextmanager
async def listening(app: App) -> AsyncIterator[str]:
    runner = web.AppRunner(build_web_app(app), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def keyturn_mcp(url: str, app: App) -> AsyncIterator[ClientSession]:
    key_path = app.settings.data_dir / "keys" / "demo-agent.pem"
    server = StdioServerParameters(
        command=sys.executable,
        args=[
            "-c",
            KEYTURN,
            "mcp",
            "--url",
            url,
            "--agent-did",
            FileSigner.load(key_path).did,
            "--agent-key",
            str(key_path),
            "--max-wait",
            "20",
        ],
        cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def two_people_approve(app: App, route: str) -> str:
    """Bob and Carol approve, typing the payload hash's last 4, once the request shows up."""
    kt = app.service
    for _ in range(400):
        pending = [
            v
            for v in await kt.list_requests()
            if v.request.binding.tool_route == route and v.request.state.value == "pending"
        ]
        if pending:
            request = pending[0].request
            for who in ("bob", "carol"):
                await kt.decide(
                    request.request_id,
                    demo.person(who),
                    Verdict.APPROVE,
                    platform="test",
                    typed_confirmation=request.binding.payload_hash_b64u[-4:],
                )
            return request.request_id
        await asyncio.sleep(0.05)
    raise AssertionError("no pending request appeared")


@pytest.mark.asyncio
async def test_an_agent_over_mcp_runs_an_approved_payment_once(app: App) -> None:
    async with listening(app) as url, keyturn_mcp(url, app) as session:
        people = asyncio.create_task(two_people_approve(app, "payments.transfer"))
        approved = await call(
            session,
            "request_approval",
            {"route": "payments.transfer", "params": PAYMENT, "justification": "Invoice 2026-118"},
        )
        request_id = await people
        assert approved["status"] == "approved", approved
        assert approved["request_id"] == request_id
        check = {"grant": approved["grant"], "route": "payments.transfer", "params": PAYMENT}
        passed = await call(session, "check_grant", check)
        assert passed["result"] == "pass", passed
        again = await call(session, "check_grant", check)
        assert again["result"] == "refused"
        assert again["reason_code"] in {"GRANT_ALREADY_USED", "REQUEST_NOT_APPROVED"}

    view = await app.service.view(request_id)
    assert view.request.state.value == "consumed"
    bundle = await app.service.bundle(request_id)
    report = verify_bundle(bundle, trusted_keyturn_dids={app.service.rt.signer.did})
    assert report.evidence is not None


def test_keyturn_mcp_refuses_a_key_that_is_not_the_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.signer import generate_key_file

    if "bot.cli_mcp" not in cli_module.COMMAND_MODULES:
        monkeypatch.setattr(
            cli_module, "COMMAND_MODULES", [*cli_module.COMMAND_MODULES, "bot.cli_mcp"]
        )
    key_path, other = tmp_path / "agent.pem", generate_key_file(tmp_path / "other.pem")
    generate_key_file(key_path)
    argv = ["mcp", "--url", "http://127.0.0.1:9", "--agent-did", other.did]
    code = cli_module.main([*argv, "--agent-key", str(key_path)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""  # stdout belongs to the protocol
    assert "AGENT_DID_MISMATCH" in captured.err
