"""Reconciliation: what keyturn granted ends, and nobody else holds what keyturn guards.

Every ``every_seconds``, on one replica at a time (a lease in the store: the holder
renews it each run; when it dies the lease expires and another replica takes over)::

    run_once(now)
      ├─ take the lease ─────────────── not mine: stand by (report acted=False)
      ├─ executions keyturn performed, folded from their executor_step receipts
      │    past the window (+ grace) and not rolled back ─▶ Executions.rollback
      │    (receipted; a failure pages as rollback_failed and is retried every
      │    retry_failed_every_seconds); a rollback sent but never confirmed ─▶ confirmed
      ├─ closed windows whose grant was used with no step receipted (a replica stopped
      │    between the gate and its receipt) ─▶ execute_failed (paged) ─▶ rollback
      └─ watched roles / groups (optional) ─ who holds them now (Graph) ─ minus what
           keyturn's open executions granted, minus configured standing holders
           ─▶ one ``reconcile_finding`` receipt each (loud feed line) + an event

The grace period leaves the window's own close (``close_window`` → rollback) to do its
job first; reconciliation is the net under it: a replica that died mid-window, a
rollback that failed, a kill switch that raced an execute.

Findings are reported once while they persist (again every
``remind_findings_every_seconds``), so a standing problem does not flood the log.

Wiring (the composition root): ``Reconciler.build(kt, executions, executors,
ReconcileSettings(...))`` and ``reconcile_forever(reconciler)`` as a background task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from adapters.store.executions import ExecutionReceipts
from adapters.store.leases import Leases
from bot.service.evidence import Recorded
from bot.service.execution import UNRECEIPTED_GRACE
from bot.service.runtime import Event
from bot.settings import ReconcileSettings
from core import receipt_events as events
from core.errors import ConfigError, KeyturnError
from core.executor import (
    NEEDS_ROLLBACK,
    ActiveAssignment,
    AssignmentLister,
    ExecutionState,
    ExecutionStatus,
    Executor,
    fold,
)
from core.requests import ApprovalRequest, RequestState

if TYPE_CHECKING:
    from bot.service.execution import Executions
    from bot.service.keyturn import Keyturn

log = logging.getLogger(__name__)

LEASE = "reconcile"
#: How many of the newest closed windows each run checks for an unreceipted execution.
CLOSED_SCAN = 200
#: Executor kind → (settings field listing its watched ids, execute reference key).
WATCHABLE = {
    "entra.role.assign": ("watch_roles", "role_definition_id"),
    "entra.group.add": ("watch_groups", "group_id"),
}
_FINISHED = frozenset({ExecutionState.ROLLED_BACK, ExecutionState.RESOLVED})


@dataclass(frozen=True, slots=True)
class Finding:
    """Someone holds a watched target that no open keyturn execution granted."""

    executor: str
    assignment: ActiveAssignment


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one run did. ``acted`` is False when another replica holds the lease."""

    acted: bool
    rolled_back: Mapping[str, str] = field(default_factory=dict)  # request id → state after
    findings: tuple[Finding, ...] = ()
    errors: tuple[str, ...] = ()


class Reconciler:
    """The reconciliation use case for one replica (see the module docstring)."""

    def __init__(
        self,
        kt: Keyturn,
        executions: Executions,
        executors: Mapping[str, Executor],
        settings: ReconcileSettings,
        *,
        leases: Leases,
        receipts: ExecutionReceipts,
        holder: str | None = None,
    ) -> None:
        """Raises:
        ConfigError: ``CONFIG_INVALID`` — watched roles or groups without an executor
            of the kind that can list them.
        """
        self._kt = kt
        self._executions = executions
        self._settings = settings
        self._leases = leases
        self._receipts = receipts
        self.holder = holder or f"{socket.gethostname()[:200]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._watch: list[tuple[str, AssignmentLister, str]] = []
        for kind, (option, _) in WATCHABLE.items():
            targets: tuple[str, ...] = getattr(settings, option)
            if not targets:
                continue
            listers = [
                (name, ex)
                for name, ex in executors.items()
                if ex.kind == kind and callable(getattr(ex, "list_active", None))
            ]
            if not listers:
                raise ConfigError(
                    "CONFIG_INVALID",
                    f"reconcile.{option} needs an executor of kind {kind} to read them",
                )
            name, lister = listers[0]
            self._watch.extend((name, cast(AssignmentLister, lister), t) for t in targets)
        # Per process: finished executions never change again; when each failed
        # rollback was last tried; when each finding was last reported.
        self._finished: set[str] = set()
        self._tried: dict[str, datetime] = {}
        self._reported: dict[tuple[str, str], datetime] = {}

    @classmethod
    def build(
        cls,
        kt: Keyturn,
        executions: Executions,
        executors: Mapping[str, Executor],
        settings: ReconcileSettings,
        *,
        holder: str | None = None,
    ) -> Reconciler:
        store = kt.rt.store
        return cls(
            kt,
            executions,
            executors,
            settings,
            leases=Leases(store),
            receipts=ExecutionReceipts(store),
            holder=holder,
        )

    @property
    def settings(self) -> ReconcileSettings:
        return self._settings

    @property
    def clock(self) -> Any:
        return self._kt.rt.clock

    # ------------------------------------------------------------------ the run

    async def run_once(self, now: datetime) -> ReconcileReport:
        """One reconciliation pass at ``now`` if this replica holds (or takes) the lease.

        Never raises for the outside world or one bad execution: those end up in the
        report's ``errors`` (and the log). Raises ``StoreError`` only when the lease
        itself cannot be read (then nothing was done).
        """
        if not await self._leases.take(LEASE, self.holder, now=now, seconds=self._settings.lease):
            return ReconcileReport(acted=False)
        errors: list[str] = []
        rolled_back: dict[str, str] = {}
        active = await self._open_executions()
        for request_id, status in sorted(active.items()):
            try:
                if not await self._due(request_id, status, now):
                    continue
                if not await self._still_mine():
                    errors.append("the lease passed to another replica; stopped")
                    break
                self._tried[request_id] = now
                after = await self._executions.rollback(
                    request_id, reason="reconciliation: the window has ended"
                )
                rolled_back[request_id] = str(after.state)
                if after.state in _FINISHED:
                    self._finished.add(request_id)
                    self._tried.pop(request_id, None)
            except Exception as e:
                log.exception("reconciling %s failed", request_id)
                errors.append(f"{request_id}: {type(e).__name__}: {e}")
        for request in await self._closed_unreceipted(active):
            request_id = request.request_id
            try:
                if not await self._still_mine():
                    errors.append("the lease passed to another replica; stopped")
                    break
                settled = await self._executions.settle_unreceipted(request_id, now=now)
                if settled is not None:
                    rolled_back[request_id] = str(settled.state)
                elif request.state_changed_at is not None and (
                    now - request.state_changed_at >= UNRECEIPTED_GRACE
                ):
                    # Its grant was never used (a use precedes the close, so one would be
                    # past the grace and settled): a closed window never uses it now.
                    self._finished.add(request_id)
            except Exception as e:
                log.exception("reconciling %s failed", request_id)
                errors.append(f"{request_id}: {type(e).__name__}: {e}")
        findings: list[Finding] = []
        if self._watch:
            try:
                findings = await self._holders(now)
            except Exception as e:
                log.exception("checking the watched roles and groups failed")
                errors.append(f"watch: {type(e).__name__}: {e}")
        return ReconcileReport(True, rolled_back, tuple(findings), tuple(errors))

    async def release(self) -> None:
        """Give the lease up (on shutdown) so another replica takes over at once."""
        await self._leases.release(LEASE, self.holder, now=self.clock.now())

    # ------------------------------------------------------------------ executions

    async def _open_executions(self) -> dict[str, ExecutionStatus]:
        """Executions not finished, folded from their receipts (finished ones are
        remembered and not read again)."""
        entries = await self._receipts.step_entries(skip=self._finished)
        open_: dict[str, ExecutionStatus] = {}
        for request_id, raw in entries.items():
            steps = []
            for entry in raw:
                details = json.loads(entry).get("payload", {}).get("details")
                if isinstance(details, dict):
                    steps.append(details)
            try:
                status = fold(steps)
            except KeyturnError:
                log.error("the executor receipts of %s do not fold; left alone", request_id)
                continue
            if status.state in _FINISHED:
                self._finished.add(request_id)
            else:
                open_[request_id] = status
        return open_

    async def _closed_unreceipted(
        self, active: Mapping[str, ExecutionStatus]
    ) -> list[ApprovalRequest]:
        """Closed windows keyturn executes that have no step receipt and are not known to
        be settled: a process that stopped between the gate and its receipt leaves one
        (see :meth:`Executions.settle_unreceipted`)."""
        async with self._kt.rt.store.unit_of_work(read_only=True) as uow:
            closed = await uow.requests.find(
                states=[RequestState.EXPIRED, RequestState.REVOKED], limit=CLOSED_SCAN
            )
        return [
            r
            for r in closed
            if r.request_id not in active
            and r.request_id not in self._finished
            and self._executions.bound(r)
        ]

    async def _due(self, request_id: str, status: ExecutionStatus, now: datetime) -> bool:
        if status.state not in NEEDS_ROLLBACK and status.state is not ExecutionState.ROLLBACK_SENT:
            return False
        grace = timedelta(seconds=self._settings.grace_seconds)
        if status.state is ExecutionState.ROLLBACK_FAILED:
            last = self._tried.get(request_id)
            every = timedelta(seconds=self._settings.retry_failed_every_seconds)
            if last is not None and now - last < every:
                return False
        view = await self._kt.view(request_id)
        request = view.request
        ended: list[datetime] = []
        if view.grant is not None:
            ended.append(view.grant.expires_at)
        if request.state is not RequestState.APPROVED and request.state_changed_at is not None:
            ended.append(request.state_changed_at)
        return bool(ended) and min(ended) + grace <= now

    async def _still_mine(self) -> bool:
        return await self._leases.take(
            LEASE, self.holder, now=self.clock.now(), seconds=self._settings.lease
        )

    # ------------------------------------------------------------------ watched targets

    async def _holders(self, now: datetime) -> list[Finding]:
        held: list[tuple[str, ActiveAssignment]] = []
        for name, lister, target in self._watch:
            for assignment in await lister.list_active(target, now=now):
                held.append((name, assignment))
        # Read what keyturn granted *after* asking Graph: an execution that lands in
        # between is then counted as granted, not reported as unknown.
        granted = self._granted(await self._open_executions())
        standing = self._settings.standing_holders
        seen: set[tuple[str, str]] = set()
        findings: list[Finding] = []
        remind = timedelta(seconds=self._settings.remind_findings_every_seconds)
        for name, a in held:
            key = (a.target_id, a.principal_id)
            if key in granted or a.principal_id in standing.get(a.target_id, ()):
                continue
            seen.add(key)
            last = self._reported.get(key)
            if last is not None and now - last < remind:
                continue
            findings.append(Finding(name, a))
            self._reported[key] = now
        for key in [k for k in self._reported if k not in seen]:
            del self._reported[key]  # gone: report it again should it come back
        if findings:
            await self._report(findings, now)
        return findings

    @staticmethod
    def _granted(open_: Mapping[str, ExecutionStatus]) -> set[tuple[str, str]]:
        granted = set()
        for status in open_.values():
            principal = status.reference.get("principal_id", "").lower()
            for _, key in WATCHABLE.values():
                target = status.reference.get(key, "").lower()
                if principal and target:
                    granted.add((target, principal))
        return granted

    async def _report(self, findings: Sequence[Finding], now: datetime) -> None:
        kt = self._kt
        async with kt.rt.store.unit_of_work() as uow:
            policy = await kt._active(uow, now)
            recorded: list[Recorded] = []
            for f in findings:
                receipt = events.reconcile_finding(
                    policy_hash_b64u=policy.policy_hash_b64u,
                    finding="unknown_holder",
                    executor=f.executor,
                    target_id=f.assignment.target_id,
                    principal_id=f.assignment.principal_id,
                    ends_at=f.assignment.ends_at,
                    assignment_type=f.assignment.assignment_type,
                    at=now,
                    receipt_id=kt.evidence.new_receipt_id(),
                )
                recorded.append(await kt._record(uow, receipt))
            await uow.commit()
        await kt.evidence.after_commit(recorded, now)
        for f, r in zip(findings, recorded, strict=True):
            log.error(
                "reconciliation: %s holds %s, which keyturn did not grant",
                f.assignment.principal_id,
                f.assignment.target_id,
            )
            data: dict[str, Any] = {
                "finding": "unknown_holder",
                "executor": f.executor,
                "target_id": f.assignment.target_id,
                "principal_id": f.assignment.principal_id,
                "receipt_index": r.index,
            }
            await kt.rt.hub.publish(Event("reconcile_finding", None, data))


async def reconcile_forever(reconciler: Reconciler, every_seconds: float | None = None) -> None:
    """Run :meth:`Reconciler.run_once` forever (a background task; cancel to stop).

    Every replica may run it: the lease lets one act. A failed run is logged and the
    next one tries again.
    """
    every = every_seconds if every_seconds is not None else reconciler.settings.every_seconds
    clock = reconciler.clock
    try:
        while True:
            try:
                report = await reconciler.run_once(clock.now())
                for error in report.errors:
                    log.warning("reconciliation: %s", error)
            except KeyturnError as e:
                log.warning("reconciliation refused: %s", e)
            except Exception:
                log.exception("reconciliation run failed")
            await asyncio.sleep(every)
    finally:
        try:
            await reconciler.release()
        except Exception:
            log.warning("releasing the reconciliation lease failed", exc_info=True)
