"""Where a proof bundle's self-check runs before the bundle is sealed.

keyturn never seals a bundle its own verifier would refuse: before signing, every
bundle goes through the verifier's content checks (:func:`core.bundle.checked_bundle`:
each receipt's signature and inclusion proof, the WPC, the grant, the checkpoint).
That is a few milliseconds of CPU per bundle. On the event loop it holds up every
request that arrives meanwhile; in the service load run (``tests/bench/bench_service.py``)
it was the largest single share of the server's CPU.

With ``[sealing] processes = N`` (the default is 1) the checks run in N helper
processes, fed plain data (the unsealed payload in; out, the payload with its summary,
encoded and hashed). No key leaves this process: the signing stays here.
``processes = 0`` runs the checks on the event loop.
The helpers are started with ``spawn``, never ``fork``: the server has threads
(SQLite's, the executor's), and a forked child would inherit their locks mid-use.

A helper that dies (killed, out of memory) breaks its pool: the bundle it was checking
is checked here instead, the broken pool is dropped, and the next bundle starts a new
one. Nothing is sealed without its checks, wherever they ran.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from core.bundle import checked_bundle
from core.envelope import PreparedEnvelope

log = logging.getLogger(__name__)


class SealChecks:
    """Runs :func:`core.bundle.checked_bundle` in helper processes, or here (``processes=0``)."""

    def __init__(self, processes: int = 0) -> None:
        if processes < 0:
            raise ValueError("processes must be 0 or more")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        """Whether helper processes are up (started and not broken since)."""
        return self._pool is not None

    async def start(self) -> None:
        """Start the helpers now (the server does, at start-up) rather than at the first
        seal; spawning is done on a worker thread, never on the event loop."""
        if self.processes:
            await self._ensure_pool()

    async def check(
        self,
        payload: Mapping[str, Any],
        *,
        signer_did: str,
        trusted_policy_issuers: Collection[str] | None = None,
    ) -> PreparedEnvelope:
        """An unsealed bundle payload, checked, summarised, encoded and hashed: ready to
        sign (:func:`core.bundle.sign_bundle`).

        Raises:
            BundleError: the bundle would not verify (raised in the helper, the same
                reason code and message).
        """
        check = functools.partial(
            checked_bundle,
            payload,
            signer_did=signer_did,
            trusted_policy_issuers=(
                None if trusted_policy_issuers is None else list(trusted_policy_issuers)
            ),
        )
        if not self.processes:
            return check()
        pool = await self._ensure_pool()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, check)
        except BrokenProcessPool:
            log.warning(
                "a sealing helper process died; this bundle is checked in the server "
                "process and the next one starts new helpers"
            )
            await self._drop(pool)
            return check()

    async def close(self) -> None:
        """Stop the helpers (waiting for them to exit)."""
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def _ensure_pool(self) -> ProcessPoolExecutor:
        async with self._lock:
            if self._pool is None:
                pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn")
                )
                # Each submit that finds no idle helper spawns one, in the submitting
                # thread (tens of ms): all of them are spawned here, off the loop.
                started = await asyncio.to_thread(_spawn_all, pool, self.processes)
                await asyncio.gather(*(asyncio.wrap_future(f) for f in started))
                self._pool = pool
            return self._pool

    async def _drop(self, broken: ProcessPoolExecutor) -> None:
        async with self._lock:
            if self._pool is broken:
                self._pool = None
        await asyncio.to_thread(broken.shutdown, wait=False, cancel_futures=True)


def _spawn_all(pool: ProcessPoolExecutor, helpers: int) -> list[Future[int]]:
    return [pool.submit(os.getpid) for _ in range(helpers)]
