"""Gate checks per second next to REF (JCS of a 1 KiB payload + SHA-256 + one Ed25519
sign), measured in the same run. Goal (issue 2): a full in-memory gate check — grant
signature, token (cached after first use), canonical payload hash, policy — at most
2x REF."""

from __future__ import annotations

import hashlib
import itertools

import rfc8785

from core import canonical
from core.gate import GateCall, GateContext, admit
from core.grants import mint_grant
from core.keys import SigningKey, verify_signature
from core.policy import ToolCall
from core.quorum import Verdict, apply, judge
from core.requests import open_request
from core.tokens import TokenVerifier, mint_cst
from tests.bench.timing import per_op, row
from tests.fakes import T0, InMemoryRevocations, eligibility, load_policy

KEY = SigningKey.from_seed(bytes(range(100, 132)))


def _payload_1k() -> dict[str, object]:
    return {
        "amount_usd": 12_500,
        "to_account": "DE89370400440532013000",
        "memo": "Invoice 2026-118 " + "x" * 300,
        "lines": [{"sku": f"S-{i}", "qty": i, "price": 19.99 + i} for i in range(12)],
        "meta": {
            "requested_by": "invoice-bot",
            "ticket": "FIN-4411",
            "tags": ["q4", "eu", "vendor"],
        },
    }


def main() -> None:
    policy = load_policy("enterprise-two-person.json")
    params = _payload_1k()
    print(f"payload: {len(canonical.jcs(params))} bytes of JCS")

    def ref() -> None:  # the unit: the rfc8785 package itself, not keyturn's fast path
        KEY.sign(hashlib.sha256(rfc8785.dumps(params)).digest())

    ref_s = per_op(ref)
    call = ToolCall(route="payments.transfer", params=params, requester="agent-1")
    request = open_request(
        call,
        policy.evaluate(call),
        request_id="r",
        job_id="j",
        policy_hash_b64u=policy.policy_hash_b64u,
        now=T0,
    )
    confirm = request.binding.payload_hash_b64u[-4:]
    decisions = []
    for person, group in (("bob", "Finance-Approvers"), ("carol", "Security-Approvers")):
        d = judge(
            request,
            decisions,
            eligibility(policy, person, [group]),
            Verdict.APPROVE,
            groups=policy.groups,
            now=T0,
            platform="bench",
            typed_confirmation=confirm,
        )
        request = apply(request, decisions, d)
        decisions.append(d)
    token = mint_cst(
        KEY,
        sub="did:key:agent",
        audience="gate",
        scope=["payments.transfer"],
        now=T0,
        ttl_seconds=600,
        policy_hash_b64u=policy.policy_hash_b64u,
        mission_id="j",
    )
    grant = mint_grant(
        request,
        decisions,
        KEY,
        grant_id="g",
        now=T0,
        ttl_seconds=600,
        cst_scope_hash_b64u=token.scope_hash_b64u,
    )
    envelope = grant.envelope
    ctx = GateContext(
        policy=policy,
        keyturn_dids={KEY.did},
        tokens=TokenVerifier({KEY.kid: KEY.public_key}),
        audience="gate",
        revocations=InMemoryRevocations(),
    )
    gate_call = GateCall("payments.transfer", params)

    def gate() -> None:
        admit(ctx, grant=envelope, cst=token.compact, call=gate_call, now=T0)

    cold_tokens = (
        mint_cst(
            KEY,
            sub="did:key:agent",
            audience="gate",
            scope=["payments.transfer"],
            now=T0,
            ttl_seconds=600,
            policy_hash_b64u=policy.policy_hash_b64u,
            mission_id="j",
            jti=f"t{i}",
        )
        for i in itertools.count()
    )

    def gate_cold_token() -> None:
        fresh = TokenVerifier({KEY.kid: KEY.public_key})
        cold = GateContext(policy=policy, keyturn_dids={KEY.did}, tokens=fresh, audience="gate")
        admit(cold, grant=envelope, cst=next(cold_tokens).compact, call=gate_call, now=T0)

    sig = KEY.sign(b"x" * 43)
    verify_s = per_op(lambda: verify_signature(KEY.public_key, b"x" * 43, sig))
    jcs_s = per_op(lambda: canonical.jcs(params))
    eval_s = per_op(lambda: policy.evaluate(call))
    gate_s = per_op(gate)
    cold_s = per_op(gate_cold_token, min_seconds=0.3)
    print(row("REF = JCS(1 KiB) + SHA-256 + Ed25519 sign", ref_s, ref_s))
    print(row("one Ed25519 verify (libsodium)", verify_s, ref_s))
    print(row("JCS of the payload (keyturn canonical.jcs)", jcs_s, ref_s))
    print(row("policy decision for the call", eval_s, ref_s))
    print(row("gate check, token verified before (cache hit)", gate_s, ref_s))
    print(row("gate check, fresh token each time (+mint, cold verify)", cold_s, ref_s))
    print(
        f"goal: gate check <= 2.00x REF -> measured {gate_s / ref_s:.2f}x "
        f"({'met' if gate_s <= 2 * ref_s else 'NOT met'})"
    )
