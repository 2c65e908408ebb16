"""Claw v2 WPC statements (IAM style), decided as keyturn decisions (allow/deny only).

A call maps onto a statement request as: action = the tool route, resource =
``call.resource``, context keys =

* built in (they cannot be overridden by ``call.context``): ``Tool:Name`` (route),
  ``Agent:DID`` (the requester when it is a DID), ``Request:Requester``,
  ``Request:OnBehalfOf``, ``Request:Resource``, ``Request:BreakGlass``
  ("true"/"false"), ``Request:HasHumanApproval`` (always "false": a policy decision is
  made before any approval exists), ``Param:<path>`` (a call parameter);
* otherwise the value of that key in ``call.context``.

Semantics: default deny; an explicit Deny wins over any Allow. Globs in ``actions``,
``resources`` and ``StringLike`` follow the Claw reference: ``*`` does not cross
``/``, ``**`` does, ``?`` is one character (see :mod:`core.policy.globs`).

Where keyturn differs from the reference, it is stricter, on purpose:

* a missing (or mistyped) context key makes a condition *unknown*, for every operator
  including the negated ones (the reference lets ``StringNotEquals`` /
  ``StringNotLike`` pass on a missing key). Unknown keeps an Allow from applying and
  lets a Deny apply: fail closed both ways;
* numbers are parsed strictly (``"500abc"`` is not 500) and ``Bool`` takes only
  true/false;

A call without a resource is matched as the empty resource ``""``: only ``*`` and
``**`` match it, so a statement scoped to particular resources neither allows nor
denies such a call (a resource-scoped Allow cannot vouch for a call that names no
resource; default deny then applies unless an unscoped statement allows it).
Callers that want resource-scoped Denies to bite must pass ``resource``.

``inherits`` (strict intersection with a parent policy) is refused at load: keyturn
has no parent to intersect with, and ignoring it would widen the policy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.policy.conditions import Tri, is_number, render
from core.policy.globs import VALUE_SEPARATORS, Glob
from core.policy.model import Decision, Outcome, RuleRef, ToolCall, invalid
from core.policy.paths import ABSENT, MISTYPED, getter, is_multi, parse_path
from core.policy.schema import ClawStatementModel

_NUMBER = re.compile(r"\A[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_CACHE_LIMIT = 4096
_OPS = {
    "StringEquals": "=",
    "StringNotEquals": "≠",
    "StringLike": "like",
    "StringNotLike": "not like",
    "NumericEquals": "=",
    "NumericLessThan": "<",
    "NumericGreaterThan": ">",
    "Bool": "is",
    "IpAddress": "in",
}


def _number(value: Any) -> float | int | None:
    if is_number(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        parsed = float(value)
        return parsed if parsed == parsed and abs(parsed) != float("inf") else None
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _key_getter(key: str, where: str) -> Callable[[ToolCall], Any]:
    builtin: dict[str, Callable[[ToolCall], Any]] = {
        "Tool:Name": lambda c: c.route,
        "Agent:DID": lambda c: c.requester if c.requester.startswith("did:") else ABSENT,
        "Request:Requester": lambda c: c.requester,
        "Request:OnBehalfOf": lambda c: c.on_behalf_of if c.on_behalf_of else ABSENT,
        "Request:Resource": lambda c: c.resource if c.resource is not None else ABSENT,
        "Request:BreakGlass": lambda c: "true" if c.breakglass else "false",
        "Request:HasHumanApproval": lambda c: "false",
    }
    if key in builtin:
        return builtin[key]
    if key.startswith("Param:"):
        steps = parse_path(key[len("Param:") :], where=where)
        if is_multi(steps):
            raise invalid(f"{where}: a Param: key names one value, not [*]")
        path_get = getter(steps)
        return lambda c: path_get(c.params)

    def from_context(call: ToolCall) -> Any:
        value = call.context.get(key)
        return ABSENT if value is None else value

    return from_context


def _operator(op: str, expected: str, where: str) -> Callable[[Any], Tri]:
    if op in ("StringEquals", "StringNotEquals"):
        negate = op == "StringNotEquals"
        return lambda v: ((v == expected) != negate) if isinstance(v, str) else None
    if op in ("StringLike", "StringNotLike"):
        negate = op == "StringNotLike"
        glob = Glob(expected, separators=VALUE_SEPARATORS) if expected else None
        return lambda v: (
            ((glob.match(v) if glob else v == "") != negate) if isinstance(v, str) else None
        )
    if op.startswith("Numeric"):
        bound = _number(expected)
        if bound is None:
            raise invalid(f"{where}: {expected!r} is not a number")
        compare: Callable[[float], bool] = {
            "NumericEquals": lambda x: x == bound,
            "NumericLessThan": lambda x: x < bound,
            "NumericGreaterThan": lambda x: x > bound,
        }[op]

        def numeric(v: Any) -> Tri:
            n = _number(v)
            return None if n is None else compare(n)

        return numeric
    if op == "Bool":
        want = _bool(expected)
        if want is None:
            raise invalid(f"{where}: Bool takes 'true' or 'false'")

        def boolean(v: Any) -> Tri:
            b = _bool(v)
            return None if b is None else b == want

        return boolean
    try:
        network = ipaddress.ip_network(expected, strict=False)
    except ValueError as e:
        raise invalid(f"{where}: {expected!r} is not an IP address or CIDR block") from e

    def in_network(v: Any) -> Tri:
        if not isinstance(v, str):
            return None
        try:
            address = ipaddress.ip_address(v.strip())
        except ValueError:
            return None
        return address.version == network.version and address in network

    return in_network


@dataclass(frozen=True, slots=True)
class Statement:
    index: int
    sid: str
    allow: bool
    actions: tuple[Glob, ...]
    resources: tuple[Glob, ...]
    conditions: tuple[Callable[[ToolCall], Tri], ...]
    ref: RuleRef


def compile_statements(models: list[ClawStatementModel]) -> tuple[Statement, ...]:
    """Compile validated statements.

    Raises:
        PolicyError: ``POLICY_INVALID`` for a duplicate sid or a malformed condition value.
    """
    seen: set[str] = set()
    out: list[Statement] = []
    for index, model in enumerate(models):
        where = f"statements[{index}]"
        if model.sid in seen:
            raise invalid(f"{where}.sid: {model.sid!r} is used twice")
        seen.add(model.sid)
        tests: list[Callable[[ToolCall], Tri]] = []
        texts: list[str] = []
        if model.conditions is not None:
            for op, mapping in model.conditions.model_dump(exclude_none=True).items():
                for key, expected in mapping.items():
                    at = f"{where}.conditions.{op}.{key}"
                    if not key:
                        raise invalid(f"{at}: empty context key")
                    tests.append(_leaf(_key_getter(key, at), _operator(op, expected, at)))
                    texts.append(f"{key} {_OPS[op]} {render(expected)}")
        resources = tuple(Glob(p, separators=VALUE_SEPARATORS) for p in model.resources)
        description = f"{model.effect} {', '.join(model.actions)} on {', '.join(model.resources)}"
        out.append(
            Statement(
                index=index,
                sid=model.sid,
                allow=model.effect == "Allow",
                actions=tuple(Glob(p, separators=VALUE_SEPARATORS) for p in model.actions),
                resources=resources,
                conditions=tuple(tests),
                ref=RuleRef(model.sid, description, " and ".join(texts) or "every call"),
            )
        )
    return tuple(out)


def _leaf(get: Callable[[ToolCall], Any], op: Callable[[Any], Tri]) -> Callable[[ToolCall], Tri]:
    def test(call: ToolCall) -> Tri:
        value = get(call)
        if value is ABSENT or value is MISTYPED:
            return None  # missing fails closed, negated operators included
        return op(value)

    return test


class StatementEngine:
    """Decides calls against compiled Claw v2 statements. Immutable after construction."""

    __slots__ = ("_cache", "_name", "_statements")

    def __init__(self, statements: tuple[Statement, ...], *, policy_name: str) -> None:
        self._statements = statements
        self._name = policy_name
        self._cache: dict[str, tuple[Statement, ...]] = {}

    def _candidates(self, route: str) -> tuple[Statement, ...]:
        hit = self._cache.get(route)
        if hit is None:
            hit = tuple(s for s in self._statements if any(g.match(route) for g in s.actions))
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[route] = hit
        return hit

    def evaluate(self, call: ToolCall) -> Decision:
        denies: list[Statement] = []
        allows: list[Statement] = []
        resource = call.resource if call.resource is not None else ""
        for st in self._candidates(call.route):
            if not any(g.match(resource) for g in st.resources):
                continue
            unknown = False
            failed = False
            for test in st.conditions:
                result = test(call)
                if result is False:
                    failed = True
                    break
                if result is None:
                    unknown = True
            if failed:
                continue
            if st.allow:
                if not unknown:
                    allows.append(st)
            else:
                denies.append(st)  # unknown applies a Deny: fail closed
        if denies:
            return _decision(
                Outcome.DENIED, "DENIED_BY_RULE", f"Denied by statement {denies[0].sid!r}.", denies
            )
        if call.breakglass:
            return _decision(
                Outcome.DENIED,
                "BREAKGLASS_NOT_PERMITTED",
                f"A Claw v2 policy has no break-glass routes; {call.route} is refused.",
                [],
            )
        if allows:
            return _decision(
                Outcome.ALLOWED,
                "ALLOWED_BY_RULE",
                f"Allowed by statement {allows[0].sid!r}.",
                allows,
            )
        return _decision(
            Outcome.DENIED,
            "NO_MATCHING_RULE",
            f"No statement of policy {self._name!r} allows {call.route}; denied by default.",
            [],
        )


def _decision(outcome: Outcome, code: str, message: str, statements: list[Statement]) -> Decision:
    return Decision(
        outcome=outcome,
        reason_code=code,
        message=message,
        rules=tuple(s.ref for s in statements),
        requirements=(),
        breakglass=None,
        sensitive_params=frozenset(),
        requires_plan_fingerprint=False,
    )
