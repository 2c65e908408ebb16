"""The agent API's endpoints, and the OpenAPI 3.1 document generated from them.

:data:`ENDPOINTS` is the one list of what the API serves: :mod:`adapters.http.agent_api`
mounts a handler for each entry (and refuses to build when one is missing), and
:func:`openapi_document` describes each entry from the pydantic body models and the
response shapes in :mod:`adapters.http.wire`. ``manifests/openapi.json`` is this
document written out (``python -m adapters.http manifests/openapi.json``); a
test holds the file, the served document and the mounted routes equal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from adapters.http import wire
from adapters.http.bodies import (
    MAX_DEPTH,
    PATH_ID_PATTERN,
    AdmitBody,
    ChallengeBody,
    GateCheckBody,
    StartJobBody,
    SubmitBody,
)

API_VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "query" | "path"
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response: a schema name from :mod:`wire`, or a raw schema."""

    description: str
    shape: str | None = None
    media: str = _JSON
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    operation_id: str
    method: str
    path: str
    summary: str
    description: str
    tag: str
    replies: Mapping[int, Reply]
    body: type[BaseModel] | None = None
    auth: bool = False
    params: tuple[Param, ...] = field(default_factory=tuple)


def _err(description: str) -> Reply:
    return Reply(description, "ErrorOut")


_OBJECT = {"type": "object", "additionalProperties": True}
_ID = {"type": "string", "pattern": PATH_ID_PATTERN}
_COUNT = {"type": "integer", "minimum": 0}
_BODY_ERRORS: Mapping[int, Reply] = {
    400: _err("MALFORMED_JSON, JSON_TOO_DEEP, INVALID_BODY, or a call the policy cannot read"),
    413: _err("BODY_TOO_LARGE"),
    415: _err("UNSUPPORTED_MEDIA_TYPE: send Content-Type: application/json"),
}
_AUTH_ERRORS: Mapping[int, Reply] = {
    401: _err("TOKEN_MISSING, TOKEN_MALFORMED, TOKEN_EXPIRED, TOKEN_REVOKED, …"),
}
_UNAVAILABLE: Mapping[int, Reply] = {
    500: _err("INTERNAL_ERROR: nothing was done"),
    503: _err("the store or directory is unavailable; retry after Retry-After"),
}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "agentChallenge",
        "POST",
        "/v1/agents/challenge",
        "Get a single-use challenge for an agent key",
        "Step one of starting a job: the agent names its registered DID and receives a "
        "short-lived challenge to sign.",
        "jobs",
        {
            200: Reply("the challenge", "ChallengeOut"),
            **_BODY_ERRORS,
            403: _err("AGENT_UNKNOWN, AGENT_DISABLED"),
            **_UNAVAILABLE,
        },
        body=ChallengeBody,
    ),
    Endpoint(
        "startJob",
        "POST",
        "/v1/jobs",
        "Start a job by proving possession of the agent key",
        "The signature is Ed25519 over the UTF-8 bytes of 'keyturn-job-v1\\n' + challenge, "
        "base64url without padding. The answer holds a runner token (CST) for one new job, "
        "pinned to the active policy: it can submit calls and run ungated ones, never pass "
        "the gate for a gated one.",
        "jobs",
        {
            201: Reply("the job and its runner token", "JobStartedOut"),
            **_BODY_ERRORS,
            401: _err("CHALLENGE_INVALID, CHALLENGE_EXPIRED, CHALLENGE_USED, SIGNATURE_INVALID"),
            403: _err("AGENT_UNKNOWN, AGENT_DISABLED"),
            **_UNAVAILABLE,
        },
        body=StartJobBody,
    ),
    Endpoint(
        "submitRequest",
        "POST",
        "/v1/requests",
        "Submit one exact tool call",
        "The policy decides the exact call: allowed at once (200), gated (202: a request "
        "awaits approval; poll it), or denied (403 with the reason code and the decision).",
        "requests",
        {
            200: Reply("allowed without approval", "SubmittedOut"),
            202: Reply("gated: an approval request was opened", "SubmittedOut"),
            **_BODY_ERRORS,
            **_AUTH_ERRORS,
            403: _err("denied by the policy (NO_MATCHING_RULE, DENIED_BY_RULE, …)"),
            **_UNAVAILABLE,
        },
        body=SubmitBody,
        auth=True,
    ),
    Endpoint(
        "requestStatus",
        "GET",
        "/v1/requests/{request_id}",
        "Where a request stands (long poll)",
        "Waits up to 'wait' seconds (capped by the server) for the state to change. Once "
        "approved, the answer carries the grant and the job token for the requesting agent.",
        "requests",
        {
            200: Reply("the request's state", "RequestStatusOut"),
            400: _err("INVALID_QUERY, INVALID_PATH"),
            **_AUTH_ERRORS,
            404: _err("NOT_FOUND: no such request for this job"),
            **_UNAVAILABLE,
        },
        auth=True,
        params=(
            Param("request_id", "path", _ID, "the request id from the 202 answer", True),
            Param(
                "wait",
                "query",
                {"type": "number", "minimum": 0},
                "seconds to wait for a change (default 0)",
            ),
        ),
    ),
    Endpoint(
        "gateCheck",
        "POST",
        "/v1/gate/check",
        "Check a grant before running the call (consumes it once)",
        "For tools not written in Python: present the grant and the job token (as the "
        "CST) with the exact call about to run. Any mismatch is a 403 with its reason code.",
        "gate",
        {
            200: Reply("pass: the grant is consumed; run the call now", "GatePassedOut"),
            **_BODY_ERRORS,
            **_AUTH_ERRORS,
            403: _err("PAYLOAD_HASH_MISMATCH, ROUTE_MISMATCH, GRANT_ALREADY_USED, …"),
            **_UNAVAILABLE,
        },
        body=GateCheckBody,
        auth=True,
    ),
    Endpoint(
        "gateAdmit",
        "POST",
        "/v1/gate/admit",
        "Admit an ungated call about to run",
        "Records the step in the job's history (simulate-first and similar prerequisites "
        "depend on it); refused with 403 when the exact call needs approval.",
        "gate",
        {
            200: Reply("admitted", "SubmittedOut"),
            **_BODY_ERRORS,
            **_AUTH_ERRORS,
            403: _err("APPROVAL_REQUIRED, or the policy's denial code"),
            **_UNAVAILABLE,
        },
        body=AdmitBody,
        auth=True,
    ),
    Endpoint(
        "getBundle",
        "GET",
        "/v1/bundles/{request_id}",
        "The sealed proof bundle of a finished request",
        "A signed envelope that 'keyturn verify' checks offline. It holds the exact "
        "parameters, so only a token of the job that made the request gets it (any "
        "other caller gets 404).",
        "proofs",
        {
            200: Reply("the bundle envelope", schema=_OBJECT),
            400: _err("INVALID_PATH"),
            **_AUTH_ERRORS,
            404: _err("NOT_FOUND: no such request for this agent"),
            409: _err("NOT_SEALED: the request is not finished yet"),
            **_UNAVAILABLE,
        },
        params=(Param("request_id", "path", _ID, "the request id", True),),
        auth=True,
    ),
    Endpoint(
        "logCheckpoint",
        "GET",
        "/v1/log/checkpoint",
        "The latest signed checkpoint of the receipt log",
        "A C2SP signed note (origin, size, root hash, signature lines).",
        "proofs",
        {
            200: Reply("the signed note", media="text/plain", schema={"type": "string"}),
            404: _err("LOG_NO_CHECKPOINT"),
            **_UNAVAILABLE,
        },
    ),
    Endpoint(
        "inclusionProof",
        "GET",
        "/v1/log/proof/inclusion",
        "RFC 9162 inclusion proof of one log entry",
        "Proof that entry 'index' is in the tree of 'size' entries (default: the latest).",
        "proofs",
        {
            200: Reply("the proof", schema=_OBJECT),
            400: _err("INVALID_QUERY, LOG_SIZE_OUT_OF_RANGE"),
            **_UNAVAILABLE,
        },
        params=(
            Param("index", "query", _COUNT, "the entry's index", True),
            Param("size", "query", _COUNT, "the tree size (default: latest)"),
        ),
    ),
    Endpoint(
        "consistencyProof",
        "GET",
        "/v1/log/proof/consistency",
        "RFC 9162 consistency proof between two tree sizes",
        "Proof that the tree of 'new' entries (default: the latest) extends the tree of 'old'.",
        "proofs",
        {
            200: Reply("the proof", schema=_OBJECT),
            400: _err("INVALID_QUERY, LOG_SIZE_OUT_OF_RANGE"),
            **_UNAVAILABLE,
        },
        params=(
            Param("old", "query", _COUNT, "the older tree size", True),
            Param("new", "query", _COUNT, "the newer tree size (default: latest)"),
        ),
    ),
    Endpoint(
        "wellKnown",
        "GET",
        "/.well-known/keyturn",
        "How to verify this keyturn",
        "Service DID, key id, public key, log origin, latest checkpoint and verifier key.",
        "proofs",
        {200: Reply("the discovery document", schema=_OBJECT), **_UNAVAILABLE},
    ),
    Endpoint(
        "healthz",
        "GET",
        "/healthz",
        "Liveness",
        "200 while the process serves requests.",
        "operations",
        {200: Reply("alive", "HealthOut")},
    ),
    Endpoint(
        "readyz",
        "GET",
        "/readyz",
        "Readiness",
        "200 when the database and the signer answer; 503 otherwise.",
        "operations",
        {200: Reply("ready", "ReadyOut"), 503: _err("not ready, with the failing check's code")},
    ),
    Endpoint(
        "metrics",
        "GET",
        "/metrics",
        "Prometheus metrics",
        "Requests by state and outcome, decision latency, gate denials by reason, feed "
        "delivery failures, outbox backlog, HTTP traffic.",
        "operations",
        {200: Reply("text exposition format", media="text/plain", schema={"type": "string"})},
    ),
    Endpoint(
        "openapi",
        "GET",
        "/openapi.json",
        "This document",
        "The OpenAPI 3.1 description of the agent API.",
        "operations",
        {200: Reply("the OpenAPI document", schema=_OBJECT)},
    ),
)


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (ChallengeBody, StartJobBody, SubmitBody, GateCheckBody, AdmitBody):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for shape in wire.RESPONSE_SHAPES:
        schema = TypeAdapter(shape).json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[shape.__name__] = schema
    return dict(sorted(schemas.items()))


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "description": endpoint.description,
        "tags": [endpoint.tag],
    }
    if endpoint.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "description": p.description,
                "schema": dict(p.schema),
            }
            for p in endpoint.params
        ]
    if endpoint.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {_JSON: {"schema": {"$ref": _REF.format(model=endpoint.body.__name__)}}},
        }
    if endpoint.auth:
        op["security"] = [{"cstBearer": []}, {"cstHeader": []}]
    responses: dict[str, Any] = {}
    for status, reply in sorted(endpoint.replies.items()):
        schema = (
            {"$ref": _REF.format(model=reply.shape)} if reply.shape else dict(reply.schema or {})
        )
        responses[str(status)] = {
            "description": reply.description,
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
            "content": {reply.media: {"schema": schema}},
        }
    op["responses"] = responses
    return op


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ENDPOINTS` (a fresh dict on each call)."""
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyturn agent API",
            "version": API_VERSION,
            "description": (
                "Agents ask keyturn before running high-risk tool calls. Every refusal is "
                '{"error": {"code", "message", "request_id"}} with a stable code; every '
                "answer carries X-Request-Id. JSON bodies must be UTF-8, without duplicate "
                f"keys or non-finite numbers, nested at most {MAX_DEPTH} levels, and no "
                "larger than the server's body limit."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "tags": [
            {"name": "jobs", "description": "an agent proves its key and starts a job"},
            {"name": "requests", "description": "submit calls and wait for approval"},
            {"name": "gate", "description": "the last check before a call runs"},
            {"name": "proofs", "description": "bundles, log checkpoints and proofs"},
            {"name": "operations", "description": "health, readiness, metrics"},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "cstBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "keyturn CST (EdDSA JWS)",
                    "description": "the runner token, or the job token at the gate",
                },
                "cstHeader": {"type": "apiKey", "in": "header", "name": "X-CST"},
            },
            "headers": {
                "X-Request-Id": {
                    "description": "identifies this exchange in keyturn's logs",
                    "schema": {"type": "string"},
                }
            },
        },
    }


def render(document: Mapping[str, Any]) -> str:
    """The document as the manifest file holds it (sorted keys, two-space indent)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document to the path given (``manifests/openapi.json``), or print it."""
    args = sys.argv[1:] if argv is None else argv
    text = render(openapi_document())
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
