"""A bundle's self-check in a helper process (``[sealing] processes``): the same checks,
the same bundle, the same refusals as on the event loop, and a helper that dies costs
no bundle its checks."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio

from bot.service.seal_checks import SealChecks
from core.bundle import (
    bundle_bytes,
    seal_bundle,
    sign_bundle,
    unsealed_bundle,
    verify_bundle,
)
from core.errors import BundleError, GateDeniedError, KeyturnError
from tests.core.test_bundle_flow import KEYTURN, WPC, consumed
from tests.fakes import T0

FLOW = consumed()
SEALING: dict[str, Any] = {
    "wpc": WPC,
    "receipts": FLOW.logged,
    "proofs": FLOW.log,
    "checkpoint": FLOW.checkpoint(),
    "bundle_id": "b-1042",
    "now": FLOW.at(1),
    "grant": FLOW.grant,
}
#: What core.bundle.seal_bundle makes in one call, on this thread.
SEALED = seal_bundle(FLOW.request, signer=KEYTURN, **SEALING)


def _unsealed() -> dict[str, Any]:
    return unsealed_bundle(FLOW.request, **SEALING)


@pytest_asyncio.fixture
async def helper() -> AsyncIterator[SealChecks]:
    checks = SealChecks(processes=1)
    await checks.start()
    try:
        yield checks
    finally:
        await checks.close()


@pytest.mark.asyncio
async def test_a_bundle_checked_in_a_helper_is_the_bundle_sealed_on_the_loop(
    helper: SealChecks,
) -> None:
    assert helper.running
    payload = _unsealed()
    remote = await helper.check(payload, signer_did=KEYTURN.did)
    here = await SealChecks(processes=0).check(payload, signer_did=KEYTURN.did)
    assert remote == here
    bundle = sign_bundle(remote, KEYTURN)
    assert bundle == SEALED
    report = verify_bundle(
        bundle_bytes(bundle), trusted_keyturn_dids=[KEYTURN.did], now=T0 + timedelta(hours=1)
    )
    assert report.to_json()["verdict"] == "PASS"


@pytest.mark.asyncio
async def test_a_refusal_in_the_helper_arrives_with_its_code_and_message(
    helper: SealChecks,
) -> None:
    payload = _unsealed()
    payload["policy"] = {**payload["policy"], "policy_hash_b64u": "A" * 43}
    with pytest.raises(BundleError) as here:
        await SealChecks(processes=0).check(payload, signer_did=KEYTURN.did)
    with pytest.raises(BundleError) as remote:
        await helper.check(payload, signer_did=KEYTURN.did)
    assert remote.value.reason_code == here.value.reason_code == "BUNDLE_POLICY_HASH_MISMATCH"
    assert remote.value.message == here.value.message


@pytest.mark.asyncio
async def test_a_killed_helper_costs_no_bundle_its_checks(helper: SealChecks) -> None:
    pool = helper._pool
    assert pool is not None
    pid = await asyncio.wrap_future(pool.submit(os.getpid))
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):  # the pool notices the death on its own thread
        if getattr(pool, "_broken", False):
            break
        await asyncio.sleep(0.05)
    payload = _unsealed()
    checked = await helper.check(payload, signer_did=KEYTURN.did)  # checked here instead
    assert not helper.running
    assert sign_bundle(checked, KEYTURN) == SEALED
    tampered = {**payload, "policy": {**payload["policy"], "policy_hash_b64u": "A" * 43}}
    with pytest.raises(BundleError):  # still every check, wherever it runs
        await helper.check(tampered, signer_did=KEYTURN.did)
    assert helper.running, "the next bundle starts a new helper"
    assert await helper.check(payload, signer_did=KEYTURN.did) == checked


@pytest.mark.parametrize(
    "error",
    [
        BundleError("BUNDLE_RECEIPT_INVALID", "receipt #3: SIGNATURE_INVALID: bad"),
        GateDeniedError("PAYLOAD_HASH_MISMATCH", "the call's arguments changed"),
        KeyturnError(),
    ],
)
def test_errors_cross_a_process_boundary_whole(error: KeyturnError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.reason_code, back.message, str(back)) == (
        error.reason_code,
        error.message,
        str(error),
    )
