"""keyturn's agent-facing HTTP API (aiohttp): routes, error mapping, OpenAPI, metrics."""

from adapters.http.agent_api import (
    DEFAULT_LONG_POLL_MAX_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    agent_middleware,
    build_agent_app,
    build_agent_routes,
    mount_agent_api,
)
from adapters.http.exchange import request_id_of
from adapters.http.metrics import Metrics
from adapters.http.openapi import openapi_document
from adapters.http.ports import AgentService

__all__ = [
    "DEFAULT_LONG_POLL_MAX_SECONDS",
    "DEFAULT_MAX_BODY_BYTES",
    "AgentService",
    "Metrics",
    "agent_middleware",
    "build_agent_app",
    "build_agent_routes",
    "mount_agent_api",
    "openapi_document",
    "request_id_of",
]
