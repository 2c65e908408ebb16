"""The human-readable summary sealed into every proof bundle.

It is rendered from the :class:`~core.bundle_evidence.Evidence` the bundle proves, and
only from it: :func:`summarize` is deterministic, so a verifier recomputes the summary
from the verified parts and refuses a bundle whose summary says anything else
(``BUNDLE_SUMMARY_MISMATCH``). A reader can therefore trust the summary exactly as far
as the bundle verifies.
"""

from __future__ import annotations

from typing import Any

from core.bundle_evidence import Evidence
from core.quorum import ApproverDecision, Verdict
from core.times import to_iso


def summarize(evidence: Evidence) -> dict[str, Any]:
    """The bundle's summary: an outcome and a few lines a person can read.

    Deterministic in the evidence, so a verifier recomputes it and compares.
    """
    r = evidence.request
    b = r.binding
    policy = evidence.policy
    groups = policy.groups

    def name_groups(d: ApproverDecision) -> str:
        names = [groups[k].display_name if k in groups else k for k in d.groups]
        return ", ".join(names) or "no group"

    principal = f" for {b.on_behalf_of}" if b.on_behalf_of else ""
    lines = [
        f"{b.tool_route} · job {b.job_id} · request {b.request_id}",
        f"Requested by {b.requester}{principal} at {to_iso(b.created_at)}; "
        f"deadline {to_iso(b.expires_at)}",
        f"Policy {policy.name} · hash {policy.policy_hash_b64u}",
        f"Payload hash {b.payload_hash_b64u} (SHA-256 of the canonical parameters)",
        f"Gated by {', '.join(r.rule_ids) or 'a rule'}; needs "
        + "; and ".join(policy.requirement_text(q) for q in r.requirements),
    ]
    for d in evidence.decisions:
        verb = "Approved" if d.verdict is Verdict.APPROVE else "Denied"
        reason = f': "{d.reason}"' if d.reason else ""
        lines.append(
            f"{verb} by {d.approver_name} ({name_groups(d)}) at {to_iso(d.decided_at)}, "
            f"membership checked in {d.evidence_source} at {to_iso(d.evidence_checked_at)}"
            f"{reason}"
        )
    if evidence.approved_at is not None:
        lines.append(f"Quorum met at {to_iso(evidence.approved_at)}")
    else:
        lines.append("Quorum not met")
    if evidence.grant is not None:
        g = evidence.grant
        lines.append(
            f"Grant {g.grant_id} issued {to_iso(g.issued_at)}, valid until {to_iso(g.expires_at)}"
        )
    if evidence.cst_scope_hash_b64u is not None:
        lines.append(f"Job token scope hash {evidence.cst_scope_hash_b64u}")
    for gate in evidence.gate_passes:
        lines.append(f"Gate passed at {to_iso(gate.timestamp)} with the approved payload")
    for gate in evidence.gate_denials:
        lines.append(
            f"Gate denied at {to_iso(gate.timestamp)}: {gate.details.get('reason_code', '?')}"
        )
    reason = f" ({r.final_reason})" if r.final_reason else ""
    changed = to_iso(r.state_changed_at) if r.state_changed_at is not None else "an unknown time"
    lines.append(f"Final state: {r.state} at {changed}{reason}")
    indexes = [i for i, _ in evidence.receipts]
    cp = evidence.checkpoint
    lines.append(
        f"Log: {len(indexes)} receipts (#{indexes[0]}–#{indexes[-1]}) included in "
        f"{cp.origin} checkpoint of size {cp.size}"
    )
    return {"outcome": str(r.state), "lines": lines}
