"""JSON records of core values, for stores and wire formats.

A store keeps these records verbatim (a JSON column) next to the few columns it
indexes and constrains; ``from_record`` rebuilds the exact frozen value, re-running its
invariants, so a corrupted row is refused rather than trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import StoreError
from core.grants import Grant
from core.policy import ApprovalRequirement, BreakglassTerms, RuleRef
from core.quorum import ApproverDecision, Verdict
from core.requests import ApprovalRequest, RequestBinding, RequestState
from core.times import parse_iso, require_aware, to_iso


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What keyturn remembers of a token it minted: never the token itself."""

    token_hash_hex: str
    jti: str
    kind: str
    subject: str
    job_id: str | None
    request_id: str | None
    issued_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        if len(self.token_hash_hex) != 64:
            raise ValueError("token_hash_hex is the hex SHA-256 of the compact token")
        require_aware(self.issued_at)
        require_aware(self.expires_at)


def _requirement_from(data: Mapping[str, Any]) -> ApprovalRequirement:
    return ApprovalRequirement(
        name=data["name"],
        min_approvers=data["min_approvers"],
        allowed_groups=tuple(data["allowed_groups"]),
        one_from_each=tuple(data["one_from_each"]),
        require_pim=data["require_pim"],
        allow_guests=data["allow_guests"],
        timeout_seconds=data["timeout_seconds"],
        reminder_every_seconds=data["reminder_every_seconds"],
        critical=data["critical"],
        bind=tuple(data["bind"]),
        two_person=data["two_person"],
        independent_of_requester=data["independent_of_requester"],
        identity_provider=data["identity_provider"],
    )


def _breakglass_from(data: Mapping[str, Any]) -> BreakglassTerms:
    return BreakglassTerms(
        max_duration_seconds=data["max_duration_seconds"],
        token_ttl_seconds=data["token_ttl_seconds"],
        renewable_without_reapproval=data["renewable_without_reapproval"],
        rollback_steps=tuple(data["rollback_steps"]),
        kill_switch_triggers=tuple(data["kill_switch_triggers"]),
        executor=data["executor"],
        kill_switch_actions=tuple(data["kill_switch_actions"]),
    )


def request_to_record(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "record_version": "1",
        "binding": request.binding.to_json(),
        "requirements": [r.to_json() for r in request.requirements],
        "params": dict(request.params),
        "state": str(request.state),
        "state_changed_at": to_iso(request.state_changed_at) if request.state_changed_at else None,
        "final_reason": request.final_reason,
        "rules": [r.to_json() for r in request.rules],
        "breakglass": request.breakglass.to_json() if request.breakglass else None,
        "requires_plan_fingerprint": request.requires_plan_fingerprint,
        "sensitive_params": sorted(request.sensitive_params),
        "justification": request.justification,
    }


def request_from_record(record: Mapping[str, Any]) -> ApprovalRequest:
    """Rebuild a request. Raises ``StoreError("RECORD_CORRUPT")`` for a bad record."""
    try:
        b = record["binding"]
        binding = RequestBinding(
            request_id=b["request_id"],
            job_id=b["job_id"],
            policy_hash_b64u=b["wpc_hash"],
            tool_route=b["tool_route"],
            payload_hash_b64u=b["payload_hash"],
            requester=b["requester"],
            created_at=parse_iso(b["created_at"]),
            expires_at=parse_iso(b["expires_at"]),
            on_behalf_of=b.get("on_behalf_of"),
            plan_hash=b.get("plan_hash"),
            span_id=b.get("span_id"),
            breakglass_window_seconds=b.get("breakglass_window_seconds"),
        )
        changed = record.get("state_changed_at")
        return ApprovalRequest(
            binding=binding,
            requirements=tuple(_requirement_from(r) for r in record["requirements"]),
            params=record["params"],
            state=RequestState(record["state"]),
            state_changed_at=parse_iso(changed) if changed else None,
            final_reason=record.get("final_reason"),
            rules=tuple(
                RuleRef(r["rule_id"], r["description"], r["condition_text"])
                for r in record.get("rules", ())
            ),
            breakglass=_breakglass_from(record["breakglass"]) if record.get("breakglass") else None,
            requires_plan_fingerprint=bool(record.get("requires_plan_fingerprint", False)),
            sensitive_params=frozenset(record.get("sensitive_params", ())),
            justification=record.get("justification"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError("RECORD_CORRUPT", f"stored request record is invalid: {e}") from e


def decision_to_record(decision: ApproverDecision) -> dict[str, Any]:
    return decision.to_json()


def decision_from_record(record: Mapping[str, Any]) -> ApproverDecision:
    """Rebuild a decision. Raises ``StoreError("RECORD_CORRUPT")`` for a bad record."""
    try:
        return ApproverDecision(
            request_id=record["request_id"],
            request_hash_b64u=record["request_hash_b64u"],
            approver_id=record["approver_id"],
            approver_name=record["approver_name"],
            verdict=Verdict(record["verdict"]),
            decided_at=parse_iso(record["decided_at"]),
            groups=tuple(record["groups"]),
            evidence_checked_at=parse_iso(record["evidence_checked_at"]),
            evidence_source=record["evidence_source"],
            platform=record["platform"],
            reason=record.get("reason"),
            pim_active_until=record.get("pim_active_until"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError("RECORD_CORRUPT", f"stored decision record is invalid: {e}") from e


def grant_to_record(grant: Grant) -> dict[str, Any]:
    """The grant's signed envelope is its record."""
    if grant.envelope is None:
        raise ValueError("only a signed grant can be stored")
    return dict(grant.envelope)


def grant_from_record(record: Mapping[str, Any]) -> Grant:
    """Rebuild a grant from its stored envelope (the gate verifies it again on use)."""
    try:
        return Grant.from_payload(record["payload"], envelope=record)
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError("RECORD_CORRUPT", f"stored grant record is invalid: {e}") from e
