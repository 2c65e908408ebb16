"""Conditions and globs: three-valued logic that fails closed, and no ReDoS."""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import PolicyError
from core.policy import Outcome, Policy, ToolCall, policy_from_payload
from core.policy.conditions import compile_condition
from core.policy.globs import ROUTE_SEPARATORS, VALUE_SEPARATORS, Glob

ISSUER = "did:key:z6MkneMkZqwqRiU5mJzSG3kDwzt9P8C59N4NGTfBLfSGE7c7"
BIND = ["job_id", "wpc_hash", "tool_route", "payload_hash", "expires_at"]


def policy(*rules: dict[str, Any]) -> Policy:
    return policy_from_payload(
        {
            "policy_version": "1",
            "keyturn_wpc": "1",
            "policy_id": "t",
            "policy_name": "t",
            "issuer_did": ISSUER,
            "groups": {"G": {"directory_id": "g", "display_name": "G"}},
            "approvals": {"two": {"min_approvers": 2, "allowed_groups": ["G"], "bind": BIND}},
            "rules": list(rules),
        }
    )


def decide(spec: dict[str, Any], params: dict[str, Any] | None = None, **kw: Any) -> bool | None:
    cond = compile_condition(spec, where="when")
    return cond.test(ToolCall(route="r.x", params=params or {}, requester="a", **kw))


# -- three-valued leaves -------------------------------------------------------------------


def test_missing_parameter_is_unknown_not_false() -> None:
    assert decide({"param": "amount", "gte": 500}, {}) is None


@pytest.mark.parametrize("value", [True, False, "600", [600], {"v": 600}, math.nan])
def test_booleans_strings_lists_and_nan_are_not_numbers(value: object) -> None:
    assert decide({"param": "amount", "gte": 500}, {"amount": value}) is None


def test_nan_never_compares_even_for_inequality() -> None:
    assert decide({"param": "x", "ne": 1}, {"x": math.nan}) is None


def test_integers_and_floats_compare_as_numbers() -> None:
    assert decide({"param": "x", "eq": 500}, {"x": 500.0}) is True
    assert decide({"param": "x", "lt": 500}, {"x": 499.99}) is True


def test_bool_equality_does_not_accept_numbers_or_strings() -> None:
    assert decide({"context": "sandbox", "eq": True}, context={"sandbox": 1}) is None
    assert decide({"context": "sandbox", "eq": True}, context={"sandbox": "true"}) is None
    assert decide({"context": "sandbox", "eq": True}, context={"sandbox": True}) is True


def test_optional_makes_absence_false_but_keeps_wrong_types_unknown() -> None:
    spec = {"param": "cc[*].address", "domain_outside_of": ["corp.example"], "optional": True}
    assert decide(spec, {}) is False
    assert decide(spec, {"cc": None}) is False
    assert decide(spec, {"cc": "eve@evil.example"}) is None
    assert decide(spec, {"cc": [{"name": "no address"}]}) is None


def test_domain_outside_of_a_list_value_means_any_element_outside() -> None:
    spec = {"param": "to", "domain_outside_of": ["corp.example", "*.corp.example"]}
    assert decide(spec, {"to": ["a@corp.example", "b@eu.corp.example"]}) is False
    assert decide(spec, {"to": ["a@corp.example", "b@corp.example.evil"]}) is True
    assert decide(spec, {"to": ["a@corp.example", 7]}) is None
    assert decide(spec, {"to": "a@EVIL.example"}) is True


def test_in_and_not_in_are_typed() -> None:
    assert decide({"param": "env", "in": ["dev", "staging"]}, {"env": "dev"}) is True
    assert decide({"param": "env", "not_in": ["prod"]}, {"env": "prod"}) is False
    assert decide({"param": "env", "not_in": ["prod"]}, {"env": 1}) is None


def test_contains_on_strings_and_lists() -> None:
    assert decide({"param": "body", "contains": "SECURITY:"}, {"body": "x SECURITY: y"}) is True
    assert decide({"param": "tags", "contains": "pii"}, {"tags": ["a", "pii"]}) is True
    assert decide({"param": "tags", "contains": "pii"}, {"tags": ["a", 3]}) is None
    assert decide({"param": "tags", "contains": "pii"}, {"tags": ["a"]}) is False


def test_ignore_case_folds_compatibility_forms() -> None:
    spec = {"param": "b", "starts_with": "security", "ignore_case": True}
    assert decide(spec, {"b": "ＳＥＣＵＲＩＴＹ: x"}) is True


def test_exists_is_never_unknown_for_plain_absence() -> None:
    assert decide({"param": "a.b", "exists": True}, {"a": {}}) is False
    assert decide({"param": "a.b", "exists": False}, {"a": {}}) is True
    assert decide({"param": "a.b", "exists": True}, {"a": "text"}) is None


def test_glob_operator_star_stops_at_slash_only() -> None:
    assert decide({"param": "p", "glob": "/workspace/*"}, {"p": "/workspace/a.txt"}) is True
    assert decide({"param": "p", "glob": "/workspace/*"}, {"p": "/workspace/a/../../etc"}) is False
    assert decide({"param": "p", "glob": "/workspace/**"}, {"p": "/workspace/a/b"}) is True


def test_quantifier_all_needs_every_element() -> None:
    spec = {"param": "files[*]", "starts_with": "/ws/", "quantifier": "all"}
    assert decide(spec, {"files": ["/ws/a", "/ws/b"]}) is True
    assert decide(spec, {"files": ["/ws/a", "/etc/passwd"]}) is False


def test_call_fields_are_subjects() -> None:
    assert decide({"call": "on_behalf_of", "eq": "alice"}, on_behalf_of="alice") is True
    assert decide({"call": "on_behalf_of", "eq": "alice"}) is None
    assert decide({"call": "prior_routes", "contains": "a.b"}, prior_routes={"a.b"}) is True


# -- Kleene combinators --------------------------------------------------------------------


UNKNOWN = {"param": "missing", "eq": 1}
TRUE = {"param": "one", "eq": 1}
FALSE = {"param": "one", "eq": 2}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"all": [TRUE, UNKNOWN]}, None),
        ({"all": [FALSE, UNKNOWN]}, False),
        ({"any": [TRUE, UNKNOWN]}, True),
        ({"any": [FALSE, UNKNOWN]}, None),
        ({"not": UNKNOWN}, None),
        ({"not": FALSE}, True),
    ],
)
def test_kleene_three_valued_logic(spec: dict[str, Any], expected: bool | None) -> None:
    assert decide(spec, {"one": 1}) is expected


def test_condition_text_is_readable() -> None:
    cond = compile_condition(
        {"all": [{"param": "amount_usd", "gte": 500}, {"not": {"param": "x", "in": ["a", "b"]}}]},
        where="w",
    )
    assert cond.text == 'amount_usd ≥ 500 and not (x in {"a", "b"})'


# -- refused at load -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"param": "a", "regex": "^(a+)+$"},
        {"param": "a", "matches": ".*"},
        {"param": "a", "eq": 1, "gte": 2},
        {"param": "a"},
        {"all": []},
        {"any": [{"param": "a", "eq": 1}], "all": [{"param": "a", "eq": 1}]},
        {"param": "a", "gte": "500"},
        {"param": "a", "eq": None},
        {"param": "a", "in": ["x", 1]},
        {"param": "a..b", "eq": 1},
        {"param": "a", "lt": 5, "ignore_case": True},
        {"param": "a", "domain_outside_of": ["Not A Domain"]},
        {"param": "a", "eq": 1, "quantifier": "all"},
        {"call": "password", "eq": "x"},
    ],
)
def test_malformed_or_regex_conditions_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(PolicyError) as e:
        compile_condition(spec, where="rules[0].when")
    assert e.value.reason_code == "POLICY_INVALID"
    assert "rules[0].when" in e.value.message


def test_deeply_nested_condition_is_refused() -> None:
    spec: dict[str, Any] = {"param": "a", "eq": 1}
    for _ in range(40):
        spec = {"not": spec}
    with pytest.raises(PolicyError):
        compile_condition(spec, where="w")


def test_star_path_in_allow_rule_must_say_its_quantifier() -> None:
    rule = {
        "id": "a",
        "description": "d",
        "routes": ["r.x"],
        "effect": "allow",
        "when": {"param": "f[*]", "eq": "x"},
    }
    with pytest.raises(PolicyError) as e:
        policy(rule)
    assert "quantifier" in e.value.message


# -- fail closed, as a property --------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats()
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
GATE_POLICY = policy(
    {
        "id": "big",
        "description": "big",
        "routes": ["pay.x"],
        "effect": "gate",
        "approval": "two",
        "when": {"param": "amount_usd", "gte": 500},
    },
    {"id": "small", "description": "small", "routes": ["pay.x"], "effect": "allow"},
)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_a_gate_whose_parameter_is_missing_never_allows(params: dict[str, Any]) -> None:
    params.pop("amount_usd", None)
    d = GATE_POLICY.evaluate(ToolCall(route="pay.x", params=params, requester="a"))
    assert d.outcome is Outcome.GATED


@settings(max_examples=300)
@given(json_values)
def test_only_a_real_number_below_the_threshold_is_allowed(amount: object) -> None:
    d = GATE_POLICY.evaluate(ToolCall(route="pay.x", params={"amount_usd": amount}, requester="a"))
    if d.outcome is Outcome.ALLOWED:
        assert isinstance(amount, int | float) and not isinstance(amount, bool)
        assert amount < 500
    else:
        assert d.outcome is Outcome.GATED


@settings(max_examples=200)
@given(json_values, json_values)
def test_evaluation_never_raises_and_never_mutates_params(a: object, b: object) -> None:
    params = {"amount_usd": a, "x": b}
    before = copy.deepcopy(params)
    GATE_POLICY.evaluate(ToolCall(route="pay.x", params=params, requester="a"))
    assert repr(params) == repr(before)


# -- globs ---------------------------------------------------------------------------------


def oracle(pattern: str, text: str, seps: str) -> bool:
    """A slow, obviously-correct matcher for the documented glob language."""

    @functools.cache
    def m(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(text)
        if pattern.startswith("**", i):
            k = i + 2
            while k < len(pattern) and pattern[k] == "*":
                k += 1
            if "/" in seps and k < len(pattern) and pattern[k] == "/" and m(k + 1, j):
                return True
            return any(m(k, jj) for jj in range(j, len(text) + 1))
        if pattern[i] == "*":
            jj = j
            while True:
                if m(i + 1, jj):
                    return True
                if jj == len(text) or text[jj] in seps:
                    return False
                jj += 1
        if j == len(text):
            return False
        if pattern[i] == "?":
            return text[j] not in seps and m(i + 1, j + 1)
        return pattern[i] == text[j] and m(i + 1, j + 1)

    return m(0, 0)


alphabet = st.sampled_from("ab./*?")


@settings(max_examples=500)
@given(
    st.text(alphabet, min_size=1, max_size=7),
    st.text(st.sampled_from("ab./"), max_size=9),
    st.sampled_from([ROUTE_SEPARATORS, VALUE_SEPARATORS]),
)
def test_glob_agrees_with_a_reference_matcher(pattern: str, text: str, seps: str) -> None:
    assert Glob(pattern, separators=seps).match(text) is oracle(pattern, text, seps)


def test_route_star_does_not_cross_a_dot_but_double_star_does() -> None:
    g = Glob("payments.*", separators=ROUTE_SEPARATORS)
    assert g.match("payments.transfer") and not g.match("payments.transfer.bulk")
    assert Glob("payments.**", separators=ROUTE_SEPARATORS).match("payments.transfer.bulk")
    assert not Glob("payments.**", separators=ROUTE_SEPARATORS).match("payments")


def test_pathological_glob_stays_linear() -> None:
    # A backtracking matcher needs ~n^k steps here; the NFA takes one pass.
    g = Glob("*a*a*a*a*a*a*a*a*b", separators=VALUE_SEPARATORS)
    assert g.match("a" * 20000) is False
