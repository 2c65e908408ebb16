"""Sealing a finished request into its proof bundle (once), and receipting the seal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.service.runtime import new_id
from core import receipt_events as events
from core.bundle import seal_bundle
from core.errors import BundleError
from core.requests import RequestState

if TYPE_CHECKING:
    from bot.service.keyturn import Keyturn

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


async def seal_request(kt: Keyturn, request_id: str) -> Mapping[str, Any]:
    """The request's sealed bundle, sealing it now if it is final and not yet sealed.

    Raises:
        BundleError: ``NOT_SEALED`` while the request can still change.
        StoreError: ``NOT_FOUND`` for an unknown request.
    """
    now = kt.rt.clock.now()
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        stored = await uow.jobs.bundle(request_id)
        if stored is not None:
            return stored
        view = await kt._view(uow, request_id, now)
        if view.request.state not in SEALABLE:
            raise BundleError(
                "NOT_SEALED",
                f"request {request_id} is {view.request.state}; it is sealed when final",
            )
        wpc = (await uow.policies.get(view.request.binding.policy_hash_b64u)).document
        indexes = await uow.jobs.receipt_indexes(request_id)
        receipts = []
        for index in indexes:
            entry = (await uow.log.entries(index, index + 1))[0]
            receipts.append((index, json.loads(entry)))
    checkpoint = await kt.evidence.checkpoint_covering(now, max(indexes) + 1 if indexes else 0)
    bundle = seal_bundle(
        view.request,
        wpc=wpc,
        receipts=receipts,
        proofs=kt.evidence.proofs,
        checkpoint=checkpoint,
        signer=kt.rt.signer,
        bundle_id=new_id("b"),
        now=now,
        grant=view.grant,
        trusted_policy_issuers=kt.trusted_issuers or None,
    )
    async with kt.rt.store.unit_of_work() as uow:
        if not await uow.jobs.save_bundle(request_id, bundle, at=now):
            stored = await uow.jobs.bundle(request_id)
            assert stored is not None
            return stored
        recorded = [
            await kt.evidence.record(
                uow,
                events.bundle_sealed(view.request, bundle, receipt_id=kt.evidence.new_receipt_id()),
            )
        ]
        await uow.commit()
    await kt.evidence.after_commit(recorded, now)
    return bundle
