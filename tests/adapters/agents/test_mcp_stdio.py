"""The MCP server over real stdio: a subprocess driven by the official MCP client,
talking to the real agent API on the fake service."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from adapters.signer.files import generate_key_file
from tests.adapters.agents.conftest import when_pending
from tests.adapters.http.harness import PAYMENT, SMALL_PAYMENT, Api

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[3]


@asynccontextmanager
async def mcp_session(
    api: Api, tmp_path: Path, *, max_wait: float = 10.0
) -> AsyncIterator[ClientSession]:
    key_path = tmp_path / "agent.pem"
    key = generate_key_file(key_path)
    api.service.register(key.did)
    server = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "adapters.agents.mcp_server",
            "--url",
            api.url,
            "--agent-did",
            key.did,
            "--agent-key",
            str(key_path),
            "--max-wait",
            str(max_wait),
        ],
        cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def _call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_the_server_offers_the_two_tools(api: Api, tmp_path: Path) -> None:
    async with mcp_session(api, tmp_path) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == {"request_approval", "check_grant"}
    assert tools["request_approval"].input_schema["required"] == ["route", "params"]


async def test_approval_then_one_gate_pass_over_stdio(api: Api, tmp_path: Path) -> None:
    async with mcp_session(api, tmp_path) as session:
        person = when_pending(api.service, api.service.approve)
        approved = await _call(
            session, "request_approval", {"route": "payments.transfer", "params": PAYMENT}
        )
        await person
        assert approved["status"] == "approved"
        assert approved["job_token"].count(".") == 2
        check = {"grant": approved["grant"], "route": "payments.transfer", "params": PAYMENT}
        tampered = {**check, "params": {**PAYMENT, "to_account": "attacker"}}
        refused = await _call(session, "check_grant", tampered)
        assert (refused["result"], refused["reason_code"]) == ("refused", "PAYLOAD_HASH_MISMATCH")
        passed = await _call(session, "check_grant", check)  # job token remembered
        assert passed["result"] == "pass"
        again = await _call(session, "check_grant", check)
        assert again["reason_code"] == "GRANT_ALREADY_USED"
    assert len(api.service.ledger.used) == 1


async def test_refusals_and_pending_answers_over_stdio(api: Api, tmp_path: Path) -> None:
    async with mcp_session(api, tmp_path, max_wait=0.5) as session:
        denied = await _call(session, "request_approval", {"route": "shell.exec", "params": {}})
        assert (denied["status"], denied["reason_code"]) == ("refused", "NO_MATCHING_RULE")
        allowed = await _call(
            session, "request_approval", {"route": "payments.transfer", "params": SMALL_PAYMENT}
        )
        assert allowed["status"] == "allowed" and "grant" not in allowed
        pending = await _call(
            session, "request_approval", {"route": "payments.transfer", "params": PAYMENT}
        )
        assert pending["status"] == "pending" and "grant" not in pending
        api.service.approve(pending["request_id"])
        resumed = await _call(
            session,
            "request_approval",
            {"route": "payments.transfer", "params": PAYMENT, "request_id": pending["request_id"]},
        )
        assert resumed["status"] == "approved"
        assert len(api.service.requests) == 1  # resuming did not open a second request
        unknown = await _call(
            session,
            "check_grant",
            {"grant": {"payload": {}}, "route": "payments.transfer", "params": PAYMENT},
        )
        assert unknown["reason_code"] == "JOB_TOKEN_UNKNOWN"


async def test_a_key_that_is_not_the_agents_stops_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters.agents.mcp_server import main

    key_path = tmp_path / "agent.pem"
    generate_key_file(key_path)
    code = main(
        [
            "--url",
            "http://127.0.0.1:9",
            "--agent-did",
            "did:key:z6Mkother",
            "--agent-key",
            str(key_path),
        ]
    )
    assert code == 2
    assert "AGENT_DID_MISMATCH" in capsys.readouterr().err
