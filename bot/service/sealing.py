"""Sealing finished requests into their proof bundles (once each), and receipting the seals.

Sealing is off the request path: the use cases queue a request when it reaches a final
state and the scheduler (:meth:`Keyturn.run_due`) seals the queue in batches, with one
checkpoint and one commit per batch. :meth:`Keyturn.bundle` seals on demand, so a
request whose queued seal was lost (a restart) or failed is sealed when first asked for.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from adapters.store import SqlUnitOfWork
from bot.service.runtime import new_id
from core import receipt_events as events
from core.bundle import bundle_payload, sign_bundle
from core.errors import BundleError, KeyturnError
from core.grants import Grant
from core.requests import ApprovalRequest, RequestState
from core.times import truncate_ms

if TYPE_CHECKING:
    from bot.service.keyturn import Keyturn

log = logging.getLogger(__name__)

#: Seconds the sealer yields between two bundles of a batch.
_PAUSE_BETWEEN_SEALS = 0.002
#: Bundles written per unit of work. A unit holds the store's write lock while its
#: statements run on the event loop's thread (adapters.store.sqlite_driver), and a
#: bundle is tens of KB of JSON to serialize: 100 in one unit kept every decision and
#: submission waiting for up to 70 ms (tests/bench/bench_service.py).
_BUNDLES_PER_COMMIT = 10

#: States after which nothing more can happen to a request (break-glass windows
#: close as REVOKED or EXPIRED; a plain approval ends CONSUMED or EXPIRED).
SEALABLE = frozenset(
    {
        RequestState.DENIED,
        RequestState.EXPIRED,
        RequestState.CANCELLED,
        RequestState.CONSUMED,
        RequestState.REVOKED,
    }
)


@dataclass(frozen=True, slots=True)
class _Evidence:
    """What one bundle is sealed from, read in one snapshot."""

    request: ApprovalRequest
    grant: Grant | None
    wpc: Mapping[str, Any]
    receipts: list[tuple[int, Any]]

    @property
    def covers(self) -> int:
        """The tree size a checkpoint must reach to cover every receipt."""
        return max(index for index, _ in self.receipts) + 1 if self.receipts else 0


async def _gather(
    kt: Keyturn, uow: SqlUnitOfWork, request_id: str
) -> Mapping[str, Any] | _Evidence:
    """The stored bundle, or the evidence to seal one from.

    Raises:
        BundleError: ``NOT_SEALED`` while the request can still change.
        StoreError: ``NOT_FOUND`` for an unknown request.
    """
    stored = await uow.jobs.bundle(request_id)
    if stored is not None:
        return stored
    request = await uow.requests.get(request_id)
    if request.state not in SEALABLE:
        raise BundleError(
            "NOT_SEALED", f"request {request_id} is {request.state}; it is sealed when final"
        )
    wpc = await kt.wpc_document(uow, request.binding.policy_hash_b64u)
    receipts = [(i, json.loads(entry)) for i, entry in await uow.jobs.receipt_entries(request_id)]
    return _Evidence(request, await uow.grants.for_request(request_id), wpc, receipts)


async def _seal(kt: Keyturn, evidence: _Evidence, checkpoint: Any, now: datetime) -> dict[str, Any]:
    """:func:`core.bundle.seal_bundle` in its three steps, the checks where
    ``kt.seal_checks`` runs them (a helper process by default)."""
    payload = bundle_payload(  # evidence is only gathered for a final request
        evidence.request,
        wpc=evidence.wpc,
        receipts=evidence.receipts,
        proofs=kt.evidence.proofs,
        checkpoint=checkpoint,
        bundle_id=new_id("b"),
        sealed_at=truncate_ms(now),
        grant=evidence.grant,
    )
    checked = await kt.seal_checks.check(
        payload,
        signer_did=kt.rt.signer.did,
        trusted_policy_issuers=kt.trusted_issuers or None,
    )
    return sign_bundle(checked, kt.rt.signer, sealed_at=payload["sealed_at"])


async def seal_request(kt: Keyturn, request_id: str) -> Mapping[str, Any]:
    """The request's sealed bundle, sealing it now if it is final and not yet sealed.

    Raises:
        BundleError: ``NOT_SEALED`` while the request can still change.
        StoreError: ``NOT_FOUND`` for an unknown request.
    """
    now = kt.rt.clock.now()
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        found = await _gather(kt, uow, request_id)
    if not isinstance(found, _Evidence):
        return found
    checkpoint = await kt.evidence.checkpoint_covering(now, found.covers)
    bundle = await _seal(kt, found, checkpoint, now)
    async with kt.rt.store.unit_of_work() as uow:
        if not await uow.jobs.save_bundle(request_id, bundle, at=now):
            stored = await uow.jobs.bundle(request_id)
            assert stored is not None
            return stored
        recorded = [
            await kt.evidence.record(
                uow,
                events.bundle_sealed(
                    found.request, bundle, receipt_id=kt.evidence.new_receipt_id()
                ),
            )
        ]
        await uow.commit()
    await kt.evidence.after_commit(recorded, now)
    return bundle


async def seal_requests(kt: Keyturn, request_ids: Sequence[str]) -> list[str]:
    """Seal the final, unsealed requests among ``request_ids`` in one batch.

    One read, one checkpoint covering them all, then the bundles and their
    ``bundle_sealed`` receipts written :data:`_BUNDLES_PER_COMMIT` to a commit. A
    request that cannot be sealed (not final, unknown, a sealing error) is logged and
    skipped; one already sealed (here or by another replica) counts as done. Returns
    the ids that are sealed now.
    """
    now = kt.rt.clock.now()
    done: list[str] = []
    todo: list[tuple[str, _Evidence]] = []
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        for request_id in request_ids:
            try:
                found = await _gather(kt, uow, request_id)
            except KeyturnError as e:
                log.warning("not sealing %s: %s", request_id, e.reason_code)
                continue
            if isinstance(found, _Evidence):
                todo.append((request_id, found))
            else:
                done.append(request_id)
            # Reading runs on the event loop's thread without suspending (sqlite_driver):
            # yield between requests, or a batch of 20 blocks requests for tens of ms.
            await asyncio.sleep(0)
    if not todo:
        return done
    checkpoint = await kt.evidence.checkpoint_covering(now, max(e.covers for _, e in todo))
    sealed: list[tuple[str, _Evidence, dict[str, Any]]] = []
    for request_id, evidence in todo:
        try:
            sealed.append((request_id, evidence, await _seal(kt, evidence, checkpoint, now)))
        except Exception:
            log.exception("sealing %s failed; it will be sealed on demand", request_id)
        # Building and signing a bundle is still CPU on the event loop: pause between
        # them so the requests that arrived meanwhile run first (sealing can wait).
        await asyncio.sleep(_PAUSE_BETWEEN_SEALS)
    for start in range(0, len(sealed), _BUNDLES_PER_COMMIT):
        if start:
            await asyncio.sleep(0)
        recorded = []
        async with kt.rt.store.unit_of_work() as uow:
            for request_id, evidence, bundle in sealed[start : start + _BUNDLES_PER_COMMIT]:
                done.append(request_id)
                if not await uow.jobs.save_bundle(request_id, bundle, at=now):
                    continue  # another replica sealed it first; theirs stands
                recorded.append(
                    await kt.evidence.record(
                        uow,
                        events.bundle_sealed(
                            evidence.request, bundle, receipt_id=kt.evidence.new_receipt_id()
                        ),
                    )
                )
            await uow.commit()
        await kt.evidence.after_commit(recorded, now)
    return done
