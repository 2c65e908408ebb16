"""A whole approval flow, receipted into a log and sealed (shared by the evidence tests).

Drives the same shape as ``tests/core/test_gate.py``: open a gated request, judge and
apply decisions, mint a job token and a grant, pass the gate; every step is a signed
receipt appended to a :class:`ReceiptLog`, and the finished request is sealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core import receipt_events as events
from core.bundle import bundle_bytes, seal_bundle, verify_bundle
from core.checkpoint import Checkpoint
from core.gate import GateCall, GateContext, check
from core.grants import Grant, mint_grant
from core.keys import SigningKey
from core.policy import Outcome, Policy, ToolCall, sign_wpc
from core.quorum import ApproverDecision, Verdict, apply, judge
from core.receipt_log import ReceiptLog
from core.receipts import Receipt, sign_receipt
from core.requests import ApprovalRequest, RequestState, open_request
from core.tokens import ScopedToken, TokenVerifier, mint_cst
from tests.fakes import T0, InMemoryLedger, eligibility, load_policy

KEYTURN = SigningKey.from_seed(bytes(range(100, 132)))
ISSUER = SigningKey.from_seed(bytes(range(1, 33)))  # the demo issuer of manifests/policies
AGENT = SigningKey.from_seed(bytes(range(40, 72)))
ORIGIN = "keyturn/acme-prod"
AUDIENCE = "keyturn-gate"
POLICY = load_policy("enterprise-two-person.json")
WPC = sign_wpc(POLICY.payload, ISSUER, issued_at=T0 - timedelta(days=1))
PAYMENT = {
    "amount_usd": 12_500,
    "to_account": "DE89370400440532013000",
    "memo": "Invoice 2026-118",
}
SPAN = "span-tool-7"
APPROVERS = {
    "bob-oid": ("Bob Li", ["Finance-Approvers"]),
    "carol-oid": ("Carol Diaz", ["Security-Approvers"]),
    "erin-oid": ("Erin Wu", ["Finance-Approvers", "Security-Approvers"]),
}


@dataclass
class Flow:
    """One request's life, receipted. ``logged`` holds the request's (index, envelope)."""

    policy: Policy
    request: ApprovalRequest
    call: ToolCall
    log: ReceiptLog
    now: datetime = T0
    logged: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    decisions: list[ApproverDecision] = field(default_factory=list)
    grant: Grant | None = None
    token: ScopedToken | None = None
    counter: int = 0

    def at(self, seconds: float) -> datetime:
        self.now = self.now + timedelta(seconds=seconds)
        return self.now

    def next_id(self, prefix: str = "rc") -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def record(self, receipt: Receipt, *, about_request: bool = True) -> tuple[int, dict[str, Any]]:
        envelope = sign_receipt(receipt, KEYTURN)
        appended = self.log.append_receipt(envelope, now=self.now)
        if about_request:
            self.logged.append((appended.index, envelope))
        return appended.index, envelope

    def decide(
        self, person: str, verdict: Verdict = Verdict.APPROVE, reason: str | None = None
    ) -> None:
        name, groups = APPROVERS[person]
        at = self.at(60)
        d = judge(
            self.request,
            self.decisions,
            eligibility(self.policy, person, groups, at=at, name=name),
            verdict,
            groups=self.policy.groups,
            now=at,
            platform="slack",
            reason=reason,
            typed_confirmation=self.request.binding.payload_hash_b64u[-4:],
        )
        self.request = apply(self.request, self.decisions, d)
        self.decisions.append(d)
        self.record(events.decision_receipt(self.request, d, receipt_id=self.next_id()))

    def mint(self, *, ttl: int = 300) -> None:
        at = self.at(1)
        self.token = mint_cst(
            KEYTURN,
            sub=self.request.binding.requester,
            audience=AUDIENCE,
            scope=[self.request.binding.tool_route],
            now=at,
            ttl_seconds=ttl,
            policy_hash_b64u=self.policy.policy_hash_b64u,
            mission_id=self.request.binding.job_id,
            jti="jti-1",
        )
        self.grant = mint_grant(
            self.request,
            self.decisions,
            KEYTURN,
            grant_id="g-5d1e",
            now=at,
            ttl_seconds=ttl,
            cst_scope_hash_b64u=self.token.scope_hash_b64u,
        )
        self.record(events.grant_minted(self.request, self.grant, receipt_id=self.next_id()))
        self.record(events.cst_minted(self.request, self.token, receipt_id=self.next_id()))

    def run(self, params: dict[str, Any] | None = None) -> None:
        """Present grant + token at the gate; receipt the pass (and consume) or the denial."""
        assert self.grant is not None and self.token is not None
        at = self.at(30)
        ctx = GateContext(
            policy=self.policy,
            keyturn_dids={KEYTURN.did},
            tokens=TokenVerifier({KEYTURN.kid: KEYTURN.public_key}),
            audience=AUDIENCE,
            ledger=InMemoryLedger(),
        )
        from core.errors import GateDeniedError

        try:
            passed = check(
                ctx,
                grant=self.grant.envelope,
                cst=self.token.compact,
                call=GateCall(self.request.binding.tool_route, params or dict(self.request.params)),
                now=at,
            )
        except GateDeniedError as e:
            self.record(
                events.gate_denied(
                    e.reason_code,
                    at=at,
                    actor=self.token.sub,
                    policy_hash_b64u=self.policy.policy_hash_b64u,
                    receipt_id=self.next_id(),
                    request=self.request,
                    grant_id=self.grant.grant_id,
                )
            )
            return
        self.record(
            events.gate_passed(
                self.request,
                grant=passed.grant,
                token=passed.token,
                at=passed.checked_at,
                receipt_id=self.next_id(),
            )
        )
        self.request = self.request.transition(RequestState.CONSUMED, at=at)

    def checkpoint(self) -> Checkpoint:
        return self.log.checkpoint(self.at(1))

    def seal(self, **overrides: Any) -> dict[str, Any]:
        checkpoint = self.checkpoint()
        kwargs: dict[str, Any] = {
            "wpc": WPC,
            "receipts": self.logged,
            "proofs": self.log,
            "checkpoint": checkpoint,
            "signer": KEYTURN,
            "bundle_id": "b-1042",
            "now": self.at(1),
            "grant": self.grant,
        }
        kwargs.update(overrides)
        return seal_bundle(self.request, **kwargs)


def start(
    params: dict[str, Any] | None = None,
    *,
    route: str = "payments.transfer",
    span_id: str | None = SPAN,
    policy: Policy = POLICY,
    noise: int = 3,
    breakglass: bool = False,
) -> Flow:
    """Open a gated request (after ``noise`` unrelated receipts) and receipt its creation.

    A break-glass request is a person's (``dave-oid``), for the policy's longest window.
    """
    log = ReceiptLog(ORIGIN, KEYTURN, started_at=T0)
    call = ToolCall(
        route=route,
        params=dict(params or PAYMENT),
        requester="dave-oid" if breakglass else AGENT.did,
        on_behalf_of=None if breakglass else "alice-oid",
        breakglass=breakglass,
    )
    decision = policy.evaluate(call)
    assert decision.outcome is Outcome.GATED, decision.message
    window = decision.breakglass.max_duration_seconds if decision.breakglass else None
    request = open_request(
        call,
        decision,
        request_id="r-7f2c",
        job_id="j-8f3a21",
        policy_hash_b64u=policy.policy_hash_b64u,
        now=T0,
        span_id=span_id,
        breakglass_window_seconds=window if breakglass else None,
    )
    flow = Flow(policy=policy, request=request, call=call, log=log)
    for n in range(noise):
        flow.record(
            events.policy_activated(policy, at=T0, actor="admin-oid", receipt_id=f"noise-{n}"),
            about_request=False,
        )
    flow.record(events.request_created(request, call, receipt_id=flow.next_id()))
    return flow


def consumed(params: dict[str, Any] | None = None, **kw: Any) -> Flow:
    """Approved by two people from distinct groups, granted, and run once."""
    flow = start(params, **kw)
    flow.decide("bob-oid")
    flow.decide("carol-oid")
    flow.mint()
    flow.run()
    return flow


def denied() -> Flow:
    flow = start()
    flow.decide("bob-oid")
    flow.decide("carol-oid", Verdict.DENY, reason="wrong beneficiary")
    return flow


def expired() -> Flow:
    flow = start()
    flow.decide("bob-oid")
    at = flow.request.binding.expires_at
    flow.now = at
    flow.request = flow.request.transition(RequestState.EXPIRED, at=at, reason="deadline passed")
    flow.record(
        events.expiry(flow.request, at=at, receipt_id=flow.next_id(), reason="deadline passed")
    )
    return flow


# --- the flow itself ------------------------------------------------------------------------


def test_a_consumed_request_seals_into_a_bundle_that_verifies() -> None:
    flow = consumed()
    envelope = flow.seal()
    report = verify_bundle(bundle_bytes(envelope), trusted_keyturn_dids=[KEYTURN.did])
    assert report.outcome == "consumed"
    assert report.evidence.quorum_met
    assert [d.approver_id for d in report.evidence.approvals] == ["bob-oid", "carol-oid"]
    assert report.evidence.grant is not None and report.evidence.grant.grant_id == "g-5d1e"
    assert len(report.evidence.gate_passes) == 1
    assert report.policy_issuer_pinned is False
    assert any("inclusion proofs" in c for c in report.checks)


def test_denied_and_expired_requests_seal_too() -> None:
    for flow, outcome in ((denied(), "denied"), (expired(), "expired")):
        report = verify_bundle(flow.seal(), trusted_keyturn_dids=[KEYTURN.did])
        assert report.outcome == outcome
        assert report.evidence.grant is None
        assert not report.evidence.gate_passes
