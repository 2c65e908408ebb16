"""Executors: the pure half of "an approved action that actually happens, and undoes itself".

An executor performs one approved call against the outside world (Entra PIM, a signed
webhook) in four steps, each of which keyturn receipts::

    execute ──▶ verify                (a read that confirms the change took effect)
    rollback ──▶ verify_rollback      (at window end or on the kill switch; confirms it is gone)

This module holds what needs no I/O:

* :class:`Executor` — the port adapters implement (async methods; core never awaits them);
* :class:`ExecutorBinding` / :class:`ExecutorRegistry` — which configured executor serves
  which route, built from configuration and checked against the policy's
  ``breakglass.executor``;
* :func:`check_target` — the policy, evaluated again for the exact parameters the executor
  will send, must still gate the call under the same executor (target constraints are
  the rule's ``constraints``), and the executor's own target check must pass — all
  before anything is sent;
* :class:`ExecutionState` and :func:`advance` — the execution state machine, folded from
  the ``executor_step`` receipts (:func:`fold`), so no table is needed;
* :class:`RetryPolicy` — which failures are retried and how long to wait.

Step outcomes are :class:`StepResult` values, not exceptions: the outside world's answer
is a fact to receipt (and to retry when transient), not a security decision; the
decisions themselves (:func:`check_target`, :func:`advance`) raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from core.errors import GateDeniedError, IllegalTransitionError, PolicyError
from core.policy import BreakglassTerms, Outcome, Policy, ToolCall
from core.policy.model import is_key, is_route
from core.times import require_aware

#: The receipt detail ``step`` values, in the order they normally happen.
STEPS = ("execute", "verify", "rollback", "verify_rollback", "resolve")
#: HTTP statuses that say "try again later", never "no" (RFC 9110 §15.6, Graph throttling).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_DETAIL = 300


class ExecutionState(StrEnum):
    """Where one request's execution stands (folded from its receipts)."""

    NOT_STARTED = "not_started"
    EXECUTE_FAILED = "execute_failed"
    EXECUTED = "executed"
    VERIFIED = "verified"
    VERIFY_FAILED = "verify_failed"
    ROLLBACK_SENT = "rollback_sent"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    RESOLVED = "resolved"


S = ExecutionState
#: (state before, step) → (state on success, state on failure). Anything else is illegal.
_MACHINE: Mapping[tuple[ExecutionState, str], tuple[ExecutionState, ExecutionState]] = {
    (S.NOT_STARTED, "execute"): (S.EXECUTED, S.EXECUTE_FAILED),
    (S.EXECUTED, "verify"): (S.VERIFIED, S.VERIFY_FAILED),
    # Rollback is allowed from every state in which something may have happened: an
    # execute that timed out may still have landed, so "failed" is rolled back too.
    (S.EXECUTED, "rollback"): (S.ROLLBACK_SENT, S.ROLLBACK_FAILED),
    (S.VERIFIED, "rollback"): (S.ROLLBACK_SENT, S.ROLLBACK_FAILED),
    (S.VERIFY_FAILED, "rollback"): (S.ROLLBACK_SENT, S.ROLLBACK_FAILED),
    (S.EXECUTE_FAILED, "rollback"): (S.ROLLBACK_SENT, S.ROLLBACK_FAILED),
    (S.ROLLBACK_FAILED, "rollback"): (S.ROLLBACK_SENT, S.ROLLBACK_FAILED),
    (S.ROLLBACK_SENT, "verify_rollback"): (S.ROLLED_BACK, S.ROLLBACK_FAILED),
    # Only a person clears a failure, with a receipt; a failed resolve changes nothing.
    (S.VERIFY_FAILED, "resolve"): (S.RESOLVED, S.VERIFY_FAILED),
    (S.ROLLBACK_FAILED, "resolve"): (S.RESOLVED, S.ROLLBACK_FAILED),
    (S.EXECUTE_FAILED, "resolve"): (S.RESOLVED, S.EXECUTE_FAILED),
}
#: States that page the security feed and stay visible until someone resolves them.
ALERTING = frozenset({S.EXECUTE_FAILED, S.VERIFY_FAILED, S.ROLLBACK_FAILED})
#: States from which the window's end (or the kill switch) must roll back.
NEEDS_ROLLBACK = frozenset(
    {S.EXECUTED, S.VERIFIED, S.VERIFY_FAILED, S.EXECUTE_FAILED, S.ROLLBACK_FAILED}
)


def advance(state: ExecutionState, step: str, *, ok: bool) -> ExecutionState:
    """The state after ``step`` ended (``ok`` or not) in ``state``.

    Raises:
        IllegalTransitionError: the step cannot happen in this state (e.g. a second
            execute, or a verify before anything was executed).
    """
    try:
        success, failure = _MACHINE[(state, step)]
    except KeyError:
        raise IllegalTransitionError(
            "ILLEGAL_TRANSITION", f"an execution that is {state} cannot {step}"
        ) from None
    return success if ok else failure


@dataclass(frozen=True, slots=True)
class Action:
    """One approved call, exactly as the executor will send it.

    ``params`` are the request's parameters — the same mapping the gate hashed.
    ``reference`` is what a previous execute reported (assignment ids, the call id),
    so a rollback can name what it undoes; empty before the first execute.

    Raises:
        ValueError: a malformed route, an empty id, or a window end that is not aware.
    """

    request_id: str
    route: str
    params: Mapping[str, Any]
    grant: Mapping[str, Any]
    window_closes_at: datetime
    justification: str = ""
    reference: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_route(self.route):
            raise ValueError(f"{self.route!r} is not a tool route")
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError("an action names its request")
        require_aware(self.window_closes_at)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "reference", dict(self.reference))


@dataclass(frozen=True, slots=True)
class StepResult:
    """What the outside world answered to one step.

    ``transient`` is only meaningful when not ``ok``: True for "try again later" (5xx,
    429, timeouts), False for a definitive "no" (any other 4xx), which is never retried.
    ``retry_after`` is the server's requested wait in seconds, when it sent one.
    """

    ok: bool
    detail: str
    transient: bool = False
    status: int | None = None
    reference: Mapping[str, str] = field(default_factory=dict)
    retry_after: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", " ".join(str(self.detail).split())[:MAX_DETAIL])
        object.__setattr__(self, "reference", {str(k): str(v) for k, v in self.reference.items()})
        if self.ok and self.transient:
            raise ValueError("a successful step is not transient")

    @classmethod
    def from_status(
        cls, status: int | None, detail: str, *, reference: Mapping[str, str] | None = None
    ) -> StepResult:
        """A result from an HTTP status (``None`` = no answer: timeout, connection error)."""
        ok = status is not None and 200 <= status < 300
        transient = not ok and (status is None or status in TRANSIENT_STATUSES)
        return cls(ok, detail, transient=transient, status=status, reference=reference or {})


class Executor(Protocol):
    """The port: one executor kind (``webhook``, ``entra.role.assign``…).

    Implementations never raise for an answer of the outside world: they return a
    :class:`StepResult` (``transient`` for retryable failures). ``check_target`` is
    pure and raises before anything is sent.
    """

    @property
    def kind(self) -> str: ...

    def check_target(self, action: Action) -> None:
        """Raises ``GateDeniedError`` (``TARGET_NOT_ALLOWED``) for a target it must not touch."""
        ...

    async def execute(self, action: Action) -> StepResult: ...

    async def verify(self, action: Action) -> StepResult: ...

    async def rollback(self, action: Action) -> StepResult: ...

    async def verify_rollback(self, action: Action) -> StepResult: ...


@dataclass(frozen=True, slots=True)
class ActiveAssignment:
    """Someone holds a watched target now (reconciliation reads these).

    ``target_id`` is the role definition or group object id, ``principal_id`` the
    holder's object id (both lower-case); ``ends_at`` is ``None`` for a permanent one.
    """

    target_id: str
    principal_id: str
    ends_at: datetime | None
    assignment_type: str = ""

    def __post_init__(self) -> None:
        if not self.target_id or not self.principal_id:
            raise ValueError("an assignment names its target and its holder")
        if self.ends_at is not None:
            require_aware(self.ends_at)


class AssignmentLister(Protocol):
    """An executor that can also say who holds one of its targets (Entra PIM kinds)."""

    @property
    def kind(self) -> str: ...

    async def list_active(self, target_id: str, *, now: datetime) -> Sequence[ActiveAssignment]:
        """Every assignment of ``target_id`` that has not ended at ``now``.

        Raises ``DirectoryError`` when the outside world cannot be read.
        """
        ...


@dataclass(frozen=True, slots=True)
class ExecutorBinding:
    """One configured executor: its name (what the policy's ``breakglass.executor`` says),
    the kind of adapter that runs it, the routes it may run, and its options.

    Raises:
        PolicyError: ``EXECUTOR_CONFIG_INVALID`` for a bad name, kind or route list.
    """

    name: str
    kind: str
    routes: frozenset[str]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_route(self.name):
            raise _config(f"executor name {self.name!r} is not a route-like name")
        if not is_key(self.kind):
            raise _config(f"executors.{self.name}.kind {self.kind!r} is not a valid kind")
        routes: object = self.routes
        if not isinstance(routes, frozenset) or not all(is_route(r) for r in routes):
            raise _config(f"executors.{self.name}.routes must be a set of tool routes")
        if not self.routes:
            raise _config(f"executors.{self.name}.routes must name at least one route")
        object.__setattr__(self, "options", dict(self.options))


def _config(message: str) -> PolicyError:
    return PolicyError("EXECUTOR_CONFIG_INVALID", message)


@dataclass(frozen=True, slots=True)
class ExecutorRegistry:
    """Routes → executors, from configuration. Unknown is no: nothing runs unbound."""

    bindings: Mapping[str, ExecutorBinding]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ExecutorRegistry:
        """Build from ``{name: {"kind": …, "routes": [...], **options}}``.

        ``routes`` defaults to ``[name]`` (the executor named after the route it runs).

        Raises:
            PolicyError: ``EXECUTOR_CONFIG_INVALID``.
        """
        if not isinstance(config, Mapping):
            raise _config("executors must be a mapping of name to settings")
        bindings: dict[str, ExecutorBinding] = {}
        for name, spec in config.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
                raise _config(f"executors.{name} must be a mapping with a kind")
            routes = spec.get("routes", [name])
            if not isinstance(routes, list | tuple):
                raise _config(f"executors.{name}.routes must be a list")
            options = {k: v for k, v in spec.items() if k not in ("kind", "routes")}
            bindings[name] = ExecutorBinding(name, spec["kind"], frozenset(routes), options)
        return cls(bindings)

    def binding_for(self, route: str, terms: BreakglassTerms | None) -> ExecutorBinding:
        """The binding that runs ``route``, as the policy names it.

        Raises:
            GateDeniedError: ``NO_EXECUTOR`` when the policy names no executor for the
                route, names one that is not configured, or one not bound to the route.
        """
        name = terms.executor if terms is not None else None
        if name is None:
            raise GateDeniedError(
                "NO_EXECUTOR", f"the policy does not say keyturn executes {route}"
            )
        binding = self.bindings.get(name)
        if binding is None:
            raise GateDeniedError(
                "NO_EXECUTOR", f"the policy names executor {name}, which is not configured"
            )
        if route not in binding.routes:
            raise GateDeniedError("NO_EXECUTOR", f"executor {name} is not bound to {route}")
        return binding


def check_target(
    policy: Policy,
    *,
    route: str,
    params: Mapping[str, Any],
    requester: str,
    context: Mapping[str, Any],
    binding: ExecutorBinding,
    executor: Executor,
    action: Action,
    breakglass: bool,
) -> None:
    """Refuse, before anything is sent, a call outside the policy's target constraints.

    The policy is evaluated again for the exact parameters the executor will send; it
    must still gate them (a constraint failure is ``DENIED``) under the same executor;
    then the executor's own target check runs (e.g. the tenant it is configured for).

    Raises:
        GateDeniedError: ``CONSTRAINT_VIOLATED`` (or the policy's denial code),
            ``NO_EXECUTOR``, ``EXECUTOR_KIND_MISMATCH``, or the executor's
            ``TARGET_NOT_ALLOWED``.
    """
    decision = policy.evaluate(
        ToolCall(
            route=route,
            params=dict(params),
            requester=requester,
            context=dict(context),
            breakglass=breakglass,
        )
    )
    if decision.outcome is Outcome.DENIED:
        code = decision.reason_code if decision.reason_code != "DENIED_BY_RULE" else "POLICY_DENIED"
        raise GateDeniedError(code, decision.message)
    if decision.outcome is not Outcome.GATED:
        raise GateDeniedError("NO_EXECUTOR", f"{route} is not a gated route of the policy")
    if decision.breakglass is None or decision.breakglass.executor != binding.name:
        raise GateDeniedError(
            "NO_EXECUTOR", f"the policy does not name executor {binding.name} for {route}"
        )
    if executor.kind != binding.kind:
        raise GateDeniedError(
            "EXECUTOR_KIND_MISMATCH",
            f"executor {binding.name} is configured as {binding.kind}, not {executor.kind}",
        )
    if action.route != route or dict(action.params) != dict(params):
        raise GateDeniedError("PAYLOAD_HASH_MISMATCH", "the action differs from the checked call")
    executor.check_target(action)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for transient failures, capped; definitive failures never retry.

    Raises:
        ValueError: fewer than one attempt, or negative delays.
    """

    max_attempts: int = 5
    first_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.first_delay_seconds < 0 or self.max_delay_seconds < 0:
            raise ValueError("a retry policy needs at least one attempt and delays ≥ 0")

    def next_delay(self, attempt: int, result: StepResult) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to stop now."""
        if result.ok or not result.transient or attempt >= self.max_attempts:
            return None
        backoff = self.first_delay_seconds * 2 ** (attempt - 1)
        wanted = result.retry_after if result.retry_after is not None else backoff
        return min(max(wanted, 0.0), self.max_delay_seconds)


@dataclass(frozen=True, slots=True)
class ExecutionStatus:
    """One request's execution as its receipts tell it."""

    state: ExecutionState
    executor: str | None = None
    reference: Mapping[str, str] = field(default_factory=dict)
    last_detail: str = ""

    @property
    def alerting(self) -> bool:
        return self.state in ALERTING


def fold(steps: Sequence[Mapping[str, Any]]) -> ExecutionStatus:
    """Replay ``executor_step`` receipt details, in log order, through the machine.

    Raises:
        IllegalTransitionError: the receipts describe an impossible sequence (a log
            that was not written by keyturn's use cases).
    """
    status = ExecutionStatus(S.NOT_STARTED)
    for details in steps:
        step = str(details.get("step"))
        ok = details.get("outcome") == "ok"
        state = advance(status.state, step, ok=ok)
        ref = details.get("reference")
        reference = dict(status.reference)
        if step == "execute" and isinstance(ref, Mapping):
            reference = {str(k): str(v) for k, v in ref.items()}
        executor = details.get("executor")
        status = ExecutionStatus(
            state,
            executor=str(executor) if executor is not None else status.executor,
            reference=reference,
            last_detail=str(details.get("detail", "")),
        )
    return status
