"""Errors as the agent API shows them: a status, a stable code and a sentence.

Every refusal the API sends has the same body::

    {"error": {"code": "TOKEN_EXPIRED", "message": "…", "request_id": "…"}}

``code`` is the reason code of the :mod:`core.errors` exception the service raised (or
one of the API's own codes below); ``message`` is that exception's message, which is
written to be shown to a person; ``request_id`` is the ``X-Request-Id`` of the HTTP
exchange, for finding the log line. Anything that is not a :class:`~core.errors.KeyturnError`
becomes ``500 INTERNAL_ERROR`` with a fixed message: internals never leave the process.

The API's own codes: ``BODY_TOO_LARGE`` (413), ``MALFORMED_JSON``, ``JSON_TOO_DEEP``,
``INVALID_BODY``, ``INVALID_QUERY``, ``INVALID_PATH`` (400), ``UNSUPPORTED_MEDIA_TYPE``
(415), ``TOKEN_MISSING``, ``TOKEN_MALFORMED``, ``TOKEN_AMBIGUOUS`` (401), ``NOT_FOUND``
(404), ``METHOD_NOT_ALLOWED`` (405), ``NOT_READY`` (503), ``INTERNAL_ERROR`` (500).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import (
    ApprovalRefusedError,
    BundleError,
    CanonicalizationError,
    DirectoryError,
    EnvelopeError,
    GateDeniedError,
    IllegalTransitionError,
    InvalidDidError,
    KeyturnError,
    LogError,
    PolicyError,
    StoreError,
    TokenError,
)

INTERNAL_MESSAGE = (
    "keyturn hit an unexpected error and did nothing; retry later, and give the "
    "request id to the operator if it keeps happening."
)


class ApiError(Exception):
    """A refusal decided by the HTTP layer itself (bad body, missing token, …).

    A plain exception, not a frozen dataclass: the interpreter and ``contextlib``
    assign ``__traceback__`` to exceptions in flight.
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers: Mapping[str, str] = dict(headers or {})
        super().__init__(f"{status} {code}: {message}")


@dataclass(frozen=True, slots=True)
class Problem:
    """How one error is answered. ``internal`` problems are logged with a traceback."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False


_INTERNAL = Problem(500, "INTERNAL_ERROR", INTERNAL_MESSAGE, internal=True)
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="keyturn"'}
_RETRY_SOON = {"Retry-After": "1"}


def problem_for(error: BaseException) -> Problem:
    """The HTTP answer for ``error``; unknown errors are internal and say nothing more."""
    if isinstance(error, ApiError):
        return Problem(error.status, error.code, error.message, error.headers)
    if not isinstance(error, KeyturnError):
        return _INTERNAL
    code, message = error.reason_code, error.message
    status = _status_for(error)
    if status is None:
        return _INTERNAL
    headers: Mapping[str, str] = {}
    if status == 401:
        headers = _UNAUTHORIZED
    elif status == 503:
        headers = _RETRY_SOON
    return Problem(status, code, message, headers)


def _status_for(error: KeyturnError) -> int | None:
    code = error.reason_code
    if isinstance(error, TokenError):
        return 401
    if isinstance(error, PolicyError):
        return 400 if code in ("INVALID_CALL", "POLICY_INVALID") else 403
    if isinstance(error, GateDeniedError):
        return 403
    if isinstance(error, ApprovalRefusedError | IllegalTransitionError):
        return 409
    if isinstance(error, StoreError):
        if code == "NOT_FOUND":
            return 404
        return 409 if code == "STORE_CONFLICT" else 503
    if isinstance(error, BundleError):
        return 409 if code == "NOT_SEALED" else None
    if isinstance(error, LogError):
        if code in ("LOG_SIZE_OUT_OF_RANGE", "PROOF_OUT_OF_RANGE"):
            return 400
        return 404 if code == "LOG_NO_CHECKPOINT" else None
    if isinstance(error, CanonicalizationError | InvalidDidError | EnvelopeError):
        return 400
    if isinstance(error, DirectoryError):
        return 503
    return None  # ConfigError and anything unforeseen: an operator's problem, not the caller's


def error_body(code: str, message: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every refusal."""
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    error.update(extra)
    return {"error": error}
