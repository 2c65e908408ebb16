"""Approval requests: what approvers sign off, and the states a request moves through.

::

                   quorum met                 gate passed
      PENDING ─────────────────▶ APPROVED ─────────────────▶ CONSUMED
         │                          │
         ├── eligible deny ──▶ DENIED        ├── kill switch ──▶ REVOKED
         ├── deadline passed ─▶ EXPIRED      └── grant lapsed ──▶ EXPIRED
         └── requester cancels ▶ CANCELLED

Every other move raises :class:`~core.errors.IllegalTransitionError`. A request binds
the job id, the policy hash, the tool route and the payload hash (JCS of the exact
parameters), the requester (and the person an agent acts for), and its creation and
expiry times; the SHA-256 of that binding's JCS form is the *request hash* that every
approval and the grant refer to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from core import canonical
from core.errors import IllegalTransitionError
from core.policy import (
    ApprovalRequirement,
    BreakglassTerms,
    Decision,
    Outcome,
    RuleRef,
    ToolCall,
)
from core.times import require_aware, to_iso, truncate_ms


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    CONSUMED = "consumed"
    REVOKED = "revoked"


TRANSITIONS: Mapping[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset(
        {
            RequestState.APPROVED,
            RequestState.DENIED,
            RequestState.EXPIRED,
            RequestState.CANCELLED,
        }
    ),
    RequestState.APPROVED: frozenset(
        {RequestState.CONSUMED, RequestState.REVOKED, RequestState.EXPIRED}
    ),
    RequestState.DENIED: frozenset(),
    RequestState.EXPIRED: frozenset(),
    RequestState.CANCELLED: frozenset(),
    RequestState.CONSUMED: frozenset(),
    RequestState.REVOKED: frozenset(),
}

FINAL_STATES = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def payload_hash(params: Mapping[str, Any]) -> str:
    """The payload hash: b64u(SHA-256(JCS(params))). The gate recomputes exactly this.

    Raises:
        CanonicalizationError: the parameters have no canonical JSON form.
    """
    return canonical.jcs_sha256_b64u(params)


@dataclass(frozen=True, slots=True)
class RequestBinding:
    """The facts an approval is given for. Its JCS hash is the request hash."""

    request_id: str
    job_id: str
    policy_hash_b64u: str
    tool_route: str
    payload_hash_b64u: str
    requester: str
    created_at: datetime
    expires_at: datetime
    on_behalf_of: str | None = None
    plan_hash: str | None = None
    span_id: str | None = None
    breakglass_window_seconds: int | None = None
    # Derived from the fields above, so left out of equality and repr. Hashed once
    # here: every status poll, card and receipt reads it (JCS + SHA-256 each time).
    _request_hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("request_id", "job_id", "tool_route", "requester"):
            if not getattr(self, name):
                raise ValueError(f"a request binding needs a {name}")
        if not canonical.is_sha256_b64u(self.policy_hash_b64u):
            raise ValueError("policy_hash_b64u is not a base64url SHA-256")
        if not canonical.is_sha256_b64u(self.payload_hash_b64u):
            raise ValueError("payload_hash_b64u is not a base64url SHA-256")
        if require_aware(self.expires_at) <= require_aware(self.created_at):
            raise ValueError("a request must expire after it is created")
        object.__setattr__(self, "_request_hash", canonical.jcs_sha256_b64u(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        """The binding as JSON, absent optional fields omitted."""
        data: dict[str, Any] = {
            "binding_version": "1",
            "request_id": self.request_id,
            "job_id": self.job_id,
            "wpc_hash": self.policy_hash_b64u,
            "tool_route": self.tool_route,
            "payload_hash": self.payload_hash_b64u,
            "requester": self.requester,
            "created_at": to_iso(self.created_at),
            "expires_at": to_iso(self.expires_at),
        }
        optional = {
            "on_behalf_of": self.on_behalf_of,
            "plan_hash": self.plan_hash,
            "span_id": self.span_id,
            "breakglass_window_seconds": self.breakglass_window_seconds,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data

    @property
    def request_hash_b64u(self) -> str:
        return self._request_hash


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One gated call awaiting (or past) approval. State changes return new objects."""

    binding: RequestBinding
    requirements: tuple[ApprovalRequirement, ...]
    params: Mapping[str, Any]
    state: RequestState = RequestState.PENDING
    state_changed_at: datetime | None = None
    final_reason: str | None = None
    rules: tuple[RuleRef, ...] = ()
    breakglass: BreakglassTerms | None = None
    requires_plan_fingerprint: bool = False
    sensitive_params: frozenset[str] = field(default_factory=frozenset)
    justification: str | None = None

    def __post_init__(self) -> None:
        if not self.requirements:
            raise ValueError("a request with no approval requirement would approve nothing")
        if payload_hash(self.params) != self.binding.payload_hash_b64u:
            raise ValueError("params do not match the bound payload hash")

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.rule_id for r in self.rules)

    @property
    def request_id(self) -> str:
        return self.binding.request_id

    @property
    def request_hash_b64u(self) -> str:
        return self.binding.request_hash_b64u

    @property
    def independent_of(self) -> frozenset[str]:
        """People who may never approve this request: the requester and their principal."""
        people = {self.binding.requester}
        if self.binding.on_behalf_of:
            people.add(self.binding.on_behalf_of)
        return frozenset(people)

    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def transition(
        self, new_state: RequestState, *, at: datetime, reason: str | None = None
    ) -> ApprovalRequest:
        """Move to ``new_state``.

        Raises:
            IllegalTransitionError: the state machine does not allow the move.
        """
        if new_state not in TRANSITIONS[self.state]:
            raise IllegalTransitionError(
                "ILLEGAL_TRANSITION",
                f"request {self.request_id} is {self.state}; it cannot become {new_state}",
            )
        return replace(
            self, state=new_state, state_changed_at=require_aware(at), final_reason=reason
        )


def open_request(
    call: ToolCall,
    decision: Decision,
    *,
    request_id: str,
    job_id: str,
    policy_hash_b64u: str,
    now: datetime,
    span_id: str | None = None,
    breakglass_window_seconds: int | None = None,
    justification: str | None = None,
) -> ApprovalRequest:
    """Create the pending request for a call the policy gated.

    The request expires after the shortest timeout among its requirements.

    Raises:
        ValueError: the decision did not gate the call (nothing to approve), or the
            break-glass window exceeds the policy's maximum.
    """
    if decision.outcome is not Outcome.GATED or not decision.requirements:
        raise ValueError("only a gated decision opens an approval request")
    if breakglass_window_seconds is not None:
        terms = decision.breakglass
        if terms is None:
            raise ValueError("this route is not a break-glass route")
        if not 0 < breakglass_window_seconds <= terms.max_duration_seconds:
            raise ValueError("break-glass window outside the policy's limit")
    created = truncate_ms(now)
    timeout = min(r.timeout_seconds for r in decision.requirements)
    binding = RequestBinding(
        request_id=request_id,
        job_id=job_id,
        policy_hash_b64u=policy_hash_b64u,
        tool_route=call.route,
        payload_hash_b64u=payload_hash(call.params),
        requester=call.requester,
        on_behalf_of=call.on_behalf_of,
        created_at=created,
        expires_at=created + timedelta(seconds=timeout),
        plan_hash=call.plan_hash,
        span_id=span_id,
        breakglass_window_seconds=breakglass_window_seconds,
    )
    return ApprovalRequest(
        binding=binding,
        requirements=decision.requirements,
        params=call.params,
        rules=decision.rules,
        breakglass=decision.breakglass,
        requires_plan_fingerprint=decision.requires_plan_fingerprint,
        sensitive_params=decision.sensitive_params,
        justification=justification,
    )
