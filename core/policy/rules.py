"""keyturn rules, compiled once, and the order in which they decide a call.

Evaluation order (first step that decides wins)::

    candidate rules = rules whose route patterns match the call's route (policy order)
    matched         = gate/deny rules whose `when` is true OR unknown,
                      allow rules whose `when` is true
    1. any matched deny rule                         → DENIED  DENIED_BY_RULE
    2. for each matched gate/allow rule, in order:
         constraints must be true                → DENIED  CONSTRAINT_VIOLATED
         requires_prior_routes were completed    → DENIED  SIMULATION_REQUIRED | PRIOR_STEP_REQUIRED
         requires_param present (well formed)    → DENIED  PARAM_REQUIRED | BUNDLE_REFERENCE_…
         requires_plan_fingerprint: a plan_hash  → DENIED  PLAN_FINGERPRINT_REQUIRED
    3. a break-glass request, but no matched gate rule has break-glass terms
                                                 → DENIED  BREAKGLASS_NOT_PERMITTED
    4. any matched gate rule                     → GATED   GATED_BY_RULE (every requirement)
    5. any matched allow rule                    → ALLOWED ALLOWED_BY_RULE
    6. otherwise                                 → DENIED  NO_MATCHING_RULE

Rules are indexed by exact route; only rules with wildcard routes are scanned, and
the candidate list per route is cached (bounded). Decisions that depend only on the
set of matched rules are built once and reused, so a typical evaluation is a dict
lookup, a few closure calls and no allocation beyond the result lists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core.policy.conditions import Condition, compile_condition
from core.policy.globs import ROUTE_SEPARATORS, VALUE_SEPARATORS, Glob
from core.policy.model import (
    ApprovalRequirement,
    BreakglassTerms,
    Decision,
    Outcome,
    RuleRef,
    ToolCall,
    invalid,
    is_route,
)
from core.policy.paths import ABSENT, MISTYPED, getter, is_multi, parse_path
from core.policy.schema import PriorRouteModel, RequiredParamModel, RuleModel

_CACHE_LIMIT = 4096
_PLAN_HASH_MAX = 256


@dataclass(frozen=True, slots=True)
class Check:
    """One precondition of a matched rule; ``test`` is true when the call meets it."""

    test: Callable[[ToolCall], bool]
    reason_code: str
    text: str


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule. Built only by :func:`compile_rules`."""

    index: int
    rule_id: str
    description: str
    effect: str
    patterns: tuple[Glob, ...]
    when: Condition | None
    requirement: ApprovalRequirement | None
    checks: tuple[Check, ...]
    requires_plan_fingerprint: bool
    breakglass: BreakglassTerms | None
    sensitive_params: frozenset[str]
    ref: RuleRef


def _route_pattern(pattern: str, where: str) -> Glob:
    plain = pattern.replace("**", "x").replace("*", "x").replace("?", "x")
    if not is_route(plain) and pattern != "**":
        raise invalid(f"{where}: {pattern!r} is not a route or route glob")
    return Glob(pattern, separators=ROUTE_SEPARATORS)


def _present(value: object) -> bool:
    if value is ABSENT or value is MISTYPED:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list | tuple | Mapping):
        return bool(value)
    return not isinstance(value, bool)  # a flag is not a reference


def _param_check(spec: str | RequiredParamModel, where: str) -> Check:
    model = spec if isinstance(spec, RequiredParamModel) else RequiredParamModel(param=spec)
    steps = parse_path(model.param, where=f"{where}.param")
    if is_multi(steps):
        raise invalid(f"{where}.param: a required parameter is one value, not [*]")
    get = getter(steps)
    glob = Glob(model.glob, separators=VALUE_SEPARATORS) if model.glob else None
    host = (
        getter(parse_path(model.contained_in, where=f"{where}.contained_in"))
        if model.contained_in
        else None
    )
    text = f"parameter {model.param} is present"
    if glob is not None:
        text += f" and matches {model.glob}"
    if model.contained_in:
        text += f" and is quoted in {model.contained_in}"

    def test(call: ToolCall) -> bool:
        value = get(call.params)
        if not _present(value):
            return False
        if glob is not None and not (isinstance(value, str) and glob.match(value)):
            return False
        if host is not None:
            quoted = host(call.params)
            if not isinstance(value, str) or not isinstance(quoted, str) or value not in quoted:
                return False
        return True

    return Check(test, model.reason, text)


def _prior_check(spec: str | PriorRouteModel, where: str) -> Check:
    model = spec if isinstance(spec, PriorRouteModel) else PriorRouteModel(route=spec)
    if not is_route(model.route):
        raise invalid(f"{where}: {model.route!r} is not a tool route")
    route = model.route
    return Check(
        lambda call: route in call.prior_routes,
        model.reason,
        f"{route} has completed earlier in this job",
    )


def _constraint_check(cond: Condition) -> Check:
    test = cond.test
    # Unknown is not satisfied: a constraint holds only when it is definitely true.
    return Check(lambda call: test(call) is True, "CONSTRAINT_VIOLATED", cond.text)


def _plan_check() -> Check:
    def test(call: ToolCall) -> bool:
        plan = call.plan_hash
        return (
            plan is not None
            and 0 < len(plan) <= _PLAN_HASH_MAX
            and plan.isascii()
            and plan.isprintable()
            and " " not in plan
        )

    return Check(
        test, "PLAN_FINGERPRINT_REQUIRED", "the call carries the fingerprint of the simulated plan"
    )


def compile_rules(
    rules: list[RuleModel],
    requirements: Mapping[str, ApprovalRequirement],
    terms_for: Callable[[RuleModel, str], BreakglassTerms | None],
) -> tuple[Rule, ...]:
    """Compile validated rule models.

    Raises:
        PolicyError: ``POLICY_INVALID`` for duplicate ids, a gate rule without an
            approval (or a non-gate rule with one), an unknown approval name, fields a
            rule's effect cannot use, or a malformed route, condition or path.
    """
    seen: set[str] = set()
    out: list[Rule] = []
    for index, model in enumerate(rules):
        where = f"rules[{index}]"
        if model.id in seen:
            raise invalid(f"{where}.id: {model.id!r} is used twice")
        seen.add(model.id)
        patterns = tuple(
            _route_pattern(p, f"{where}.routes[{i}]") for i, p in enumerate(model.routes)
        )
        requirement = None
        if model.effect == "gate":
            if model.approval is None:
                raise invalid(f"{where}.approval: a gate rule must name an approval requirement")
            if model.approval not in requirements:
                raise invalid(f"{where}.approval: unknown approval requirement {model.approval!r}")
            requirement = requirements[model.approval]
        elif model.approval is not None:
            raise invalid(f"{where}.approval: only gate rules name an approval")
        if model.breakglass is not None and model.effect != "gate":
            raise invalid(f"{where}.breakglass: only gate rules have break-glass terms")
        if model.effect == "deny" and (
            model.constraints
            or model.requires_prior_routes
            or model.requires_param
            or model.requires_plan_fingerprint
        ):
            raise invalid(f"{where}: a deny rule has no constraints or prerequisites")
        when = (
            compile_condition(
                model.when, where=f"{where}.when", explicit_quantifier=model.effect == "allow"
            )
            if model.when is not None
            else None
        )
        checks: list[Check] = []
        for i, spec in enumerate(model.constraints):
            cond = compile_condition(
                spec, where=f"{where}.constraints[{i}]", explicit_quantifier=True
            )
            checks.append(_constraint_check(cond))
        checks += [
            _prior_check(s, f"{where}.requires_prior_routes[{i}]")
            for i, s in enumerate(model.requires_prior_routes)
        ]
        checks += [
            _param_check(s, f"{where}.requires_param[{i}]")
            for i, s in enumerate(model.requires_param)
        ]
        if model.requires_plan_fingerprint:
            checks.append(_plan_check())
        for i, path in enumerate(model.sensitive_params):
            parse_path(path, where=f"{where}.sensitive_params[{i}]")
        condition_text = when.text if when is not None else "every call"
        out.append(
            Rule(
                index=index,
                rule_id=model.id,
                description=model.description,
                effect=model.effect,
                patterns=patterns,
                when=when,
                requirement=requirement,
                checks=tuple(checks),
                requires_plan_fingerprint=model.requires_plan_fingerprint,
                breakglass=terms_for(model, where),
                sensitive_params=frozenset(model.sensitive_params),
                ref=RuleRef(model.id, model.description, condition_text),
            )
        )
    return tuple(out)


class RuleEngine:
    """Decides calls against compiled keyturn rules.

    Immutable after construction; its dicts only memoize (bounded) results that are
    pure functions of the route and the matched rules.
    """

    __slots__ = (
        "_by_route",
        "_cache",
        "_decisions",
        "_denials",
        "_name",
        "_no_match",
        "_rules",
        "_wild",
        "describe",
    )

    def __init__(
        self,
        rules: tuple[Rule, ...],
        *,
        policy_name: str,
        describe: Callable[[ApprovalRequirement], str],
    ) -> None:
        self._rules = rules
        self._name = policy_name
        self.describe = describe
        by_route: dict[str, list[Rule]] = {}
        wild: list[Rule] = []
        for rule in rules:
            literal = [g.pattern for g in rule.patterns if g.is_literal]
            for route in literal:
                by_route.setdefault(route, []).append(rule)
            if len(literal) != len(rule.patterns):
                wild.append(rule)
        self._by_route = {k: tuple(v) for k, v in by_route.items()}
        self._wild = tuple(wild)
        self._cache: dict[str, tuple[tuple[Rule, ...], frozenset[str]]] = {}
        self._no_match: dict[str, Decision] = {}
        self._decisions: dict[tuple[str, tuple[int, ...], frozenset[str]], Decision] = {}
        self._denials: dict[tuple[int, int, frozenset[str]], Decision] = {}

    # -- candidates ------------------------------------------------------------------

    def _candidates(self, route: str) -> tuple[tuple[Rule, ...], frozenset[str]]:
        hit = self._cache.get(route)
        if hit is not None:
            return hit
        found = {r.index: r for r in self._by_route.get(route, ())}
        for rule in self._wild:
            if rule.index not in found and any(g.match(route) for g in rule.patterns):
                found[rule.index] = rule
        ordered = tuple(found[i] for i in sorted(found))
        sensitive = (
            frozenset().union(*(r.sensitive_params for r in ordered)) if ordered else frozenset()
        )
        entry = (ordered, frozenset(sensitive))
        if len(self._cache) < _CACHE_LIMIT:  # bounded: routes come from callers
            self._cache[route] = entry
        return entry

    # -- evaluation ------------------------------------------------------------------

    def evaluate(self, call: ToolCall) -> Decision:
        candidates, sensitive = self._candidates(call.route)
        denies: list[Rule] = []
        matched: list[Rule] = []
        for rule in candidates:
            when = rule.when
            if when is None:
                hit = True
            else:
                result = when.test(call)
                hit = result is True if rule.effect == "allow" else result is not False
            if hit:
                (denies if rule.effect == "deny" else matched).append(rule)
        if denies:
            return self._decision("deny", denies, sensitive)
        for rule in matched:
            for n, check in enumerate(rule.checks):
                if not check.test(call):
                    return self._denial(rule, n, sensitive)
        gates = [r for r in matched if r.effect == "gate"]
        if call.breakglass and not any(r.breakglass is not None for r in gates):
            return self._breakglass_refused(call, sensitive)
        if gates:
            return self._decision("gate", matched, sensitive)
        if matched:
            return self._decision("allow", matched, sensitive)
        return self._default_deny(call.route, sensitive)

    def _default_deny(self, route: str, sensitive: frozenset[str]) -> Decision:
        cached = self._no_match.get(route)
        if cached is not None and cached.sensitive_params == sensitive:
            return cached
        decision = Decision(
            outcome=Outcome.DENIED,
            reason_code="NO_MATCHING_RULE",
            message=f"No rule of policy {self._name!r} allows {route}; denied by default.",
            rules=(),
            requirements=(),
            breakglass=None,
            sensitive_params=sensitive,
            requires_plan_fingerprint=False,
        )
        if len(self._no_match) < _CACHE_LIMIT:
            self._no_match[route] = decision
        return decision

    def _decision(self, kind: str, rules: list[Rule], sensitive: frozenset[str]) -> Decision:
        # A decision depends only on which rules matched and on the route's sensitive
        # parameters, so it is built once per such pair and shared (it is immutable).
        cache_key = (kind, tuple(r.index for r in rules), sensitive)
        cached = self._decisions.get(cache_key)
        if cached is not None:
            return cached
        plan = any(r.requires_plan_fingerprint for r in rules)
        if kind == "deny":
            first = rules[0]
            decision = Decision(
                outcome=Outcome.DENIED,
                reason_code="DENIED_BY_RULE",
                message=f"Denied by rule {first.rule_id!r}: {first.description}.",
                rules=tuple(r.ref for r in rules),
                requirements=(),
                breakglass=None,
                sensitive_params=sensitive,
                requires_plan_fingerprint=False,
            )
        elif kind == "gate":
            gates = [r for r in rules if r.effect == "gate"]
            requirements = tuple(
                {
                    r.requirement.name: r.requirement for r in gates if r.requirement is not None
                }.values()
            )
            terms = _merge_terms([r.breakglass for r in gates if r.breakglass is not None])
            needs = " AND ".join(self.describe(q) for q in requirements)
            first = gates[0]
            decision = Decision(
                outcome=Outcome.GATED,
                reason_code="GATED_BY_RULE",
                message=(
                    f"Needs approval under rule {first.rule_id!r} ({first.description}): {needs}."
                ),
                rules=tuple(r.ref for r in gates),
                requirements=requirements,
                breakglass=terms,
                sensitive_params=sensitive,
                requires_plan_fingerprint=plan,
            )
        else:
            first = rules[0]
            decision = Decision(
                outcome=Outcome.ALLOWED,
                reason_code="ALLOWED_BY_RULE",
                message=f"Allowed by rule {first.rule_id!r}: {first.description}.",
                rules=tuple(r.ref for r in rules),
                requirements=(),
                breakglass=None,
                sensitive_params=sensitive,
                requires_plan_fingerprint=plan,
            )
        if len(self._decisions) < _CACHE_LIMIT:
            self._decisions[cache_key] = decision
        return decision

    def _denial(self, rule: Rule, n: int, sensitive: frozenset[str]) -> Decision:
        cached = self._denials.get((rule.index, n, sensitive))
        if cached is not None:
            return cached
        check = rule.checks[n]
        decision = Decision(
            outcome=Outcome.DENIED,
            reason_code=check.reason_code,
            message=(
                f"Denied: rule {rule.rule_id!r} ({rule.description}) requires that {check.text}."
            ),
            rules=(RuleRef(rule.rule_id, rule.description, check.text),),
            requirements=(),
            breakglass=None,
            sensitive_params=sensitive,
            requires_plan_fingerprint=rule.requires_plan_fingerprint,
        )
        if len(self._denials) < _CACHE_LIMIT:
            self._denials[(rule.index, n, sensitive)] = decision
        return decision

    def _breakglass_refused(self, call: ToolCall, sensitive: frozenset[str]) -> Decision:
        return Decision(
            outcome=Outcome.DENIED,
            reason_code="BREAKGLASS_NOT_PERMITTED",
            message=f"{call.route} is not a break-glass route under policy {self._name!r}.",
            rules=(),
            requirements=(),
            breakglass=None,
            sensitive_params=sensitive,
            requires_plan_fingerprint=False,
        )


def _merge_terms(terms: list[BreakglassTerms]) -> BreakglassTerms | None:
    """One set of terms from every matched gate rule: the strictest window, every step."""
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0]
    duration = min(t.max_duration_seconds for t in terms)
    return BreakglassTerms(
        max_duration_seconds=duration,
        token_ttl_seconds=min(min(t.token_ttl_seconds for t in terms), duration),
        renewable_without_reapproval=False,
        rollback_steps=tuple(dict.fromkeys(s for t in terms for s in t.rollback_steps)),
        kill_switch_triggers=tuple(dict.fromkeys(s for t in terms for s in t.kill_switch_triggers)),
        executor=next((t.executor for t in terms if t.executor is not None), None),
        kill_switch_actions=tuple(dict.fromkeys(s for t in terms for s in t.kill_switch_actions)),
    )
