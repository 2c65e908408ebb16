"""keyturn's use cases, shared by every surface (HTTP API, SDK, MCP, Slack, Teams, web).

Each use case reads the clock once, does its work in one unit of work (which rolls
back unless committed), records its receipts in that same unit of work, commits, and
only then tells the surfaces (cards, feeds, long-pollers). Security decisions are made
in ``core``; this layer fetches evidence (directory, store) and persists outcomes.

Failing closed: every refusal is a :mod:`core.errors` exception with a reason code.
:func:`guarded` turns any *unexpected* exception inside a use case into a logged
``INTERNAL_ERROR`` refusal, so no path ends in "approved" or "token issued" by accident.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from adapters.store import SqlUnitOfWork
from bot.service.evidence import Evidence, Recorded
from bot.service.runtime import Event, PendingWatch, Runtime, new_id
from bot.service.seal_checks import SealChecks
from core import receipt_events as events
from core.canonical import b64u_decode, b64u_encode, digests_equal
from core.cards import Card, build_card
from core.errors import (
    ApprovalRefusedError,
    CanonicalizationError,
    GateDeniedError,
    KeyturnError,
    PolicyError,
    StoreError,
    TokenError,
)
from core.gate import GateCall, GateContext, admit, admit_ungated
from core.grants import Grant, mint_grant
from core.identity import IdentityRef, Resolution
from core.keys import public_key_from_did, verify_signature
from core.outcomes import (
    Challenge,
    DecisionRecorded,
    GatePassed,
    JobStarted,
    RequestStatus,
    Submitted,
)
from core.policy import Outcome, Policy, ToolCall, load_policy_document
from core.quorum import ApproverDecision, Verdict, apply, expire_if_due, judge, progress
from core.records import TokenRecord
from core.requests import ApprovalRequest, RequestState, open_request, payload_hash
from core.times import to_iso
from core.tokens import ScopedToken, mint_cst, token_scope_hash

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Route whose approval activates a new policy (changing the policy is itself gated).
POLICY_ROUTE = "keyturn.policy.activate"
#: Runner tokens may always ask for approval.
REQUEST_SCOPE = "keyturn.request"
CHALLENGE_PREFIX = "keyturn-job-v1\n"


def _require_own(token: ScopedToken, request: ApprovalRequest) -> None:
    """Refuse (as "not found") a request that another agent or job made."""
    binding = request.binding
    if token.sub != binding.requester or token.mission_id != binding.job_id:
        raise StoreError("NOT_FOUND", f"no request {request.request_id} for this agent")


def guarded(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Any unexpected exception in a use case becomes a refusal, logged with its trace."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except KeyturnError:
            raise
        except Exception as e:
            log.exception("use case %s failed; refusing", fn.__name__)
            raise KeyturnError(
                "INTERNAL_ERROR", "keyturn hit an unexpected error and refused; nothing ran"
            ) from e

    return wrapper


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request with everything a surface needs to draw it."""

    request: ApprovalRequest
    decisions: tuple[ApproverDecision, ...]
    policy: Policy
    grant: Grant | None
    card: Card


class Keyturn:
    """The application service."""

    def __init__(
        self,
        runtime: Runtime,
        evidence: Evidence,
        *,
        trusted_issuers: Sequence[str],
        seal_checks: SealChecks | None = None,
    ):
        self.rt = runtime
        self.evidence = evidence
        self.trusted_issuers = tuple(trusted_issuers)
        #: Where each bundle's self-check runs before it is sealed (default: here).
        self.seal_checks = seal_checks or SealChecks(processes=0)
        self._policies: dict[str, Policy] = {}
        self._wpc_documents: dict[str, Mapping[str, Any]] = {}
        # request id → when approvers were last reminded (in this process only).
        self._reminded: dict[str, datetime] = {}
        # pending request id → its shortest reminder interval in seconds (0: none), so
        # the once-a-second sweep reads a request's record once, not every second.
        self._reminder_every: dict[str, int] = {}
        # Final requests waiting to be sealed by the scheduler (in this process only;
        # bundle() seals on demand whatever is missed here). Insertion-ordered.
        self._to_seal: dict[str, None] = {}
        self._watch = PendingWatch(runtime.store, runtime.hub)

    async def close(self) -> None:
        """Stop the background work this service started (before the store closes)."""
        await self._watch.stop()
        await self.seal_checks.close()

    # ------------------------------------------------------------------ policies

    def _load(self, document: Mapping[str, Any], now: datetime) -> Policy:
        policy = load_policy_document(
            document, trusted_issuers=self.trusted_issuers or None, now=now
        )
        self._policies[policy.policy_hash_b64u] = policy
        return policy

    async def _policy(self, uow: SqlUnitOfWork, policy_hash: str, now: datetime) -> Policy:
        cached = self._policies.get(policy_hash)
        if cached is not None:
            return cached
        stored = await uow.policies.get(policy_hash)
        return self._load(stored.document, now)

    async def wpc_document(self, uow: SqlUnitOfWork, policy_hash: str) -> Mapping[str, Any]:
        """The stored WPC envelope of ``policy_hash``, read once per process: a policy
        is stored by its hash and never changes (callers copy before changing it)."""
        document = self._wpc_documents.get(policy_hash)
        if document is None:
            document = (await uow.policies.get(policy_hash)).document
            self._wpc_documents[policy_hash] = document
        return document

    async def _active(self, uow: SqlUnitOfWork, now: datetime) -> Policy:
        active_hash = await uow.policies.active_hash()
        cached = self._policies.get(active_hash) if active_hash is not None else None
        if cached is not None:
            return cached
        stored = await uow.policies.active()
        if stored is None:
            raise PolicyError("NO_ACTIVE_POLICY", "no policy is installed; nothing is allowed")
        return self._policies.get(stored.policy_hash_b64u) or self._load(stored.document, now)

    async def active_policy(self) -> Policy:
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            return await self._active(uow, now)

    @guarded
    async def install_policy(self, document: Mapping[str, Any], *, actor: str) -> Policy:
        """Install the first policy (set-up time). Later changes go through approval.

        Raises:
            PolicyError: ``POLICY_ALREADY_INSTALLED`` when one is active, or the
                policy's own verification errors.
        """
        now = self.rt.clock.now()
        policy = self._load(document, now)
        async with self.rt.store.unit_of_work() as uow:
            current = await uow.policies.active()
            if current is not None:
                if current.policy_hash_b64u == policy.policy_hash_b64u:
                    return policy
                raise PolicyError(
                    "POLICY_ALREADY_INSTALLED",
                    "a policy is active; propose the new one so it is approved first",
                )
            await uow.policies.add(
                policy.policy_hash_b64u, dict(document), at=now, name=policy.name
            )
            await uow.policies.activate(policy.policy_hash_b64u, at=now, by=actor, note="initial")
            recorded = [
                await self.evidence.record(
                    uow,
                    events.policy_activated(
                        policy, at=now, actor=actor, receipt_id=self.evidence.new_receipt_id()
                    ),
                )
            ]
            await uow.commit()
        await self.evidence.after_commit(recorded, now)
        return policy

    # ------------------------------------------------------------------ agents and jobs

    @guarded
    async def register_agent(self, agent_did: str, *, name: str, by: str) -> None:
        public_key_from_did(agent_did)  # refuse anything that is not an Ed25519 did:key
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work() as uow:
            await uow.agents.add(agent_did, name=name, at=now, by=by)
            await uow.commit()

    @guarded
    async def agent_challenge(self, agent_did: str) -> Challenge:
        now = self.rt.clock.now()
        challenge = secrets.token_urlsafe(24)
        expires = now + timedelta(seconds=self.rt.challenge_ttl_seconds)
        async with self.rt.store.unit_of_work() as uow:
            await self._require_agent(uow, agent_did)
            await uow.agents.add_challenge(challenge, agent_did, expires_at=expires, at=now)
            await uow.commit()
        return Challenge(agent_did=agent_did, challenge=challenge, expires_at=expires)

    async def _require_agent(self, uow: SqlUnitOfWork, agent_did: str) -> None:
        agent = await uow.agents.get(agent_did)
        if agent is None:
            raise PolicyError("AGENT_UNKNOWN", "this agent is not registered with keyturn")
        if not agent.enabled:
            raise PolicyError("AGENT_DISABLED", "this agent has been disabled")

    @guarded
    async def start_job(self, *, agent_did: str, challenge: str, signature_b64u: str) -> JobStarted:
        """Proof of possession → a runner token for one new job, pinned to the active policy."""
        now = self.rt.clock.now()
        try:
            signature = b64u_decode(signature_b64u)
            key = public_key_from_did(agent_did)
        except (CanonicalizationError, KeyturnError) as e:
            raise TokenError("SIGNATURE_INVALID", "the challenge signature is malformed") from e
        if not verify_signature(key, (CHALLENGE_PREFIX + challenge).encode("utf-8"), signature):
            raise TokenError("SIGNATURE_INVALID", "the challenge was not signed by the agent's key")
        job_id = new_id("j")
        async with self.rt.store.unit_of_work() as uow:
            await self._require_agent(uow, agent_did)
            await uow.agents.use_challenge(challenge, agent_did, now=now)
            policy = await self._active(uow, now)
            scope = runner_scope(policy)
            token = mint_cst(
                self.rt.signer,
                sub=agent_did,
                audience=self.rt.audience,
                scope=scope,
                now=now,
                ttl_seconds=min(self.rt.runner_ttl_seconds, policy.cst_max_ttl_seconds),
                policy_hash_b64u=policy.policy_hash_b64u,
                mission_id=job_id,
                kind="runner",
            )
            await uow.jobs.add(
                job_id, agent_did=agent_did, policy_hash=policy.policy_hash_b64u, at=now
            )
            await uow.tokens.add(_token_record(token, job_id=job_id, request_id=None))
            await uow.commit()
        return JobStarted(
            job_id=job_id,
            runner_token=token.compact,
            expires_at=token.expires_at,
            policy_hash_b64u=policy.policy_hash_b64u,
            scope=token.scope,
        )

    async def _verify_token(
        self,
        uow: SqlUnitOfWork,
        cst: str,
        now: datetime,
        *,
        job_id: str | None = None,
        policy_hash: str | None = None,
        scope: str | None = None,
    ) -> ScopedToken:
        token = self.rt.tokens.verify(
            cst,
            now=now,
            audience=self.rt.audience,
            expected_mission_id=job_id,
            expected_policy_hash=policy_hash,
            required_scope=scope,
        )
        if await uow.tokens.is_revoked(token.token_hash_hex):
            raise TokenError("TOKEN_REVOKED", "this token has been revoked")
        return token

    # ------------------------------------------------------------------ submit

    @guarded
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
        now = self.rt.clock.now()
        recorded: list[Recorded] = []
        async with self.rt.store.unit_of_work() as uow:
            policy = await self._active(uow, now)
            token = await self._verify_token(
                uow, cst, now, job_id=job_id, policy_hash=policy.policy_hash_b64u
            )
            job = await uow.jobs.get(job_id)
            if job is None or job.agent_did != token.sub:
                raise TokenError("TOKEN_JOB_MISMATCH", "this token does not belong to that job")
            prior_routes = await uow.jobs.routes(job_id)
            call = ToolCall(
                route=tool_route,
                params=params,
                requester=token.sub,
                context=dict(context or {}),
                prior_routes=prior_routes,
                plan_hash=plan_hash,
            )
            decision = policy.evaluate(call)
            digest = payload_hash(params)
            base: dict[str, Any] = {
                "reason_code": decision.reason_code,
                "message": decision.message,
                "tool_route": tool_route,
                "payload_hash_b64u": digest,
                "policy_hash_b64u": policy.policy_hash_b64u,
                "rules": tuple(r.to_json() for r in decision.rules),
            }
            if decision.outcome is Outcome.ALLOWED:
                return Submitted(outcome="allowed", **base)
            if decision.outcome is Outcome.DENIED:
                recorded.append(
                    await self.evidence.record(
                        uow,
                        events.gate_denied(
                            decision.reason_code,
                            at=now,
                            actor=token.sub,
                            policy_hash_b64u=policy.policy_hash_b64u,
                            receipt_id=self.evidence.new_receipt_id(),
                            presented_payload_hash_b64u=digest,
                        ),
                    )
                )
                await uow.commit()
                result = Submitted(outcome="denied", **base)
            else:
                request = open_request(
                    call,
                    decision,
                    request_id=new_id("r"),
                    job_id=job_id,
                    policy_hash_b64u=policy.policy_hash_b64u,
                    now=now,
                    span_id=span_id,
                    justification=justification,
                )
                await uow.requests.add(request)
                recorded.append(
                    await self._record(
                        uow,
                        events.request_created(
                            request, call, receipt_id=self.evidence.new_receipt_id()
                        ),
                    )
                )
                await uow.commit()
                result = Submitted(
                    outcome="gated",
                    request_id=request.request_id,
                    request_hash_b64u=request.request_hash_b64u,
                    expires_at=request.binding.expires_at,
                    needs=tuple(policy.requirement_text(r) for r in request.requirements),
                    receipt_index=recorded[-1].index,
                    card_url=f"{self.rt.public_url}/requests/{request.request_id}",
                    **base,
                )
        await self.evidence.after_commit(recorded, now)
        if result.request_id:
            self.rt.observe("pending")
            await self.rt.hub.publish(Event("request", result.request_id, {"created": True}))
        return result

    async def _record(self, uow: SqlUnitOfWork, receipt: Any) -> Recorded:
        """Record a receipt and index it under its request, for sealing."""
        recorded = await self.evidence.record(uow, receipt)
        if receipt.request_id is not None:
            await uow.jobs.index_receipt(receipt.request_id, recorded.index, str(receipt.kind))
        return recorded

    # ------------------------------------------------------------------ status

    async def view(self, request_id: str) -> RequestView:
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            return await self._view(uow, request_id, now)

    async def _view(self, uow: SqlUnitOfWork, request_id: str, now: datetime) -> RequestView:
        request = await uow.requests.get(request_id)
        decisions = tuple(await uow.decisions.for_request(request_id))
        policy = await self._policy(uow, request.binding.policy_hash_b64u, now)
        grant = await uow.grants.for_request(request_id)
        consumed_at = await uow.grants.consumed_at(grant.grant_id) if grant else None
        card = build_card(
            request,
            decisions,
            policy,
            now=now,
            grant_id=grant.grant_id if grant else None,
            grant_expires_at=grant.expires_at if grant else None,
            used_at=consumed_at,
        )
        return RequestView(request, decisions, policy, grant, card)

    async def list_requests(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 50
    ) -> list[RequestView]:
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            found = await uow.requests.find(states=states, limit=limit)
            return [await self._view(uow, r.request_id, now) for r in found]

    @guarded
    async def request_status(
        self, *, cst: str, request_id: str, wait_seconds: float = 0
    ) -> RequestStatus:
        """Long-poll a request; once approved, hand the requesting agent its grant and token.

        Every answer comes from :meth:`_status_once` (token verified, ownership checked,
        a job token minted once approved). In between, a change made in this process
        wakes the poll at once; changes made by other replicas are found by the
        :class:`~bot.service.runtime.PendingWatch`, one query a second for all polls.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_seconds)
        approved = False
        while True:
            # Registered before the read, so a change between the read and the wait
            # still wakes this poll.
            waiter = self.rt.hub.waiter(request_id)
            try:
                if approved:  # woken by the approval: go straight to the minting read
                    status = await self._status_minting(cst, request_id)
                else:
                    status = await self._status_once(cst, request_id)
                remaining = deadline - loop.time()
                if status.state != "pending" or remaining <= 0:
                    return status
                self._watch.ensure_running()
                while True:
                    try:
                        await asyncio.wait_for(waiter.wait(), timeout=remaining)
                    except TimeoutError:
                        # A fresh, verified answer, not the one from the start of the wait.
                        return await self._status_once(cst, request_id)
                    if waiter.state != str(RequestState.PENDING):
                        break
                    # A decision that leaves the request pending changes nothing this
                    # poll answers with: wait on without reading. Clearing in the same
                    # step as the check loses no wake (the waiter stays registered).
                    waiter.clear()
                    remaining = deadline - loop.time()
                approved = waiter.state == str(RequestState.APPROVED)
            finally:
                self.rt.hub.forget(request_id, waiter)

    async def _status_once(self, cst: str, request_id: str) -> RequestStatus:
        now = self.rt.clock.now()
        # Most polls find the request still pending: answer those from a read-only unit,
        # which takes no write lock. Only an approved request mints anything, and then
        # the whole read is done again under the write lock before minting.
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            token = await self._verify_token(uow, cst, now)
            view = await self._own_view(uow, token, request_id, now)
        if self._grant_ready(view):
            return await self._status_minting(cst, request_id)
        return self._status(view, None)

    async def _status_minting(self, cst: str, request_id: str) -> RequestStatus:
        """The status of an approved request, with a fresh job token (minted and receipted)."""
        now = self.rt.clock.now()
        recorded: list[Recorded] = []
        job_token: ScopedToken | None = None
        async with self.rt.store.unit_of_work() as uow:
            token = await self._verify_token(uow, cst, now)
            view = await self._own_view(uow, token, request_id, now)
            request = view.request
            if self._grant_ready(view) and view.grant is not None:
                job_token = self._job_token(request, view.policy, view.grant, now)
                await uow.tokens.add(
                    _token_record(job_token, job_id=request.binding.job_id, request_id=request_id)
                )
                recorded.append(
                    await self._record(
                        uow,
                        events.cst_minted(
                            request, job_token, receipt_id=self.evidence.new_receipt_id()
                        ),
                    )
                )
                await uow.commit()
        await self.evidence.after_commit(recorded, now)
        return self._status(view, job_token)

    async def _own_view(
        self, uow: SqlUnitOfWork, token: ScopedToken, request_id: str, now: datetime
    ) -> RequestView:
        view = await self._view(uow, request_id, now)
        _require_own(token, view.request)
        return view

    @staticmethod
    def _grant_ready(view: RequestView) -> bool:
        return view.request.state is RequestState.APPROVED and view.grant is not None

    def _status(self, view: RequestView, job_token: ScopedToken | None) -> RequestStatus:
        request = view.request
        prog = progress(request, view.decisions)
        return RequestStatus(
            request_id=request.request_id,
            state=str(request.state),
            tool_route=request.binding.tool_route,
            payload_hash_b64u=request.binding.payload_hash_b64u,
            request_hash_b64u=request.request_hash_b64u,
            expires_at=request.binding.expires_at,
            approvals=prog.approvals,
            needed=prog.needed,
            status_line=view.card.status_line,
            grant=view.grant.envelope if (job_token and view.grant) else None,
            job_token=job_token.compact if job_token else None,
            job_token_expires_at=job_token.expires_at if job_token else None,
            bundle_url=f"{self.rt.public_url}/v1/bundles/{request.request_id}",
            approved_by=tuple(
                d.approver_name for d in view.decisions if d.verdict is Verdict.APPROVE
            ),
        )

    def _job_claims(self, request: ApprovalRequest, policy: Policy) -> dict[str, Any]:
        return {
            "token_version": "1",
            "sub": request.binding.requester,
            "aud": [self.rt.audience],
            "scope": [request.binding.tool_route],
            "policy_hash_b64u": policy.policy_hash_b64u,
            "mission_id": request.binding.job_id,
        }

    def _job_token(
        self, request: ApprovalRequest, policy: Policy, grant: Grant, now: datetime
    ) -> ScopedToken:
        ttl = int((grant.expires_at - now).total_seconds())
        if request.breakglass is not None:
            ttl = min(ttl, request.breakglass.token_ttl_seconds)
        ttl = min(ttl, policy.cst_max_ttl_seconds)
        if ttl < 1:
            raise GateDeniedError("GRANT_EXPIRED", "the approval has lapsed; nothing can run")
        return mint_cst(
            self.rt.signer,
            sub=request.binding.requester,
            audience=self.rt.audience,
            scope=[request.binding.tool_route],
            now=now,
            ttl_seconds=ttl,
            policy_hash_b64u=policy.policy_hash_b64u,
            mission_id=request.binding.job_id,
            kind="breakglass" if request.breakglass is not None else "job",
        )

    # ------------------------------------------------------------------ decisions

    @guarded
    async def decide(
        self,
        request_id: str,
        identity: IdentityRef,
        verdict: Verdict,
        *,
        platform: str,
        reason: str | None = None,
        typed_confirmation: str | None = None,
    ) -> DecisionRecorded:
        """One approver's click. Refusals raise and record nothing."""
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            request = await uow.requests.get(request_id)
            policy = await self._policy(uow, request.binding.policy_hash_b64u, now)
        if request.state is not RequestState.PENDING:
            raise ApprovalRefusedError(
                "REQUEST_NOT_PENDING", f"This request is no longer pending ({request.state})."
            )
        resolution = await self._resolve(identity, now, request)
        group_ids = sorted(
            {policy.groups[k].directory_id for r in request.requirements for k in r.eligible_groups}
        )
        eligibility = await self.rt.directory.eligibility(
            resolution.person.object_id,
            group_ids,
            now=now,
            check_pim=any(r.require_pim == "required" for r in request.requirements),
            bypass_cache=request.breakglass is not None,
        )
        recorded: list[Recorded] = []
        grant: Grant | None = None
        async with self.rt.store.unit_of_work() as uow:
            request = await uow.requests.get(request_id, for_update=True)
            decisions = await uow.decisions.for_request(request_id)
            decision = judge(
                request,
                decisions,
                eligibility,
                verdict,
                groups=policy.groups,
                now=now,
                platform=platform,
                reason=reason,
                typed_confirmation=typed_confirmation,
            )
            await uow.decisions.add(decision)
            after = apply(request, decisions, decision)
            recorded.append(
                await self._record(
                    uow,
                    events.decision_receipt(
                        request, decision, receipt_id=self.evidence.new_receipt_id()
                    ),
                )
            )
            if after is not request:
                await uow.requests.replace(request, after)
            if after.state is RequestState.APPROVED:
                approved = after
                after, grant, more = await self._on_approved(
                    uow, approved, [*decisions, decision], policy, now
                )
                recorded.extend(more)
                if after is not approved:  # a policy change is activated (consumed) at once
                    await uow.requests.replace(approved, after)
            await uow.commit()
        await self.evidence.after_commit(recorded, now)
        self._observe_decision(request, after, now)
        await self.rt.hub.publish(Event("request", request_id, {"state": str(after.state)}))
        if after.state in (RequestState.DENIED, RequestState.CONSUMED):
            await self._seal_later(request_id)
        prog = progress(after, [*decisions, decision])
        return DecisionRecorded(
            request_id=request_id,
            approver_id=decision.approver_id,
            approver_name=decision.approver_name,
            verdict=str(decision.verdict),
            state=str(after.state),
            approvals=prog.approvals,
            needed=prog.needed,
            grant_id=grant.grant_id if grant else None,
            receipt_index=recorded[0].index,
        )

    def _observe_decision(
        self, before: ApprovalRequest, after: ApprovalRequest, now: datetime
    ) -> None:
        """Count the transition a click caused, and how long people took to decide."""
        if after.state is before.state:
            return
        # An approved policy change is activated (consumed) in the same click.
        decided = RequestState.APPROVED if after.state is RequestState.CONSUMED else after.state
        waited = (now - before.binding.created_at).total_seconds()
        self.rt.observe(str(decided), decision_seconds=waited)
        if after.state is not decided:
            self.rt.observe(str(after.state))

    async def _resolve(
        self, identity: IdentityRef, now: datetime, request: ApprovalRequest
    ) -> Resolution:
        return await self.rt.directory.resolve(
            identity, now=now, allow_guests=all(r.allow_guests for r in request.requirements)
        )

    async def _on_approved(
        self,
        uow: SqlUnitOfWork,
        request: ApprovalRequest,
        decisions: list[ApproverDecision],
        policy: Policy,
        now: datetime,
    ) -> tuple[ApprovalRequest, Grant, list[Recorded]]:
        """Quorum was met: mint the one grant (and act on policy changes and break-glass)."""
        if request.breakglass is not None and request.binding.breakglass_window_seconds:
            ttl = request.binding.breakglass_window_seconds
        else:
            ttl = policy.cst_max_ttl_seconds
        grant = mint_grant(
            request,
            decisions,
            self.rt.signer,
            grant_id=new_id("g"),
            now=now,
            ttl_seconds=ttl,
            cst_scope_hash_b64u=token_scope_hash(self._job_claims(request, policy)),
        )
        await uow.grants.add(grant)
        recorded = [
            await self._record(
                uow, events.grant_minted(request, grant, receipt_id=self.evidence.new_receipt_id())
            )
        ]
        if request.breakglass is not None:
            token = self._job_token(request, policy, grant, now)
            await uow.tokens.add(
                _token_record(token, job_id=request.binding.job_id, request_id=request.request_id)
            )
            recorded.append(
                await self._record(
                    uow,
                    events.breakglass_opened(
                        request, token, receipt_id=self.evidence.new_receipt_id()
                    ),
                )
            )
        if request.binding.tool_route == POLICY_ROUTE:
            request, more = await self._activate_proposed(uow, request, grant, now)
            recorded.extend(more)
        return request, grant, recorded

    # ------------------------------------------------------------------ cancel / expire

    @guarded
    async def cancel(self, request_id: str, *, requester: str, reason: str | None = None) -> None:
        """The requester withdraws a pending request."""
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work() as uow:
            request = await uow.requests.get(request_id, for_update=True)
            if requester != request.binding.requester:
                raise ApprovalRefusedError(
                    "NOT_REQUESTER", "Only the requester can cancel a request."
                )
            after = request.transition(RequestState.CANCELLED, at=now, reason=reason)
            await uow.requests.replace(request, after)
            recorded = [
                await self._record(
                    uow,
                    events.cancellation(
                        request,
                        at=now,
                        actor=requester,
                        receipt_id=self.evidence.new_receipt_id(),
                        reason=reason,
                    ),
                )
            ]
            await uow.commit()
        await self.evidence.after_commit(recorded, now)
        self.rt.observe("cancelled")
        await self.rt.hub.publish(Event("request", request_id, {"state": "cancelled"}))
        await self._seal_later(request_id)

    @guarded
    async def run_due(self) -> int:
        """Expire pending requests past their deadline, close lapsed windows, remind.

        Safe on every replica at once: each change is a conditional update, so a request
        another replica already moved is skipped. Returns how many requests changed.
        Reminders (:meth:`_remind`) change nothing and are not counted.
        """
        now = self.rt.clock.now()
        changed = 0
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            due = [r.request_id for r in await uow.requests.due(now=now)]
            lapsed = await uow.requests.lapsed_windows(now=now)
        for request_id in due:
            changed += await self._expire(request_id, now)
        for request_id in lapsed:
            changed += await self._close_window(
                request_id, now, revoked_by=None, reason="timebox_expired"
            )
        await self._remind(now)
        await self.seal_pending()
        await self.evidence.sync(now)
        return changed

    async def _remind(self, now: datetime) -> None:
        """Re-notify approvers of pending requests at the policy's ``reminder_every_seconds``.

        Publishes ``Event("reminder", request_id, {...})`` for the surfaces to re-post.
        When the last reminder went out is kept in this process's memory only: after a
        restart the first reminder is counted from the request's creation again, and
        each replica running the scheduler reminds on its own. A reminder is a nudge,
        not a decision, so a duplicate is harmless and nothing is receipted.
        """
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            clocks = await uow.requests.pending_clocks(limit=500)
            due: list[tuple[ApprovalRequest, list[ApproverDecision]]] = []
            for request_id, created_at, expires_at in clocks:
                if request_id not in self._reminder_every:  # first sight: read its terms once
                    request = await uow.requests.get(request_id)
                    every = [r.reminder_every_seconds or 0 for r in request.requirements]
                    self._reminder_every[request_id] = min((e for e in every if e > 0), default=0)
                    # A read runs on the event loop's thread without suspending
                    # (adapters.store.sqlite_driver): after a burst of new requests,
                    # reading them all in one go would hold every request up.
                    await asyncio.sleep(0)
                seconds = self._reminder_every[request_id]
                if not seconds:
                    continue
                last = self._reminded.get(request_id, created_at)
                if now - last >= timedelta(seconds=seconds) and now < expires_at:
                    request = await uow.requests.get(request_id)
                    due.append((request, list(await uow.decisions.for_request(request_id))))
        still_pending = {request_id for request_id, _, _ in clocks}
        for known in (self._reminded, self._reminder_every):
            for request_id in [r for r in known if r not in still_pending]:
                del known[request_id]
        for request, decisions in due:
            self._reminded[request.request_id] = now
            prog = progress(request, decisions)
            await self.rt.hub.publish(
                Event(
                    "reminder",
                    request.request_id,
                    {
                        "tool_route": request.binding.tool_route,
                        "waiting_seconds": int((now - request.binding.created_at).total_seconds()),
                        "expires_at": to_iso(request.binding.expires_at),
                        "approvals": prog.approvals,
                        "needed": prog.needed,
                    },
                )
            )

    async def _expire(self, request_id: str, now: datetime) -> int:
        try:
            async with self.rt.store.unit_of_work() as uow:
                request = await uow.requests.get(request_id, for_update=True)
                after = expire_if_due(request, now=now)
                if after is request:
                    return 0
                await uow.requests.replace(request, after)
                recorded = [
                    await self._record(
                        uow,
                        events.expiry(
                            request,
                            at=now,
                            receipt_id=self.evidence.new_receipt_id(),
                            reason="deadline passed before quorum",
                        ),
                    )
                ]
                await uow.commit()
        except StoreError as e:
            if e.reason_code == "STORE_CONFLICT":
                return 0
            raise
        await self.evidence.after_commit(recorded, now)
        self.rt.observe("expired")
        await self.rt.hub.publish(Event("request", request_id, {"state": "expired"}))
        await self._seal_later(request_id)
        return 1

    # ------------------------------------------------------------------ gate

    @guarded
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
        """Admit one gated call and consume its grant; any mismatch is receipted and refused."""
        now = self.rt.clock.now()
        try:
            return await self._gate_check(cst, grant, tool_route, params, plan_hash, context, now)
        except GateDeniedError as e:
            await self._record_gate_denial(e.reason_code, grant, now)
            raise
        except TokenError as e:
            await self._record_gate_denial(e.reason_code, grant, now)
            raise GateDeniedError(e.reason_code, e.message) from e

    async def _gate_check(
        self,
        cst: str,
        grant: Mapping[str, Any],
        tool_route: str,
        params: Mapping[str, Any],
        plan_hash: str | None,
        context: Mapping[str, Any] | None,
        now: datetime,
    ) -> GatePassed:
        claimed_job = _unverified_grant_field(grant, "job_id")
        async with self.rt.store.unit_of_work() as uow:
            policy = await self._active(uow, now)
            prior_routes = await uow.jobs.routes(claimed_job) if claimed_job else frozenset()
            ctx = self._gate_context(policy)
            passed = admit(
                ctx,
                grant=grant,
                cst=cst,
                call=_gate_call(tool_route, params, plan_hash, context, prior_routes),
                now=now,
            )
            if await uow.tokens.is_revoked(passed.token.token_hash_hex):
                raise GateDeniedError("TOKEN_REVOKED", "this token has been revoked")
            request = await uow.requests.get(passed.grant.request_id, for_update=True)
            if request.state is RequestState.CONSUMED:
                raise GateDeniedError("GRANT_ALREADY_USED", "this grant was already used")
            if request.state is not RequestState.APPROVED:
                raise GateDeniedError(
                    "REQUEST_NOT_APPROVED", f"the request is {request.state}; nothing can run"
                )
            await uow.grants.consume(passed.grant.grant_id, at=now)
            after = request
            if request.breakglass is None:
                after = request.transition(RequestState.CONSUMED, at=now)
                await uow.requests.replace(request, after)
            await uow.jobs.add_step(
                request.binding.job_id, route=tool_route, plan_hash=plan_hash, gated=True, at=now
            )
            recorded = [
                await self._record(
                    uow,
                    events.gate_passed(
                        request,
                        grant=passed.grant,
                        token=passed.token,
                        at=now,
                        receipt_id=self.evidence.new_receipt_id(),
                    ),
                )
            ]
            await uow.commit()
        await self.evidence.after_commit(recorded, now)
        if after.state is not request.state:
            self.rt.observe(str(after.state))
        await self.rt.hub.publish(Event("request", request.request_id, {"state": str(after.state)}))
        if after.state is RequestState.CONSUMED:
            await self._seal_later(request.request_id)
        return GatePassed(
            grant_id=passed.grant.grant_id,
            request_id=request.request_id,
            tool_route=tool_route,
            payload_hash_b64u=passed.payload_hash_b64u,
            receipt_index=recorded[0].index,
        )

    def _gate_context(self, policy: Policy) -> GateContext:
        """The gate as this service runs it: keyturn's key, its token verifier and audience.

        No ledger: the store consumes grants inside the use case's unit of work.
        """
        return GateContext(
            policy=policy,
            keyturn_dids={self.rt.signer.did},
            tokens=self.rt.tokens,
            audience=self.rt.audience,
        )

    async def _record_gate_denial(self, reason_code: str, grant: object, now: datetime) -> None:
        try:
            async with self.rt.store.unit_of_work() as uow:
                policy = await self._active(uow, now)
                request = None
                request_id = _unverified_grant_field(grant, "request_id")
                if request_id is not None:
                    try:
                        request = await uow.requests.get(request_id)
                    except StoreError:
                        request = None
                receipt = events.gate_denied(
                    reason_code,
                    at=now,
                    actor="gate",
                    policy_hash_b64u=policy.policy_hash_b64u,
                    receipt_id=self.evidence.new_receipt_id(),
                    request=request,
                )
                recorded = [await self._record(uow, receipt)]
                await uow.commit()
            await self.evidence.after_commit(recorded, now)
        except Exception:
            log.exception("could not record a gate denial (%s)", reason_code)

    @guarded
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
        """Admit an ungated call the agent is about to run, and record it in the job."""
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work() as uow:
            policy = await self._active(uow, now)
            prior_routes = await uow.jobs.routes(job_id)
            ctx = self._gate_context(policy)
            token = admit_ungated(
                ctx,
                cst=cst,
                call=_gate_call(tool_route, params, plan_hash, context, prior_routes),
                job_id=job_id,
                now=now,
                approved_plan_hash=await uow.jobs.last_gated_plan(job_id),
            )
            if await uow.tokens.is_revoked(token.token_hash_hex):
                raise GateDeniedError("TOKEN_REVOKED", "this token has been revoked")
            await uow.jobs.add_step(
                job_id, route=tool_route, plan_hash=plan_hash, gated=False, at=now
            )
            await uow.commit()
        return Submitted(
            outcome="allowed",
            reason_code="ALLOWED_BY_RULE",
            message=f"{tool_route} is allowed without approval",
            tool_route=tool_route,
            payload_hash_b64u=payload_hash(params),
            policy_hash_b64u=policy.policy_hash_b64u,
        )

    # ------------------------------------------------------------------ sealing

    async def _seal_later(self, request_id: str) -> None:
        """Queue a request that reached a final state for sealing by the scheduler.

        Sealing (a checkpoint, the whole bundle verified, a receipt) is milliseconds of
        work per request that nobody on the request path waits for, so it is batched in
        :meth:`seal_pending`. :meth:`bundle` still seals on demand.
        """
        self._to_seal[request_id] = None

    async def seal_pending(self, *, batch: int = 100) -> int:
        """Seal the requests queued so far, ``batch`` at a time; returns how many.

        Only those queued when it starts: under steady load new ones keep arriving, and
        the scheduler's other work (expiry, lapsed windows) must not wait behind them.
        """
        from bot.service.sealing import seal_requests

        queued = list(self._to_seal)
        sealed = 0
        for start in range(0, len(queued), batch):
            ids = queued[start : start + batch]
            try:
                sealed += len(await seal_requests(self, ids))
            except Exception:
                log.exception("sealing %d requests failed; they are sealed on demand", len(ids))
            for request_id in ids:
                self._to_seal.pop(request_id, None)
        return sealed

    async def seal(self, request_id: str) -> Mapping[str, Any]:
        """Seal (once) the proof bundle of a request in a final state."""
        from bot.service.sealing import seal_request

        return await seal_request(self, request_id)

    async def bundle(self, request_id: str) -> Mapping[str, Any]:
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            stored = await uow.jobs.bundle(request_id)
        if stored is not None:
            return stored
        return await self.seal(request_id)

    @guarded
    async def agent_bundle(self, *, cst: str, request_id: str) -> Mapping[str, Any]:
        """The proof bundle of a request, for the agent that made it.

        A bundle carries the exact parameters (sensitive ones too: the payload hash is
        recomputed from them), so over the API only a token of the requesting job gets
        it; anyone else is told there is no such request. People with access to the
        server export bundles with ``keyturn bundle export``.
        """
        now = self.rt.clock.now()
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            token = await self._verify_token(uow, cst, now)
            _require_own(token, await uow.requests.get(request_id))
        return await self.bundle(request_id)

    # ------------------------------------------------------------------ log

    async def checkpoint(self) -> str:
        return (await self.evidence.checkpoint_note(self.rt.clock.now()))[1]

    async def inclusion_proof(self, index: int, size: int | None = None) -> Mapping[str, Any]:
        return await self.evidence.inclusion(index, size, self.rt.clock.now())

    async def consistency_proof(
        self, old_size: int, new_size: int | None = None
    ) -> Mapping[str, Any]:
        return await self.evidence.consistency(old_size, new_size, self.rt.clock.now())

    async def well_known(self) -> Mapping[str, Any]:
        signer = self.rt.signer
        _, note = await self.evidence.checkpoint_note(self.rt.clock.now())
        return {
            "service": "keyturn",
            "did": signer.did,
            "kid": signer.kid,
            "public_key_b64u": b64u_encode(signer.public_key),
            "log_origin": self.evidence.origin,
            "checkpoint_verifier_key": self.evidence.verifier_key,
            "checkpoint": note,
            "token_audience": self.rt.audience,
        }

    async def readiness(self) -> Mapping[str, Any]:
        async with self.rt.store.unit_of_work(read_only=True) as uow:
            await uow.log.size()
        probe = self.rt.signer.sign(b"keyturn-readiness")
        if not verify_signature(self.rt.signer.public_key, b"keyturn-readiness", probe):
            raise KeyturnError(
                "SIGNER_UNAVAILABLE", "the signing key did not produce a valid signature"
            )
        return {"database": "ok", "signer": "ok"}

    # ------------------------------------------------------------------ policy changes

    async def _activate_proposed(
        self, uow: SqlUnitOfWork, request: ApprovalRequest, grant: Grant, now: datetime
    ) -> tuple[ApprovalRequest, list[Recorded]]:
        """An approved ``keyturn.policy.activate`` request activates its policy at once."""
        new_hash = request.params.get("new_policy_hash")
        if not isinstance(new_hash, str):
            raise PolicyError("POLICY_INVALID", "the proposal names no policy hash")
        stored = await uow.policies.get(new_hash)
        policy = self._load(stored.document, now)
        if not digests_equal(policy.policy_hash_b64u, new_hash):
            raise PolicyError("POLICY_HASH_MISMATCH", "the stored proposal does not hash as named")
        await uow.grants.consume(grant.grant_id, at=now)
        await uow.policies.activate(
            new_hash, at=now, by="keyturn", note=f"approved in {request.request_id}"
        )
        consumed = request.transition(RequestState.CONSUMED, at=now)
        recorded = [
            await self._record(
                uow,
                events.policy_activated(
                    policy,
                    at=now,
                    actor="keyturn",
                    receipt_id=self.evidence.new_receipt_id(),
                    previous_policy_hash_b64u=request.binding.policy_hash_b64u,
                ),
            )
        ]
        return consumed, recorded

    @guarded
    async def propose_policy(self, document: Mapping[str, Any], *, proposer: str) -> Submitted:
        """Ask for a new policy: a request on ``keyturn.policy.activate`` under the current one."""
        now = self.rt.clock.now()
        new = self._load(document, now)
        async with self.rt.store.unit_of_work() as uow:
            current = await self._active(uow, now)
            if new.policy_hash_b64u == current.policy_hash_b64u:
                raise PolicyError("POLICY_UNCHANGED", "that policy is already active")
            await uow.policies.add(new.policy_hash_b64u, dict(document), at=now, name=new.name)
            params = {
                "new_policy_hash": new.policy_hash_b64u,
                "old_policy_hash": current.policy_hash_b64u,
                "new_policy_name": new.name,
                "diff": policy_diff(current, new),
            }
            job_id = new_id("j")
            call = ToolCall(route=POLICY_ROUTE, params=params, requester=proposer)
            decision = current.evaluate(call)
            if decision.outcome is not Outcome.GATED:
                raise PolicyError(
                    "POLICY_CHANGE_NOT_GATED",
                    f"the active policy does not gate {POLICY_ROUTE}; refusing to change it "
                    "without approval",
                )
            request = open_request(
                call,
                decision,
                request_id=new_id("r"),
                job_id=job_id,
                policy_hash_b64u=current.policy_hash_b64u,
                now=now,
            )
            await uow.jobs.add(
                job_id, agent_did=proposer, policy_hash=current.policy_hash_b64u, at=now
            )
            await uow.requests.add(request)
            recorded = [
                await self._record(
                    uow,
                    events.request_created(
                        request, call, receipt_id=self.evidence.new_receipt_id()
                    ),
                )
            ]
            await uow.commit()
        await self.evidence.after_commit(recorded, now)
        self.rt.observe("pending")
        await self.rt.hub.publish(Event("request", request.request_id, {"created": True}))
        return Submitted(
            outcome="gated",
            reason_code=decision.reason_code,
            message=decision.message,
            tool_route=POLICY_ROUTE,
            payload_hash_b64u=request.binding.payload_hash_b64u,
            policy_hash_b64u=current.policy_hash_b64u,
            request_id=request.request_id,
            request_hash_b64u=request.request_hash_b64u,
            expires_at=request.binding.expires_at,
            needs=tuple(current.requirement_text(r) for r in request.requirements),
            card_url=f"{self.rt.public_url}/requests/{request.request_id}",
        )

    # ------------------------------------------------------------------ break-glass

    @guarded
    async def request_breakglass(
        self,
        requester: IdentityRef,
        *,
        route: str,
        params: Mapping[str, Any],
        duration_seconds: int,
        reason: str,
        ticket: str | None = None,
        rollback_steps: Sequence[str] = (),
    ) -> Submitted:
        from bot.service import breakglass

        return await breakglass.request_breakglass(
            self,
            requester,
            route=route,
            params=params,
            duration_seconds=duration_seconds,
            reason=reason,
            ticket=ticket,
            rollback_steps=rollback_steps,
        )

    @guarded
    async def breakglass_token(self, request_id: str, requester: IdentityRef) -> Any:
        from bot.service import breakglass

        return await breakglass.breakglass_token(self, request_id, requester)

    @guarded
    async def revoke_breakglass(
        self, request_id: str, by: IdentityRef, *, reason: str = "kill switch"
    ) -> None:
        from bot.service import breakglass

        await breakglass.revoke(self, request_id, by, reason=reason)

    @guarded
    async def rollback_step_done(self, request_id: str, step_index: int, by: IdentityRef) -> None:
        from bot.service import breakglass

        await breakglass.rollback_step_done(self, request_id, step_index, by)

    async def resolve(self, identity: IdentityRef) -> Resolution:
        """Who a chat or console identity is (directory lookup)."""
        return await self.rt.directory.resolve(identity, now=self.rt.clock.now())

    async def _close_window(
        self, request_id: str, now: datetime, *, revoked_by: str | None, reason: str
    ) -> int:
        from bot.service.breakglass import close_window

        return await close_window(self, request_id, now, revoked_by=revoked_by, reason=reason)


def runner_scope(policy: Policy) -> list[str]:
    """What a runner token may name: the policy's concrete routes plus asking for approval.

    Glob patterns cannot be listed in a token (scopes match exactly), so a route only
    reachable through a glob allow rule is refused at the gate: fail closed.
    """
    concrete = sorted({r for r in policy.tool_surface if "*" not in r})
    return [REQUEST_SCOPE, *concrete]


def policy_diff(old: Policy, new: Policy) -> list[str]:
    """A short, readable diff of two policies' rules and approvals, for the card."""
    lines: list[str] = []
    old_rules = {r["id"]: r for r in old.payload.get("rules", [])}
    new_rules = {r["id"]: r for r in new.payload.get("rules", [])}
    for rule_id in sorted(set(old_rules) | set(new_rules)):
        if rule_id not in new_rules:
            lines.append(f"- rule {rule_id} removed")
        elif rule_id not in old_rules:
            lines.append(f"+ rule {rule_id} added ({new_rules[rule_id].get('effect')})")
        elif old_rules[rule_id] != new_rules[rule_id]:
            lines.append(f"~ rule {rule_id} changed")
    old_approvals = old.payload.get("approvals", {})
    new_approvals = new.payload.get("approvals", {})
    for name in sorted(set(old_approvals) | set(new_approvals)):
        if old_approvals.get(name) != new_approvals.get(name):
            lines.append(f"~ approval {name} changed")
    for key in ("groups", "token", "description", "metadata"):
        if old.payload.get(key) != new.payload.get(key):
            lines.append(f"~ {key} changed")
    return lines or ["(no rule changes; metadata only)"]


def _token_record(token: ScopedToken, *, job_id: str | None, request_id: str | None) -> TokenRecord:
    return TokenRecord(
        token_hash_hex=token.token_hash_hex,
        jti=token.jti or token.token_hash_hex[:32],
        kind=token.kind,
        subject=token.sub,
        job_id=job_id,
        request_id=request_id,
        issued_at=token.issued_at,
        expires_at=token.expires_at,
    )


def _gate_call(
    route: str,
    params: Mapping[str, Any],
    plan_hash: str | None,
    context: Mapping[str, Any] | None,
    prior_routes: frozenset[str],
) -> GateCall:
    """The call about to run, with the routes the job already completed (simulate-first)."""
    return GateCall(
        route,
        params,
        plan_hash=plan_hash,
        context=dict(context or {}),
        prior_routes=prior_routes,
    )


def _unverified_grant_field(grant: object, name: str) -> str | None:
    """What a presented grant *claims* (``job_id``, ``request_id``), read before it is
    verified only to look up job history or to attach a refusal to its request."""
    payload = grant.get("payload") if isinstance(grant, Mapping) else None
    value = payload.get(name) if isinstance(payload, Mapping) else None
    return value if isinstance(value, str) and value else None


__all__ = ["POLICY_ROUTE", "Keyturn", "RequestView", "guarded"]
