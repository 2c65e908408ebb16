"""Frozen values the policy engine hands out: calls in, decisions out.

Every value checks its invariants when it is built, so a policy that would need an
impossible quorum, an unbound approval or a renewable break-glass window never exists
as an object: it is refused with :class:`~core.errors.PolicyError` (``POLICY_INVALID``)
at construction. A :class:`ToolCall` that is not well formed is refused with
``INVALID_CALL`` before it reaches a policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.errors import PolicyError

JSON = Any
"""A decoded JSON value (dict with str keys, list, str, int, float, bool or None)."""

#: The fields every approval must be bound to (seed 000's ``bind`` list); keyturn refuses
#: a requirement that leaves any of them out, since an approval not bound to its job,
#: policy, route, payload and deadline can be replayed.
REQUIRED_BINDINGS: tuple[str, ...] = (
    "job_id",
    "wpc_hash",
    "tool_route",
    "payload_hash",
    "expires_at",
)
#: Further fields a policy may ask to bind (all recorded in keyturn's request binding).
OPTIONAL_BINDINGS: tuple[str, ...] = (
    "plan_hash",
    "requester",
    "on_behalf_of",
    "cst_scope_hash",
)
PIM_MODES = frozenset({"required", "optional", "none"})
#: Events that close a break-glass window (seed 002's kill switch triggers).
KILL_SWITCH_TRIGGERS = frozenset(
    {"approval_revoked", "timebox_expired", "unexpected_target_detected", "manual_revoke"}
)
#: What keyturn does when a trigger fires (seed 002's ``on_trigger``).
KILL_SWITCH_ACTIONS = frozenset({"revoke_cst", "halt_job", "post_rollback"})
#: A quorum above this cannot be gathered in a chat card's lifetime; refusing it keeps a
#: typo (``min_approvers: 20``) from silently blocking a route forever.
MAX_APPROVERS = 16
MIN_TIMEOUT_SECONDS = 60
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_BREAKGLASS_SECONDS = 24 * 3600
MAX_ROUTE_LENGTH = 256

_KEY_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
_ROUTE_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.:/-]*\Z")


def invalid(message: str) -> PolicyError:
    """The one error for a malformed policy: ``POLICY_INVALID`` with a path-naming message."""
    return PolicyError("POLICY_INVALID", message)


# Routes already found well formed; checked first so a busy route costs one set lookup.
_GOOD_ROUTES: set[str] = set()


def is_route(text: object) -> bool:
    """True for a well-formed tool route: ``payments.transfer``, ``m365.graph.sendMail``."""
    return (
        isinstance(text, str)
        and 0 < len(text) <= MAX_ROUTE_LENGTH
        and _ROUTE_RE.match(text) is not None
        and ".." not in text
        and not text.endswith((".", "/"))
    )


def is_key(text: object) -> bool:
    """True for a group, approval or rule name (letters, digits, ``_ . : -``, ≤128)."""
    return isinstance(text, str) and _KEY_RE.match(text) is not None


class Outcome(StrEnum):
    """What the policy says about one exact call."""

    ALLOWED = "allowed"
    GATED = "gated"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One exact call an agent (or a person, for break-glass) asks to run.

    Raises:
        PolicyError: ``INVALID_CALL`` when a field has the wrong type or the route is
            not a well-formed tool route.
    """

    route: str
    params: Mapping[str, JSON]
    requester: str
    on_behalf_of: str | None = None
    context: Mapping[str, JSON] = field(default_factory=dict)
    resource: str | None = None
    prior_routes: frozenset[str] = frozenset()
    plan_hash: str | None = None
    breakglass: bool = False

    def __post_init__(self) -> None:
        if type(self.route) is not str or self.route not in _GOOD_ROUTES:
            if not is_route(self.route):
                raise PolicyError("INVALID_CALL", f"tool route {self.route!r} is not well formed")
            if len(_GOOD_ROUTES) < 4096:  # bounded: routes come from callers
                _GOOD_ROUTES.add(self.route)
        if type(self.params) is not dict and not isinstance(self.params, Mapping):
            raise PolicyError("INVALID_CALL", "params must be a JSON object")
        if not isinstance(self.requester, str) or not self.requester:
            raise PolicyError("INVALID_CALL", "requester must be a non-empty string")
        if self.on_behalf_of is not None and (
            not isinstance(self.on_behalf_of, str) or not self.on_behalf_of
        ):
            raise PolicyError("INVALID_CALL", "on_behalf_of must be a non-empty string or null")
        if type(self.context) is not dict and not isinstance(self.context, Mapping):
            raise PolicyError("INVALID_CALL", "context must be a JSON object")
        if self.resource is not None and not isinstance(self.resource, str):
            raise PolicyError("INVALID_CALL", "resource must be a string or null")
        prior: object = self.prior_routes
        if not isinstance(prior, frozenset):
            # Accept any iterable of routes from callers, but store the frozen form.
            if isinstance(prior, str | bytes) or not isinstance(prior, Iterable):
                raise PolicyError("INVALID_CALL", "prior_routes must be a set of routes")
            object.__setattr__(self, "prior_routes", frozenset(prior))
        if self.prior_routes and not all(isinstance(r, str) for r in self.prior_routes):
            raise PolicyError("INVALID_CALL", "prior_routes must hold route strings")
        if self.plan_hash is not None and (
            not isinstance(self.plan_hash, str) or not self.plan_hash
        ):
            raise PolicyError("INVALID_CALL", "plan_hash must be a non-empty string or null")
        if not isinstance(self.breakglass, bool):
            raise PolicyError("INVALID_CALL", "breakglass must be true or false")


@dataclass(frozen=True, slots=True)
class Group:
    """A directory group a policy names as approvers.

    Raises:
        PolicyError: ``POLICY_INVALID`` for an empty key, id or display name.
    """

    key: str
    directory_id: str
    display_name: str

    def __post_init__(self) -> None:
        if not is_key(self.key):
            raise invalid(f"groups: {self.key!r} is not a valid group key")
        if not isinstance(self.directory_id, str) or not self.directory_id.strip():
            raise invalid(f"groups.{self.key}.directory_id must not be empty")
        if not isinstance(self.display_name, str) or not self.display_name.strip():
            raise invalid(f"groups.{self.key}.display_name must not be empty")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """Who must approve a gated call, how many, and what the approval is bound to.

    Raises:
        PolicyError: ``POLICY_INVALID`` for no approver groups, ``min_approvers < 1``,
            a two-person requirement with fewer than two approvers, a quorum above
            :data:`MAX_APPROVERS`, a group named twice, an unknown PIM mode, a timeout
            outside one minute to seven days, or a ``bind`` list that misses one of
            :data:`REQUIRED_BINDINGS` or names an unknown field.
    """

    name: str
    min_approvers: int
    allowed_groups: tuple[str, ...]
    one_from_each: tuple[str, ...]
    require_pim: str
    allow_guests: bool
    timeout_seconds: int
    reminder_every_seconds: int | None
    critical: bool
    bind: tuple[str, ...]
    two_person: bool = False
    independent_of_requester: bool = True
    identity_provider: str = "entra_id"

    def __post_init__(self) -> None:
        where = f"approvals.{self.name}"
        if not is_key(self.name):
            raise invalid(f"approvals: {self.name!r} is not a valid requirement name")
        if not _int(self.min_approvers) or self.min_approvers < 1:
            raise invalid(f"{where}.min_approvers must be an integer of at least 1")
        if self.two_person and self.min_approvers < 2:
            raise invalid(f"{where}: a two-person requirement needs min_approvers of at least 2")
        if not self.independent_of_requester:
            raise invalid(f"{where}.independent_of_requester cannot be false in keyturn")
        for label, keys in (
            ("allowed_groups", self.allowed_groups),
            ("one_from_each", self.one_from_each),
        ):
            if not isinstance(keys, tuple) or not all(is_key(k) for k in keys):
                raise invalid(f"{where}.{label} must be a list of group keys")
            if len(set(keys)) != len(keys):
                raise invalid(f"{where}.{label} names a group twice")
        if not self.allowed_groups and not self.one_from_each:
            raise invalid(
                f"{where}: no approver groups (allowed_groups and one_from_each are empty)"
            )
        if self.needed > MAX_APPROVERS:
            raise invalid(
                f"{where}: a quorum of {self.needed} is larger than keyturn allows "
                f"({MAX_APPROVERS})"
            )
        if self.require_pim not in PIM_MODES:
            raise invalid(f"{where}.require_pim must be one of {sorted(PIM_MODES)}")
        if not _int(self.timeout_seconds) or not (
            MIN_TIMEOUT_SECONDS <= self.timeout_seconds <= MAX_TIMEOUT_SECONDS
        ):
            raise invalid(f"{where}.timeout_seconds must be between 60 and {MAX_TIMEOUT_SECONDS}")
        if self.reminder_every_seconds is not None and (
            not _int(self.reminder_every_seconds)
            or not 60 <= self.reminder_every_seconds < self.timeout_seconds
        ):
            raise invalid(
                f"{where}.reminder_every_seconds must be at least 60 and below the timeout"
            )
        missing = [b for b in REQUIRED_BINDINGS if b not in self.bind]
        if missing:
            raise invalid(f"{where}.bind must include {', '.join(missing)}")
        unknown = [b for b in self.bind if b not in REQUIRED_BINDINGS + OPTIONAL_BINDINGS]
        if unknown:
            raise invalid(f"{where}.bind names unknown fields: {', '.join(unknown)}")
        if len(set(self.bind)) != len(self.bind):
            raise invalid(f"{where}.bind names a field twice")
        if self.identity_provider not in ("entra_id", "static_directory"):
            raise invalid(f"{where}.identity_provider must be entra_id or static_directory")

    @property
    def eligible_groups(self) -> tuple[str, ...]:
        """``allowed_groups`` ∪ ``one_from_each``, first-seen order kept."""
        return tuple(dict.fromkeys(self.allowed_groups + self.one_from_each))

    @property
    def needed(self) -> int:
        """Distinct people needed: ``max(min_approvers, len(one_from_each))``."""
        return max(self.min_approvers, len(self.one_from_each))

    def to_json(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "min_approvers": self.min_approvers,
            "needed": self.needed,
            "two_person": self.two_person,
            "allowed_groups": list(self.allowed_groups),
            "one_from_each": list(self.one_from_each),
            "require_pim": self.require_pim,
            "allow_guests": self.allow_guests,
            "timeout_seconds": self.timeout_seconds,
            "reminder_every_seconds": self.reminder_every_seconds,
            "critical": self.critical,
            "bind": list(self.bind),
            "independent_of_requester": self.independent_of_requester,
            "identity_provider": self.identity_provider,
        }


@dataclass(frozen=True, slots=True)
class BreakglassTerms:
    """The time box, rollback and kill switch of a break-glass route (seed 002).

    Raises:
        PolicyError: ``POLICY_INVALID`` when the token outlives the window, renewal
            without re-approval is asked for, the window is not between one minute and
            a day, or a trigger, action or rollback step is unknown or empty.
    """

    max_duration_seconds: int
    token_ttl_seconds: int
    renewable_without_reapproval: bool
    rollback_steps: tuple[str, ...]
    kill_switch_triggers: tuple[str, ...]
    executor: str | None
    kill_switch_actions: tuple[str, ...] = ("revoke_cst", "halt_job")

    def __post_init__(self) -> None:
        if not _int(self.max_duration_seconds) or not (
            60 <= self.max_duration_seconds <= MAX_BREAKGLASS_SECONDS
        ):
            raise invalid("breakglass.max_duration_seconds must be between 60 and 86400")
        if not _int(self.token_ttl_seconds) or self.token_ttl_seconds < 60:
            raise invalid("breakglass.token_ttl_seconds must be an integer of at least 60")
        if self.token_ttl_seconds > self.max_duration_seconds:
            raise invalid("breakglass.token_ttl_seconds must not exceed max_duration_seconds")
        if self.renewable_without_reapproval is not False:
            raise invalid(
                "breakglass.renewable_without_reapproval must be false: "
                "a renewal needs the same approvals as the original request"
            )
        if not all(isinstance(s, str) and s.strip() for s in self.rollback_steps):
            raise invalid("breakglass.rollback_steps must be non-empty strings")
        unknown = [t for t in self.kill_switch_triggers if t not in KILL_SWITCH_TRIGGERS]
        if unknown:
            raise invalid(f"breakglass.kill_switch_triggers: unknown trigger(s) {unknown}")
        if "timebox_expired" not in self.kill_switch_triggers:
            # The window closing is what makes a privilege temporary; it cannot be opted out of.
            raise invalid("breakglass.kill_switch_triggers must include timebox_expired")
        bad = [a for a in self.kill_switch_actions if a not in KILL_SWITCH_ACTIONS]
        if bad or "revoke_cst" not in self.kill_switch_actions:
            raise invalid(
                "breakglass.kill_switch_actions must include revoke_cst and only known actions"
            )
        if self.executor is not None and not is_route(self.executor):
            raise invalid(f"breakglass.executor {self.executor!r} is not a tool route")

    def to_json(self) -> dict[str, JSON]:
        return {
            "max_duration_seconds": self.max_duration_seconds,
            "token_ttl_seconds": self.token_ttl_seconds,
            "renewable_without_reapproval": self.renewable_without_reapproval,
            "rollback_steps": list(self.rollback_steps),
            "kill_switch_triggers": list(self.kill_switch_triggers),
            "kill_switch_actions": list(self.kill_switch_actions),
            "executor": self.executor,
        }


@dataclass(frozen=True, slots=True)
class TokenRequirements:
    """What a scoped token (CST) for a job under this policy must carry."""

    cst_max_ttl_seconds: int = 900
    scope_hash_required: bool = True
    pin_wpc_hash: bool = True
    job_scoped_binding: bool = True

    def __post_init__(self) -> None:
        if not _int(self.cst_max_ttl_seconds) or not 60 <= self.cst_max_ttl_seconds <= 86400:
            raise invalid("token.cst_max_ttl_seconds must be between 60 and 86400")
        if not self.scope_hash_required or not self.job_scoped_binding:
            raise invalid("token: keyturn always requires a scope hash and a job-scoped binding")


@dataclass(frozen=True, slots=True)
class RuleRef:
    """The rule behind a decision, in words fit for the approval card."""

    rule_id: str
    description: str
    condition_text: str

    def to_json(self) -> dict[str, JSON]:
        return {
            "rule_id": self.rule_id,
            "description": self.description,
            "condition_text": self.condition_text,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one exact call, and why.

    Raises:
        ValueError: a GATED decision without requirements, or requirements on a
            decision that is not GATED (the engine never builds either).
    """

    outcome: Outcome
    reason_code: str
    message: str
    rules: tuple[RuleRef, ...]
    requirements: tuple[ApprovalRequirement, ...]
    breakglass: BreakglassTerms | None
    sensitive_params: frozenset[str]
    requires_plan_fingerprint: bool

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.GATED) != bool(self.requirements):
            raise ValueError("a decision has requirements if and only if it is GATED")

    def to_json(self) -> dict[str, JSON]:
        return {
            "outcome": self.outcome.value,
            "reason_code": self.reason_code,
            "message": self.message,
            "rules": [r.to_json() for r in self.rules],
            "requirements": [r.to_json() for r in self.requirements],
            "breakglass": self.breakglass.to_json() if self.breakglass else None,
            "sensitive_params": sorted(self.sensitive_params),
            "requires_plan_fingerprint": self.requires_plan_fingerprint,
        }
