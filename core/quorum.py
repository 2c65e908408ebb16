"""Who may decide a request, and when enough people have.

Rules (seed 000 and 001, CARDS.md refusals):

* one person counts once: people are identified by directory object id, so the same
  person clicking in Slack and in Teams is one decision;
* the requester and the person an agent acts for never count;
* eligibility evidence (group membership, PIM activation, account state) comes from
  the directory *at decision time* and must be fresh;
* every ``one_from_each`` group must be covered by a different person (a bipartite
  matching, not a head count), and at least ``min_approvers`` distinct people approve;
* an approval that does not bring the request closer to quorum (its groups are
  already covered) is refused, so nobody believes they made a difference they did not;
* a deny by an eligible approver ends the request.

:func:`judge` raises :class:`~core.errors.ApprovalRefusedError` or returns an
:class:`ApproverDecision`; :func:`apply` folds it into the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from core import canonical
from core.errors import ApprovalRefusedError, IllegalTransitionError
from core.identity import Eligibility
from core.policy import ApprovalRequirement, Group
from core.requests import ApprovalRequest, RequestState
from core.times import require_aware, to_iso

#: Directory evidence older than this is not evidence "at decision time".
DEFAULT_MAX_EVIDENCE_AGE = timedelta(seconds=120)


class Verdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class ApproverDecision:
    """One person's decision on one request hash, with the evidence it rests on."""

    request_id: str
    request_hash_b64u: str
    approver_id: str
    approver_name: str
    verdict: Verdict
    decided_at: datetime
    groups: tuple[str, ...]  # policy group keys the person was confirmed in (eligible ones only)
    evidence_checked_at: datetime
    evidence_source: str
    platform: str
    reason: str | None = None
    pim_active_until: Mapping[str, str | None] | None = None

    def __post_init__(self) -> None:
        require_aware(self.decided_at)
        if self.verdict is Verdict.DENY and not (self.reason and self.reason.strip()):
            raise ValueError("a deny needs a reason")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "decision_version": "1",
            "request_id": self.request_id,
            "request_hash_b64u": self.request_hash_b64u,
            "approver_id": self.approver_id,
            "approver_name": self.approver_name,
            "verdict": str(self.verdict),
            "decided_at": to_iso(self.decided_at),
            "groups": list(self.groups),
            "evidence_checked_at": to_iso(self.evidence_checked_at),
            "evidence_source": self.evidence_source,
            "platform": self.platform,
        }
        if self.reason is not None:
            data["reason"] = self.reason
        if self.pim_active_until is not None:
            data["pim_active_until"] = dict(self.pim_active_until)
        return data

    @property
    def decision_hash_b64u(self) -> str:
        return canonical.jcs_sha256_b64u(self.to_json())


@dataclass(frozen=True, slots=True)
class RequirementProgress:
    """How far one requirement is from being met, for cards and refusals."""

    requirement: ApprovalRequirement
    approvers: tuple[str, ...]  # object ids counted
    covered_groups: Mapping[str, str]  # group key → approver id covering it
    missing_groups: tuple[str, ...]
    remaining: int  # people still needed at best

    @property
    def met(self) -> bool:
        return self.remaining == 0


@dataclass(frozen=True, slots=True)
class Progress:
    requirements: tuple[RequirementProgress, ...]

    @property
    def met(self) -> bool:
        return all(r.met for r in self.requirements)

    @property
    def approvals(self) -> int:
        return len({a for r in self.requirements for a in r.approvers})

    @property
    def needed(self) -> int:
        return max(r.requirement.needed for r in self.requirements)


def _groups_for(
    requirement: ApprovalRequirement,
    eligibility: Eligibility,
    groups: Mapping[str, Group],
    *,
    now: datetime,
) -> tuple[frozenset[str], frozenset[str]]:
    """(group keys the person counts in, group keys where only PIM activation is missing)."""
    counted: set[str] = set()
    pim_missing: set[str] = set()
    for key in requirement.eligible_groups:
        group = groups.get(key)
        if group is None or group.directory_id not in eligibility.member_of:
            continue
        if requirement.require_pim == "required":
            if (
                not eligibility.pim_checked
                or group.directory_id not in eligibility.pim_active_until
            ):
                pim_missing.add(key)
                continue
            until = eligibility.pim_active_until[group.directory_id]
            if until is not None and require_aware(until) <= now:
                pim_missing.add(key)
                continue
        counted.add(key)
    return frozenset(counted), frozenset(pim_missing)


def _max_matching(
    constraint_groups: Sequence[str], people: Mapping[str, frozenset[str]]
) -> dict[str, str]:
    """Largest assignment of distinct people to constraint groups (Kuhn's augmenting paths).

    Returns group key → person id. Sizes are tiny (a handful of groups and people).
    """
    owner: dict[str, str] = {}  # group → person

    def augment(person: str, seen: set[str]) -> bool:
        for group in constraint_groups:
            if group in people[person] and group not in seen:
                seen.add(group)
                if group not in owner or augment(owner[group], seen):
                    owner[group] = person
                    return True
        return False

    for person in sorted(people):
        augment(person, set())
    return owner


def requirement_progress(
    requirement: ApprovalRequirement, approvals: Iterable[ApproverDecision]
) -> RequirementProgress:
    """Progress of one requirement given the approvals recorded so far."""
    people: dict[str, frozenset[str]] = {}
    for decision in approvals:
        if decision.verdict is not Verdict.APPROVE:
            continue
        counted = frozenset(decision.groups) & frozenset(requirement.eligible_groups)
        if counted:
            people[decision.approver_id] = counted
    matching = _max_matching(requirement.one_from_each, people)
    missing = tuple(g for g in requirement.one_from_each if g not in matching)
    remaining = max(len(missing), requirement.min_approvers - len(people), 0)
    return RequirementProgress(
        requirement=requirement,
        approvers=tuple(sorted(people)),
        covered_groups=dict(matching),
        missing_groups=missing,
        remaining=remaining,
    )


def progress(
    request: ApprovalRequest, decisions: Iterable[ApproverDecision] | None = None
) -> Progress:
    """Quorum progress of ``request`` (for display; never a gate by itself)."""
    recorded = tuple(decisions) if decisions is not None else ()
    return Progress(tuple(requirement_progress(r, recorded) for r in request.requirements))


def quorum_met(request: ApprovalRequest, decisions: Iterable[ApproverDecision]) -> bool:
    """True when every requirement of ``request`` is met by approvals for its request hash."""
    bound = [d for d in decisions if d.request_hash_b64u == request.request_hash_b64u]
    return progress(request, bound).met


def judge(
    request: ApprovalRequest,
    decisions: Sequence[ApproverDecision],
    eligibility: Eligibility,
    verdict: Verdict,
    *,
    groups: Mapping[str, Group],
    now: datetime,
    platform: str,
    reason: str | None = None,
    typed_confirmation: str | None = None,
    max_evidence_age: timedelta = DEFAULT_MAX_EVIDENCE_AGE,
) -> ApproverDecision:
    """Decide whether this person's click counts, and build their decision.

    Args:
        request: the request as currently stored.
        decisions: the decisions already recorded for it.
        eligibility: fresh directory evidence for the person clicking.
        groups: the policy's groups (key → directory group).
        typed_confirmation: for critical requirements, the last 4 characters of the
            payload hash as the approver typed them.

    Raises:
        ApprovalRefusedError: REQUEST_NOT_PENDING, REQUEST_EXPIRED,
            REQUESTER_CANNOT_APPROVE, ALREADY_DECIDED, STALE_ELIGIBILITY,
            ACCOUNT_DISABLED, GUEST_NOT_ALLOWED, APPROVER_NOT_IN_GROUP, PIM_NOT_ACTIVE,
            GROUP_ALREADY_COVERED, DENY_REASON_REQUIRED, CONFIRMATION_REQUIRED,
            CONFIRMATION_MISMATCH. Nothing is recorded when it raises.
    """
    now = require_aware(now)
    person = eligibility.object_id
    if request.state is not RequestState.PENDING:
        raise ApprovalRefusedError(
            "REQUEST_NOT_PENDING", f"This request is no longer pending ({request.state})."
        )
    if now >= request.binding.expires_at:
        raise ApprovalRefusedError("REQUEST_EXPIRED", "This request has expired; nothing can run.")
    if person in request.independent_of:
        raise ApprovalRefusedError(
            "REQUESTER_CANNOT_APPROVE",
            "You requested this (or the agent acts for you), so you can't decide it. "
            "Two different people must.",
        )
    earlier = next((d for d in decisions if d.approver_id == person), None)
    if earlier is not None:
        raise ApprovalRefusedError(
            "ALREADY_DECIDED",
            f"You already {'approved' if earlier.verdict is Verdict.APPROVE else 'denied'} this "
            f"request ({to_iso(earlier.decided_at)}); one person counts once, on any platform.",
        )
    checked_at = require_aware(eligibility.checked_at)
    if checked_at > now + timedelta(seconds=5) or now - checked_at > max_evidence_age:
        raise ApprovalRefusedError(
            "STALE_ELIGIBILITY",
            "Your group membership was not confirmed at decision time; please try again.",
        )
    if not eligibility.enabled:
        raise ApprovalRefusedError("ACCOUNT_DISABLED", "Your directory account is disabled.")
    if eligibility.is_guest and not all(r.allow_guests for r in request.requirements):
        raise ApprovalRefusedError(
            "GUEST_NOT_ALLOWED", "Guest accounts may not approve this request."
        )

    counted: dict[str, frozenset[str]] = {}
    pim_missing: set[str] = set()
    for requirement in request.requirements:
        keys, missing = _groups_for(requirement, eligibility, groups, now=now)
        counted[requirement.name] = keys
        pim_missing |= missing
    all_counted = frozenset().union(*counted.values())
    if not all_counted:
        if pim_missing:
            raise ApprovalRefusedError(
                "PIM_NOT_ACTIVE",
                "You are eligible through PIM but have no active assignment for "
                f"{_names(sorted(pim_missing), groups)}; activate it and try again.",
            )
        wanted = sorted({g for r in request.requirements for g in r.eligible_groups})
        raise ApprovalRefusedError(
            "APPROVER_NOT_IN_GROUP",
            f"You're not in {_names(wanted, groups, joiner=' or ')} "
            f"(checked in {eligibility.source} at {to_iso(checked_at)}).",
        )

    if verdict is Verdict.DENY:
        if not (reason and reason.strip()):
            raise ApprovalRefusedError("DENY_REASON_REQUIRED", "Please give a reason to deny.")
    else:
        _check_confirmation(request, typed_confirmation)
        _check_useful(request, decisions, person, counted, groups)

    pim = None
    if eligibility.pim_checked:
        pim = {
            gid: (to_iso(until) if until is not None else None)
            for gid, until in eligibility.pim_active_until.items()
        }
    return ApproverDecision(
        request_id=request.request_id,
        request_hash_b64u=request.request_hash_b64u,
        approver_id=person,
        approver_name=eligibility.display_name,
        verdict=verdict,
        decided_at=now,
        groups=tuple(sorted(all_counted)),
        evidence_checked_at=checked_at,
        evidence_source=eligibility.source,
        platform=platform,
        reason=reason.strip() if reason else None,
        pim_active_until=pim,
    )


def _check_confirmation(request: ApprovalRequest, typed: str | None) -> None:
    if not any(r.critical for r in request.requirements):
        return
    expected = request.binding.payload_hash_b64u[-4:]
    if not typed:
        raise ApprovalRefusedError(
            "CONFIRMATION_REQUIRED",
            "This route is critical: type the last 4 characters of the payload hash to approve.",
        )
    if not canonical.digests_equal(typed.strip(), expected):
        raise ApprovalRefusedError(
            "CONFIRMATION_MISMATCH",
            "The characters you typed do not match the payload hash; nothing was recorded.",
        )


def _check_useful(
    request: ApprovalRequest,
    decisions: Sequence[ApproverDecision],
    person: str,
    counted: Mapping[str, frozenset[str]],
    groups: Mapping[str, Group],
) -> None:
    """Refuse an approval that brings no requirement closer to quorum."""
    approvals = [d for d in decisions if d.verdict is Verdict.APPROVE]
    for requirement in request.requirements:
        keys = counted[requirement.name]
        if not keys:
            continue
        before = requirement_progress(requirement, approvals)
        trial = (
            replace(approvals[0], approver_id=person, groups=tuple(sorted(keys)))
            if approvals
            else None
        )
        if trial is None:
            return  # the first eligible approval always counts
        after = requirement_progress(requirement, [*approvals, trial])
        if after.remaining < before.remaining:
            return
    covered = [
        f"{_names([g], groups)} is already covered by {_approver_name(decisions, who)}"
        for p in (requirement_progress(r, approvals) for r in request.requirements)
        for g, who in p.covered_groups.items()
        if any(g in counted[r.name] for r in request.requirements)
    ]
    still = sorted(
        {g for r in request.requirements for g in requirement_progress(r, approvals).missing_groups}
    )
    text = "; ".join(covered) or "Your groups are already covered"
    if still:
        text += f"; this request still needs someone from {_names(still, groups, joiner=' or ')}"
    raise ApprovalRefusedError("GROUP_ALREADY_COVERED", text + ".")


def _approver_name(decisions: Sequence[ApproverDecision], person: str) -> str:
    return next((d.approver_name for d in decisions if d.approver_id == person), person)


def _names(keys: Sequence[str], groups: Mapping[str, Group], *, joiner: str = ", ") -> str:
    return joiner.join(groups[k].display_name if k in groups else k for k in keys)


def apply(
    request: ApprovalRequest, decisions: Sequence[ApproverDecision], new: ApproverDecision
) -> ApprovalRequest:
    """The request after ``new`` is recorded: denied, approved, or still pending.

    Raises:
        IllegalTransitionError: the request is not pending.
        ValueError: ``new`` is for another request hash.
    """
    if new.request_hash_b64u != request.request_hash_b64u:
        raise ValueError("decision is bound to a different request hash")
    if request.state is not RequestState.PENDING:
        raise IllegalTransitionError(
            "ILLEGAL_TRANSITION", f"request {request.request_id} is {request.state}, not pending"
        )
    if new.verdict is Verdict.DENY:
        return request.transition(
            RequestState.DENIED,
            at=new.decided_at,
            reason=f"denied by {new.approver_name}: {new.reason}",
        )
    if quorum_met(request, [*decisions, new]) and new.decided_at < request.binding.expires_at:
        return request.transition(RequestState.APPROVED, at=new.decided_at)
    return request


def expire_if_due(request: ApprovalRequest, *, now: datetime) -> ApprovalRequest:
    """A pending request past its deadline becomes EXPIRED; anything else is unchanged."""
    if request.state is RequestState.PENDING and require_aware(now) >= request.binding.expires_at:
        return request.transition(RequestState.EXPIRED, at=now, reason="deadline passed")
    return request
