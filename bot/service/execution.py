"""Executors at work: an approved break-glass action that happens, is verified, undoes itself.

Lifecycle (issue #10, seed 002)::

    execute_breakglass ─ target check (policy constraints + the executor's own) ─ the gate
      (grant consumed once, payload hash over the exact params the executor sends)
      ─ execute ─ verify
    window end / kill switch (breakglass.close_window) ─ rollback ─ verify_rollback
    a failure ─ executor_alert event (the security feed pages) ─ stays visible
      (execute_failed / verify_failed / rollback_failed) until a person resolves it

Each step writes an ``executor_step`` receipt; the execution's state is folded from those
receipts (:func:`core.executor.fold`), so there is no table to drift from the log.
Transient failures (5xx, 429, timeouts) are retried with backoff (:class:`RetryPolicy`);
a 4xx that means "no" is not.

Automatic execution (``install(..., automatic=True)``, what ``bot.bootstrap`` does)::

    approval lands (hub event "request", state approved) ─┐
    scheduler sweep (after a restart, another process) ───┴─▶ run_approved
      ─ only a break-glass request whose route the policy binds to a configured executor
      ─ only once: the gate consumes the grant; a replica that loses the race stops
      ─ refused before anything was sent ─ execute_failed (sent: no), paged, no rollback
      ─ grant used but no execute receipt after a grace period (keyturn stopped mid-call)
        ─ execute_failed (outcome unknown), paged, rolled back at window end

Wiring: ``install(app.service, Executions(app.service, registry, executors))`` makes
``close_window`` roll back; without it nothing is executed by keyturn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.service.breakglass import breakglass_token
from bot.service.evidence import Recorded
from bot.service.runtime import Event
from core import receipt_events as events
from core.errors import ApprovalRefusedError, GateDeniedError, KeyturnError
from core.executor import (
    ALERTING,
    NEEDS_ROLLBACK,
    Action,
    ExecutionState,
    ExecutionStatus,
    Executor,
    ExecutorBinding,
    ExecutorRegistry,
    RetryPolicy,
    StepResult,
    advance,
    check_target,
    fold,
)
from core.identity import IdentityKind, IdentityRef
from core.receipts import ReceiptKind, verify_receipt
from core.requests import ApprovalRequest, RequestState
from core.times import to_iso

if TYPE_CHECKING:
    from adapters.store import SqlUnitOfWork
    from bot.service.keyturn import Keyturn, RequestView

log = logging.getLogger(__name__)

Step = Callable[[Action], Awaitable[StepResult]]
MAX_NOTE = 500
#: A grant used this long ago without an execute receipt was not used by a live call of
#: this keyturn: it stopped mid-call, or someone used the grant outside keyturn. Longer
#: than any execute with its retries can take (attempts × (timeout + backoff)).
UNRECEIPTED_GRACE = timedelta(minutes=10)
#: How long closing the service waits for executions in flight before cancelling them.
DRAIN_SECONDS = 10.0


def install(kt: Keyturn, executions: Executions, *, automatic: bool = False) -> None:
    """Attach ``executions`` to the service so a closing window rolls back.

    With ``automatic``, an approved break-glass request bound to an executor is also
    executed at once (see :meth:`Executions.run_approved`).
    """
    kt.executions = executions  # type: ignore[attr-defined]
    if automatic:
        executions.watch()


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One verified ``executor_step`` receipt, for people (CLI, console)."""

    index: int
    at: datetime
    step: str
    outcome: str
    state: str
    attempts: int
    detail: str
    actor: str
    actor_name: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "receipt_index": self.index,
            "at": to_iso(self.at),
            "step": self.step,
            "outcome": self.outcome,
            "state": self.state,
            "attempts": self.attempts,
            "detail": self.detail,
            "actor": self.actor,
            "actor_name": self.actor_name,
        }


class Executions:
    """The execution use cases for one service."""

    def __init__(
        self,
        kt: Keyturn,
        registry: ExecutorRegistry,
        executors: Mapping[str, Executor],
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        missing = sorted(set(registry.bindings) - set(executors))
        if missing:
            raise ValueError(f"no executor built for binding(s) {missing}")
        self._kt = kt
        self._registry = registry
        self._executors = dict(executors)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        #: Automatic executions in flight in this process, by request id.
        self._running: dict[str, asyncio.Task[None]] = {}
        #: Approved requests whose execution has started (no need to look again).
        self._started: set[str] = set()

    def bound(self, request: ApprovalRequest) -> bool:
        """True when keyturn itself executes ``request`` (a break-glass request whose
        route the policy binds to a configured executor)."""
        if request.breakglass is None:
            return False
        try:
            self._registry.binding_for(request.binding.tool_route, request.breakglass)
        except GateDeniedError:
            return False
        return True

    # ------------------------------------------------------------------ reading

    async def status(self, request_id: str) -> ExecutionStatus:
        """The execution state of a request, folded from its ``executor_step`` receipts."""
        async with self._kt.rt.store.unit_of_work(read_only=True) as uow:
            return fold(await _steps(uow, request_id))

    async def history(self, request_id: str) -> list[StepRecord]:
        """The request's ``executor_step`` receipts, each verified against keyturn's key."""
        kt = self._kt
        records = []
        async with kt.rt.store.unit_of_work(read_only=True) as uow:
            for index, entry in await uow.jobs.receipt_entries(request_id):
                envelope = json.loads(entry)
                if envelope.get("payload", {}).get("kind") != ReceiptKind.EXECUTOR_STEP:
                    continue
                receipt = verify_receipt(envelope, trusted_signers={kt.rt.signer.did})
                d = receipt.details
                records.append(
                    StepRecord(
                        index=index,
                        at=receipt.timestamp,
                        step=str(d.get("step")),
                        outcome=str(d.get("outcome")),
                        state=str(d.get("state")),
                        attempts=int(d.get("attempts", 1)),
                        detail=str(d.get("detail", "")),
                        actor=receipt.actor,
                        actor_name=receipt.actor_name,
                    )
                )
        return records

    async def overview(
        self, *, include_settled: bool = False, limit: int = 200
    ) -> list[tuple[ApprovalRequest, ExecutionStatus]]:
        """Break-glass requests keyturn executes, newest first, with their state.

        Without ``include_settled``: only those that need a person (alerting) or are
        under way (the window is open); rolled back, resolved and never-run closed
        windows are left out.
        """
        async with self._kt.rt.store.unit_of_work(read_only=True) as uow:
            found = [r for r in await uow.requests.find(limit=limit) if self.bound(r)]
        rows = []
        for request in found:
            status = await self.status(request.request_id)
            open_window = request.state is RequestState.APPROVED
            if include_settled or status.alerting or open_window:
                rows.append((request, status))
        return rows

    # ------------------------------------------------------------------ execute

    async def execute_breakglass(self, request_id: str, requester: IdentityRef) -> ExecutionStatus:
        """The requester has keyturn carry out their approved break-glass action now.

        Raises:
            ApprovalRefusedError: ``NOT_BREAKGLASS``, ``NOT_REQUESTER``, ``WINDOW_NOT_OPEN``.
            GateDeniedError: ``NO_EXECUTOR``, ``CONSTRAINT_VIOLATED``, ``TARGET_NOT_ALLOWED``
                (nothing was sent), or any gate refusal such as ``GRANT_ALREADY_USED``.
        """
        kt = self._kt
        now = kt.rt.clock.now()
        view = await kt.view(request_id)
        request = view.request
        if request.breakglass is None:
            raise ApprovalRefusedError("NOT_BREAKGLASS", "this is not a break-glass request")
        binding, executor = self._bound(request)
        action = _action(view)
        context = await self._context(request_id)
        try:
            check_target(
                view.policy,
                route=request.binding.tool_route,
                params=action.params,
                requester=request.binding.requester,
                context=context,
                binding=binding,
                executor=executor,
                action=action,
                breakglass=True,
            )
        except GateDeniedError as e:
            await kt._record_gate_denial(e.reason_code, action.grant, now)
            raise
        token = await breakglass_token(kt, request_id, requester)
        # The gate hashes action.params: the very mapping the executor is handed next.
        await kt.gate_check(
            cst=token.token,
            grant=action.grant,
            tool_route=action.route,
            params=action.params,
            context=context,
        )
        result, attempts = await self._attempt(
            executor.execute, action, keep_trying=lambda: self._window_open(request_id)
        )
        status = await self._record(request, binding, "execute", result, attempts)
        if status.state is ExecutionState.EXECUTED:
            verified, attempts = await self._attempt(
                executor.verify, replace(action, reference=result.reference)
            )
            status = await self._record(request, binding, "verify", verified, attempts)
        if (await kt.view(request_id)).request.state is not RequestState.APPROVED:
            # The window closed (kill switch, time) while the call was in flight: its
            # rollback found nothing executed yet, so undo what just landed now.
            return await self.rollback(request_id, reason="window closed during execution")
        return status

    # ------------------------------------------------------------------ automatic

    def watch(self) -> None:
        """Execute approved, bound break-glass requests as soon as their approval lands."""
        self._kt.rt.hub.subscribe(self._on_event)

    async def _on_event(self, event: Event) -> None:
        if (
            event.kind == "request"
            and event.request_id is not None
            and event.data.get("state") == RequestState.APPROVED.value
            and "execution" not in event.data
        ):
            self.start(event.request_id)

    def start(self, request_id: str) -> None:
        """Run :meth:`run_approved` for ``request_id`` in the background (once at a time)."""
        if request_id in self._running or request_id in self._started:
            return
        task = asyncio.get_running_loop().create_task(
            self._run(request_id), name=f"keyturn-execute-{request_id}"
        )
        self._running[request_id] = task
        task.add_done_callback(lambda _: self._running.pop(request_id, None))

    async def _run(self, request_id: str) -> None:
        try:
            await self.run_approved(request_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Never crash the service. When nothing was receipted yet, receipt the failure
            # (outcome unknown, so the window's end rolls back) so it is paged and visible.
            log.exception("automatic execution of %s failed", request_id)
            try:
                request = (await self._kt.view(request_id)).request
                if (await self.status(request_id)).state is ExecutionState.NOT_STARTED:
                    binding, _ = self._bound(request)
                    failed = StepResult(False, "keyturn failed while executing (internal error)")
                    await self._record(request, binding, "execute", failed, 1)
                    return
            except Exception:
                log.exception("could not receipt the failed execution of %s", request_id)
            await self._kt.rt.hub.publish(
                Event(
                    "executor_alert",
                    request_id,
                    {"state": "execute_failed", "step": "execute", "detail": "internal error"},
                )
            )

    async def run_approved(self, request_id: str) -> ExecutionStatus | None:
        """Execute an approved break-glass request keyturn is bound to run; once.

        Returns the execution status, or ``None`` when there is nothing to do here: not
        a bound break-glass request, not approved, the window already lapsed, or another
        process is executing it. A refusal before anything was sent is receipted as a
        failed execute (``sent: no``) and paged; it never raises for that.
        """
        kt = self._kt
        now = kt.rt.clock.now()
        async with kt.rt.store.unit_of_work(read_only=True) as uow:
            # One light read first: most approvals are not bound break-glass requests.
            request = await uow.requests.get(request_id)
        if request.state is not RequestState.APPROVED or not self.bound(request):
            return None
        view = await kt.view(request_id)
        request = view.request
        status = await self.status(request_id)
        if status.state is not ExecutionState.NOT_STARTED:
            self._started.add(request_id)
            return status
        grant = view.grant
        if grant is None or grant.expires_at <= now:
            return None  # lapsed: the scheduler closes the window; nothing was executed
        async with kt.rt.store.unit_of_work(read_only=True) as uow:
            used_at = await uow.grants.consumed_at(grant.grant_id)
        binding, _ = self._bound(request)
        if used_at is not None:
            if now - used_at < UNRECEIPTED_GRACE:
                return None  # another replica passed the gate and is executing it
            self._started.add(request_id)
            unknown = StepResult(
                False,
                "the grant was used but no execution was receipted (keyturn stopped "
                "mid-call, or the grant was used outside keyturn): the outcome is unknown",
            )
            return await self._record(request, binding, "execute", unknown, 1)
        requester = IdentityRef(IdentityKind.OBJECT_ID, request.binding.requester)
        try:
            status = await self.execute_breakglass(request_id, requester)
        except KeyturnError as e:
            if e.reason_code == "GRANT_ALREADY_USED":
                log.info("%s: another process executes it (its grant is used)", request_id)
                return None
            async with kt.rt.store.unit_of_work(read_only=True) as uow:
                passed_gate = await uow.grants.consumed_at(grant.grant_id) is not None
            if passed_gate:
                # Our gate check consumed the grant, so the call may have been sent (the
                # failure came after it): never "refused before anything was sent".
                return await self._failed_after_gate(request, binding, e)
            if (await kt.view(request_id)).request.state is not RequestState.APPROVED:
                log.info("%s: the window closed before it was executed", request_id)
                return None
            self._started.add(request_id)
            refused = StepResult(
                False,
                f"refused before anything was sent: {e.reason_code}: {e.message}",
                reference={"sent": "no", "reason_code": e.reason_code},
            )
            return await self._record(request, binding, "execute", refused, 1)
        self._started.add(request_id)
        return status

    async def _failed_after_gate(
        self, request: ApprovalRequest, binding: ExecutorBinding, error: KeyturnError
    ) -> ExecutionStatus:
        """The gate passed, then something failed: receipt an unknown outcome (paged;
        rolled back at window end) unless a step was receipted already."""
        request_id = request.request_id
        self._started.add(request_id)
        status = await self.status(request_id)
        if status.state is not ExecutionState.NOT_STARTED:
            return status
        log.error("%s failed after the gate passed: %s", request_id, error.reason_code)
        unknown = StepResult(
            False,
            f"keyturn failed after the gate passed ({error.reason_code}): the call may "
            "have been sent; the outcome is unknown",
        )
        status = await self._record(request, binding, "execute", unknown, 1)
        if (await self._kt.view(request_id)).request.state is not RequestState.APPROVED:
            # The window closed meanwhile; its rollback found nothing receipted.
            return await self.rollback(request_id, reason="window closed during execution")
        return status

    async def settle_unreceipted(self, request_id: str, *, now: datetime) -> ExecutionStatus | None:
        """A closed window whose grant was used, longer than :data:`UNRECEIPTED_GRACE`
        ago, with no step receipted (keyturn stopped mid-call and the window closed
        before :meth:`run_approved` could flag it): receipt the unknown outcome (paged)
        and roll back. ``None`` when that is not the case (yet). Reconciliation calls it.
        """
        view = await self._kt.view(request_id)
        request = view.request
        grant = view.grant
        if request.state is RequestState.APPROVED or grant is None or not self.bound(request):
            return None
        status = await self.status(request_id)
        if status.state is not ExecutionState.NOT_STARTED:
            return status
        async with self._kt.rt.store.unit_of_work(read_only=True) as uow:
            used_at = await uow.grants.consumed_at(grant.grant_id)
        if used_at is None or now - used_at < UNRECEIPTED_GRACE:
            return None
        binding, _ = self._bound(request)
        unknown = StepResult(
            False,
            "the grant was used but no execution was receipted before the window closed "
            "(keyturn stopped mid-call, or the grant was used outside keyturn): the "
            "outcome is unknown",
        )
        await self._record(request, binding, "execute", unknown, 1)
        return await self.rollback(request_id, reason="reconciliation: unreceipted grant use")

    async def sweep(self) -> int:
        """The scheduler's pass: start approved, bound requests not executed yet.

        Catches what the approval event did not reach: an approval that landed in
        another process, or just before a restart. Returns how many were started.
        """
        async with self._kt.rt.store.unit_of_work(read_only=True) as uow:
            approved = await uow.requests.find(states=[RequestState.APPROVED], limit=500)
        open_ids = {r.request_id for r in approved}
        self._started &= open_ids
        started = 0
        for request in approved:
            rid = request.request_id
            if rid in self._running or rid in self._started or not self.bound(request):
                continue
            self.start(rid)
            started += 1
        return started

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the automatic executions in flight have finished (or ``timeout``)."""
        while running := [t for t in self._running.values() if not t.done()]:
            _, pending = await asyncio.wait(running, timeout=timeout)
            if pending:
                return

    async def aclose(self, *, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Let executions in flight finish (briefly), cancel the rest, close the executors.

        A cancelled execution is picked up again: the next start's sweep re-runs one not
        yet sent, and flags one cut off mid-call (see :data:`UNRECEIPTED_GRACE`).
        """
        if self._running:
            await self.drain(drain_seconds)
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for executor in self._executors.values():
            close = getattr(executor, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing executor %s failed", executor.kind)

    # ------------------------------------------------------------------ rollback

    async def rollback(self, request_id: str, *, reason: str) -> ExecutionStatus:
        """Undo what was executed for ``request_id`` and confirm it is gone.

        Does nothing (returns the status) when nothing was executed or it is already
        rolled back or resolved; only confirms (verify_rollback) a rollback that was
        sent but never confirmed (reconciliation after a crash).
        """
        view = await self._kt.view(request_id)
        request = view.request
        status = await self.status(request_id)
        if status.state is ExecutionState.ROLLBACK_SENT:
            # Sent but never confirmed (the process stopped in between): confirm it now.
            binding, executor = self._bound(request)
            check = replace(_action(view), reference=status.reference)
            confirmed, attempts = await self._attempt(executor.verify_rollback, check)
            return await self._record(request, binding, "verify_rollback", confirmed, attempts)
        if status.state not in NEEDS_ROLLBACK:
            return status
        if status.state is ExecutionState.EXECUTE_FAILED and status.reference.get("sent") == "no":
            # Refused before anything was sent: there is nothing to undo. It stays
            # execute_failed (paged) until a person resolves it.
            return status
        binding, executor = self._bound(request)
        action = replace(_action(view), reference=status.reference)
        log.info("rolling back %s (%s)", request_id, reason)
        result, attempts = await self._attempt(executor.rollback, action)
        status = await self._record(request, binding, "rollback", result, attempts)
        if status.state is not ExecutionState.ROLLBACK_SENT:
            return status
        check = replace(action, reference={**action.reference, **result.reference})
        confirmed, attempts = await self._attempt(executor.verify_rollback, check)
        return await self._record(request, binding, "verify_rollback", confirmed, attempts)

    async def on_window_closed(self, request_id: str, *, reason: str) -> None:
        """``close_window``'s hook: roll back; a failure is receipted and paged, never raised."""
        try:
            await self.rollback(request_id, reason=reason)
        except Exception:
            log.exception("rollback of %s failed before it could be receipted", request_id)
            await self._kt.rt.hub.publish(
                Event(
                    "executor_alert",
                    request_id,
                    {"state": "rollback_failed", "step": "rollback", "detail": "internal error"},
                )
            )

    # ------------------------------------------------------------------ resolve

    async def resolve(self, request_id: str, by: IdentityRef, *, note: str) -> ExecutionStatus:
        """A person (an eligible approver, never the requester) clears a failed execution.

        Raises:
            ApprovalRefusedError: ``NOTE_REQUIRED``, ``NOTHING_TO_RESOLVE``,
                ``ROLLBACK_PENDING`` (verify_failed, or an execute that may have been
                sent, before its rollback was tried), ``NOT_ALLOWED_TO_RESOLVE``.
        """
        kt = self._kt
        if not note or not note.strip():
            raise ApprovalRefusedError("NOTE_REQUIRED", "say what was done to resolve it")
        now = kt.rt.clock.now()
        person = (await kt.rt.directory.resolve(by, now=now)).person
        view = await kt.view(request_id)
        request = view.request
        status = await self.status(request_id)
        if status.state not in ALERTING:
            raise ApprovalRefusedError(
                "NOTHING_TO_RESOLVE", f"the execution is {status.state}; nothing to resolve"
            )
        if (
            status.state in (ExecutionState.VERIFY_FAILED, ExecutionState.EXECUTE_FAILED)
            and status.reference.get("sent") != "no"
        ):
            # What may have landed is still to be rolled back (window end, kill switch,
            # reconciliation); a resolve now would end the execution and skip that.
            raise ApprovalRefusedError(
                "ROLLBACK_PENDING",
                f"the execution is {status.state} and not rolled back yet: it is rolled "
                "back when the window closes (pull the kill switch to close it now)",
            )
        group_ids = sorted(
            {
                view.policy.groups[k].directory_id
                for r in request.requirements
                for k in r.eligible_groups
            }
        )
        eligibility = await kt.rt.directory.eligibility(
            person.object_id, group_ids, now=now, bypass_cache=True
        )
        if person.object_id == request.binding.requester or not eligibility.member_of:
            raise ApprovalRefusedError(
                "NOT_ALLOWED_TO_RESOLVE",
                "only an eligible approver other than the requester can resolve this",
            )
        binding, _ = self._bound(request)
        done = StepResult(True, note.strip()[:MAX_NOTE])
        return await self._record(
            request,
            binding,
            "resolve",
            done,
            1,
            actor=person.object_id,
            actor_name=person.display_name,
        )

    # ------------------------------------------------------------------ plumbing

    def _bound(self, request: ApprovalRequest) -> tuple[ExecutorBinding, Executor]:
        binding = self._registry.binding_for(request.binding.tool_route, request.breakglass)
        return binding, self._executors[binding.name]

    async def _context(self, request_id: str) -> dict[str, Any]:
        """The call context the request was created with (reason, ticket…)."""
        async with self._kt.rt.store.unit_of_work(read_only=True) as uow:
            for payload in await _payloads(uow, request_id):
                if payload.get("kind") == ReceiptKind.REQUEST_CREATED:
                    call = payload.get("details", {}).get("call", {})
                    context = call.get("context") if isinstance(call, dict) else None
                    return dict(context) if isinstance(context, dict) else {}
        return {}

    async def _window_open(self, request_id: str) -> bool:
        return (await self._kt.view(request_id)).request.state is RequestState.APPROVED

    async def _attempt(
        self,
        step: Step,
        action: Action,
        *,
        keep_trying: Callable[[], Awaitable[bool]] | None = None,
    ) -> tuple[StepResult, int]:
        """Run ``step``, retrying transient failures; ``keep_trying`` is asked after each
        backoff (execute: the window is still open — a kill switch stops the retries)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await step(action)
            except Exception as e:
                # An adapter defect must still end in a receipted, visible failure.
                log.exception("executor step raised")
                result = StepResult(False, f"the executor failed ({type(e).__name__})")
            delay = self._retry.next_delay(attempt, result)
            if delay is None:
                return result, attempt
            log.info("executor step: %s; retrying in %.2f s", result.detail, delay)
            await self._sleep(delay)
            if keep_trying is not None and not await keep_trying():
                log.info("executor step: not retried, the window has closed")
                return result, attempt

    async def _record(
        self,
        request: ApprovalRequest,
        binding: ExecutorBinding,
        step: str,
        result: StepResult,
        attempts: int,
        *,
        actor: str = "keyturn",
        actor_name: str | None = None,
    ) -> ExecutionStatus:
        kt = self._kt
        now = kt.rt.clock.now()
        request_id = request.request_id
        async with kt.rt.store.unit_of_work() as uow:
            # Locking the request row serialises two steps racing on one execution.
            await uow.requests.get(request_id, for_update=True)
            before = fold(await _steps(uow, request_id))
            state = advance(before.state, step, ok=result.ok)
            receipt = events.executor_step(
                request,
                executor=binding.name,
                step=step,
                ok=result.ok,
                state=str(state),
                attempts=attempts,
                detail=result.detail,
                at=now,
                receipt_id=kt.evidence.new_receipt_id(),
                actor=actor,
                actor_name=actor_name,
                status=result.status,
                reference=result.reference,
            )
            recorded: list[Recorded] = [await kt._record(uow, receipt)]
            await uow.commit()
        await kt.evidence.after_commit(recorded, now)
        data = {"execution": str(state), "step": step, "executor": binding.name}
        await kt.rt.hub.publish(Event("request", request_id, data))
        if state in ALERTING:
            log.error("executor %s: %s %s for %s", binding.name, step, state, request_id)
            await kt.rt.hub.publish(
                Event(
                    "executor_alert",
                    request_id,
                    {
                        **data,
                        "state": str(state),
                        "route": request.binding.tool_route,
                        "detail": result.detail,
                        "receipt_index": recorded[0].index,
                    },
                )
            )
        return ExecutionStatus(
            state,
            executor=binding.name,
            reference=result.reference if step == "execute" else before.reference,
            last_detail=result.detail,
        )


def _action(view: RequestView) -> Action:
    request = view.request
    grant = view.grant
    if grant is None or grant.envelope is None:
        raise ApprovalRefusedError("WINDOW_NOT_OPEN", "the request has no grant")
    return Action(
        request_id=request.request_id,
        route=request.binding.tool_route,
        params=request.params,
        grant=grant.envelope,
        window_closes_at=grant.expires_at,
        justification=request.justification or "",
    )


async def _payloads(uow: SqlUnitOfWork, request_id: str) -> list[dict[str, Any]]:
    payloads = []
    for _, entry in await uow.jobs.receipt_entries(request_id):
        payload = json.loads(entry).get("payload")
        if isinstance(payload, dict):
            payloads.append(payload)
    return payloads


async def _steps(uow: SqlUnitOfWork, request_id: str) -> list[dict[str, Any]]:
    return [
        p["details"]
        for p in await _payloads(uow, request_id)
        if p.get("kind") == ReceiptKind.EXECUTOR_STEP and isinstance(p.get("details"), dict)
    ]
