"""The execution gate, tested against the seed threat tables (000, 001, 002, 003, 004)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from core.errors import ApprovalRefusedError, GateDeniedError
from core.gate import GateCall, GateContext, admit_ungated, check
from core.grants import mint_grant
from core.keys import SigningKey
from core.policy import Outcome, Policy, ToolCall
from core.quorum import Verdict, apply, judge
from core.requests import open_request
from core.tokens import ScopedToken, TokenVerifier, mint_cst
from tests.fakes import T0, InMemoryLedger, InMemoryRevocations, eligibility, load_policy

KEYTURN = SigningKey.from_seed(bytes(range(100, 132)))
AUDIENCE = "keyturn-gate"
PAYMENT = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": "Invoice 2026-118"}


@dataclass
class Approved:
    policy: Policy
    grant: dict[str, Any]
    token: ScopedToken
    ctx: GateContext
    ledger: InMemoryLedger
    revocations: InMemoryRevocations


def _approved(
    policy: Policy,
    route: str,
    params: dict[str, Any],
    groups: list[list[str]],
    *,
    job_id: str = "j-1",
    plan_hash: str | None = None,
    prior: frozenset[str] = frozenset(),
    token_job: str | None = None,
    kind: str = "job",
) -> Approved:
    call = ToolCall(
        route=route, params=params, requester="agent-1", plan_hash=plan_hash, prior_routes=prior
    )
    decision = policy.evaluate(call)
    assert decision.outcome is Outcome.GATED, decision.message
    request = open_request(
        call,
        decision,
        request_id="r-1",
        job_id=job_id,
        policy_hash_b64u=policy.policy_hash_b64u,
        now=T0,
    )
    confirm = request.binding.payload_hash_b64u[-4:]
    decisions = []
    for index, keys in enumerate(groups):
        d = judge(
            request,
            decisions,
            eligibility(policy, f"approver-{index}", keys),
            Verdict.APPROVE,
            groups=policy.groups,
            now=T0,
            platform="web",
            typed_confirmation=confirm,
        )
        request = apply(request, decisions, d)
        decisions.append(d)
    token = mint_cst(
        KEYTURN,
        sub="did:key:agent",
        audience=AUDIENCE,
        scope=[route],
        now=T0,
        ttl_seconds=300,
        policy_hash_b64u=policy.policy_hash_b64u,
        mission_id=token_job or job_id,
        kind=kind,
    )  # type: ignore[arg-type]
    grant = mint_grant(
        request,
        decisions,
        KEYTURN,
        grant_id="g-1",
        now=T0,
        ttl_seconds=300,
        cst_scope_hash_b64u=token.scope_hash_b64u,
    )
    ledger, revocations = InMemoryLedger(), InMemoryRevocations()
    ctx = GateContext(
        policy=policy,
        keyturn_dids={KEYTURN.did},
        tokens=TokenVerifier({KEYTURN.kid: KEYTURN.public_key}),
        audience=AUDIENCE,
        ledger=ledger,
        revocations=revocations,
    )
    assert grant.envelope is not None
    return Approved(policy, dict(grant.envelope), token, ctx, ledger, revocations)


ENTERPRISE = load_policy("enterprise-two-person.json")


def _payment(**kw: Any) -> Approved:
    return _approved(
        ENTERPRISE,
        "payments.transfer",
        PAYMENT,
        [["Finance-Approvers"], ["Security-Approvers"]],
        **kw,
    )


def _denied(
    a: Approved,
    *,
    route: str = "payments.transfer",
    params: dict[str, Any] | None = None,
    cst: str | None = None,
    grant: dict[str, Any] | None = None,
    at=T0,
    ctx: GateContext | None = None,
    plan_hash: str | None = None,
) -> str:
    with pytest.raises(GateDeniedError) as exc:
        check(
            ctx or a.ctx,
            grant=grant or a.grant,
            cst=cst or a.token.compact,
            call=GateCall(
                route=route, params=params if params is not None else PAYMENT, plan_hash=plan_hash
            ),
            now=at,
        )
    return exc.value.reason_code


def test_approved_payload_passes_once() -> None:
    a = _payment()
    passed = check(
        a.ctx,
        grant=a.grant,
        cst=a.token.compact,
        call=GateCall("payments.transfer", dict(PAYMENT)),
        now=T0,
    )
    assert passed.grant.grant_id == "g-1" and "g-1" in a.ledger.used
    assert _denied(a) == "GRANT_ALREADY_USED"


def test_prompt_injection_changing_the_recipient_is_denied_and_the_grant_survives() -> None:
    a = _payment()
    assert (
        _denied(a, params={**PAYMENT, "to_account": "GB33BUKB20201555555555"})
        == "PAYLOAD_HASH_MISMATCH"
    )
    assert _denied(a, params={**PAYMENT, "amount_usd": 12_500.5}) == "PAYLOAD_HASH_MISMATCH"
    assert not a.ledger.used  # a refused attempt never burns the grant
    check(
        a.ctx,
        grant=a.grant,
        cst=a.token.compact,
        call=GateCall("payments.transfer", PAYMENT),
        now=T0,
    )


def test_param_order_does_not_matter_to_the_payload_hash() -> None:
    a = _payment()
    check(
        a.ctx,
        grant=a.grant,
        cst=a.token.compact,
        call=GateCall("payments.transfer", dict(reversed(list(PAYMENT.items())))),
        now=T0,
    )


def test_replay_of_an_approval_in_another_job_is_denied() -> None:
    a = _payment(token_job="j-other")
    assert _denied(a) == "JOB_MISMATCH"


def test_policy_drift_mid_run_is_denied() -> None:
    a = _payment()
    payload = {**ENTERPRISE.payload, "description": "weakened during an incident"}
    from core.policy import policy_from_payload

    drifted = GateContext(
        policy=policy_from_payload(payload),
        keyturn_dids=a.ctx.keyturn_dids,
        tokens=a.ctx.tokens,
        audience=AUDIENCE,
        ledger=a.ledger,
    )
    assert _denied(a, ctx=drifted) == "POLICY_HASH_MISMATCH"


def test_token_replay_after_revocation_is_denied() -> None:
    a = _payment()
    a.revocations.revoked.add(a.token.token_hash_hex)
    assert _denied(a) == "TOKEN_REVOKED"


def test_runner_token_cannot_execute_a_gated_action() -> None:
    a = _payment(kind="runner")
    assert _denied(a) in {"RUNNER_TOKEN_CANNOT_EXECUTE", "TOKEN_KIND_MISMATCH"}


def test_token_for_another_route_is_denied() -> None:
    a = _payment()
    other = mint_cst(
        KEYTURN,
        sub="did:key:agent",
        audience=AUDIENCE,
        scope=["storage.export"],
        now=T0,
        ttl_seconds=300,
        policy_hash_b64u=ENTERPRISE.policy_hash_b64u,
        mission_id="j-1",
    )
    assert _denied(a, cst=other.compact) in {
        "TOKEN_INSUFFICIENT_SCOPE",
        "TOKEN_SCOPE_HASH_MISMATCH",
    }


def test_route_mismatch_and_expired_grant() -> None:
    a = _payment()
    assert _denied(a, route="storage.export") == "ROUTE_MISMATCH"
    assert _denied(a, at=T0 + timedelta(seconds=300)) == "GRANT_EXPIRED"


def test_forged_or_tampered_grants_are_invalid() -> None:
    a = _payment()
    tampered = {**a.grant, "payload": {**a.grant["payload"], "payload_hash_b64u": "A" * 43}}
    assert _denied(a, grant=tampered) == "GRANT_INVALID"
    forger = SigningKey.generate()
    from core.envelope import sign_envelope

    forged = sign_envelope(
        "keyturn_grant",
        a.grant["payload"],
        forger,
        issued_at=T0,
        expires_at=T0 + timedelta(seconds=300),
    )
    assert _denied(a, grant=forged) == "GRANT_INVALID"
    assert _denied(a, grant={"grant_id": "g-1"}) == "GRANT_INVALID"


def test_grant_is_not_minted_without_quorum() -> None:
    call = ToolCall(route="payments.transfer", params=PAYMENT, requester="agent-1")
    request = open_request(
        call,
        ENTERPRISE.evaluate(call),
        request_id="r-9",
        job_id="j-9",
        policy_hash_b64u=ENTERPRISE.policy_hash_b64u,
        now=T0,
    )
    with pytest.raises(ApprovalRefusedError) as exc:
        mint_grant(request, [], KEYTURN, grant_id="g-9", now=T0, ttl_seconds=60)
    assert exc.value.reason_code == "QUORUM_NOT_MET"


CHANGE = load_policy("change-management.json")


def _change_groups() -> list[list[str]]:
    return [[k] for k in CHANGE.groups]


def test_simulate_first_is_required_before_approval() -> None:
    decision = CHANGE.evaluate(
        ToolCall(
            route="ticket.approve", params={"ticket": "CHG-1"}, requester="agent-1", plan_hash="p1"
        )
    )
    assert decision.outcome is Outcome.DENIED and decision.reason_code == "SIMULATION_REQUIRED"


def test_drift_between_approved_plan_and_executed_plan_is_denied() -> None:
    a = _approved(
        CHANGE,
        "ticket.approve",
        {"ticket": "CHG-1"},
        _change_groups(),
        plan_hash="plan-A",
        prior=frozenset({"change.simulate"}),
    )
    call = GateCall(
        "ticket.approve",
        {"ticket": "CHG-1"},
        plan_hash="plan-B",
        prior_routes=frozenset({"change.simulate"}),
    )
    with pytest.raises(GateDeniedError) as exc:
        check(a.ctx, grant=a.grant, cst=a.token.compact, call=call, now=T0)
    assert exc.value.reason_code == "PLAN_FINGERPRINT_MISMATCH"
    ok = GateCall(
        "ticket.approve",
        {"ticket": "CHG-1"},
        plan_hash="plan-A",
        prior_routes=frozenset({"change.simulate"}),
    )
    check(a.ctx, grant=a.grant, cst=a.token.compact, call=ok, now=T0)
    # executing the change (allowed, not gated) must apply the approved plan
    runner = mint_cst(
        KEYTURN,
        sub="did:key:agent",
        audience=AUDIENCE,
        scope=["change.execute"],
        now=T0,
        ttl_seconds=300,
        policy_hash_b64u=CHANGE.policy_hash_b64u,
        mission_id="j-1",
        kind="runner",
    )
    prior = frozenset({"change.simulate", "ticket.approve"})
    with pytest.raises(GateDeniedError) as exc:
        admit_ungated(
            a.ctx,
            cst=runner.compact,
            call=GateCall(
                "change.execute", {"ticket": "CHG-1"}, plan_hash="plan-B", prior_routes=prior
            ),
            job_id="j-1",
            now=T0,
            approved_plan_hash="plan-A",
        )
    assert exc.value.reason_code == "PLAN_FINGERPRINT_MISMATCH"
    admit_ungated(
        a.ctx,
        cst=runner.compact,
        call=GateCall(
            "change.execute", {"ticket": "CHG-1"}, plan_hash="plan-A", prior_routes=prior
        ),
        job_id="j-1",
        now=T0,
        approved_plan_hash="plan-A",
    )


def test_ungated_path_refuses_gated_calls_and_other_jobs() -> None:
    a = _payment()
    runner = mint_cst(
        KEYTURN,
        sub="did:key:agent",
        audience=AUDIENCE,
        scope=["payments.transfer"],
        now=T0,
        ttl_seconds=300,
        policy_hash_b64u=ENTERPRISE.policy_hash_b64u,
        mission_id="j-1",
        kind="runner",
    )
    with pytest.raises(GateDeniedError) as exc:
        admit_ungated(
            a.ctx,
            cst=runner.compact,
            call=GateCall("payments.transfer", PAYMENT),
            job_id="j-1",
            now=T0,
        )
    assert exc.value.reason_code == "APPROVAL_REQUIRED"
    small = {**PAYMENT, "amount_usd": 499}
    admit_ungated(
        a.ctx, cst=runner.compact, call=GateCall("payments.transfer", small), job_id="j-1", now=T0
    )
    with pytest.raises(GateDeniedError) as exc:
        admit_ungated(
            a.ctx,
            cst=runner.compact,
            call=GateCall("payments.transfer", small),
            job_id="j-2",
            now=T0,
        )
    assert exc.value.reason_code == "JOB_MISMATCH"
