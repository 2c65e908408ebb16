"""The agent-facing HTTP API, as aiohttp routes to mount in keyturn's one server.

Agents start a job, submit exact tool calls, wait for approval, and pass the gate
through these endpoints (listed, with their answers, in :mod:`adapters.http.openapi`).
Each handler is a short translation: read and validate the request, call the
application service, turn its outcome into JSON. Policy is decided by the service,
never here.

Every answer carries ``X-Request-Id`` (the caller's, when it is a plain token of 8–64
characters, else a new one) and ``Cache-Control: no-store`` (answers hold tokens and
grants). Every refusal is the JSON error of :mod:`adapters.http.problems`; an
unexpected exception is logged with its traceback and the request id, and answered
``500 INTERNAL_ERROR`` without detail. Tokens and bodies are never logged.

Mounting (``bot/`` does this)::

    metrics = Metrics()
    mount_agent_api(app, service, max_body_bytes=..., long_poll_max_seconds=30.0,
                    metrics=metrics)

or, to place the middleware yourself, ``app.add_routes(build_agent_routes(...))`` and
``app.middlewares.append(agent_middleware(metrics))``. The middleware answers unknown
paths under ``/v1/`` with JSON 404/405 and stamps ``X-Request-Id`` on every response.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from adapters.http.bodies import (
    AdmitBody,
    ChallengeBody,
    GateCheckBody,
    StartJobBody,
    SubmitBody,
    read_model,
)
from adapters.http.exchange import (
    Endpoint,
    answered,
    count,
    json_response,
    no_query,
    path_id,
    presented_token,
    query_params,
    refused,
    request_id_of,
    seconds,
    unrouted,
)
from adapters.http.metrics import CONTENT_TYPE, Metrics
from adapters.http.openapi import ENDPOINTS, openapi_document
from adapters.http.ports import AgentService
from adapters.http.problems import error_body, problem_for
from core.errors import KeyturnError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_LONG_POLL_MAX_SECONDS = 30.0
_AGENT_PREFIX = "/v1/"


def build_agent_routes(
    service: AgentService,
    *,
    max_body_bytes: int,
    long_poll_max_seconds: float,
    metrics: Metrics,
) -> list[web.RouteDef]:
    """The agent API's routes, one per entry of :data:`adapters.http.openapi.ENDPOINTS`.

    Args:
        service: the application service (see :class:`adapters.http.ports.AgentService`).
        max_body_bytes: the largest JSON body accepted (413 beyond it).
        long_poll_max_seconds: the longest ``wait`` a status poll is granted.
        metrics: where HTTP traffic, submissions and gate results are counted.

    Raises:
        ValueError: a non-positive limit, or an endpoint without a handler (or the reverse).
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    if not (math.isfinite(long_poll_max_seconds) and long_poll_max_seconds >= 0):
        raise ValueError("long_poll_max_seconds must be a finite number of seconds ≥ 0")
    api = _AgentApi(service, max_body_bytes, float(long_poll_max_seconds), metrics)
    handlers = api.handlers()
    routes: list[web.RouteDef] = []
    for endpoint in ENDPOINTS:
        handler = handlers.pop(endpoint.operation_id, None)
        if handler is None:
            raise ValueError(f"no handler for documented endpoint {endpoint.operation_id}")
        # Only what is documented is routed: no implicit HEAD twin for GET routes.
        extra: dict[str, Any] = {"allow_head": False} if endpoint.method == "GET" else {}
        routes.append(
            web.route(
                endpoint.method,
                endpoint.path,
                answered(endpoint.path, metrics, handler),
                name=f"keyturn.{endpoint.operation_id}",
                **extra,
            )
        )
    if handlers:
        raise ValueError(f"handlers without a documented endpoint: {sorted(handlers)}")
    return routes


def agent_middleware(metrics: Metrics | None = None) -> Middleware:
    """Stamps ``X-Request-Id`` on every response; JSON 404/405 for unknown ``/v1/`` paths."""

    @web.middleware
    async def keyturn_request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id_of(request)
        try:
            response = await handler(request)
        except web.HTTPException as e:
            if not (request.path.startswith(_AGENT_PREFIX) and e.status in (404, 405)):
                e.headers.setdefault("X-Request-Id", rid)
                raise
            response = unrouted(e, rid)
            if metrics is not None:
                metrics.observe_http(request.method, "unmatched", response.status, 0.0)
        if not response.prepared:
            response.headers.setdefault("X-Request-Id", rid)
        return response

    return keyturn_request_ids


def mount_agent_api(
    app: web.Application,
    service: AgentService,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    long_poll_max_seconds: float = DEFAULT_LONG_POLL_MAX_SECONDS,
    metrics: Metrics,
) -> None:
    """Add the agent API's routes and middleware to ``app`` (before it starts).

    Raises:
        ValueError: as :func:`build_agent_routes`.
    """
    app.add_routes(
        build_agent_routes(
            service,
            max_body_bytes=max_body_bytes,
            long_poll_max_seconds=long_poll_max_seconds,
            metrics=metrics,
        )
    )
    app.middlewares.append(agent_middleware(metrics))


def build_agent_app(
    service: AgentService,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    long_poll_max_seconds: float = DEFAULT_LONG_POLL_MAX_SECONDS,
    metrics: Metrics | None = None,
) -> web.Application:
    """A new application serving only the agent API (for tests and standalone use)."""
    app = web.Application()
    mount_agent_api(
        app,
        service,
        max_body_bytes=max_body_bytes,
        long_poll_max_seconds=long_poll_max_seconds,
        metrics=metrics if metrics is not None else Metrics(),
    )
    return app


# --- handlers ----------------------------------------------------------------------------


class _AgentApi:
    def __init__(
        self, service: AgentService, limit: int, long_poll_max: float, metrics: Metrics
    ) -> None:
        self._service = service
        self._limit = limit
        self._long_poll_max = long_poll_max
        self._metrics = metrics
        self._document = openapi_document()

    def handlers(self) -> dict[str, Endpoint]:
        return {
            "agentChallenge": self.challenge,
            "startJob": self.start_job,
            "submitRequest": self.submit,
            "requestStatus": self.request_status,
            "gateCheck": self.gate_check,
            "gateAdmit": self.admit,
            "getBundle": self.bundle,
            "logCheckpoint": self.checkpoint,
            "inclusionProof": self.inclusion_proof,
            "consistencyProof": self.consistency_proof,
            "wellKnown": self.well_known,
            "healthz": self.healthz,
            "readyz": self.readyz,
            "metrics": self.metrics,
            "openapi": self.openapi,
        }

    async def challenge(self, request: web.Request) -> web.StreamResponse:
        no_query(request)
        body = await read_model(request, ChallengeBody, self._limit)
        challenge = await self._service.agent_challenge(body.agent_did)
        return json_response(challenge.to_json())

    async def start_job(self, request: web.Request) -> web.StreamResponse:
        no_query(request)
        body = await read_model(request, StartJobBody, self._limit)
        job = await self._service.start_job(
            agent_did=body.agent_did, challenge=body.challenge, signature_b64u=body.signature_b64u
        )
        return json_response(job.to_json(), status=201)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        no_query(request)
        cst = presented_token(request)
        body = await read_model(request, SubmitBody, self._limit)
        submitted = await self._service.submit(
            cst=cst,
            job_id=body.job_id,
            tool_route=body.tool_route,
            params=body.params,
            plan_hash=body.plan_hash,
            span_id=body.span_id,
            justification=body.justification,
            context=body.context,
        )
        self._metrics.observe_submit(submitted.outcome)
        if submitted.outcome == "allowed":
            return json_response(submitted.to_json())
        if submitted.outcome == "gated":
            headers = (
                {"Location": f"/v1/requests/{submitted.request_id}"} if submitted.request_id else {}
            )
            return json_response(submitted.to_json(), status=202, headers=headers)
        return refused(request, submitted)

    async def request_status(self, request: web.Request) -> web.StreamResponse:
        request_id = path_id(request)
        query = query_params(request, frozenset({"wait"}))
        wait = seconds(query.get("wait"), "wait")
        cst = presented_token(request)
        status = await self._service.request_status(
            cst=cst, request_id=request_id, wait_seconds=min(wait, self._long_poll_max)
        )
        return json_response(status.to_json())

    async def gate_check(self, request: web.Request) -> web.StreamResponse:
        no_query(request)
        cst = presented_token(request)
        body = await read_model(request, GateCheckBody, self._limit)
        try:
            passed = await self._service.gate_check(
                cst=cst,
                grant=body.grant,
                tool_route=body.tool_route,
                params=body.params,
                plan_hash=body.plan_hash,
                context=body.context,
            )
        except KeyturnError as e:
            self._count_refusal(e)
            raise
        self._metrics.observe_gate("pass")
        return json_response(passed.to_json())

    async def admit(self, request: web.Request) -> web.StreamResponse:
        no_query(request)
        cst = presented_token(request)
        body = await read_model(request, AdmitBody, self._limit)
        try:
            admitted = await self._service.admit(
                cst=cst,
                job_id=body.job_id,
                tool_route=body.tool_route,
                params=body.params,
                plan_hash=body.plan_hash,
                context=body.context,
            )
        except KeyturnError as e:
            self._count_refusal(e)
            raise
        if admitted.outcome != "allowed":
            # Fail closed: only an explicit "allowed" lets an ungated call run.
            self._metrics.observe_gate("denied", admitted.reason_code)
            return refused(request, admitted)
        self._metrics.observe_gate("pass")
        return json_response(admitted.to_json())

    def _count_refusal(self, error: KeyturnError) -> None:
        if problem_for(error).status < 500:
            self._metrics.observe_gate("denied", error.reason_code)

    async def bundle(self, request: web.Request) -> web.StreamResponse:
        request_id = path_id(request)
        no_query(request)
        cst = presented_token(request)
        return json_response(
            dict(await self._service.agent_bundle(cst=cst, request_id=request_id))
        )

    async def checkpoint(self, request: web.Request) -> web.StreamResponse:
        no_query(request)
        note = await self._service.checkpoint()
        return web.Response(text=note, content_type="text/plain", charset="utf-8")

    async def inclusion_proof(self, request: web.Request) -> web.StreamResponse:
        query = query_params(request, frozenset({"index", "size"}))
        index = count(query, "index")
        size = count(query, "size", required=False)
        return json_response(dict(await self._service.inclusion_proof(index, size)))

    async def consistency_proof(self, request: web.Request) -> web.StreamResponse:
        query = query_params(request, frozenset({"old", "new"}))
        old = count(query, "old")
        new = count(query, "new", required=False)
        return json_response(dict(await self._service.consistency_proof(old, new)))

    async def well_known(self, request: web.Request) -> web.StreamResponse:
        return json_response(dict(await self._service.well_known()))

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        rid = request_id_of(request)
        try:
            checks = await self._service.readiness()
        except KeyturnError as e:
            logger.warning("not ready: %s (request id %s)", e.reason_code, rid)
            # The reason code only: readiness is unauthenticated, messages may name hosts.
            message = f"keyturn is not ready ({e.reason_code}); see its log"
            return json_response(error_body(e.reason_code, message, rid), 503, {"Retry-After": "1"})
        except Exception:
            logger.exception("readiness check failed (request id %s)", rid)
            message = "keyturn is not ready; see its log"
            return json_response(error_body("NOT_READY", message, rid), 503, {"Retry-After": "1"})
        return json_response({"status": "ready", "checks": dict(checks)})

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._document)
