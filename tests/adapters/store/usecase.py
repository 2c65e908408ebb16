"""The approval use cases as the service layer will run them: each step one unit of work.

open request → decisions (``core.quorum.judge`` / ``apply`` on directory evidence) →
grant (``core.grants.mint_grant``) → consumption → a signed receipt in the log for each
step, and signed checkpoints. Tests, the writer processes and the benchmark all drive
the store through this, so they exercise the shape production will use.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.store import SqlStore
from core import canonical
from core.checkpoint import sign_checkpoint
from core.envelope import sign_envelope
from core.grants import Grant, mint_grant
from core.identity import Eligibility
from core.keys import SigningKey
from core.merkle import MerkleTree
from core.policy import ApprovalRequirement, Decision, Group, Outcome, RuleRef, ToolCall
from core.policy.model import REQUIRED_BINDINGS
from core.quorum import ApproverDecision, Verdict, apply, judge
from core.requests import ApprovalRequest, RequestState, open_request

ORIGIN = "keyturn.test/log"
POLICY_HASH = canonical.jcs_sha256_b64u({"policy": "store tests"})
FINANCE = Group(key="finance", directory_id="g-finance", display_name="Finance approvers")
GROUPS = {"finance": FINANCE}
REQUESTER = "rita"
APPROVERS = ("alice", "bob", "carol", "dave")
GRANT_TTL_SECONDS = 600


def signing_key() -> SigningKey:
    """The log's and grants' key (fixed, so separate processes sign alike)."""
    return SigningKey.from_seed(bytes(range(32)))


def two_person_rule() -> Decision:
    requirement = ApprovalRequirement(
        name="payments",
        min_approvers=2,
        allowed_groups=("finance",),
        one_from_each=(),
        require_pim="none",
        allow_guests=False,
        timeout_seconds=3600,
        reminder_every_seconds=None,
        critical=False,
        bind=REQUIRED_BINDINGS,
        two_person=True,
    )
    return Decision(
        outcome=Outcome.GATED,
        reason_code="GATED_BY_RULE",
        message="payments of $500 or more need two finance approvers",
        rules=(RuleRef("payments-500", "payments of $500 or more", "amount_usd ≥ 500"),),
        requirements=(requirement,),
        breakglass=None,
        sensitive_params=frozenset(),
        requires_plan_fingerprint=False,
    )


def new_request(request_id: str, *, now: datetime, amount: int = 1200) -> ApprovalRequest:
    call = ToolCall(
        route="payments.transfer",
        params={"amount_usd": amount, "to": f"acct-{request_id}"},
        requester=REQUESTER,
    )
    return open_request(
        call,
        two_person_rule(),
        request_id=request_id,
        job_id=f"job-{request_id}",
        policy_hash_b64u=POLICY_HASH,
        now=now,
    )


def eligibility(person: str, *, now: datetime) -> Eligibility:
    """What a static directory confirms for a finance approver at ``now``."""
    return Eligibility(
        object_id=person,
        display_name=person.title(),
        checked_groups=frozenset({FINANCE.directory_id}),
        member_of=frozenset({FINANCE.directory_id}),
        checked_at=now,
        source="static",
    )


def receipt(kind: str, body: Mapping[str, Any], *, key: SigningKey, now: datetime) -> bytes:
    """A signed receipt, as the log stores it (JCS bytes of the envelope)."""
    payload = {"receipt_version": "1", "kind": kind, **body}
    return canonical.jcs(sign_envelope("keyturn_receipt", payload, key, issued_at=now))


def receipt_payload(entry: bytes) -> dict[str, Any]:
    envelope = json.loads(entry)
    payload: dict[str, Any] = envelope["payload"]
    return payload


@dataclass(frozen=True, slots=True)
class Decided:
    decision: ApproverDecision
    request: ApprovalRequest
    grant: Grant | None
    log_indexes: tuple[int, ...]


class ApprovalService:
    """The use cases; every method is one unit of work (all of it or none of it)."""

    def __init__(self, store: SqlStore, key: SigningKey | None = None) -> None:
        self.store = store
        self.key = key or signing_key()

    async def open(self, request: ApprovalRequest, *, now: datetime) -> int:
        async with self.store.unit_of_work() as uow:
            await uow.requests.add(request)
            index = await uow.log.append(
                receipt(
                    "request_opened",
                    {"request_id": request.request_id, "request_hash": request.request_hash_b64u},
                    key=self.key,
                    now=now,
                ),
                at=now,
            )
            await uow.commit()
        return index

    async def decide(
        self,
        request_id: str,
        person: str,
        verdict: Verdict = Verdict.APPROVE,
        *,
        now: datetime,
        reason: str | None = None,
    ) -> Decided:
        """One click: lock the request, judge, record, maybe mint the grant, receipt.

        Raises:
            ApprovalRefusedError: from ``judge`` or the store (``ALREADY_DECIDED``);
                nothing is saved.
        """
        async with self.store.unit_of_work() as uow:
            request = await uow.requests.get(request_id, for_update=True)
            # Read after the lock: the decisions another replica committed while this
            # one waited are then visible.
            decisions = await uow.decisions.for_request(request_id)
            decision = judge(
                request,
                decisions,
                eligibility(person, now=now),
                verdict,
                groups=GROUPS,
                now=now,
                platform="slack",
                reason=reason,
            )
            await uow.decisions.add(decision)
            after = apply(request, decisions, decision)
            if after is not request:
                await uow.requests.replace(request, after)
            grant = None
            if after.state is RequestState.APPROVED:
                grant = mint_grant(
                    after,
                    [*decisions, decision],
                    self.key,
                    grant_id=f"grant-{uuid.uuid4()}",
                    now=now,
                    ttl_seconds=GRANT_TTL_SECONDS,
                )
                await uow.grants.add(grant)
            # The log is appended last: its head lock is then held the shortest time.
            indexes = [
                await uow.log.append(
                    receipt(
                        "decision",
                        {
                            "request_id": request_id,
                            "approver_id": person,
                            "verdict": decision.verdict.value,
                            "decision_hash": decision.decision_hash_b64u,
                        },
                        key=self.key,
                        now=now,
                    ),
                    at=now,
                )
            ]
            if grant is not None:
                indexes.append(
                    await uow.log.append(
                        receipt(
                            "grant",
                            {"request_id": request_id, "grant_id": grant.grant_id},
                            key=self.key,
                            now=now,
                        ),
                        at=now,
                    )
                )
            await uow.commit()
        return Decided(decision, after, grant, tuple(indexes))

    async def consume(self, grant_id: str, *, now: datetime) -> int:
        """The gate's success path: use the grant once, close the request, receipt it.

        Raises:
            GateDeniedError: ``GRANT_ALREADY_USED``, ``GRANT_UNKNOWN``, ``GRANT_EXPIRED``.
        """
        async with self.store.unit_of_work() as uow:
            grant = await uow.grants.get(grant_id)
            await uow.grants.consume(grant_id, at=now)
            request = await uow.requests.get(grant.request_id, for_update=True)
            await uow.requests.replace(request, request.transition(RequestState.CONSUMED, at=now))
            index = await uow.log.append(
                receipt(
                    "execution",
                    {"request_id": grant.request_id, "grant_id": grant_id},
                    key=self.key,
                    now=now,
                ),
                at=now,
            )
            await uow.commit()
        return index

    async def checkpoint(self, *, now: datetime) -> tuple[int, str]:
        """Sign and record a checkpoint of the whole log as it is now."""
        async with self.store.unit_of_work() as uow:
            size = await uow.log.size()
            tree = MerkleTree()
            tree.extend(await uow.log.leaf_hashes(0, size))
            note = sign_checkpoint(ORIGIN, size, tree.root(), self.key).signed_note
            await uow.log.add_checkpoint(size, note, at=now)
            await uow.commit()
        return size, note
