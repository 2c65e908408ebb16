"""The WPC payload: refused unless exactly right, and identified by its JCS hash."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import canonical
from core.errors import PolicyError
from core.policy import ApprovalRequirement, BreakglassTerms, Outcome, ToolCall, policy_from_payload
from core.policy.wpc import parse_policy_json

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "policies"
ENTERPRISE = json.loads((MANIFESTS / "enterprise-two-person.json").read_text(encoding="utf-8"))
BREAKGLASS = json.loads((MANIFESTS / "breakglass-timeboxed.json").read_text(encoding="utf-8"))
BIND = ["job_id", "wpc_hash", "tool_route", "payload_hash", "expires_at"]


def enterprise() -> dict[str, Any]:
    return copy.deepcopy(ENTERPRISE)


def refused(payload: Any) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        policy_from_payload(payload)
    return e.value


# -- identity ------------------------------------------------------------------------------


def test_policy_hash_is_b64u_sha256_of_the_jcs_payload() -> None:
    policy = policy_from_payload(ENTERPRISE)
    assert policy.policy_hash_b64u == canonical.sha256_b64u(canonical.jcs(ENTERPRISE))


def shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=50)
@given(st.randoms(use_true_random=False))
def test_key_order_never_changes_the_policy_hash(rng: random.Random) -> None:
    reordered = shuffled(ENTERPRISE, rng)
    assert (
        policy_from_payload(reordered).policy_hash_b64u
        == policy_from_payload(ENTERPRISE).policy_hash_b64u
    )


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [path]


ALL_LEAVES = leaves(ENTERPRISE)


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value + "x"


@settings(max_examples=100)
@given(st.sampled_from(ALL_LEAVES))
def test_any_changed_value_changes_the_policy_hash(path: tuple[Any, ...]) -> None:
    mutated = enterprise()
    node = mutated
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = changed(node[path[-1]])
    assert canonical.jcs_sha256_b64u(mutated) != policy_from_payload(ENTERPRISE).policy_hash_b64u
    try:
        policy = policy_from_payload(mutated)
    except PolicyError:
        return  # some changes make the policy invalid, which is also a refusal
    assert policy.policy_hash_b64u != policy_from_payload(ENTERPRISE).policy_hash_b64u


def test_policy_exposes_a_copy_of_its_payload_and_cannot_be_modified() -> None:
    policy = policy_from_payload(ENTERPRISE)
    policy.payload["rules"].clear()
    assert policy.payload["rules"]
    with pytest.raises(AttributeError):
        policy.policy_hash_b64u = "x"  # type: ignore[misc]
    d = policy.evaluate(
        ToolCall(route="payments.transfer", params={"amount_usd": 5000}, requester="a")
    )
    assert d.outcome is Outcome.GATED


def test_mutating_the_source_dict_after_loading_changes_nothing() -> None:
    source = enterprise()
    policy = policy_from_payload(source)
    source["rules"][3]["when"]["gte"] = 10**9
    d = policy.evaluate(
        ToolCall(route="payments.transfer", params={"amount_usd": 500}, requester="a")
    )
    assert d.outcome is Outcome.GATED
    assert policy.payload == ENTERPRISE


# -- unknown fields anywhere ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p.update(gated_tool_routes=[]), "gated_tool_routes"),
        (lambda p: p["rules"][0].update(condition={}), "rules[0].condition"),
        (
            lambda p: p["approvals"]["two_person"].update(mode="two_person"),
            "approvals.two_person.mode",
        ),
        (
            lambda p: p["groups"]["Finance-Approvers"].update(oid="x"),
            "groups.Finance-Approvers.oid",
        ),
        (lambda p: p["token"].update(require_cst=True), "token.require_cst"),
        (lambda p: p["rules"][3]["when"].update(unit="usd"), "rules[3].when.unit"),
        (
            lambda p: p["rules"][0]["when"]["any"][1].update(optinal=True),
            "rules[0].when.any[1].optinal",
        ),
    ],
)
def test_unknown_fields_are_refused_naming_their_path(mutate: Any, path: str) -> None:
    payload = enterprise()
    mutate(payload)
    error = refused(payload)
    assert error.reason_code == "POLICY_INVALID"
    assert path in error.message


def test_unknown_field_in_a_requires_param_object_is_named() -> None:
    payload = json.loads((MANIFESTS / "change-management.json").read_text(encoding="utf-8"))
    payload["rules"][4]["requires_param"][0]["regex"] = ".*"
    assert "rules[4].requires_param[0].regex" in refused(payload).message


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda p: p["approvals"]["two_person"].update(min_approvers="2"), "min_approvers"),
        (lambda p: p["approvals"]["two_person"].update(min_approvers=True), "min_approvers"),
        (lambda p: p["rules"][0].update(effect="Gate"), "effect"),
        (lambda p: p.update(policy_version=1), "policy_version"),
        (lambda p: p.update(policy_version="3"), "policy_version"),
        (lambda p: p.pop("keyturn_wpc"), "keyturn_wpc"),
        (lambda p: p.update(policy_id=""), "policy_id"),
        (lambda p: p.update(policy_id="x" * 129), "policy_id"),
        (lambda p: p.update(issuer_did="did:web:example.com"), "issuer_did"),
        (lambda p: p.update(rules=[]), "rules"),
        (lambda p: p["rules"].append(copy.deepcopy(p["rules"][0])), "used twice"),
        (lambda p: p["rules"][0].update(routes=["m365..sendMail"]), "routes[0]"),
        (lambda p: p["rules"][0]["sensitive_params"].append("a[x]"), "sensitive_params"),
        (lambda p: p["token"].update(scope_hash_required=False), "scope_hash_required"),
    ],
)
def test_mistyped_or_malformed_payload_is_refused(mutate: Any, words: str) -> None:
    payload = enterprise()
    mutate(payload)
    error = refused(payload)
    assert error.reason_code == "POLICY_INVALID" and words in error.message


def test_non_canonical_payload_is_refused() -> None:
    payload = enterprise()
    payload["metadata"]["x"] = float("nan")
    assert refused(payload).reason_code == "POLICY_INVALID"
    assert refused(["not", "an", "object"]).reason_code == "POLICY_INVALID"


def test_duplicate_json_keys_and_nan_literals_are_refused_when_parsing() -> None:
    for text in ('{"a": 1, "a": 2}', '{"a": NaN}', "[1]", "{"):
        with pytest.raises(PolicyError):
            parse_policy_json(text)


# -- impossible or unsafe approval requirements --------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"allowed_groups": [], "one_from_each": []}, "no approver groups"),
        ({"min_approvers": 0}, "at least 1"),
        ({"min_approvers": 1}, "two-person"),
        ({"min_approvers": 40}, "larger than"),
        ({"allowed_groups": ["Nobody"]}, "unknown group"),
        ({"allowed_groups": ["Agent-Approvers-Prod", "Agent-Approvers-Prod"]}, "twice"),
        ({"require_pim": "sometimes"}, "require_pim"),
        ({"timeout_seconds": 10}, "timeout_seconds"),
        ({"reminder_every_seconds": 900}, "reminder"),
        ({"independent_of_requester": False}, "independent_of_requester"),
    ],
)
def test_impossible_or_unsafe_quorum_is_refused(change: dict[str, Any], words: str) -> None:
    payload = enterprise()
    payload["approvals"]["two_person"].update(change)
    error = refused(payload)
    assert error.reason_code == "POLICY_INVALID" and words in error.message


@pytest.mark.parametrize("missing", BIND)
def test_bind_missing_any_required_field_is_refused(missing: str) -> None:
    payload = enterprise()
    payload["approvals"]["two_person"]["bind"] = [b for b in BIND if b != missing]
    assert missing in refused(payload).message


def test_bind_naming_an_unknown_field_is_refused() -> None:
    payload = enterprise()
    payload["approvals"]["two_person"]["bind"] = [*BIND, "weather"]
    assert "weather" in refused(payload).message


def test_gate_rule_without_an_approval_is_refused() -> None:
    payload = enterprise()
    del payload["rules"][0]["approval"]
    assert "rules[0].approval" in refused(payload).message


def test_gate_rule_naming_an_unknown_approval_is_refused() -> None:
    payload = enterprise()
    payload["rules"][0]["approval"] = "three_person"
    assert "unknown approval" in refused(payload).message


def test_allow_rule_with_an_approval_is_refused() -> None:
    payload = enterprise()
    payload["rules"][1]["approval"] = "two_person"
    assert "only gate rules" in refused(payload).message


def test_deny_rule_with_constraints_is_refused() -> None:
    payload = enterprise()
    payload["rules"].append(
        {
            "id": "d",
            "description": "d",
            "routes": ["x.y"],
            "effect": "deny",
            "constraints": [{"param": "a", "eq": 1}],
        }
    )
    assert "deny rule" in refused(payload).message


# -- break-glass terms ---------------------------------------------------------------------


def breakglass_with(**change: Any) -> dict[str, Any]:
    payload = copy.deepcopy(BREAKGLASS)
    payload["rules"][1]["breakglass"].update(change)
    return payload


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"token_ttl_seconds": 3600}, "token_ttl_seconds"),
        ({"renewable_without_reapproval": True}, "renewable_without_reapproval"),
        ({"kill_switch_triggers": ["approval_revoked"]}, "timebox_expired"),
        ({"kill_switch_triggers": ["timebox_expired", "full_moon"]}, "full_moon"),
        ({"kill_switch_actions": ["halt_job"]}, "revoke_cst"),
        ({"max_duration_seconds": 10, "token_ttl_seconds": 10}, "max_duration_seconds"),
        ({"rollback_steps": ["  "]}, "rollback_steps"),
        ({"executor": "not a route"}, "executor"),
    ],
)
def test_unsafe_breakglass_terms_are_refused(change: dict[str, Any], words: str) -> None:
    error = refused(breakglass_with(**change))
    assert error.reason_code == "POLICY_INVALID" and words in error.message
    assert "rules[1]" in error.message


def test_breakglass_token_may_not_outlive_the_policy_token_cap() -> None:
    payload = breakglass_with()
    payload["token"]["cst_max_ttl_seconds"] = 900
    assert "cst_max_ttl_seconds" in refused(payload).message


def test_breakglass_terms_on_an_allow_rule_are_refused() -> None:
    payload = copy.deepcopy(BREAKGLASS)
    payload["rules"][4]["breakglass"] = payload["rules"][1]["breakglass"]
    assert "only gate rules" in refused(payload).message


# -- the values themselves refuse bad construction -----------------------------------------


def test_requirement_value_refuses_two_person_with_one_approver() -> None:
    with pytest.raises(PolicyError):
        ApprovalRequirement(
            name="x", min_approvers=1, allowed_groups=("G",), one_from_each=(), require_pim="none",
            allow_guests=False, timeout_seconds=900, reminder_every_seconds=None, critical=False,
            bind=tuple(BIND), two_person=True,
        )  # fmt: skip


def test_requirement_needed_and_eligible_groups() -> None:
    req = ApprovalRequirement(
        name="x", min_approvers=3, allowed_groups=("A", "B"), one_from_each=("B", "C"),
        require_pim="optional", allow_guests=False, timeout_seconds=900,
        reminder_every_seconds=None, critical=False, bind=tuple(BIND),
    )  # fmt: skip
    assert req.needed == 3
    assert req.eligible_groups == ("A", "B", "C")


def test_breakglass_value_refuses_renewal_and_long_tokens() -> None:
    base = {
        "max_duration_seconds": 1800, "token_ttl_seconds": 1800,
        "renewable_without_reapproval": False, "rollback_steps": ("undo",),
        "kill_switch_triggers": ("timebox_expired",), "executor": None,
    }  # fmt: skip
    BreakglassTerms(**base)
    with pytest.raises(PolicyError):
        BreakglassTerms(**{**base, "renewable_without_reapproval": True})
    with pytest.raises(PolicyError):
        BreakglassTerms(**{**base, "token_ttl_seconds": 1801})


def test_malformed_call_is_refused_before_evaluation() -> None:
    for bad in ({"route": ""}, {"route": "a b"}, {"params": []}, {"requester": ""}):
        kwargs: dict[str, Any] = {"route": "a.b", "params": {}, "requester": "r", **bad}
        with pytest.raises(PolicyError) as e:
            ToolCall(**kwargs)
        assert e.value.reason_code == "INVALID_CALL"


def test_claw_v1_fields_are_accepted_and_hash_bound() -> None:
    payload = enterprise()
    payload["allowed_providers"] = ["anthropic"]
    payload["redaction_rules"] = [{"path": "$.messages[*].content", "action": "hash"}]
    policy = policy_from_payload(payload)
    assert policy.policy_hash_b64u != policy_from_payload(ENTERPRISE).policy_hash_b64u
    payload["allowed_providers"] = ["mistral"]
    assert "allowed_providers" in refused(payload).message


def test_published_json_schema_is_generated_from_the_models() -> None:
    from core.policy.schema import wpc_json_schema

    published = Path(__file__).resolve().parents[2] / "manifests" / "schemas" / "wpc.schema.json"
    assert json.loads(published.read_text(encoding="utf-8")) == wpc_json_schema()
