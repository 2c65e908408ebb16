"""The JSON the agent API answers with, as typed shapes for the OpenAPI document.

These mirror the ``to_json`` methods of :mod:`core.outcomes` field for field: optional
fields are left out rather than sent as ``null``. Tests validate real responses
against the schemas generated from here, so a field added to an outcome without
being added here fails a test instead of going undocumented.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

_CLOSED = ConfigDict(extra="forbid")


@with_config(_CLOSED)
class ChallengeOut(TypedDict):
    agent_did: str
    challenge: str
    expires_at: str


@with_config(_CLOSED)
class JobStartedOut(TypedDict):
    job_id: str
    runner_token: str
    expires_at: str
    policy_hash_b64u: str
    scope: list[str]


@with_config(_CLOSED)
class SubmittedOut(TypedDict):
    outcome: Literal["allowed", "gated", "denied"]
    reason_code: str
    message: str
    tool_route: str
    payload_hash_b64u: str
    policy_hash_b64u: str
    rules: list[dict[str, Any]]
    request_id: NotRequired[str]
    request_hash_b64u: NotRequired[str]
    expires_at: NotRequired[str]
    needs: NotRequired[list[str]]
    receipt_index: NotRequired[int]
    card_url: NotRequired[str]


@with_config(_CLOSED)
class RequestStatusOut(TypedDict):
    request_id: str
    state: Literal["pending", "approved", "denied", "expired", "cancelled", "consumed", "revoked"]
    tool_route: str
    payload_hash_b64u: str
    request_hash_b64u: str
    expires_at: str
    approvals: int
    needed: int
    approved_by: list[str]
    status_line: NotRequired[str]
    grant: NotRequired[dict[str, Any]]
    job_token: NotRequired[str]
    job_token_expires_at: NotRequired[str]
    bundle_url: NotRequired[str]


@with_config(_CLOSED)
class GatePassedOut(TypedDict):
    result: Literal["pass"]
    grant_id: str
    request_id: str
    tool_route: str
    payload_hash_b64u: str
    receipt_index: NotRequired[int]


@with_config(_CLOSED)
class ErrorDetail(TypedDict):
    code: str
    message: str
    request_id: str
    decision: NotRequired[SubmittedOut]


@with_config(_CLOSED)
class ErrorOut(TypedDict):
    error: ErrorDetail


@with_config(_CLOSED)
class HealthOut(TypedDict):
    status: Literal["ok"]


@with_config(_CLOSED)
class ReadyOut(TypedDict):
    status: Literal["ready"]
    checks: dict[str, Any]


RESPONSE_SHAPES: tuple[type, ...] = (
    ChallengeOut,
    JobStartedOut,
    SubmittedOut,
    RequestStatusOut,
    GatePassedOut,
    ErrorOut,
    HealthOut,
    ReadyOut,
)
