"""A bundle's self-check in a helper process (``[sealing] processes``): the same checks,
the same bundle, the same refusals as on the event loop, and a helper that dies, hangs
or cannot start costs no bundle its checks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.service.seal_checks import SealChecks
from core.bundle import (
    bundle_bytes,
    bundle_payload,
    seal_bundle,
    sign_bundle,
    verify_bundle,
)
from core.errors import BundleError
from core.times import truncate_ms
from tests.core.test_bundle_flow import KEYTURN, WPC, consumed
from tests.fakes import T0

FLOW = consumed()
NOW = FLOW.at(1)
SEALING: dict[str, Any] = {
    "wpc": WPC,
    "receipts": FLOW.logged,
    "proofs": FLOW.log,
    "checkpoint": FLOW.checkpoint(),
    "bundle_id": "b-1042",
    "grant": FLOW.grant,
}
#: What core.bundle.seal_bundle makes in one call, on this thread.
SEALED = seal_bundle(FLOW.request, signer=KEYTURN, now=NOW, **SEALING)


def _unsealed() -> dict[str, Any]:
    return bundle_payload(FLOW.request, sealed_at=truncate_ms(NOW), **SEALING)


@pytest_asyncio.fixture
async def helper() -> AsyncIterator[SealChecks]:
    checks = SealChecks(processes=1)
    await checks.start()
    try:
        yield checks
    finally:
        await checks.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.asyncio
async def test_a_bundle_checked_in_a_helper_is_the_bundle_sealed_on_the_loop(
    helper: SealChecks,
) -> None:
    assert helper.running and helper.pids and os.getpid() not in helper.pids
    payload = _unsealed()
    remote = await helper.check(payload, signer_did=KEYTURN.did)
    here = await SealChecks(processes=0).check(payload, signer_did=KEYTURN.did)
    assert remote == here
    bundle = sign_bundle(remote, KEYTURN, sealed_at=payload["sealed_at"])
    assert bundle == SEALED  # what core.bundle.seal_bundle makes in one call
    report = verify_bundle(
        bundle_bytes(bundle), trusted_keyturn_dids=[KEYTURN.did], now=T0 + timedelta(hours=1)
    )
    assert report.to_json()["verdict"] == "PASS"


@pytest.mark.asyncio
async def test_a_refusal_in_the_helper_arrives_with_its_class_code_and_message(
    helper: SealChecks,
) -> None:
    payload = _unsealed()
    payload["policy"] = {**payload["policy"], "policy_hash_b64u": "A" * 43}
    with pytest.raises(BundleError) as here:
        await SealChecks(processes=0).check(payload, signer_did=KEYTURN.did)
    pids = helper.pids
    with pytest.raises(BundleError) as remote:
        await helper.check(payload, signer_did=KEYTURN.did)
    assert remote.value.reason_code == here.value.reason_code == "BUNDLE_POLICY_HASH_MISMATCH"
    assert remote.value.message == here.value.message
    assert helper.pids == pids, "a refusal is an answer: the helper stays"
    assert await helper.check(_unsealed(), signer_did=KEYTURN.did)


@pytest.mark.asyncio
async def test_a_killed_helper_costs_no_bundle_its_checks() -> None:
    helper = SealChecks(processes=1, retry_after_seconds=0.5)
    await helper.start()
    try:
        [pid] = helper.pids
        os.kill(pid, signal.SIGKILL)
        payload = _unsealed()
        checked = await helper.check(payload, signer_did=KEYTURN.did)  # checked here instead
        assert not helper.running
        assert sign_bundle(checked, KEYTURN, sealed_at=payload["sealed_at"]) == SEALED
        tampered = {**payload, "policy": {**payload["policy"], "policy_hash_b64u": "A" * 43}}
        with pytest.raises(BundleError):  # still every check, wherever it runs
            await helper.check(tampered, signer_did=KEYTURN.did)
        assert not helper.running, "no new helper before the retry time"
        await asyncio.sleep(0.6)
        assert await helper.check(payload, signer_did=KEYTURN.did) == checked
        assert helper.running and helper.pids != [pid], "new helpers once it is time"
    finally:
        await helper.close()
    assert not helper.running


@pytest.mark.asyncio
async def test_checks_waiting_for_a_helper_that_dies_are_checked_here() -> None:
    helper = SealChecks(processes=1)
    await helper.start()
    try:
        [pid] = helper.pids
        os.kill(pid, signal.SIGSTOP)  # the first check holds the one helper, stuck
        helper.timeout_seconds = 0.5
        payload = _unsealed()
        checks = [helper.check(payload, signer_did=KEYTURN.did) for _ in range(4)]
        done = await asyncio.wait_for(asyncio.gather(*checks), timeout=20)
        assert all(sign_bundle(c, KEYTURN, sealed_at=payload["sealed_at"]) == SEALED for c in done)
        assert not helper.running and not _alive(pid)
    finally:
        await helper.close()


@pytest.mark.asyncio
async def test_a_helper_that_does_not_answer_in_time_is_stopped() -> None:
    helper = SealChecks(processes=1, retry_after_seconds=60.0)
    await helper.start()
    try:
        [pid] = helper.pids
        os.kill(pid, signal.SIGSTOP)  # alive, but never answers
        helper.timeout_seconds = 0.2
        payload = _unsealed()
        checked = await helper.check(payload, signer_did=KEYTURN.did)
        assert sign_bundle(checked, KEYTURN, sealed_at=payload["sealed_at"]) == SEALED
        assert not helper.running
        assert not _alive(pid), "the stuck helper is killed"
    finally:
        await helper.close()


@pytest.mark.asyncio
async def test_helpers_that_cannot_start_leave_the_checks_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    helper = SealChecks(processes=1)
    await helper.start()
    assert not helper.running
    assert "sealing helper processes did not start" in caplog.text
    payload = _unsealed()
    checked = await helper.check(payload, signer_did=KEYTURN.did)
    assert sign_bundle(checked, KEYTURN, sealed_at=payload["sealed_at"]) == SEALED
    await helper.close()


UNGUARDED_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {root!r})
from bot.service.seal_checks import SealChecks
from tests.bot.test_seal_checks import KEYTURN, SEALED, _unsealed
from core.bundle import sign_bundle

async def main():
    checks = SealChecks(processes=1)
    await checks.start()
    payload = _unsealed()
    checked = await checks.check(payload, signer_did=KEYTURN.did)
    helpers = checks.running
    await checks.close()
    sealed = sign_bundle(checked, KEYTURN, sealed_at=payload["sealed_at"]) == SEALED
    print(__name__, "SEALED", sealed, "HELPERS", helpers, flush=True)

asyncio.run(main())  # no `if __name__ == "__main__":` guard
"""


def test_a_script_without_a_main_guard_runs_once_with_helpers(tmp_path: Path) -> None:
    """Helpers are not multiprocessing children: nothing imports the main script again
    (a spawned child would, and run it a second time without a guard)."""
    script = tmp_path / "unguarded.py"
    root = str(Path(__file__).resolve().parents[2])
    script.write_text(UNGUARDED_SCRIPT.format(root=root))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["__main__ SEALED True HELPERS True"], done.stderr
