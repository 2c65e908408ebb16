"""Grants: the signed, single-use permission minted when a request reaches quorum.

A grant is a ``keyturn_grant`` signed envelope binding the request hash, job id,
policy hash, tool route, payload hash, optional plan fingerprint, the hashes of the
approver decisions that met the quorum, an expiry and (when a job token was minted)
the token's scope hash. The gate accepts it once, for exactly that payload.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core import canonical
from core.envelope import sign_envelope, verify_envelope
from core.errors import ApprovalRefusedError, EnvelopeError, GateDeniedError
from core.ports import Signer
from core.quorum import ApproverDecision, Verdict, quorum_met
from core.requests import ApprovalRequest, RequestState
from core.times import parse_iso, require_aware, to_iso, truncate_ms

GRANT_TYPE = "keyturn_grant"
_FIELDS = frozenset(
    {
        "grant_version",
        "grant_id",
        "request_id",
        "request_hash_b64u",
        "job_id",
        "policy_hash_b64u",
        "tool_route",
        "payload_hash_b64u",
        "plan_hash",
        "approvals",
        "issued_at",
        "expires_at",
        "single_use",
        "cst_scope_hash_b64u",
    }
)


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    request_id: str
    request_hash_b64u: str
    job_id: str
    policy_hash_b64u: str
    tool_route: str
    payload_hash_b64u: str
    approvals: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    plan_hash: str | None = None
    cst_scope_hash_b64u: str | None = None
    envelope: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if require_aware(self.expires_at) <= require_aware(self.issued_at):
            raise ValueError("a grant must expire after it is issued")
        if not self.approvals:
            raise ValueError("a grant without approvals grants nothing")

    @classmethod
    def from_payload(cls, p: Mapping[str, Any], *, envelope: Mapping[str, Any]) -> Grant:
        """Rebuild a grant from its envelope's payload (no verification here).

        Raises:
            KeyError, TypeError, ValueError: a missing or malformed field.
        """
        return cls(
            grant_id=p["grant_id"],
            request_id=p["request_id"],
            request_hash_b64u=p["request_hash_b64u"],
            job_id=p["job_id"],
            policy_hash_b64u=p["policy_hash_b64u"],
            tool_route=p["tool_route"],
            payload_hash_b64u=p["payload_hash_b64u"],
            approvals=tuple(p["approvals"]),
            issued_at=parse_iso(p["issued_at"]),
            expires_at=parse_iso(p["expires_at"]),
            plan_hash=p.get("plan_hash"),
            cst_scope_hash_b64u=p.get("cst_scope_hash_b64u"),
            envelope=envelope,
        )

    def to_payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "grant_version": "1",
            "grant_id": self.grant_id,
            "request_id": self.request_id,
            "request_hash_b64u": self.request_hash_b64u,
            "job_id": self.job_id,
            "policy_hash_b64u": self.policy_hash_b64u,
            "tool_route": self.tool_route,
            "payload_hash_b64u": self.payload_hash_b64u,
            "approvals": list(self.approvals),
            "issued_at": to_iso(self.issued_at),
            "expires_at": to_iso(self.expires_at),
            "single_use": True,
        }
        if self.plan_hash is not None:
            data["plan_hash"] = self.plan_hash
        if self.cst_scope_hash_b64u is not None:
            data["cst_scope_hash_b64u"] = self.cst_scope_hash_b64u
        return data


def mint_grant(
    request: ApprovalRequest,
    decisions: Sequence[ApproverDecision],
    signer: Signer,
    *,
    grant_id: str,
    now: datetime,
    ttl_seconds: int,
    cst_scope_hash_b64u: str | None = None,
) -> Grant:
    """Sign the grant for an approved request, re-checking the quorum first.

    Raises:
        ApprovalRefusedError: ``QUORUM_NOT_MET`` when the request is not approved or the
            recorded approvals for its exact request hash do not meet every requirement.
    """
    if request.state is not RequestState.APPROVED or not quorum_met(request, decisions):
        raise ApprovalRefusedError(
            "QUORUM_NOT_MET", "the approvals do not meet the policy's quorum"
        )
    if ttl_seconds <= 0:
        raise ValueError("grant TTL must be positive")
    issued = truncate_ms(now)
    approvals = tuple(
        sorted(
            d.decision_hash_b64u
            for d in decisions
            if d.verdict is Verdict.APPROVE and d.request_hash_b64u == request.request_hash_b64u
        )
    )
    grant = Grant(
        grant_id=grant_id,
        request_id=request.request_id,
        request_hash_b64u=request.request_hash_b64u,
        job_id=request.binding.job_id,
        policy_hash_b64u=request.binding.policy_hash_b64u,
        tool_route=request.binding.tool_route,
        payload_hash_b64u=request.binding.payload_hash_b64u,
        approvals=approvals,
        issued_at=issued,
        expires_at=issued + timedelta(seconds=ttl_seconds),
        plan_hash=request.binding.plan_hash,
        cst_scope_hash_b64u=cst_scope_hash_b64u,
    )
    envelope = sign_envelope(
        GRANT_TYPE, grant.to_payload(), signer, issued_at=issued, expires_at=grant.expires_at
    )
    return Grant(**{**_fields(grant), "envelope": envelope})


def _fields(grant: Grant) -> dict[str, Any]:
    return {name: getattr(grant, name) for name in Grant.__slots__}


def verify_grant(unverified: object, *, trusted_signers: Collection[str], now: datetime) -> Grant:
    """Verify a grant envelope signed by keyturn.

    Raises:
        GateDeniedError: ``GRANT_EXPIRED`` past its expiry, ``GRANT_INVALID`` for any
            other defect (bad signature, unknown signer, malformed payload).
    """
    try:
        verified = verify_envelope(
            unverified,
            now=now,
            expected_type=GRANT_TYPE,
            trusted_signers=trusted_signers,
            validate_payload=_validate_payload,
        )
    except EnvelopeError as e:
        if e.reason_code == "EXPIRED_TTL":
            raise GateDeniedError("GRANT_EXPIRED", "the grant has expired") from e
        raise GateDeniedError("GRANT_INVALID", f"the grant does not verify: {e.message}") from e
    grant = Grant.from_payload(verified.payload, envelope=verified.raw)
    if verified.expires_at != grant.expires_at:
        raise GateDeniedError("GRANT_INVALID", "grant expiry disagrees with its envelope")
    if grant.expires_at <= require_aware(now):
        raise GateDeniedError("GRANT_EXPIRED", "the grant has expired")
    return grant


def _validate_payload(payload: Mapping[str, Any]) -> None:
    unknown = set(payload) - _FIELDS
    if unknown:
        raise ValueError(f"unknown grant fields: {sorted(unknown)}")
    if payload.get("grant_version") != "1" or payload.get("single_use") is not True:
        raise ValueError("unsupported grant version or not single-use")
    for name in ("grant_id", "request_id", "job_id", "tool_route", "issued_at", "expires_at"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise ValueError(f"{name} missing")
    for name in ("request_hash_b64u", "policy_hash_b64u", "payload_hash_b64u"):
        if not canonical.is_sha256_b64u(payload.get(name)):
            raise ValueError(f"{name} is not a base64url SHA-256")
    approvals = payload.get("approvals")
    if not isinstance(approvals, list) or not approvals:
        raise ValueError("approvals missing")
    if not all(canonical.is_sha256_b64u(a) for a in approvals):
        raise ValueError("approvals must be decision hashes")
