"""What keyturn's use cases return to the surfaces that called them.

Plain values shared by the application service (``bot/service``) and the inbound
adapters (HTTP API, SDK, MCP, chat): an adapter turns them into JSON, cards or chat
messages, and never needs the service's internals. Failures are not outcomes: they
are raised as :mod:`core.errors` with a reason code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.times import to_iso


@dataclass(frozen=True, slots=True)
class Challenge:
    """A single-use proof-of-possession challenge for an agent key."""

    agent_did: str
    challenge: str
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_did": self.agent_did,
            "challenge": self.challenge,
            "expires_at": to_iso(self.expires_at),
        }


@dataclass(frozen=True, slots=True, repr=False)
class JobStarted:
    """A new job and its runner token (a secret: never logged, never in ``repr``)."""

    job_id: str
    runner_token: str
    expires_at: datetime
    policy_hash_b64u: str
    scope: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "runner_token": self.runner_token,
            "expires_at": to_iso(self.expires_at),
            "policy_hash_b64u": self.policy_hash_b64u,
            "scope": list(self.scope),
        }

    def __repr__(self) -> str:
        return f"JobStarted(job_id={self.job_id!r})"


@dataclass(frozen=True, slots=True)
class Submitted:
    """The policy's answer to one submitted call."""

    outcome: str  # "allowed" | "gated" | "denied"
    reason_code: str
    message: str
    tool_route: str
    payload_hash_b64u: str
    policy_hash_b64u: str
    rules: tuple[Mapping[str, Any], ...] = ()
    request_id: str | None = None
    request_hash_b64u: str | None = None
    expires_at: datetime | None = None
    needs: tuple[str, ...] = ()
    receipt_index: int | None = None
    card_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "outcome": self.outcome,
            "reason_code": self.reason_code,
            "message": self.message,
            "tool_route": self.tool_route,
            "payload_hash_b64u": self.payload_hash_b64u,
            "policy_hash_b64u": self.policy_hash_b64u,
            "rules": [dict(r) for r in self.rules],
        }
        optional: dict[str, Any] = {
            "request_id": self.request_id,
            "request_hash_b64u": self.request_hash_b64u,
            "expires_at": to_iso(self.expires_at) if self.expires_at else None,
            "needs": list(self.needs) if self.needs else None,
            "receipt_index": self.receipt_index,
            "card_url": self.card_url,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data


@dataclass(frozen=True, slots=True, repr=False)
class RequestStatus:
    """Where a request stands; carries the grant and job token once approved."""

    request_id: str
    state: str
    tool_route: str
    payload_hash_b64u: str
    request_hash_b64u: str
    expires_at: datetime
    approvals: int
    needed: int
    status_line: str | None = None
    grant: Mapping[str, Any] | None = None
    job_token: str | None = None
    job_token_expires_at: datetime | None = None
    bundle_url: str | None = None
    approved_by: tuple[str, ...] = field(default_factory=tuple)

    @property
    def final(self) -> bool:
        return self.state not in ("pending", "approved")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "state": self.state,
            "tool_route": self.tool_route,
            "payload_hash_b64u": self.payload_hash_b64u,
            "request_hash_b64u": self.request_hash_b64u,
            "expires_at": to_iso(self.expires_at),
            "approvals": self.approvals,
            "needed": self.needed,
            "approved_by": list(self.approved_by),
        }
        optional: dict[str, Any] = {
            "status_line": self.status_line,
            "grant": dict(self.grant) if self.grant is not None else None,
            "job_token": self.job_token,
            "job_token_expires_at": (
                to_iso(self.job_token_expires_at) if self.job_token_expires_at else None
            ),
            "bundle_url": self.bundle_url,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data

    def __repr__(self) -> str:
        return f"RequestStatus(request_id={self.request_id!r}, state={self.state!r})"


@dataclass(frozen=True, slots=True)
class GatePassed:
    grant_id: str
    request_id: str
    tool_route: str
    payload_hash_b64u: str
    receipt_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "result": "pass",
            "grant_id": self.grant_id,
            "request_id": self.request_id,
            "tool_route": self.tool_route,
            "payload_hash_b64u": self.payload_hash_b64u,
        }
        if self.receipt_index is not None:
            data["receipt_index"] = self.receipt_index
        return data


@dataclass(frozen=True, slots=True)
class DecisionRecorded:
    """A click that counted: the request's new state and quorum progress."""

    request_id: str
    approver_id: str
    approver_name: str
    verdict: str
    state: str
    approvals: int
    needed: int
    grant_id: str | None = None
    receipt_index: int | None = None
