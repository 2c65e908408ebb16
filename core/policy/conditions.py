"""Declarative conditions, compiled once into closures with three-valued results.

A condition is ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}`` or a leaf.
A leaf names one subject and one operator:

* subject: ``{"param": PATH}`` (the call's parameters, see :mod:`core.policy.paths`),
  ``{"context": PATH}`` (declared facts: sandbox, elevated, environment…),
  ``{"call": FIELD}`` (``route``, ``requester``, ``on_behalf_of``, ``resource``,
  ``plan_hash``, ``breakglass``, ``prior_routes``); or the short form
  ``{"route": GLOB}`` (true when the route matches, route-glob rules);
* operator: ``eq``, ``ne``, ``in``, ``not_in``, ``lt``, ``lte``, ``gt``, ``gte``,
  ``glob``, ``contains``, ``starts_with``, ``ends_with``, ``exists``,
  ``domain_outside_of``. There is no regex operator (ReDoS).
* modifiers: ``"optional": true`` (an absent value makes the leaf false instead of
  unknown; a value of the wrong type is still unknown), ``"ignore_case": true`` (string
  operators compare NFKC-casefolded text), ``"quantifier": "any" | "all"`` for paths
  with ``[*]`` (whether some or every element must satisfy the operator).

Every test returns ``True``, ``False`` or ``None`` (unknown). Unknown is what a
missing or mistyped value gives: a string where a number is expected, a boolean where
a number is expected (booleans are not numbers), a NaN (which never compares), a list
where a scalar is expected. ``all``/``any``/``not`` follow Kleene's logic. The rule
engine, not this module, decides what unknown means: matched for gate and deny rules,
not satisfied for allow rules and constraints.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.policy.globs import ROUTE_SEPARATORS, VALUE_SEPARATORS, Glob
from core.policy.model import ToolCall, invalid
from core.policy.paths import ABSENT, MISTYPED, getter, is_multi, parse_path

Tri = bool | None
Test = Callable[[ToolCall], Tri]
Op = Callable[[Any], Tri]

MAX_DEPTH = 16
MAX_NODES = 512
OPERATORS = (
    "eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "glob",
    "contains", "starts_with", "ends_with", "exists", "domain_outside_of",
)  # fmt: skip
_SUBJECTS = ("param", "context", "call")
_MODIFIERS = ("optional", "ignore_case", "quantifier")
_CALL_FIELDS = (
    "route", "requester", "on_behalf_of", "resource", "plan_hash", "breakglass", "prior_routes",
)  # fmt: skip
_STRING_OPS = {"glob", "starts_with", "ends_with"}
_SYMBOL = {"eq": "=", "ne": "≠", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥"}
_DOMAIN_RE = re.compile(r"\A(\*\.)?(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                        r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: its test and the words the approval card shows."""

    test: Test
    text: str


def fold(text: str) -> str:
    """Case- and compatibility-insensitive form: ``ＳＥＣＵＲＩＴＹ`` → ``security``."""
    return unicodedata.normalize("NFKC", text).casefold()


def is_number(value: object) -> bool:
    """A JSON number that compares: not a bool, not NaN."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def render(value: object) -> str:
    """A policy value as the card shows it."""
    if isinstance(value, list | tuple):
        return "{" + ", ".join(render(v) for v in value) + "}"
    return json.dumps(value, ensure_ascii=False)


def tri_any(results: Sequence[Tri]) -> Tri:
    if True in results:
        return True
    return None if None in results else False


def tri_all(results: Sequence[Tri]) -> Tri:
    if False in results:
        return False
    return None if None in results else True


def compile_condition(spec: object, *, where: str, explicit_quantifier: bool = False) -> Condition:
    """Compile a condition tree.

    Args:
        spec: the decoded JSON condition.
        where: the field path for error messages (``rules[3].when``).
        explicit_quantifier: refuse ``[*]`` leaves without a ``quantifier``. Set for
            allow rules and constraints, where "some element is fine" would let one
            good element vouch for a bad one.

    Raises:
        PolicyError: ``POLICY_INVALID`` naming the offending path.
    """
    budget = [MAX_NODES]
    return _compile(spec, where, 0, budget, explicit_quantifier)


def _compile(spec: object, where: str, depth: int, budget: list[int], strict: bool) -> Condition:
    budget[0] -= 1
    if budget[0] < 0:
        raise invalid(f"{where}: condition has more than {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise invalid(f"{where}: condition nests deeper than {MAX_DEPTH}")
    if not isinstance(spec, Mapping) or not spec:
        raise invalid(f"{where}: a condition is a non-empty object")
    if "all" in spec or "any" in spec:
        key = "all" if "all" in spec else "any"
        _only(spec, {key}, where)
        items = spec[key]
        if not isinstance(items, list) or not items:
            raise invalid(f"{where}.{key}: must be a non-empty list of conditions")
        parts = [
            _compile(item, f"{where}.{key}[{i}]", depth + 1, budget, strict)
            for i, item in enumerate(items)
        ]
        return _combine(key, parts)
    if "not" in spec:
        _only(spec, {"not"}, where)
        inner = _compile(spec["not"], f"{where}.not", depth + 1, budget, strict)
        inner_test = inner.test

        def negate(call: ToolCall) -> Tri:
            result = inner_test(call)
            return None if result is None else not result

        return Condition(negate, f"not ({inner.text})")
    if "route" in spec:
        _only(spec, {"route"}, where)
        pattern = spec["route"]
        if not isinstance(pattern, str) or not pattern:
            raise invalid(f"{where}.route: must be a route glob")
        glob = Glob(pattern, separators=ROUTE_SEPARATORS)
        return Condition(lambda call: glob.match(call.route), f"route matches {pattern}")
    return _leaf(spec, where, strict)


def _only(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(spec) - allowed)
    if extra:
        raise invalid(f"{where}.{extra[0]}: unknown field")


def _combine(key: str, parts: list[Condition]) -> Condition:
    tests = tuple(p.test for p in parts)
    joiner = " and " if key == "all" else " or "
    text = joiner.join(
        f"({p.text})" if len(parts) > 1 and (" and " in p.text or " or " in p.text) else p.text
        for p in parts
    )
    if key == "all":

        def all_of(call: ToolCall) -> Tri:
            unknown = False
            for test in tests:
                result = test(call)
                if result is False:
                    return False
                if result is None:
                    unknown = True
            return None if unknown else True

        return Condition(all_of, text)

    def any_of(call: ToolCall) -> Tri:
        unknown = False
        for test in tests:
            result = test(call)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return Condition(any_of, text)


def _leaf(spec: Mapping[str, Any], where: str, strict: bool) -> Condition:
    subjects = [k for k in _SUBJECTS if k in spec]
    ops = [k for k in OPERATORS if k in spec]
    _only(spec, set(_SUBJECTS) | set(OPERATORS) | set(_MODIFIERS), where)
    if len(subjects) != 1:
        raise invalid(f"{where}: a leaf names exactly one of param, context, call or route")
    if len(ops) != 1:
        raise invalid(f"{where}: a leaf has exactly one operator ({', '.join(OPERATORS)})")
    subject, op_name = subjects[0], ops[0]
    optional = spec.get("optional", False)
    ignore_case = spec.get("ignore_case", False)
    if not isinstance(optional, bool) or not isinstance(ignore_case, bool):
        raise invalid(f"{where}: optional and ignore_case are true or false")
    expected = spec[op_name]
    get, label, multi = _subject(subject, spec[subject], f"{where}.{subject}")
    quantifier = spec.get("quantifier")
    if quantifier is not None and (quantifier not in ("any", "all") or not multi):
        raise invalid(f"{where}.quantifier: 'any' or 'all', only on a path with [*]")
    if multi and quantifier is None:
        if strict:
            raise invalid(
                f"{where}: a [*] path in an allow rule or constraint must say "
                "quantifier 'all' or 'any'"
            )
        quantifier = "any"
    if op_name == "exists":
        if not isinstance(expected, bool) or multi or optional:
            raise invalid(f"{where}.exists: true or false, on a path without [*] or optional")
        want = expected

        def exists(call: ToolCall) -> Tri:
            value = get(call)
            if value is MISTYPED:
                return None
            return (value is not ABSENT) == want

        return Condition(exists, f"{label} is {'present' if want else 'absent'}")
    op, op_text = _operator(op_name, expected, ignore_case, f"{where}.{op_name}")
    absent: Tri = False if optional else None
    if not multi:

        def single(call: ToolCall) -> Tri:
            value = get(call)
            if value is ABSENT:
                return absent
            if value is MISTYPED:
                return None
            return op(value)

        return Condition(single, f"{label} {op_text}" + (" (any case)" if ignore_case else ""))
    every = quantifier == "all"

    def many(call: ToolCall) -> Tri:
        values = get(call)
        if values is ABSENT:
            return absent
        if values is MISTYPED:
            return None
        # Kleene any/all with early exit: the deciding value ends the scan.
        decisive = not every
        unknown = False
        for v in values:
            result = None if v is MISTYPED else op(v)
            if result is decisive:
                return decisive
            if result is None:
                unknown = True
        return None if unknown else every

    prefix = "every" if every else "any"
    return Condition(many, f"{prefix} {label} {op_text}" + (" (any case)" if ignore_case else ""))


def _subject(kind: str, raw: object, where: str) -> tuple[Callable[[ToolCall], Any], str, bool]:
    if kind == "call":
        if raw not in _CALL_FIELDS:
            raise invalid(f"{where}: one of {', '.join(_CALL_FIELDS)}")
        name = str(raw)
        if name == "prior_routes":
            return (lambda call: tuple(sorted(call.prior_routes))), name, False

        def field_of(call: ToolCall) -> Any:
            value = getattr(call, name)
            return ABSENT if value is None else value

        return field_of, name, False
    steps = parse_path(raw, where=where)
    path_get = getter(steps)
    label = str(raw) if kind == "param" else f"context.{raw}"
    if kind == "param":
        return (lambda call: path_get(call.params)), label, is_multi(steps)
    return (lambda call: path_get(call.context)), label, is_multi(steps)


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, int | float) and math.isfinite(value):
        return "num"
    return None


def _scalar_test(kind: str) -> Callable[[Any], bool]:
    """Whether an actual value has the same JSON type as the policy's value."""
    if kind == "str":
        return lambda v: isinstance(v, str)
    if kind == "bool":
        return lambda v: isinstance(v, bool)
    return is_number


def _operator(name: str, expected: Any, ignore_case: bool, where: str) -> tuple[Op, str]:
    norm: Callable[[str], str] = fold if ignore_case else (lambda s: s)
    if ignore_case and name in ("lt", "lte", "gt", "gte", "domain_outside_of"):
        raise invalid(f"{where}: ignore_case applies to string operators only")
    if name in ("eq", "ne"):
        kind = _kind(expected)
        if kind is None:
            raise invalid(f"{where}: compares with a string, a finite number or a boolean")
        if ignore_case and kind != "str":
            raise invalid(f"{where}: ignore_case needs a string value")
        same = _scalar_test(kind)
        want = norm(expected) if kind == "str" else expected
        negate = name == "ne"
        if kind == "str":

            def eq_str(v: Any) -> Tri:
                return ((norm(v) == want) != negate) if isinstance(v, str) else None

            return eq_str, f"{_SYMBOL[name]} {render(expected)}"
        if kind == "bool":
            return (lambda v: ((v is want) != negate) if isinstance(v, bool) else None), (
                f"{_SYMBOL[name]} {render(expected)}"
            )
        return (lambda v: ((v == want) != negate) if same(v) else None), (
            f"{_SYMBOL[name]} {render(expected)}"
        )
    if name in ("in", "not_in"):
        if not isinstance(expected, list) or not expected:
            raise invalid(f"{where}: a non-empty list of values")
        kinds = {_kind(v) for v in expected}
        if len(kinds) != 1 or None in kinds:
            raise invalid(f"{where}: values must all be strings, all numbers or all booleans")
        kind = kinds.pop()
        assert kind is not None
        if ignore_case and kind != "str":
            raise invalid(f"{where}: ignore_case needs string values")
        same = _scalar_test(kind)
        members = frozenset(norm(v) if kind == "str" else v for v in expected)
        negate = name == "not_in"
        word = "not in" if negate else "in"
        if kind == "str":
            return (lambda v: ((norm(v) in members) != negate) if isinstance(v, str) else None), (
                f"{word} {render(expected)}"
            )
        if kind == "bool":
            return (lambda v: ((v in members) != negate) if isinstance(v, bool) else None), (
                f"{word} {render(expected)}"
            )
        return (lambda v: ((v in members) != negate) if same(v) else None), (
            f"{word} {render(expected)}"
        )
    if name in ("lt", "lte", "gt", "gte"):
        if _kind(expected) != "num":
            raise invalid(f"{where}: compares with a finite number")
        bound = expected
        compare: Callable[[Any], bool] = {
            "lt": lambda v: v < bound,
            "lte": lambda v: v <= bound,
            "gt": lambda v: v > bound,
            "gte": lambda v: v >= bound,
        }[name]
        return (
            lambda v: compare(v) if is_number(v) else None
        ), f"{_SYMBOL[name]} {render(expected)}"
    if name in _STRING_OPS:
        if not isinstance(expected, str) or not expected:
            raise invalid(f"{where}: a non-empty string")
        want = norm(expected)
        if name == "glob":
            glob = Glob(want, separators=VALUE_SEPARATORS)
            return (lambda v: glob.match(norm(v)) if isinstance(v, str) else None), (
                f"matches {render(expected)}"
            )
        if name == "starts_with":
            return (lambda v: norm(v).startswith(want) if isinstance(v, str) else None), (
                f"starts with {render(expected)}"
            )
        return (lambda v: norm(v).endswith(want) if isinstance(v, str) else None), (
            f"ends with {render(expected)}"
        )
    if name == "contains":
        return _contains(expected, ignore_case, norm, where)
    return _domain_outside(expected, where)


def _contains(
    expected: Any, ignore_case: bool, norm: Callable[[str], str], where: str
) -> tuple[Op, str]:
    kind = _kind(expected)
    if kind is None or (kind == "str" and not expected):
        raise invalid(f"{where}: a non-empty string, a finite number or a boolean")
    if ignore_case and kind != "str":
        raise invalid(f"{where}: ignore_case needs a string value")
    same = _scalar_test(kind)
    want = norm(expected) if kind == "str" else expected

    def element_equal(item: Any) -> Tri:
        if not same(item):
            return None
        if kind == "str":
            return bool(norm(item) == want)
        if kind == "bool":
            return bool(item is want)
        return bool(item == want)

    def contains(v: Any) -> Tri:
        if isinstance(v, str):
            return (want in norm(v)) if kind == "str" else None
        if isinstance(v, list | tuple):
            return tri_any([element_equal(item) for item in v])
        return None

    return contains, f"contains {render(expected)}"


def email_domain(address: object) -> str | None:
    """The lower-case domain of ``local@domain``, or None when it is not an address."""
    if not isinstance(address, str):
        return None
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    domain = domain.lower().rstrip(".")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return domain if _DOMAIN_RE.match(domain) and not domain.startswith("*") else None


def _domain_outside(expected: Any, where: str) -> tuple[Op, str]:
    if not isinstance(expected, list) or not expected:
        raise invalid(f"{where}: a non-empty list of domains")
    exact: set[str] = set()
    suffixes: list[str] = []
    for i, domain in enumerate(expected):
        if not isinstance(domain, str) or not _DOMAIN_RE.match(domain):
            raise invalid(f"{where}[{i}]: {domain!r} is not a lower-case domain (or *.domain)")
        if domain.startswith("*."):
            suffixes.append(domain[1:])  # ".corp.example": subdomains only
        else:
            exact.add(domain)
    suffix_tuple = tuple(suffixes)

    def outside_one(address: Any) -> Tri:
        if type(address) is str:
            # Fast path: an address whose domain is exactly an org domain is inside;
            # the set holds only validated domains, so no further parsing is needed.
            local, at, host = address.rpartition("@")
            if at and local.strip() and host.lower() in exact:
                return False
        domain = email_domain(address)
        if domain is None:
            return None  # not an address we can place: unknown, never "inside"
        return not (domain in exact or (bool(suffix_tuple) and domain.endswith(suffix_tuple)))

    def outside(v: Any) -> Tri:
        if isinstance(v, list | tuple):
            return tri_any([outside_one(item) for item in v])
        return outside_one(v)

    return outside, f"outside {', '.join(expected)}"
