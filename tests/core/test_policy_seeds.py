"""Every shipped seed policy decides its seed's own examples (seeds 000–004).

Each test is named after the rule or threat it defends, from the seeds' runbooks and
threat tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from core.policy import Outcome, Policy, ToolCall, policy_from_payload
from core.policy.wpc import parse_policy_json

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "policies"
DEMO_ISSUER = "did:key:z6MkneMkZqwqRiU5mJzSG3kDwzt9P8C59N4NGTfBLfSGE7c7"
PLAN = "3q2-7wKx9QfL0aZ1bY8cW6dV5eU4fT3gS2hR1iQ0K9x"


def load(name: str) -> Policy:
    return policy_from_payload(parse_policy_json((MANIFESTS / name).read_text(encoding="utf-8")))


def call(route: str, params: dict[str, Any] | None = None, **kw: Any) -> ToolCall:
    return ToolCall(route=route, params=params or {}, requester="did:key:agent", **kw)


@pytest.fixture(scope="module")
def enterprise() -> Policy:
    return load("enterprise-two-person.json")


@pytest.fixture(scope="module")
def change() -> Policy:
    return load("change-management.json")


@pytest.fixture(scope="module")
def breakglass() -> Policy:
    return load("breakglass-timeboxed.json")


@pytest.fixture(scope="module")
def governance() -> Policy:
    return load("enterprise-governance.json")


@pytest.fixture(scope="module")
def reviewer() -> Policy:
    return load("pr-reviewer.json")


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_policy_loads_and_names_the_demo_issuer(path: Path) -> None:
    policy = load(path.name)
    assert policy.issuer_did == DEMO_ISSUER
    assert len(policy.policy_hash_b64u) == 43


# -- seed 000: two-person rule for agents -------------------------------------------------


def mail(
    to: list[str], cc: list[str] | None = None, bcc: list[str] | None = None
) -> dict[str, Any]:
    def recipients(addresses: list[str]) -> list[dict[str, Any]]:
        return [{"emailAddress": {"address": a}} for a in addresses]

    message: dict[str, Any] = {"subject": "Q3 numbers", "toRecipients": recipients(to)}
    if cc is not None:
        message["ccRecipients"] = recipients(cc)
    if bcc is not None:
        message["bccRecipients"] = recipients(bcc)
    return {"message": message, "saveToSentItems": True}


def test_mail_to_an_external_recipient_is_gated(enterprise: Policy) -> None:
    d = enterprise.evaluate(
        call("m365.graph.sendMail", mail(["bob@corp.example", "eve@evil.example"]))
    )
    assert d.outcome is Outcome.GATED
    assert [r.rule_id for r in d.rules] == ["mail-external"]
    assert [r.name for r in d.requirements] == ["two_person"]
    assert "outside corp.example" in d.rules[0].condition_text
    assert "message.body.content" in d.sensitive_params


@pytest.mark.parametrize("field", ["cc", "bcc"])
def test_external_recipient_hidden_in_cc_or_bcc_is_gated(enterprise: Policy, field: str) -> None:
    params = mail(["bob@corp.example"], **{field: ["eve@evil.example"]})
    assert enterprise.evaluate(call("m365.graph.sendMail", params)).outcome is Outcome.GATED


def test_internal_mail_is_allowed(enterprise: Policy) -> None:
    d = enterprise.evaluate(
        call("m365.graph.sendMail", mail(["bob@corp.example"], cc=["Carol@CORP.example"]))
    )
    assert d.outcome is Outcome.ALLOWED
    assert [r.rule_id for r in d.rules] == ["mail-internal"]


@pytest.mark.parametrize(
    "address",
    ["Bob <bob@corp.example>", "bob", "", "bob@corp.example.evil.example", "bob@сorp.example"],
)
def test_recipient_that_cannot_be_placed_inside_the_org_is_gated(
    enterprise: Policy, address: str
) -> None:
    assert (
        enterprise.evaluate(call("m365.graph.sendMail", mail([address]))).outcome is Outcome.GATED
    )


def test_mail_without_a_recipient_list_fails_closed_to_gated(enterprise: Policy) -> None:
    d = enterprise.evaluate(call("m365.graph.sendMail", {"message": {"subject": "hi"}}))
    assert d.outcome is Outcome.GATED


def test_recipient_list_of_the_wrong_type_fails_closed_even_where_optional(
    enterprise: Policy,
) -> None:
    params = mail(["bob@corp.example"])
    params["message"]["ccRecipients"] = "eve@evil.example"
    assert enterprise.evaluate(call("m365.graph.sendMail", params)).outcome is Outcome.GATED


def test_payment_of_499_is_allowed(enterprise: Policy) -> None:
    d = enterprise.evaluate(call("payments.transfer", {"amount_usd": 499, "to_account": "DE89"}))
    assert d.outcome is Outcome.ALLOWED
    assert d.sensitive_params == frozenset({"to_account"})


def test_payment_of_500_is_gated_needing_finance_and_security(enterprise: Policy) -> None:
    d = enterprise.evaluate(call("payments.transfer", {"amount_usd": 500, "to_account": "DE89"}))
    assert d.outcome is Outcome.GATED
    assert d.rules[0].condition_text == "amount_usd ≥ 500"
    (req,) = d.requirements
    assert req.one_from_each == ("Finance-Approvers", "Security-Approvers")
    assert req.needed == 2 and req.critical
    assert enterprise.requirement_text(req).startswith(
        "2 approvers: one from Finance-Approvers, one from Security-Approvers; "
        "not the requester or the person the agent acts for"
    )


@pytest.mark.parametrize("amount", ["500", "499", True, None, math.nan, [1], {"usd": 1}])
def test_missing_or_mistyped_amount_fails_closed_to_gated(
    enterprise: Policy, amount: object
) -> None:
    params = {} if amount is None else {"amount_usd": amount}
    assert enterprise.evaluate(call("payments.transfer", params)).outcome is Outcome.GATED


def test_customer_pii_export_is_gated_in_any_spelling_of_its_case(enterprise: Policy) -> None:
    for dataset in ("customer_pii", "Customer_PII"):
        assert (
            enterprise.evaluate(call("storage.export", {"dataset": dataset})).outcome
            is Outcome.GATED
        )


def test_export_of_another_dataset_is_allowed(enterprise: Policy) -> None:
    assert (
        enterprise.evaluate(call("storage.export", {"dataset": "sales_2025"})).outcome
        is Outcome.ALLOWED
    )


def test_export_without_a_dataset_is_gated(enterprise: Policy) -> None:
    assert enterprise.evaluate(call("storage.export", {})).outcome is Outcome.GATED


def test_app_role_assignment_is_always_gated(enterprise: Policy) -> None:
    d = enterprise.evaluate(call("m365.graph.addAppRoleAssignment", {"principalId": "x"}))
    assert d.outcome is Outcome.GATED
    assert d.rules[0].condition_text == "every call"


def test_changing_the_policy_is_itself_gated_by_two_security_approvers(enterprise: Policy) -> None:
    d = enterprise.evaluate(call("keyturn.policy.activate", {"policy_hash_b64u": PLAN}))
    assert d.outcome is Outcome.GATED
    (req,) = d.requirements
    assert req.allowed_groups == ("Security-Approvers",) and req.min_approvers == 2
    assert req.require_pim == "required"


def test_unknown_route_is_denied_by_default(enterprise: Policy) -> None:
    d = enterprise.evaluate(call("m365.graph.createMailboxRule", {}))
    assert d.outcome is Outcome.DENIED and d.reason_code == "NO_MATCHING_RULE"
    assert d.rules == ()


def test_enterprise_token_requirements_pin_the_policy(enterprise: Policy) -> None:
    assert enterprise.token.pin_wpc_hash and enterprise.token.job_scoped_binding
    assert enterprise.cst_max_ttl_seconds == 900
    assert "payments.transfer" in enterprise.tool_surface


# -- seed 001: change management ---------------------------------------------------------


def test_execute_without_prior_simulate_is_denied_simulation_required(change: Policy) -> None:
    d = change.evaluate(
        call(
            "change.execute",
            {"plan": "p"},
            plan_hash=PLAN,
            prior_routes=frozenset({"ticket.approve"}),
        )
    )
    assert d.outcome is Outcome.DENIED and d.reason_code == "SIMULATION_REQUIRED"
    assert d.rules[0].rule_id == "change-execute"


def test_execute_before_the_change_is_approved_is_denied(change: Policy) -> None:
    d = change.evaluate(
        call("change.execute", {}, plan_hash=PLAN, prior_routes=frozenset({"change.simulate"}))
    )
    assert d.reason_code == "PRIOR_STEP_REQUIRED"


def test_execute_without_plan_fingerprint_is_denied(change: Policy) -> None:
    done = frozenset({"change.simulate", "ticket.approve"})
    d = change.evaluate(call("change.execute", {}, prior_routes=done))
    assert d.outcome is Outcome.DENIED and d.reason_code == "PLAN_FINGERPRINT_REQUIRED"


def test_execute_after_simulate_and_approval_is_allowed_and_pins_the_plan(change: Policy) -> None:
    done = frozenset({"change.simulate", "ticket.approve"})
    d = change.evaluate(call("change.execute", {}, prior_routes=done, plan_hash=PLAN))
    assert d.outcome is Outcome.ALLOWED and d.requires_plan_fingerprint


def test_approving_a_change_needs_one_service_owner_and_one_platform_security(
    change: Policy,
) -> None:
    d = change.evaluate(
        call(
            "ticket.approve", {"ticket": "CHG-1"}, prior_routes={"change.simulate"}, plan_hash=PLAN
        )
    )
    assert d.outcome is Outcome.GATED and d.requires_plan_fingerprint
    (req,) = d.requirements
    assert req.one_from_each == ("Service-Owners", "Platform-Security") and req.two_person
    assert "plan_hash" in req.bind


def test_approving_without_simulation_is_denied(change: Policy) -> None:
    d = change.evaluate(call("ticket.approve", {"ticket": "CHG-1"}, plan_hash=PLAN))
    assert d.reason_code == "SIMULATION_REQUIRED"


def test_closing_a_ticket_without_proof_bundle_reference_is_refused(change: Policy) -> None:
    d = change.evaluate(
        call(
            "ticket.close",
            {"ticket": "CHG-1", "close_reason": "done"},
            prior_routes={"change.simulate"},
        )
    )
    assert d.outcome is Outcome.DENIED and d.reason_code == "BUNDLE_REFERENCE_REQUIRED"


def test_closing_with_a_bundle_id_missing_from_the_closure_reason_is_refused(
    change: Policy,
) -> None:
    params = {"ticket": "CHG-1", "proof_bundle_id": "pb_7f2c", "close_reason": "done"}
    d = change.evaluate(call("ticket.close", params, prior_routes={"change.simulate"}))
    assert d.reason_code == "BUNDLE_REFERENCE_REQUIRED"


def test_closing_with_a_quoted_bundle_reference_is_gated_for_two_people(change: Policy) -> None:
    params = {
        "ticket": "CHG-1",
        "proof_bundle_id": "pb_7f2c",
        "close_reason": "done, evidence pb_7f2c",
    }
    d = change.evaluate(call("ticket.close", params, prior_routes={"change.simulate"}))
    assert d.outcome is Outcome.GATED and d.requirements[0].needed == 2


def test_reading_and_commenting_are_allowed(change: Policy) -> None:
    assert change.evaluate(call("ticket.read", {"ticket": "CHG-1"})).outcome is Outcome.ALLOWED
    assert (
        change.evaluate(call("ticket.comment", {"body": "approve now!"})).outcome is Outcome.ALLOWED
    )


# -- seed 002: time-boxed break-glass ----------------------------------------------------

TENANT = "00000000-0000-4000-8000-0000000000aa"


def grant(
    principal: str = "user:alice@corp.example",
    role: str = "Privileged Role Administrator",
    **extra: Any,
) -> dict[str, Any]:
    return {"tenant_id": TENANT, "principal": principal, "role": role, **extra}


def test_breakglass_for_the_allowed_principal_and_role_is_gated_with_a_timebox(
    breakglass: Policy,
) -> None:
    d = breakglass.evaluate(call("entra.role.assign", grant(), breakglass=True))
    assert d.outcome is Outcome.GATED
    terms = d.breakglass
    assert terms is not None
    assert terms.max_duration_seconds == 1800 and terms.token_ttl_seconds == 1800
    assert terms.renewable_without_reapproval is False
    assert terms.executor == "entra.role.assign"
    assert "timebox_expired" in terms.kill_switch_triggers
    assert terms.rollback_steps[0] == "Remove the role assignment"
    assert d.requirements[0].needed == 2 and d.requirements[0].require_pim == "required"


def test_breakglass_accepts_the_bare_upn_the_slash_command_types(breakglass: Policy) -> None:
    d = breakglass.evaluate(
        call("entra.role.assign", grant(principal="Alice@corp.example"), breakglass=True)
    )
    assert d.outcome is Outcome.GATED


@pytest.mark.parametrize(
    "params",
    [
        grant(principal="user:mallory@corp.example"),
        grant(role="Global Administrator"),
        {**grant(), "tenant_id": "11111111-0000-4000-8000-000000000000"},
        {"tenant_id": TENANT, "principal": "user:alice@corp.example"},
    ],
    ids=["other-principal", "other-role", "other-tenant", "role-missing"],
)
def test_breakglass_outside_the_target_constraints_is_denied(
    breakglass: Policy, params: dict[str, Any]
) -> None:
    d = breakglass.evaluate(call("entra.role.assign", params, breakglass=True))
    assert d.outcome is Outcome.DENIED and d.reason_code == "CONSTRAINT_VIOLATED"
    assert d.rules[0].rule_id == "breakglass-role-assign"


def test_breakglass_group_membership_is_gated_with_its_own_executor(breakglass: Policy) -> None:
    params = {
        "tenant_id": TENANT,
        "principal": "user:alice@corp.example",
        "group": "CA-Exclusion-Breakglass",
    }
    d = breakglass.evaluate(call("entra.group.add", params, breakglass=True))
    assert d.outcome is Outcome.GATED and d.breakglass is not None
    assert d.breakglass.executor == "entra.group.add"


@pytest.mark.parametrize("route", ["shell.exec", "tools.elevated"])
def test_denylisted_tools_are_denied_during_breakglass(breakglass: Policy, route: str) -> None:
    d = breakglass.evaluate(call(route, {"cmd": "id"}))
    assert d.outcome is Outcome.DENIED and d.reason_code == "DENIED_BY_RULE"


def test_tool_expansion_during_breakglass_is_denied(breakglass: Policy) -> None:
    d = breakglass.evaluate(call("breakglass.microsoft_graph.delete_user", {"tenant_id": TENANT}))
    assert d.reason_code == "NO_MATCHING_RULE"


def test_verification_reads_stay_in_scope(breakglass: Policy) -> None:
    route = "breakglass.microsoft_graph.read_role_assignment"
    assert breakglass.evaluate(call(route, {"tenant_id": TENANT})).outcome is Outcome.ALLOWED


def test_breakglass_request_on_a_route_without_breakglass_terms_is_refused(
    breakglass: Policy,
) -> None:
    route = "breakglass.microsoft_graph.read_role_assignment"
    d = breakglass.evaluate(call(route, {"tenant_id": TENANT}, breakglass=True))
    assert d.outcome is Outcome.DENIED and d.reason_code == "BREAKGLASS_NOT_PERMITTED"


def test_rollback_is_allowed_for_the_same_target_only(breakglass: Policy) -> None:
    route = "breakglass.rollback.remove_role_assignment"
    assert breakglass.evaluate(call(route, grant())).outcome is Outcome.ALLOWED
    assert (
        breakglass.evaluate(call(route, grant(principal="user:bob@corp.example"))).outcome
        is Outcome.DENIED
    )


# -- seed 003: enterprise governance -----------------------------------------------------


def test_enabling_elevated_execution_is_gated_as_a_breakglass_path(governance: Policy) -> None:
    d = governance.evaluate(call("enable_elevated", {"reason": "debug"}))
    assert d.outcome is Outcome.GATED and d.breakglass is not None
    assert d.requirements[0].name == "human_approval"


def test_access_to_production_data_is_gated(governance: Policy) -> None:
    assert governance.evaluate(call("access_production_data", {})).outcome is Outcome.GATED


def test_sandboxed_tool_is_allowed(governance: Policy) -> None:
    d = governance.evaluate(call("http.get", {"url": "https://x"}, context={"sandbox": True}))
    assert d.outcome is Outcome.ALLOWED


@pytest.mark.parametrize("context", [{}, {"sandbox": False}, {"sandbox": "true"}])
def test_tool_outside_the_sandbox_is_denied(governance: Policy, context: dict[str, Any]) -> None:
    d = governance.evaluate(call("write", {"path": "a"}, context=context))
    assert d.outcome is Outcome.DENIED and d.reason_code == "CONSTRAINT_VIOLATED"


def test_elevated_tool_call_is_gated(governance: Policy) -> None:
    d = governance.evaluate(call("process.spawn", {}, context={"elevated": True, "sandbox": False}))
    assert d.outcome is Outcome.GATED


@pytest.mark.parametrize(
    "route", ["exec_host", "docker_socket", "filesystem_mount_rw_outside_workspace"]
)
def test_host_escapes_are_denied(governance: Policy, route: str) -> None:
    d = governance.evaluate(call(route, {}, context={"sandbox": True, "elevated": True}))
    assert d.reason_code == "DENIED_BY_RULE"


def test_session_limit_caps_the_token_lifetime(governance: Policy) -> None:
    assert governance.cst_max_ttl_seconds == 3600


# -- seed 004: PR reviewer ---------------------------------------------------------------

SANDBOX = {"sandbox": True, "workspace_access": "ro"}


@pytest.mark.parametrize(
    "content", ["SECURITY: token in logs", "note — security: weak hash", "ＳＥＣＵＲＩＴＹ: x"]
)
def test_security_comment_is_gated(reviewer: Policy, content: str) -> None:
    d = reviewer.evaluate(call("repo.comment", {"content": content}, context=SANDBOX))
    assert d.outcome is Outcome.GATED


def test_ordinary_comment_is_allowed(reviewer: Policy) -> None:
    d = reviewer.evaluate(call("repo.comment", {"content": "nit: rename x"}, context=SANDBOX))
    assert d.outcome is Outcome.ALLOWED


def test_comment_without_content_fails_closed_to_gated(reviewer: Policy) -> None:
    assert reviewer.evaluate(call("repo.comment", {}, context=SANDBOX)).outcome is Outcome.GATED


@pytest.mark.parametrize(
    "route", ["deploy.prod", "deploy", "deploy.prod.eu", "repo.merge", "shell", "exec"]
)
def test_deploys_merges_and_shells_are_denied(reviewer: Policy, route: str) -> None:
    d = reviewer.evaluate(call(route, {}, context=SANDBOX))
    assert d.outcome is Outcome.DENIED and d.reason_code == "DENIED_BY_RULE"


def test_elevated_execution_denies_even_read_tools(reviewer: Policy) -> None:
    d = reviewer.evaluate(
        call("read", {"path": "README.md"}, context={**SANDBOX, "elevated": True})
    )
    assert d.reason_code == "DENIED_BY_RULE"


def test_writable_workspace_is_a_constraint_violation(reviewer: Policy) -> None:
    d = reviewer.evaluate(
        call("repo.diff", {}, context={"sandbox": True, "workspace_access": "rw"})
    )
    assert d.reason_code == "CONSTRAINT_VIOLATED"


def test_unknown_tool_is_denied_for_the_reviewer(reviewer: Policy) -> None:
    assert (
        reviewer.evaluate(call("repo.push", {}, context=SANDBOX)).reason_code == "NO_MATCHING_RULE"
    )
