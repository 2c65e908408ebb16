"""A small keyturn application service for adapter tests, built on the real core.

It holds real state and runs real rules: the enterprise seed policy decides calls,
agents prove their keys with Ed25519 over a single-use challenge, runner and job
tokens are real CSTs, requests follow the core state machine, approvals go through
``core.quorum.judge`` with directory evidence, grants are minted by
``core.grants.mint_grant``, the gate is ``core.gate.check`` with a single-use ledger,
and receipts go into a real Merkle tree with signed checkpoints. What it fakes is
persistence (dicts) and people (``approve``/``deny`` stand in for clicks).

Long polls wait on an ``asyncio.Event`` per request that is replaced on every change.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core import canonical
from core.checkpoint import sign_checkpoint
from core.errors import (
    BundleError,
    GateDeniedError,
    PolicyError,
    StoreError,
    TokenError,
)
from core.gate import GateCall, GateContext, admit_ungated, check
from core.grants import Grant, mint_grant
from core.keys import SigningKey, public_key_from_did, verify_signature
from core.merkle import InMemoryLogNodes, MerkleTree, leaf_hash
from core.outcomes import Challenge, GatePassed, JobStarted, RequestStatus, Submitted
from core.policy import Outcome, Policy, ToolCall
from core.quorum import ApproverDecision, Verdict, apply, expire_if_due, judge, progress
from core.requests import ApprovalRequest, RequestState, open_request, payload_hash
from core.tokens import TokenVerifier, mint_cst, verify_cst
from tests.fakes import T0, FixedClock, InMemoryLedger, InMemoryRevocations, eligibility
from tests.fakes import load_policy as load_seed_policy

AUDIENCE = "keyturn"
ORIGIN = "keyturn.test/log"
KEYTURN_KEY = SigningKey.from_seed(bytes(range(1, 33)))
JOB_PREFIX = b"keyturn-job-v1\n"


@dataclass
class Entry:
    request: ApprovalRequest
    agent_did: str
    decisions: list[ApproverDecision] = field(default_factory=list)
    grant: Grant | None = None
    job_token: str | None = None
    job_token_expires_at: datetime | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()


class FakeAgentService:
    """Implements ``adapters.http.ports.AgentService`` with the real core."""

    def __init__(self, policy: Policy | None = None, *, clock: FixedClock | None = None) -> None:
        self.policy = policy or load_seed_policy("enterprise-two-person.json")
        self.clock = clock or FixedClock(T0)
        self.key = KEYTURN_KEY
        self.agents: dict[str, bool] = {}
        self.challenges: dict[str, tuple[str, datetime]] = {}
        self.used_challenges: set[str] = set()
        self.jobs: dict[str, str] = {}
        self.prior_routes: dict[str, set[str]] = {}
        self.requests: dict[str, Entry] = {}
        self.ledger = InMemoryLedger()
        self.revocations = InMemoryRevocations()
        self.verifier = TokenVerifier({self.key.kid: self.key.public_key})
        self.tree = MerkleTree(InMemoryLogNodes())
        self.ready = True
        self.explode_with: Exception | None = None
        self.calls: list[str] = []
        self.waits: list[float] = []
        self._ids = itertools.count(1)
        self._opened = asyncio.Event()
        routes = {route for rule in self.policy.payload["rules"] for route in rule["routes"]}
        self.runner_scope = sorted(routes)

    # --- test controls -------------------------------------------------------------

    def register(self, did: str, *, enabled: bool = True) -> None:
        self.agents[did] = enabled

    def pending(self) -> list[str]:
        return [rid for rid, e in self.requests.items() if e.request.state is RequestState.PENDING]

    async def next_pending(self, timeout: float = 10.0) -> str:
        """The id of a pending request, waiting for one to be opened."""
        async with asyncio.timeout(timeout):
            while not self.pending():
                self._opened.clear()
                await self._opened.wait()
        return self.pending()[0]

    def approve(self, request_id: str) -> None:
        """Eligible approvers click Approve until the quorum is met; a grant is minted."""
        entry = self.requests[request_id]
        now = self.clock.now()
        for index, groups in enumerate(self._approver_groups(entry.request)):
            decision = judge(
                entry.request,
                entry.decisions,
                eligibility(self.policy, f"approver-{index}", groups, at=now),
                Verdict.APPROVE,
                groups=self.policy.groups,
                now=now,
                platform="web",
                typed_confirmation=entry.request.binding.payload_hash_b64u[-4:],
            )
            entry.request = apply(entry.request, entry.decisions, decision)
            entry.decisions.append(decision)
            self._log("decision", decision.to_json())
        assert entry.request.state is RequestState.APPROVED
        binding = entry.request.binding
        token = mint_cst(
            self.key,
            sub=entry.agent_did,
            audience=AUDIENCE,
            scope=[binding.tool_route],
            now=now,
            ttl_seconds=300,
            policy_hash_b64u=self.policy.policy_hash_b64u,
            mission_id=binding.job_id,
            kind="job",
        )
        entry.grant = mint_grant(
            entry.request,
            entry.decisions,
            self.key,
            grant_id=f"g-{request_id}",
            now=now,
            ttl_seconds=300,
            cst_scope_hash_b64u=token.scope_hash_b64u,
        )
        entry.job_token = token.compact
        entry.job_token_expires_at = now + timedelta(seconds=300)
        self._log("grant", entry.grant.to_payload())
        entry.notify()

    def deny(self, request_id: str, reason: str = "not this one") -> None:
        entry = self.requests[request_id]
        now = self.clock.now()
        groups = self._approver_groups(entry.request)[0]
        decision = judge(
            entry.request,
            entry.decisions,
            eligibility(self.policy, "approver-0", groups, at=now),
            Verdict.DENY,
            groups=self.policy.groups,
            now=now,
            platform="web",
            reason=reason,
        )
        entry.request = apply(entry.request, entry.decisions, decision)
        entry.decisions.append(decision)
        entry.notify()

    def expire(self, request_id: str) -> None:
        # As if the deadline passed, without moving the clock (tokens would expire too).
        entry = self.requests[request_id]
        deadline = entry.request.binding.expires_at
        entry.request = entry.request.transition(
            RequestState.EXPIRED, at=deadline, reason="nobody decided before the deadline"
        )
        entry.notify()

    def _approver_groups(self, request: ApprovalRequest) -> list[list[str]]:
        requirement = request.requirements[0]
        if requirement.one_from_each:
            return [[group] for group in requirement.one_from_each]
        return [[requirement.allowed_groups[0]]] * requirement.min_approvers

    # --- AgentService --------------------------------------------------------------

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.explode_with is not None:
            raise self.explode_with

    async def agent_challenge(self, agent_did: str) -> Challenge:
        self._enter("agent_challenge")
        self._known_agent(agent_did)
        challenge = canonical.b64u_encode(secrets.token_bytes(24))
        expires = self.clock.now() + timedelta(seconds=60)
        self.challenges[challenge] = (agent_did, expires)
        return Challenge(agent_did=agent_did, challenge=challenge, expires_at=expires)

    def _known_agent(self, did: str) -> None:
        if did not in self.agents:
            raise PolicyError("AGENT_UNKNOWN", "this agent is not registered with keyturn")
        if not self.agents[did]:
            raise PolicyError("AGENT_DISABLED", "this agent has been disabled")

    async def start_job(self, *, agent_did: str, challenge: str, signature_b64u: str) -> JobStarted:
        self._enter("start_job")
        self._known_agent(agent_did)
        if challenge in self.used_challenges:
            raise TokenError("CHALLENGE_USED", "this challenge was already used; ask for a new one")
        issued = self.challenges.pop(challenge, None)
        if issued is None or issued[0] != agent_did:
            raise TokenError("CHALLENGE_INVALID", "keyturn did not issue this challenge to you")
        self.used_challenges.add(challenge)
        if self.clock.now() >= issued[1]:
            raise TokenError("CHALLENGE_EXPIRED", "the challenge expired; ask for a new one")
        try:
            signature = canonical.b64u_decode(signature_b64u)
        except Exception as e:
            raise TokenError("SIGNATURE_INVALID", "the signature is not base64url") from e
        message = JOB_PREFIX + challenge.encode("utf-8")
        if not verify_signature(public_key_from_did(agent_did), message, signature):
            raise TokenError("SIGNATURE_INVALID", "the signature does not verify for this agent")
        job_id = f"job-{next(self._ids)}"
        token = mint_cst(
            self.key,
            sub=agent_did,
            audience=AUDIENCE,
            scope=self.runner_scope,
            now=self.clock.now(),
            ttl_seconds=900,
            policy_hash_b64u=self.policy.policy_hash_b64u,
            mission_id=job_id,
            kind="runner",
        )
        self.jobs[job_id] = agent_did
        self.prior_routes[job_id] = set()
        return JobStarted(
            job_id=job_id,
            runner_token=token.compact,
            expires_at=self.clock.now() + timedelta(seconds=900),
            policy_hash_b64u=self.policy.policy_hash_b64u,
            scope=tuple(self.runner_scope),
        )

    def _runner(self, cst: str, job_id: str | None = None) -> Any:
        return verify_cst(
            cst,
            issuer_keys={self.key.kid: self.key.public_key},
            now=self.clock.now(),
            audience=AUDIENCE,
            expected_policy_hash=self.policy.policy_hash_b64u,
            expected_mission_id=job_id,
            expected_kind="runner",
            revocations=self.revocations,
        )

    async def submit(
        self,
        *,
        cst: str,
        job_id: str,
        tool_route: str,
        params: Mapping[str, Any],
        plan_hash: str | None = None,
        span_id: str | None = None,
        justification: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Submitted:
        self._enter("submit")
        token = self._runner(cst, job_id)
        call = ToolCall(
            route=tool_route,
            params=dict(params),
            requester=token.sub,
            context=dict(context or {}),
            prior_routes=frozenset(self.prior_routes.get(job_id, ())),
            plan_hash=plan_hash,
        )
        decision = self.policy.evaluate(call)
        digest = payload_hash(params)
        common: dict[str, Any] = {
            "reason_code": decision.reason_code,
            "message": decision.message,
            "tool_route": tool_route,
            "payload_hash_b64u": digest,
            "policy_hash_b64u": self.policy.policy_hash_b64u,
            "rules": tuple(r.to_json() for r in decision.rules),
        }
        if decision.outcome is Outcome.ALLOWED:
            return Submitted(outcome="allowed", **common)
        if decision.outcome is Outcome.DENIED:
            return Submitted(outcome="denied", **common)
        request_id = f"r-{next(self._ids)}"
        request = open_request(
            call,
            decision,
            request_id=request_id,
            job_id=job_id,
            policy_hash_b64u=self.policy.policy_hash_b64u,
            now=self.clock.now(),
            span_id=span_id,
            justification=justification,
        )
        self.requests[request_id] = Entry(request=request, agent_did=token.sub)
        self._log("request", request.binding.to_json())
        self._opened.set()
        return Submitted(
            outcome="gated",
            request_id=request_id,
            request_hash_b64u=request.request_hash_b64u,
            expires_at=request.binding.expires_at,
            needs=tuple(self.policy.requirement_text(r) for r in request.requirements),
            card_url=f"https://keyturn.test/requests/{request_id}",
            **common,
        )

    async def request_status(
        self, *, cst: str, request_id: str, wait_seconds: float = 0
    ) -> RequestStatus:
        self._enter("request_status")
        self.waits.append(wait_seconds)
        token = self._runner(cst)
        entry = self.requests.get(request_id)
        if entry is None or entry.request.binding.job_id != token.mission_id:
            raise StoreError("NOT_FOUND", "no such request for this job")
        entry.request = expire_if_due(entry.request, now=self.clock.now())
        if entry.request.state is RequestState.PENDING and wait_seconds > 0:
            changed = entry.changed
            try:
                async with asyncio.timeout(wait_seconds):
                    await changed.wait()
            except TimeoutError:
                pass
        return self._status(entry)

    def _status(self, entry: Entry) -> RequestStatus:
        request = entry.request
        done = progress(request, entry.decisions)
        approved = request.state is RequestState.APPROVED and entry.grant is not None
        return RequestStatus(
            request_id=request.request_id,
            state=str(request.state),
            tool_route=request.binding.tool_route,
            payload_hash_b64u=request.binding.payload_hash_b64u,
            request_hash_b64u=request.request_hash_b64u,
            expires_at=request.binding.expires_at,
            approvals=done.approvals,
            needed=done.needed,
            status_line=request.final_reason,
            grant=dict(entry.grant.envelope) if approved and entry.grant.envelope else None,
            job_token=entry.job_token if approved else None,
            job_token_expires_at=entry.job_token_expires_at if approved else None,
            approved_by=tuple(d.approver_name for d in entry.decisions),
        )

    def _gate(self) -> GateContext:
        return GateContext(
            policy=self.policy,
            keyturn_dids={self.key.did},
            tokens=self.verifier,
            audience=AUDIENCE,
            ledger=self.ledger,
            revocations=self.revocations,
        )

    async def gate_check(
        self,
        *,
        cst: str,
        grant: Mapping[str, Any],
        tool_route: str,
        params: Mapping[str, Any],
        plan_hash: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> GatePassed:
        self._enter("gate_check")
        payload = grant.get("payload")
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        call = GateCall(
            route=tool_route,
            params=dict(params),
            plan_hash=plan_hash,
            context=dict(context or {}),
            prior_routes=frozenset(self.prior_routes.get(str(job_id), ())),
        )
        try:
            passed = check(
                self._gate(), grant=dict(grant), cst=cst, call=call, now=self.clock.now()
            )
        except GateDeniedError as e:
            self._log("gate_denied", {"reason_code": e.reason_code, "route": tool_route})
            raise
        entry = self.requests[passed.grant.request_id]
        entry.request = entry.request.transition(RequestState.CONSUMED, at=self.clock.now())
        entry.notify()
        index = self._log("execution", {"grant_id": passed.grant.grant_id})
        return GatePassed(
            grant_id=passed.grant.grant_id,
            request_id=passed.grant.request_id,
            tool_route=tool_route,
            payload_hash_b64u=passed.payload_hash_b64u,
            receipt_index=index,
        )

    async def admit(
        self,
        *,
        cst: str,
        job_id: str,
        tool_route: str,
        params: Mapping[str, Any],
        plan_hash: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Submitted:
        self._enter("admit")
        call = GateCall(
            route=tool_route,
            params=dict(params),
            plan_hash=plan_hash,
            context=dict(context or {}),
            prior_routes=frozenset(self.prior_routes.get(job_id, ())),
        )
        admit_ungated(self._gate(), cst=cst, call=call, job_id=job_id, now=self.clock.now())
        self.prior_routes.setdefault(job_id, set()).add(tool_route)
        index = self._log("admitted", {"job_id": job_id, "route": tool_route})
        return Submitted(
            outcome="allowed",
            reason_code="ALLOWED_BY_RULE",
            message="admitted",
            tool_route=tool_route,
            payload_hash_b64u=payload_hash(params),
            policy_hash_b64u=self.policy.policy_hash_b64u,
            receipt_index=index,
        )

    async def agent_bundle(self, *, cst: str, request_id: str) -> Mapping[str, Any]:
        self._enter("agent_bundle")
        token = self._runner(cst)
        entry = self.requests.get(request_id)
        if entry is None or entry.request.binding.job_id != token.mission_id:
            raise StoreError("NOT_FOUND", f"no request {request_id}")
        if entry.request.state is not RequestState.CONSUMED:
            raise BundleError("NOT_SEALED", "the request is not finished; no bundle yet")
        return {
            "bundle_version": "1",
            "request": entry.request.binding.to_json(),
            "grant": dict(entry.grant.envelope or {}) if entry.grant else None,
            "checkpoint": await self.checkpoint(),
        }

    async def checkpoint(self) -> str:
        self._enter("checkpoint")
        return sign_checkpoint(ORIGIN, self.tree.size, self.tree.root(), self.key).signed_note

    async def inclusion_proof(self, index: int, size: int | None = None) -> Mapping[str, Any]:
        self._enter("inclusion_proof")
        size = self.tree.size if size is None else size
        hashes = self.tree.inclusion_proof(index, size)
        return {
            "index": index,
            "size": size,
            "hashes": [base64.b64encode(h).decode("ascii") for h in hashes],
        }

    async def consistency_proof(
        self, old_size: int, new_size: int | None = None
    ) -> Mapping[str, Any]:
        self._enter("consistency_proof")
        new_size = self.tree.size if new_size is None else new_size
        hashes = self.tree.consistency_proof(old_size, new_size)
        return {
            "old": old_size,
            "new": new_size,
            "hashes": [base64.b64encode(h).decode("ascii") for h in hashes],
        }

    async def well_known(self) -> Mapping[str, Any]:
        self._enter("well_known")
        return {
            "service_did": self.key.did,
            "kid": self.key.kid,
            "public_key_b64u": canonical.b64u_encode(self.key.public_key),
            "log_origin": ORIGIN,
        }

    async def readiness(self) -> Mapping[str, Any]:
        self._enter("readiness")
        if not self.ready:
            raise StoreError(
                "STORE_UNAVAILABLE", "postgresql://keyturn:secret@db.internal is unreachable"
            )
        return {"database": "ok", "signer": "ok"}

    def _log(self, kind: str, data: Mapping[str, Any]) -> int:
        entry = canonical.jcs({"kind": kind, "data": dict(data)})
        return self.tree.append(leaf_hash(hashlib.sha256(entry).digest()))
