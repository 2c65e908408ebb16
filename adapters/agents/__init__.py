"""Agent-side keyturn: the Python SDK (:mod:`adapters.agents.sdk`) and the MCP server
(:mod:`adapters.agents.mcp_server`, imported on demand: it needs the ``mcp`` package)."""
