"""Claw v2 statements: default deny, explicit Deny wins, missing keys fail closed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import PolicyError
from core.policy import Outcome, Policy, ToolCall, policy_from_payload

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "policies"
PAYLOAD = json.loads((MANIFESTS / "claw-v2-example.json").read_text(encoding="utf-8"))
ISSUER = PAYLOAD["issuer_did"]


@pytest.fixture(scope="module")
def claw() -> Policy:
    return policy_from_payload(PAYLOAD)


def decide(
    policy: Policy, route: str, *, resource: str | None = "*", **kw: Any
) -> tuple[Outcome, str, list[str]]:
    kw.setdefault("params", {})
    d = policy.evaluate(ToolCall(route=route, requester="did:key:agent", resource=resource, **kw))
    assert not d.requirements and d.breakglass is None  # v2 never gates
    return d.outcome, d.reason_code, [r.rule_id for r in d.rules]


def statements(*items: dict[str, Any]) -> Policy:
    return policy_from_payload(
        {"policy_version": "2", "policy_id": "t", "issuer_did": ISSUER, "statements": list(items)}
    )


def test_allow_statement_allows_matching_action_and_resource(claw: Policy) -> None:
    assert decide(claw, "repo.read", resource="repos/acme/api/README.md") == (
        Outcome.ALLOWED, "ALLOWED_BY_RULE", ["AllowRepoReads"],
    )  # fmt: skip


def test_explicit_deny_wins_over_allow(claw: Policy) -> None:
    outcome, code, rules = decide(claw, "repo.read", resource="repos/acme/secrets/key.pem")
    assert (outcome, code, rules) == (Outcome.DENIED, "DENIED_BY_RULE", ["DenySecrets"])


def test_default_deny_for_unmatched_action(claw: Policy) -> None:
    assert decide(claw, "repo.merge", resource="repos/acme/api")[1] == "NO_MATCHING_RULE"


def test_resource_outside_the_allowed_glob_is_denied(claw: Policy) -> None:
    assert decide(claw, "repo.read", resource="repos/other/api")[0] is Outcome.DENIED


def test_call_without_resource_is_only_matched_by_unscoped_statements(claw: Policy) -> None:
    # No resource is the empty resource: a scoped Allow cannot vouch for it.
    assert decide(claw, "repo.read", resource=None) == (Outcome.DENIED, "NO_MATCHING_RULE", [])
    assert decide(claw, "model:invoke", resource=None, context={"Model:Name": "claude-x"})[0] is (
        Outcome.ALLOWED
    )


def test_numeric_condition_on_a_parameter(claw: Policy) -> None:
    ok = {"params": {"amount_usd": 499}, "on_behalf_of": "alice@corp.example"}
    assert decide(claw, "payments.transfer", **ok)[0] is Outcome.ALLOWED
    assert (
        decide(claw, "payments.transfer", **{**ok, "params": {"amount_usd": "499"}})[0]
        is Outcome.ALLOWED
    )
    for bad in (500, "499abc", True, None, "NaN"):
        params = {} if bad is None else {"amount_usd": bad}
        assert decide(claw, "payments.transfer", **{**ok, "params": params})[0] is Outcome.DENIED


def test_on_behalf_of_is_a_builtin_key_the_context_cannot_spoof(claw: Policy) -> None:
    spoof = {"params": {"amount_usd": 10}, "context": {"Request:OnBehalfOf": "alice@corp.example"}}
    assert decide(claw, "payments.transfer", **spoof)[0] is Outcome.DENIED


def test_missing_key_fails_closed_for_negated_operator_in_allow(claw: Policy) -> None:
    # StringNotEquals env != prod: the reference would allow when env is missing.
    assert decide(claw, "deploy.staging", context={"sandbox": "true"})[1] == "NO_MATCHING_RULE"
    assert (
        decide(claw, "deploy.staging", context={"sandbox": "true", "env": "staging"})[0]
        is Outcome.ALLOWED
    )
    assert (
        decide(claw, "deploy.staging", context={"sandbox": "true", "env": "prod"})[0]
        is Outcome.DENIED
    )


def test_missing_key_fails_closed_for_negated_operator_in_deny(claw: Policy) -> None:
    # StringNotLike Model:Name "claude-*": an unnamed model is denied, not waved through.
    assert decide(claw, "model:invoke")[2] == ["DenyUnreviewedModels"]
    assert decide(claw, "model:invoke", context={"Model:Name": "gpt-4o"})[2] == [
        "DenyUnreviewedModels"
    ]
    assert (
        decide(claw, "model:invoke", context={"Model:Name": "claude-sonnet-4"})[0]
        is Outcome.ALLOWED
    )


def test_string_like_star_crosses_dots_but_not_slashes_as_in_the_reference(claw: Policy) -> None:
    ctx = {"SideEffect:TargetDomain": "api.eu.corp.example", "source_ip": "10.1.2.3"}
    assert decide(claw, "side_effect:network_egress", context=ctx)[0] is Outcome.ALLOWED
    ctx_evil = {**ctx, "SideEffect:TargetDomain": "corp.example.evil.example"}
    assert decide(claw, "side_effect:network_egress", context=ctx_evil)[0] is Outcome.DENIED


def test_ip_address_condition(claw: Policy) -> None:
    ctx = {"SideEffect:TargetDomain": "api.corp.example"}
    assert (
        decide(claw, "side_effect:network_egress", context={**ctx, "source_ip": "192.168.1.1"})[0]
        is Outcome.DENIED
    )
    assert (
        decide(claw, "side_effect:network_egress", context={**ctx, "source_ip": "::1"})[0]
        is Outcome.DENIED
    )
    assert (
        decide(claw, "side_effect:network_egress", context={**ctx, "source_ip": "nope"})[0]
        is Outcome.DENIED
    )


def test_bool_condition_takes_only_true_or_false(claw: Policy) -> None:
    for value in ("yes", 1, None):
        ctx = {"env": "staging"} if value is None else {"env": "staging", "sandbox": value}
        assert decide(claw, "deploy.staging", context=ctx)[0] is Outcome.DENIED
    assert (
        decide(claw, "deploy.staging", context={"env": "staging", "sandbox": True})[0]
        is Outcome.ALLOWED
    )


def test_breakglass_request_is_refused_under_claw_v2(claw: Policy) -> None:
    assert decide(claw, "model:invoke", context={"Model:Name": "claude-x"}, breakglass=True)[1] == (
        "BREAKGLASS_NOT_PERMITTED"
    )


def test_deny_with_unknown_condition_applies() -> None:
    policy = statements(
        {"sid": "A", "effect": "Allow", "actions": ["*"], "resources": ["*"]},
        {
            "sid": "D",
            "effect": "Deny",
            "actions": ["*"],
            "resources": ["*"],
            "conditions": {"NumericGreaterThan": {"risk": "5"}},
        },
    )
    assert decide(policy, "x.y", context={"risk": 1})[0] is Outcome.ALLOWED
    assert decide(policy, "x.y", context={"risk": 9})[2] == ["D"]
    assert decide(policy, "x.y")[2] == ["D"]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda p: p.update(inherits="parent-policy"), "inherits"),
        (lambda p: p["statements"][0].update(Condition={}), "statements[0].Condition"),
        (lambda p: p["statements"][0].update(effect="allow"), "effect"),
        (
            lambda p: p["statements"][0].update(conditions={"StringMatches": {"a": "b"}}),
            "StringMatches",
        ),
        (lambda p: p["statements"][2]["conditions"].update(Bool={"x": "maybe"}), "Bool"),
        (
            lambda p: p["statements"][2]["conditions"].update(NumericEquals={"x": "ten"}),
            "NumericEquals",
        ),
        (
            lambda p: p["statements"][3]["conditions"].update(IpAddress={"ip": "10.0.0.0/99"}),
            "IpAddress",
        ),
        (lambda p: p["statements"].append(copy.deepcopy(p["statements"][0])), "used twice"),
        (lambda p: p.update(statements=[]), "statements"),
        (lambda p: p.update(keyturn_wpc="1"), "keyturn_wpc"),
    ],
)
def test_malformed_claw_v2_policy_is_refused(mutate: Any, words: str) -> None:
    payload = copy.deepcopy(PAYLOAD)
    mutate(payload)
    with pytest.raises(PolicyError) as e:
        policy_from_payload(payload)
    assert e.value.reason_code == "POLICY_INVALID" and words in e.value.message
