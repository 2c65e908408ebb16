"""What the keyturn client hands back: an approval to run one call, and an admission."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.agents.errors import GateRefused


@dataclass(frozen=True, slots=True, repr=False)
class Approval:
    """Permission to run one exact call: a grant and job token, or "allowed" outright.

    ``grant`` is ``None`` when the policy allowed the call without approval; then
    :meth:`Gate.check` admits it as an ungated call instead of spending a grant.
    The job token is a secret: it never appears in ``repr``.
    """

    outcome: Literal["approved", "allowed"]
    tool_route: str
    payload_hash_b64u: str
    request_id: str | None = None
    grant: Mapping[str, Any] | None = None
    job_token: str | None = None
    job_token_expires_at: str | None = None
    approved_by: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gated(self) -> bool:
        return self.grant is not None

    @classmethod
    def from_grant(cls, grant: Mapping[str, Any], job_token: str) -> Approval:
        """An approval rebuilt from a grant envelope and its job token, as received.

        The fields are read from the unverified envelope, only to compare the call
        locally; the gate verifies the grant itself.

        Raises:
            GateRefused: ``GRANT_INVALID`` when the envelope lacks the fields.
        """
        payload = grant.get("payload")
        if not isinstance(payload, Mapping):
            raise GateRefused("GRANT_INVALID", "the grant has no payload")
        route, digest = payload.get("tool_route"), payload.get("payload_hash_b64u")
        if not isinstance(route, str) or not isinstance(digest, str):
            raise GateRefused("GRANT_INVALID", "the grant names no route or payload hash")
        request_id = payload.get("request_id")
        return cls(
            outcome="approved",
            tool_route=route,
            payload_hash_b64u=digest,
            request_id=request_id if isinstance(request_id, str) else None,
            grant=dict(grant),
            job_token=job_token,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.outcome,
            "tool_route": self.tool_route,
            "payload_hash_b64u": self.payload_hash_b64u,
        }
        optional = {
            "request_id": self.request_id,
            "grant": dict(self.grant) if self.grant is not None else None,
            "job_token": self.job_token,
            "job_token_expires_at": self.job_token_expires_at,
            "approved_by": list(self.approved_by) or None,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data

    def __repr__(self) -> str:
        return (
            f"Approval(outcome={self.outcome!r}, tool_route={self.tool_route!r}, "
            f"request_id={self.request_id!r})"
        )


@dataclass(frozen=True, slots=True)
class Admission:
    """The gate said yes: run the call now (and only this call)."""

    tool_route: str
    payload_hash_b64u: str
    grant_id: str | None = None
    request_id: str | None = None
    receipt_index: int | None = None
