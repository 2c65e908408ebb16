"""The execution gate: the last check before a gated action runs.

:func:`check` returns a :class:`GatePass` or raises :class:`~core.errors.GateDeniedError`
with a stable reason code; nothing else can lead to an execution. Checks, in order
(the first failure wins; the grant is consumed only after every check passed, so a
refused attempt never burns a valid grant):

1. the grant is a ``keyturn_grant`` envelope signed by keyturn  → GRANT_INVALID / GRANT_EXPIRED
2. the route about to run is the granted route                → ROUTE_MISMATCH
3. the active policy is the one the grant was given under     → POLICY_HASH_MISMATCH
4. the scoped token verifies for this job, policy and route   → TOKEN_*, JOB_MISMATCH
   (a runner token can never execute a gated route: seed 000 separation of duties)
5. the payload hash recomputed from the exact parameters      → PAYLOAD_HASH_MISMATCH
6. the plan fingerprint, when the policy asks for one         → PLAN_FINGERPRINT_MISMATCH
7. the policy, evaluated again for this exact call, still gates it under the same
   rules (prerequisites such as simulate-first included)
   → POLICY_DENIED, SIMULATION_REQUIRED, …
8. the grant is consumed exactly once (through the ledger)    → GRANT_ALREADY_USED
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from core import canonical
from core.errors import CanonicalizationError, GateDeniedError, TokenError
from core.grants import Grant, verify_grant
from core.policy import Outcome, Policy, ToolCall
from core.ports import GrantLedger, RevocationList
from core.requests import payload_hash
from core.times import require_aware
from core.tokens import ScopedToken

#: Token kinds that may carry an approved action through the gate.
EXECUTING_KINDS = frozenset({"job", "breakglass"})


class TokenCheck(Protocol):
    """What the gate needs from a token verifier (``core.tokens.TokenVerifier``)."""

    def verify(
        self,
        compact: str,
        *,
        now: datetime,
        audience: str,
        required_scope: str | None = None,
        expected_policy_hash: str | None = None,
        expected_mission_id: str | None = None,
        expected_scope_hash: str | None = None,
        revocations: RevocationList | None = None,
    ) -> ScopedToken: ...


@dataclass(frozen=True, slots=True)
class GateContext:
    """What the gate is configured with: who signs grants and which policy is active."""

    policy: Policy
    keyturn_dids: Collection[str]
    tokens: TokenCheck
    audience: str
    ledger: GrantLedger | None = None  # required by check(); async stores consume themselves
    revocations: RevocationList | None = None


@dataclass(frozen=True, slots=True)
class GateCall:
    """The call about to run, exactly as the tool will send it."""

    route: str
    params: Mapping[str, Any]
    plan_hash: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    prior_routes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class GatePass:
    grant: Grant
    token: ScopedToken
    payload_hash_b64u: str
    checked_at: datetime


def check(ctx: GateContext, *, grant: object, cst: str, call: GateCall, now: datetime) -> GatePass:
    """Admit one gated call and consume its grant through ``ctx.ledger``.

    Args:
        grant: the grant envelope as presented (unverified).
        cst: the compact scoped token as presented (unverified).

    Raises:
        GateDeniedError: with the reason code of the first failed check.
    """
    if ctx.ledger is None:
        raise GateDeniedError("GATE_MISCONFIGURED", "the gate has no grant ledger")
    passed = admit(ctx, grant=grant, cst=cst, call=call, now=now)
    ctx.ledger.consume(passed.grant.grant_id, at=passed.checked_at)
    return passed


def admit(ctx: GateContext, *, grant: object, cst: str, call: GateCall, now: datetime) -> GatePass:
    """Run checks 1–7 without consuming the grant.

    The caller must consume ``GatePass.grant.grant_id`` atomically (check 8) before
    anything runs: an async store does it in its own transaction.

    Raises:
        GateDeniedError: with the reason code of the first failed check.
    """
    now = require_aware(now)
    verified = verify_grant(grant, trusted_signers=ctx.keyturn_dids, now=now)
    if call.route != verified.tool_route:
        raise GateDeniedError(
            "ROUTE_MISMATCH", f"the grant is for {verified.tool_route}, not {call.route}"
        )
    if not canonical.digests_equal(ctx.policy.policy_hash_b64u, verified.policy_hash_b64u):
        raise GateDeniedError(
            "POLICY_HASH_MISMATCH",
            "the active policy is not the one this grant was approved under",
        )
    token = _verify_token(ctx, cst, verified, now)
    try:
        actual = payload_hash(call.params)
    except CanonicalizationError as e:
        raise GateDeniedError("PAYLOAD_HASH_MISMATCH", "parameters cannot be hashed") from e
    if not canonical.digests_equal(actual, verified.payload_hash_b64u):
        raise GateDeniedError(
            "PAYLOAD_HASH_MISMATCH",
            "the parameters about to run differ from the ones that were approved",
        )
    decision = ctx.policy.evaluate(
        ToolCall(
            route=call.route,
            params=call.params,
            requester=token.sub,
            context=call.context,
            prior_routes=call.prior_routes,
            plan_hash=call.plan_hash,
        )
    )
    if (decision.requires_plan_fingerprint or verified.plan_hash is not None) and (
        call.plan_hash is None
        or verified.plan_hash is None
        or not canonical.digests_equal(call.plan_hash, verified.plan_hash)
    ):
        raise GateDeniedError(
            "PLAN_FINGERPRINT_MISMATCH",
            "the plan being applied is not the plan that was approved",
        )
    if decision.outcome is Outcome.DENIED:
        code = decision.reason_code if decision.reason_code != "DENIED_BY_RULE" else "POLICY_DENIED"
        raise GateDeniedError(code, decision.message)
    return GatePass(grant=verified, token=token, payload_hash_b64u=actual, checked_at=now)


def _verify_token(ctx: GateContext, cst: str, grant: Grant, now: datetime) -> ScopedToken:
    try:
        token = ctx.tokens.verify(
            cst,
            now=now,
            audience=ctx.audience,
            required_scope=grant.tool_route,
            expected_policy_hash=grant.policy_hash_b64u,
            expected_mission_id=grant.job_id,
            expected_scope_hash=grant.cst_scope_hash_b64u,
            revocations=ctx.revocations,
        )
    except TokenError as e:
        code = "JOB_MISMATCH" if e.reason_code == "TOKEN_JOB_MISMATCH" else e.reason_code
        raise GateDeniedError(code, e.message) from e
    if token.kind not in EXECUTING_KINDS:
        raise GateDeniedError(
            "RUNNER_TOKEN_CANNOT_EXECUTE",
            "a runner token can request approval but never execute a gated action",
        )
    if token.mission_id != grant.job_id:
        raise GateDeniedError("JOB_MISMATCH", "the token belongs to another job")
    return token


def admit_ungated(
    ctx: GateContext,
    *,
    cst: str,
    call: GateCall,
    job_id: str,
    now: datetime,
    approved_plan_hash: str | None = None,
) -> ScopedToken:
    """Admit a call the policy allows without approval (no grant is involved).

    The token must belong to ``job_id``, be pinned to the active policy and carry the
    route in its scope; the policy must *allow* the exact call — a gated call needs a
    grant and goes through :func:`check`. When the policy asks for a plan fingerprint,
    the call's plan hash must equal the plan approved earlier in the job.

    Raises:
        GateDeniedError: APPROVAL_REQUIRED, PLAN_FINGERPRINT_MISMATCH, the policy's own
            denial code, or TOKEN_* / JOB_MISMATCH for the token.
    """
    now = require_aware(now)
    try:
        token = ctx.tokens.verify(
            cst,
            now=now,
            audience=ctx.audience,
            required_scope=call.route,
            expected_policy_hash=ctx.policy.policy_hash_b64u,
            expected_mission_id=job_id,
            revocations=ctx.revocations,
        )
    except TokenError as e:
        code = "JOB_MISMATCH" if e.reason_code == "TOKEN_JOB_MISMATCH" else e.reason_code
        raise GateDeniedError(code, e.message) from e
    decision = ctx.policy.evaluate(
        ToolCall(
            route=call.route,
            params=call.params,
            requester=token.sub,
            context=call.context,
            prior_routes=call.prior_routes,
            plan_hash=call.plan_hash,
        )
    )
    if decision.outcome is Outcome.GATED:
        raise GateDeniedError(
            "APPROVAL_REQUIRED", f"{call.route} needs approval first: {decision.message}"
        )
    if decision.outcome is Outcome.DENIED:
        code = decision.reason_code if decision.reason_code != "DENIED_BY_RULE" else "POLICY_DENIED"
        raise GateDeniedError(code, decision.message)
    if decision.requires_plan_fingerprint and (
        call.plan_hash is None
        or approved_plan_hash is None
        or not canonical.digests_equal(call.plan_hash, approved_plan_hash)
    ):
        raise GateDeniedError(
            "PLAN_FINGERPRINT_MISMATCH", "the plan being applied is not the plan that was approved"
        )
    return token
