"""Reading agent API requests and writing its answers (shared by every handler).

Request ids, the presented token, path and query values, JSON answers, and the
wrapper that turns any exception into the JSON error of :mod:`adapters.http.problems`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from adapters.http.bodies import PATH_ID_PATTERN
from adapters.http.metrics import Metrics
from adapters.http.problems import ApiError, error_body, problem_for
from core.outcomes import Submitted

logger = logging.getLogger(__name__)

REQUEST_ID = web.RequestKey("keyturn_request_id", str)
MAX_TOKEN_CHARS = 8192

_INCOMING_ID = re.compile(r"\A[A-Za-z0-9._-]{8,64}\Z")
_PATH_ID = re.compile(PATH_ID_PATTERN)
_SECONDS = re.compile(r"\A[0-9]{1,6}(\.[0-9]{1,6})?\Z")
_COUNT = re.compile(r"\A[0-9]{1,15}\Z")
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="keyturn"'}

# ASCII output: a lone surrogate echoed from a refused body (a field name) stays valid
# JSON text (\udc80) instead of failing to encode as UTF-8.
_dumps = functools.partial(json.dumps, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
_LAST_RESORT = (
    '{"error":{"code":"INTERNAL_ERROR","message":"keyturn hit an unexpected error and did '
    'nothing; retry later.","request_id":"%s"}}'
)

Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_of(request: web.Request) -> str:
    """This exchange's request id (assigned on first use, then stable)."""
    existing = request.get(REQUEST_ID)
    if isinstance(existing, str):
        return existing
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if _INCOMING_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    return rid


def answered(template: str, metrics: Metrics, handler: Endpoint) -> Endpoint:
    """``handler`` with request ids, error answers, no-store and metrics around it."""

    async def answer(request: web.Request) -> web.StreamResponse:
        rid = request_id_of(request)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except Exception as e:  # CancelledError (client gone) is a BaseException: not here
            try:
                response = problem_response(e, request, template, rid)
            except Exception:
                logger.exception("could not render an error (request id %s)", rid)
                response = web.Response(
                    status=500, text=_LAST_RESORT % rid, content_type="application/json"
                )
        response.headers["X-Request-Id"] = rid
        response.headers.setdefault("Cache-Control", "no-store")
        metrics.observe_http(
            request.method, template, response.status, time.perf_counter() - started
        )
        return response

    return answer


def problem_response(
    error: Exception, request: web.Request, template: str, rid: str
) -> web.Response:
    if isinstance(error, web.HTTPException):
        error = _from_http_exception(error)
    problem = problem_for(error)
    if problem.internal:
        logger.error(
            "unexpected error answering %s %s (request id %s)",
            request.method,
            template,
            rid,
            exc_info=error,
        )
    else:
        logger.info(
            "refused %s %s: %s (request id %s)", request.method, template, problem.code, rid
        )
    return json_response(
        error_body(problem.code, problem.message, rid),
        status=problem.status,
        headers=problem.headers,
    )


def _from_http_exception(error: web.HTTPException) -> Exception:
    if error.status == 413:
        return ApiError(413, "BODY_TOO_LARGE", "the body is too large; send a smaller request")
    if 400 <= error.status < 500:
        return ApiError(error.status, "BAD_REQUEST", "the request could not be read")
    return error


def unrouted(error: web.HTTPException, rid: str) -> web.Response:
    if error.status == 405:
        allow = error.headers.get("Allow", "")
        return json_response(
            error_body("METHOD_NOT_ALLOWED", f"this path accepts only: {allow}", rid),
            status=405,
            headers={"Allow": allow},
        )
    message = "no such endpoint; see /openapi.json for the agent API"
    return json_response(error_body("NOT_FOUND", message, rid), status=404)


def json_response(
    data: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def refused(request: web.Request, submitted: Submitted) -> web.Response:
    body = error_body(
        submitted.reason_code or "POLICY_DENIED",
        submitted.message or "the policy does not allow this call",
        request_id_of(request),
        decision=submitted.to_json(),
    )
    return json_response(body, status=403)


def presented_token(request: web.Request) -> str:
    """The presented scoped token (X-CST or Authorization: Bearer), not yet verified.

    Raises:
        ApiError: 401 TOKEN_MISSING, TOKEN_MALFORMED, or TOKEN_AMBIGUOUS (two different
            tokens presented: which one was meant is not guessed).
    """
    direct = request.headers.getall("X-CST", [])
    auth = request.headers.getall("Authorization", [])
    if len(direct) > 1 or len(auth) > 1:
        raise _token_error("TOKEN_AMBIGUOUS", "send one token, in one header")
    bearer: str | None = None
    if auth:
        scheme, _, value = auth[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _token_error(
                "TOKEN_MALFORMED", "send the token as 'Authorization: Bearer <token>'"
            )
        bearer = value.strip()
    given = direct[0].strip() if direct else None
    if bearer and given and bearer != given:
        raise _token_error("TOKEN_AMBIGUOUS", "X-CST and Authorization carry different tokens")
    token = bearer or given
    if not token:
        raise _token_error(
            "TOKEN_MISSING",
            "this endpoint needs your scoped token in 'Authorization: Bearer …' or 'X-CST'",
        )
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise _token_error("TOKEN_MALFORMED", "the token is not a compact CST")
    return token


def _token_error(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, _UNAUTHORIZED)


def path_id(request: web.Request) -> str:
    value = request.match_info.get("request_id", "")
    if not _PATH_ID.match(value):
        raise ApiError(
            400, "INVALID_PATH", "a request id is 1–128 letters, digits, '.', '_', ':' or '-'"
        )
    return value


def no_query(request: web.Request) -> None:
    query_params(request, frozenset())


def query_params(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise ApiError(
                400, "INVALID_QUERY", f"unknown query parameter {key[:64]!r} (allowed: {names})"
            )
        if key in found:
            raise ApiError(400, "INVALID_QUERY", f"query parameter {key!r} is given twice")
        found[key] = value
    return found


def seconds(text: str | None, name: str) -> float:
    if text is None:
        return 0.0
    if not _SECONDS.match(text):
        raise ApiError(400, "INVALID_QUERY", f"{name} must be a number of seconds, like 30")
    return float(text)


def count(query: Mapping[str, str], name: str, *, required: bool = True) -> Any:
    text = query.get(name)
    if text is None:
        if required:
            raise ApiError(400, "INVALID_QUERY", f"query parameter {name!r} is required")
        return None
    if not _COUNT.match(text):
        raise ApiError(400, "INVALID_QUERY", f"{name} must be a whole number ≥ 0")
    return int(text)
