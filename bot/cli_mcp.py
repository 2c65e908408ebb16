"""``keyturn mcp``: serve keyturn's approval tools to an MCP client over stdio.

An MCP client (an agent runtime) starts this command as a subprocess; stdout carries
the protocol, so every log line goes to stderr. The tools are described in
:mod:`adapters.agents.mcp_server`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from bot.cli import EXIT_OK, CliError

DESCRIPTION = """Serve keyturn's request_approval and check_grant tools over MCP (stdio).

Start it from an MCP client's configuration, for example:

  {"command": "keyturn", "args": ["mcp", "--url", "https://keyturn.example",
   "--agent-did", "did:key:z6Mk…", "--agent-key", "/etc/agent/agent.pem"]}

The agent must be registered with keyturn (keyturn agents add DID --name NAME); the
key file proves the agent's identity when the server starts its job."""


def register(subparsers: Any) -> None:
    """Add the ``mcp`` command."""
    mcp = subparsers.add_parser(
        "mcp",
        help="serve keyturn's approval tools to an MCP client over stdio",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mcp.add_argument("--url", required=True, help="keyturn's base URL")
    mcp.add_argument("--agent-did", required=True, metavar="DID", help="the agent's did:key")
    mcp.add_argument(
        "--agent-key", required=True, metavar="FILE", help="the agent's Ed25519 PEM key (0600)"
    )
    mcp.add_argument(
        "--max-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="longest a request_approval call waits before answering 'pending' (default 50)",
    )
    mcp.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from adapters.agents.mcp_server import DEFAULT_MAX_WAIT_SECONDS, run_stdio
    from bot.logging_setup import configure_logging

    # stdout is the protocol: logs must never go there.
    configure_logging(fmt="json", level=logging.WARNING)
    max_wait = DEFAULT_MAX_WAIT_SECONDS if args.max_wait is None else args.max_wait
    if not max_wait > 0:
        raise CliError("--max-wait must be a positive number of seconds")
    run_stdio(args.url, args.agent_did, args.agent_key, max_wait_seconds=max_wait)
    return EXIT_OK
