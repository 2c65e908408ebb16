"""keyturn as an MCP server (stdio): approval and gate checks as tools for agents.

Tools:

``request_approval(route, params, justification?, plan_hash?, span_id?, request_id?,
wait_seconds?)``
    Submits the exact call and waits (at most ``wait_seconds``, capped by the server's
    ``max_wait_seconds``) for a decision. Answers ``{"status": "approved", grant,
    job_token, …}``, ``{"status": "allowed", …}`` (no approval needed),
    ``{"status": "pending", "request_id", …}`` (not decided yet: call again with that
    ``request_id`` to keep waiting, since MCP clients time out long calls) or
    ``{"status": "refused", "reason_code", "message"}``. Only "approved" and "allowed"
    mean the call may go on to the gate.

``check_grant(grant, route, params, plan_hash?, job_token?)``
    Presents the call about to run to keyturn's gate: ``{"result": "pass", …}`` (the
    grant is now spent: run the call) or ``{"result": "refused", "reason_code", …}``.
    The job token defaults to the one this server received with the grant.

The server starts one keyturn job per process, proving the agent's key from its key
file. ``keyturn mcp`` calls :func:`run_stdio`; for a manual run::

    python -m adapters.agents.mcp_server --url URL --agent-did DID --agent-key PATH

stdout carries the protocol; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver import MCPServer

from adapters.agents.approval import Approval
from adapters.agents.client import AgentKey, Gate
from adapters.agents.errors import ApprovalTimeout, KeyturnClientError
from adapters.signer.files import FileSigner
from core.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_MAX_WAIT_SECONDS = 50.0
"""Below the usual 60 s an MCP client allows a tool call; agents poll with request_id."""

INSTRUCTIONS = (
    "keyturn enforces a two-person rule. Before running a high-risk tool call, call "
    "request_approval with the exact route and parameters. Run the call only if the status "
    "is 'approved' (then call check_grant with the grant and the exact same parameters "
    "immediately before running, and run only on result 'pass') or 'allowed'. On "
    "'pending', call request_approval again with the request_id. On 'refused', do not run."
)


def build_mcp_server(
    gate: Gate, *, max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS
) -> MCPServer[Any]:
    """An MCP server exposing ``request_approval`` and ``check_grant`` through ``gate``."""
    server: MCPServer[Any] = MCPServer(name="keyturn", instructions=INSTRUCTIONS)
    job_tokens: dict[str, str] = {}  # grant id → job token received with it

    @server.tool(
        name="request_approval",
        description=(
            "Ask keyturn whether an exact tool call may run, waiting for human approvers "
            "when the policy gates it. Run the call only on status 'approved' (after "
            "check_grant passes) or 'allowed'."
        ),
        structured_output=True,
    )
    async def request_approval(
        route: str,
        params: dict[str, Any],
        justification: str | None = None,
        plan_hash: str | None = None,
        span_id: str | None = None,
        request_id: str | None = None,
        wait_seconds: float | None = None,
    ) -> dict[str, Any]:
        wait = max_wait_seconds if wait_seconds is None else wait_seconds
        wait = min(max(wait, 0.0), max_wait_seconds)
        try:
            if request_id is not None:
                approval = await gate.wait(request_id, route, params, timeout=wait)
            else:
                approval = await gate.require(
                    route,
                    params,
                    justification=justification,
                    plan_hash=plan_hash,
                    span_id=span_id,
                    timeout=wait,
                )
        except ApprovalTimeout as e:
            if e.request_id is None:
                return _refused(e)
            return {
                "status": "pending",
                "request_id": e.request_id,
                "reason_code": "APPROVAL_PENDING",
                "message": "not decided yet; do not run the call. Call request_approval "
                "again with this request_id to keep waiting.",
            }
        except KeyturnClientError as e:
            return _refused(e)
        except Exception:
            logger.exception("request_approval failed")
            return _failed()
        grant_id = _grant_id(approval.grant)
        if grant_id is not None and approval.job_token:
            job_tokens[grant_id] = approval.job_token
        return approval.to_json()

    @server.tool(
        name="check_grant",
        description=(
            "Present the exact call about to run, with its grant, to keyturn's gate. "
            "Run the call only if result is 'pass'; the grant is then used up."
        ),
        structured_output=True,
    )
    async def check_grant(
        grant: dict[str, Any],
        route: str,
        params: dict[str, Any],
        plan_hash: str | None = None,
        job_token: str | None = None,
    ) -> dict[str, Any]:
        token = job_token or job_tokens.get(_grant_id(grant) or "")
        if not token:
            return {
                "result": "refused",
                "reason_code": "JOB_TOKEN_UNKNOWN",
                "message": "pass the job_token that came with the grant",
            }
        try:
            passed = await gate.check(
                Approval.from_grant(grant, token), route, params, plan_hash=plan_hash
            )
        except KeyturnClientError as e:
            return {"result": "refused", "reason_code": e.reason_code, "message": e.message}
        except Exception:
            logger.exception("check_grant failed")
            return {"result": "refused", **_failed()}
        answer: dict[str, Any] = {
            "result": "pass",
            "tool_route": passed.tool_route,
            "payload_hash_b64u": passed.payload_hash_b64u,
        }
        if passed.grant_id is not None:
            answer["grant_id"] = passed.grant_id
        if passed.receipt_index is not None:
            answer["receipt_index"] = passed.receipt_index
        return answer

    return server


def _grant_id(grant: Mapping[str, Any] | None) -> str | None:
    payload = grant.get("payload") if grant is not None else None
    value = payload.get("grant_id") if isinstance(payload, Mapping) else None
    return value if isinstance(value, str) else None


def _refused(error: KeyturnClientError) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "status": "refused",
        "reason_code": error.reason_code,
        "message": error.message,
    }
    if error.request_id is not None:
        answer["request_id"] = error.request_id
    return answer


def _failed() -> dict[str, Any]:
    return {
        "status": "refused",
        "reason_code": "CLIENT_ERROR",
        "message": "the keyturn MCP server failed; do not run the call (see its log)",
    }


async def serve_stdio(
    url: str, agent_key: AgentKey, *, max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS
) -> None:
    """Serve MCP on stdin/stdout until the client closes it."""
    async with Gate(url, agent_key=agent_key) as gate:
        await build_mcp_server(gate, max_wait_seconds=max_wait_seconds).run_stdio_async()


def run_stdio(
    url: str,
    agent_did: str,
    agent_key_path: str,
    *,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
) -> None:
    """Run the MCP server on stdio for the agent whose key file is ``agent_key_path``.

    Raises:
        ConfigError: ``KEY_FILE_MISSING``, ``KEY_FILE_PERMISSIONS``, ``KEY_FILE_INVALID``,
            or ``AGENT_DID_MISMATCH`` when the key is not ``agent_did``'s.
    """
    signer = FileSigner.load(agent_key_path)
    if signer.did != agent_did:
        raise ConfigError(
            "AGENT_DID_MISMATCH", f"the key in {agent_key_path} is not the key of {agent_did}"
        )
    asyncio.run(serve_stdio(url, signer, max_wait_seconds=max_wait_seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keyturn MCP server (stdio)")
    parser.add_argument("--url", required=True, help="keyturn's base URL")
    parser.add_argument("--agent-did", required=True, help="the agent's registered did:key")
    parser.add_argument("--agent-key", required=True, help="the agent's Ed25519 PEM key file")
    parser.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT_SECONDS)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        run_stdio(args.url, args.agent_did, args.agent_key, max_wait_seconds=args.max_wait)
    except ConfigError as e:
        print(f"keyturn mcp: {e.reason_code}: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
