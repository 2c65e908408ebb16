"""Break-glass: a person asks for a time-boxed privilege with rollback declared up front.

Lifecycle (seed 002): request (route, target params, window, reason, ticket, rollback
steps) → two approvals (never the requester) → a window opens: a break-glass token
(TTL ≤ window) goes to the requester only → the window closes on time, or earlier by
the kill switch (the requester or any eligible approver) → every token of the job is
revoked, the rollback checklist is posted, each step's "Done" is receipted. Renewal
needs a fresh request and fresh approvals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.service.evidence import Recorded
from bot.service.runtime import Event, new_id
from core import receipt_events as events
from core.errors import ApprovalRefusedError, PolicyError, StoreError
from core.identity import IdentityRef
from core.outcomes import Submitted
from core.policy import Outcome, ToolCall
from core.receipts import ReceiptKind
from core.requests import RequestState, open_request
from core.times import to_iso

if TYPE_CHECKING:
    from bot.service.keyturn import Keyturn, RequestView

MAX_REASON = 500


@dataclass(frozen=True, slots=True, repr=False)
class BreakglassToken:
    request_id: str
    token: str
    expires_at: datetime
    window_closes_at: datetime

    def __repr__(self) -> str:
        return f"BreakglassToken(request_id={self.request_id!r})"


async def request_breakglass(
    kt: Keyturn,
    requester: IdentityRef,
    *,
    route: str,
    params: Mapping[str, Any],
    duration_seconds: int,
    reason: str,
    ticket: str | None = None,
    rollback_steps: Sequence[str] = (),
) -> Submitted:
    """Open a break-glass request.

    Raises:
        PolicyError: ``BREAKGLASS_NOT_PERMITTED`` (the route is not a break-glass route
            of the active policy), ``WINDOW_TOO_LONG``, ``ROLLBACK_REQUIRED``,
            ``REASON_REQUIRED``, or the policy's own denial (e.g. a target outside the
            policy's constraints).
    """
    now = kt.rt.clock.now()
    if not reason or not reason.strip():
        raise PolicyError("REASON_REQUIRED", 'say why (--reason "…"): it goes on the card')
    if len(reason) > MAX_REASON:
        raise PolicyError("REASON_TOO_LONG", f"keep the reason under {MAX_REASON} characters")
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        policy = await kt._active(uow, now)
    person = (await kt.rt.directory.resolve(requester, now=now)).person
    context: dict[str, Any] = {"reason": reason.strip()}
    if ticket:
        context["ticket"] = ticket
    call = ToolCall(
        route=route,
        params=dict(params),
        requester=person.object_id,
        context=context,
        breakglass=True,
    )
    decision = policy.evaluate(call)
    if decision.outcome is Outcome.DENIED:
        raise PolicyError(decision.reason_code, decision.message)
    if decision.outcome is not Outcome.GATED or decision.breakglass is None:
        raise PolicyError(
            "BREAKGLASS_NOT_PERMITTED", f"{route} is not a break-glass route in the active policy"
        )
    terms = decision.breakglass
    if duration_seconds > terms.max_duration_seconds:
        raise PolicyError(
            "WINDOW_TOO_LONG",
            f"--for {duration_seconds // 60}m is longer than this route allows "
            f"({terms.max_duration_seconds // 60}m max)",
        )
    if duration_seconds < 60:
        raise PolicyError("WINDOW_TOO_SHORT", "a break-glass window is at least 1 minute")
    steps = tuple(s.strip() for s in rollback_steps if s.strip()) or terms.rollback_steps
    if not steps:
        raise PolicyError(
            "ROLLBACK_REQUIRED",
            "declare the rollback steps up front (the policy declares none for this route)",
        )
    justification = reason.strip() + (f" · ticket {ticket}" if ticket else "")
    job_id = new_id("bg")
    request = open_request(
        call,
        decision,
        request_id=new_id("r"),
        job_id=job_id,
        policy_hash_b64u=policy.policy_hash_b64u,
        now=now,
        breakglass_window_seconds=duration_seconds,
        justification=justification,
    )
    request = replace(request, breakglass=replace(terms, rollback_steps=steps))
    async with kt.rt.store.unit_of_work() as uow:
        await uow.jobs.add(
            job_id, agent_did=person.object_id, policy_hash=policy.policy_hash_b64u, at=now
        )
        await uow.requests.add(request)
        recorded = [
            await kt._record(
                uow, events.request_created(request, call, receipt_id=kt.evidence.new_receipt_id())
            )
        ]
        await uow.commit()
    await kt.evidence.after_commit(recorded, now)
    kt.rt.observe("pending")
    await kt.rt.hub.publish(
        Event("request", request.request_id, {"created": True, "breakglass": True})
    )
    return Submitted(
        outcome="gated",
        reason_code=decision.reason_code,
        message=decision.message,
        tool_route=route,
        payload_hash_b64u=request.binding.payload_hash_b64u,
        policy_hash_b64u=policy.policy_hash_b64u,
        rules=tuple(r.to_json() for r in decision.rules),
        request_id=request.request_id,
        request_hash_b64u=request.request_hash_b64u,
        expires_at=request.binding.expires_at,
        needs=tuple(policy.requirement_text(r) for r in request.requirements),
        receipt_index=recorded[0].index,
        card_url=f"{kt.rt.public_url}/requests/{request.request_id}",
    )


async def breakglass_token(kt: Keyturn, request_id: str, requester: IdentityRef) -> BreakglassToken:
    """The requester (only) fetches a token for their open window.

    Raises:
        ApprovalRefusedError: ``NOT_REQUESTER``, ``WINDOW_NOT_OPEN``.
    """
    now = kt.rt.clock.now()
    person = (await kt.rt.directory.resolve(requester, now=now)).person
    async with kt.rt.store.unit_of_work() as uow:
        view = await kt._view(uow, request_id, now)
        request = view.request
        if request.breakglass is None:
            raise ApprovalRefusedError("NOT_BREAKGLASS", "this is not a break-glass request")
        if person.object_id != request.binding.requester:
            raise ApprovalRefusedError(
                "NOT_REQUESTER", "only the person who asked for this window receives its token"
            )
        if (
            request.state is not RequestState.APPROVED
            or view.grant is None
            or view.grant.expires_at <= now
        ):
            raise ApprovalRefusedError(
                "WINDOW_NOT_OPEN", f"the window is not open ({request.state})"
            )
        token = kt._job_token(request, view.policy, view.grant, now)
        from bot.service.keyturn import _token_record

        await uow.tokens.add(
            _token_record(token, job_id=request.binding.job_id, request_id=request_id)
        )
        recorded = [
            await kt._record(
                uow, events.cst_minted(request, token, receipt_id=kt.evidence.new_receipt_id())
            )
        ]
        await uow.commit()
    await kt.evidence.after_commit(recorded, now)
    return BreakglassToken(request_id, token.compact, token.expires_at, view.grant.expires_at)


async def revoke(
    kt: Keyturn, request_id: str, by: IdentityRef, *, reason: str = "kill switch"
) -> None:
    """The kill switch: the requester or any eligible approver closes the window now.

    Raises:
        ApprovalRefusedError: ``NOT_ALLOWED_TO_REVOKE``, ``WINDOW_NOT_OPEN``.
    """
    now = kt.rt.clock.now()
    person = (await kt.rt.directory.resolve(by, now=now)).person
    view = await kt.view(request_id)
    request = view.request
    if not await _requester_or_approver(kt, person.object_id, view, now):
        raise ApprovalRefusedError(
            "NOT_ALLOWED_TO_REVOKE",
            "only the requester or an eligible approver can pull the kill switch",
        )
    if request.state is not RequestState.APPROVED:
        raise ApprovalRefusedError(
            "WINDOW_NOT_OPEN", f"nothing to revoke: the request is {request.state}"
        )
    changed = await close_window(
        kt,
        request_id,
        now,
        revoked_by=person.display_name or person.object_id,
        reason=reason,
        actor=person.object_id,
    )
    if not changed:
        raise ApprovalRefusedError("WINDOW_NOT_OPEN", "the window was already closed")


async def close_window(
    kt: Keyturn,
    request_id: str,
    now: datetime,
    *,
    revoked_by: str | None,
    reason: str,
    actor: str = "keyturn",
) -> int:
    """Close an approved window (or an approved request whose grant lapsed unused).

    Moves the request to REVOKED (kill switch) or EXPIRED (time), revokes every token
    of its job, and receipts it; the rollback checklist goes out as an event.
    """
    recorded: list[Recorded] = []
    try:
        async with kt.rt.store.unit_of_work() as uow:
            request = await uow.requests.get(request_id, for_update=True)
            if request.state is not RequestState.APPROVED:
                return 0
            target = RequestState.REVOKED if revoked_by else RequestState.EXPIRED
            after = request.transition(target, at=now, reason=reason)
            await uow.requests.replace(request, after)
            for token in await uow.tokens.for_job(request.binding.job_id):
                if await uow.tokens.revoke(token.token_hash_hex, at=now, reason=reason):
                    recorded.append(
                        await kt._record(
                            uow,
                            events.cst_revoked(
                                request,
                                token_hash_hex=token.token_hash_hex,
                                at=now,
                                actor=actor,
                                reason=reason,
                                receipt_id=kt.evidence.new_receipt_id(),
                            ),
                        )
                    )
            if request.breakglass is not None:
                tokens = [r.receipt.details.get("token_hash_hex") for r in recorded]
                recorded.append(
                    await kt._record(
                        uow,
                        events.breakglass_closed(
                            request,
                            revoked_by=actor if revoked_by else None,
                            token_hash_hex=str(tokens[0]) if tokens else "0" * 64,
                            at=now,
                            receipt_id=kt.evidence.new_receipt_id(),
                            reason=reason,
                        ),
                    )
                )
            else:
                recorded.append(
                    await kt._record(
                        uow,
                        events.expiry(
                            request,
                            at=now,
                            receipt_id=kt.evidence.new_receipt_id(),
                            reason="approval lapsed unused",
                        ),
                    )
                )
            await uow.commit()
    except StoreError as e:
        if e.reason_code == "STORE_CONFLICT":
            return 0
        raise
    await kt.evidence.after_commit(recorded, now)
    kt.rt.observe(str(after.state))
    data: dict[str, Any] = {"state": str(after.state), "closed_at": to_iso(now)}
    if request.breakglass is not None:
        data["rollback_steps"] = list(request.breakglass.rollback_steps)
        data["revoked_by"] = revoked_by
    await kt.rt.hub.publish(Event("request", request_id, data))
    if request.breakglass is not None:
        await kt.rt.hub.publish(Event("rollback_checklist", request_id, data))
        executions = getattr(kt, "executions", None)  # bot.service.execution.install
        if executions is not None:  # before sealing, so the rollback is in the bundle
            await executions.on_window_closed(request_id, reason=reason)
    await kt._seal_later(request_id)
    return 1


async def rollback_step_done(
    kt: Keyturn, request_id: str, step_index: int, by: IdentityRef
) -> None:
    """Someone marks a declared rollback step done; the click is receipted, once per step.

    The checklist is shown in several places (the security channel, the requester's
    DM), so the same step can be clicked twice before every copy is redrawn.

    Raises:
        ApprovalRefusedError: ``NOT_ALLOWED_TO_ROLL_BACK`` (neither the requester nor
            an eligible approver), ``NO_SUCH_STEP``, ``WINDOW_STILL_OPEN``,
            ``STEP_ALREADY_DONE`` (nothing recorded).
    """
    now = kt.rt.clock.now()
    person = (await kt.rt.directory.resolve(by, now=now)).person
    # A step's receipt is the evidence that the privilege was taken back: only the
    # people who may pull the kill switch may give it (checked before the row lock).
    if not await _requester_or_approver(kt, person.object_id, await kt.view(request_id), now):
        raise ApprovalRefusedError(
            "NOT_ALLOWED_TO_ROLL_BACK",
            "only the requester or an eligible approver can mark a rollback step done; "
            "nothing was recorded.",
        )
    async with kt.rt.store.unit_of_work() as uow:
        # The row lock serialises two clicks on the same step (SQLite: the write lock).
        request = await uow.requests.get(request_id, for_update=True)
        if request.breakglass is None or not 0 <= step_index < len(
            request.breakglass.rollback_steps
        ):
            raise ApprovalRefusedError("NO_SUCH_STEP", "this request has no such rollback step")
        if request.state not in (RequestState.REVOKED, RequestState.EXPIRED):
            raise ApprovalRefusedError("WINDOW_STILL_OPEN", "close the window before rolling back")
        done_by = await _step_done_by(uow, request_id, step_index)
        if done_by is not None:
            raise ApprovalRefusedError(
                "STEP_ALREADY_DONE",
                f"Step {step_index + 1} was already marked done by {done_by}; "
                "nothing more was recorded.",
            )
        recorded = [
            await kt._record(
                uow,
                events.breakglass_rolled_back(
                    request,
                    step_index=step_index,
                    step=request.breakglass.rollback_steps[step_index],
                    actor=person.object_id,
                    actor_name=person.display_name,
                    at=now,
                    receipt_id=kt.evidence.new_receipt_id(),
                ),
            )
        ]
        await uow.commit()
    await kt.evidence.after_commit(recorded, now)
    await kt.rt.hub.publish(
        Event("request", request_id, {"rollback_step_done": step_index, "by": person.display_name})
    )


async def _requester_or_approver(
    kt: Keyturn, object_id: str, view: RequestView, now: datetime
) -> bool:
    """Whether ``object_id`` asked for the request or is now in one of its eligible groups."""
    request = view.request
    if object_id == request.binding.requester:
        return True
    group_ids = sorted(
        {
            view.policy.groups[k].directory_id
            for r in request.requirements
            for k in r.eligible_groups
        }
    )
    eligibility = await kt.rt.directory.eligibility(
        object_id, group_ids, now=now, bypass_cache=True
    )
    return bool(eligibility.member_of)


async def _step_done_by(uow: Any, request_id: str, step_index: int) -> str | None:
    """Who already marked ``step_index`` done (from the request's receipts), or None."""
    for _, entry in await uow.jobs.receipt_entries(request_id):
        payload = json.loads(entry).get("payload")
        if (
            not isinstance(payload, dict)
            or payload.get("kind") != ReceiptKind.BREAKGLASS_ROLLED_BACK
        ):
            continue
        details = payload.get("details")
        if isinstance(details, dict) and details.get("step_index") == step_index:
            return str(payload.get("actor_name") or payload.get("actor") or "someone")
    return None
