"""Where a proof bundle's self-check runs before the bundle is sealed.

keyturn never seals a bundle its own verifier would refuse: before signing, every
bundle goes through the verifier's content checks (:func:`core.bundle.checked_bundle`:
each receipt's signature and inclusion proof, the WPC, the grant, the checkpoint).
That is a few milliseconds of CPU per bundle. On the event loop it holds up every
request that arrives meanwhile; in the service load run (``tests/bench/bench_service.py``)
it was the largest single share of the server's CPU.

With ``[sealing] processes = N`` (the default is 1) the checks run in N helper
processes (:mod:`bot.seal_helper`), fed plain data: the unsealed payload in; out, the
payload with its summary, encoded. No key leaves this process: the hashing and signing
of those bytes stay here. ``processes = 0`` runs the checks on the event loop.

The helpers are plain subprocesses (``python -m bot.seal_helper``) on pipes, not a
``multiprocessing`` pool: a pool's ``fork`` would copy a server that has threads mid-use,
and its ``spawn`` imports the main script again in every helper, which runs a whole
server again when that script lacks an ``if __name__ == "__main__":`` guard.

A helper that dies (killed, out of memory), hangs past ``timeout_seconds`` or cannot
start stops the helpers: the bundle it was checking is checked here instead, and so are
the next ones until new helpers start (``retry_after_seconds`` later). Nothing is sealed
without its checks, wherever they ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from bot.seal_helper import HEADER_BYTES, json_frame
from core import errors
from core.bundle import checked_bundle
from core.errors import KeyturnError

log = logging.getLogger(__name__)

#: Where ``bot`` is imported from, so a helper imports the same code as the server.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


#: What a helper is asked when it starts: a bundle it must refuse.
_PROBE = json_frame({"payload": {"sealed_at": ""}, "signer_did": "", "trusted": None})


class HelperFailed(Exception):
    """A helper died, hung, answered out of protocol, or could not start."""


class _Helper:
    """One helper process; one check at a time (the pool hands out idle helpers)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> _Helper:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.seal_helper",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(process)

    async def call(self, request: bytes) -> bytes:
        """The checked bundle's bytes.

        Raises:
            KeyturnError: the check's refusal, as the helper raised it.
            HelperFailed: the helper died, broke the protocol or failed unexpectedly.
        """
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(request)
            await stdin.drain()
            head = json.loads(await _read_frame(stdout))
            if head.get("ok") is True:
                return await _read_frame(stdout)
        except (OSError, ValueError, AttributeError, asyncio.IncompleteReadError) as e:
            raise HelperFailed(f"helper {self.process.pid}: {type(e).__name__}: {e}") from e
        refused = head.get("refused")
        if isinstance(refused, dict):
            raise _refusal(refused)
        raise HelperFailed(f"helper {self.process.pid}: {head.get('failed', head)}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


async def _read_frame(stream: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await stream.readexactly(HEADER_BYTES), "big")
    return await stream.readexactly(size)


def _refusal(fields: Mapping[str, Any]) -> KeyturnError:
    """The helper's refusal as the error it was (a KeyturnError of core's tree)."""
    kind = getattr(errors, str(fields.get("error")), None)
    if not (isinstance(kind, type) and issubclass(kind, KeyturnError)):
        kind = KeyturnError
    return kind(str(fields.get("reason_code")), str(fields.get("message")))


class SealChecks:
    """Runs :func:`core.bundle.checked_bundle` in helper processes, or here (``processes=0``)."""

    def __init__(
        self,
        processes: int = 0,
        *,
        timeout_seconds: float = 30.0,
        retry_after_seconds: float = 60.0,
    ) -> None:
        if processes < 0:
            raise ValueError("processes must be 0 or more")
        self.processes = processes
        self.timeout_seconds = timeout_seconds
        self.retry_after_seconds = retry_after_seconds
        self._helpers: list[_Helper] = []
        # Idle helpers; None tells whoever waits that the helpers were stopped.
        self._idle: asyncio.Queue[_Helper | None] = asyncio.Queue()
        self._retry_at = 0.0  # loop time before which no new helpers are started
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        """Whether helper processes are up (started and not stopped since)."""
        return bool(self._helpers)

    @property
    def pids(self) -> list[int]:
        """The helpers' process ids."""
        return [h.process.pid for h in self._helpers]

    async def start(self) -> None:
        """Start the helpers now (the server does, at start-up) rather than at the first
        seal; helpers that cannot start are logged, and the checks run here until they
        can."""
        if self.processes:
            await self._ensure_helpers()

    async def check(
        self,
        payload: Mapping[str, Any],
        *,
        signer_did: str,
        trusted_policy_issuers: Collection[str] | None = None,
    ) -> bytes:
        """An unsealed bundle payload, checked, with its summary, encoded: the bytes to
        sign (:func:`core.bundle.sign_bundle`).

        Raises:
            BundleError: the bundle would not verify (raised in the helper: the same
                reason code and message).
        """
        trusted = None if trusted_policy_issuers is None else list(trusted_policy_issuers)
        here = functools.partial(
            checked_bundle, payload, signer_did=signer_did, trusted_policy_issuers=trusted
        )
        if not self.processes or not await self._ensure_helpers():
            return here()
        try:
            request = json_frame({"payload": payload, "signer_did": signer_did, "trusted": trusted})
        except (TypeError, ValueError):
            return here()  # not JSON: refused here, with the canonicalization's own reason
        idle = self._idle
        helper = await idle.get()
        if helper is None:  # stopped while this check waited for a helper
            idle.put_nowait(None)  # and so tell the next one waiting
            return here()
        try:
            checked = await asyncio.wait_for(helper.call(request), self.timeout_seconds)
        except KeyturnError:
            self._release(helper)  # a refusal is an answer: the helper is fine
            raise
        except (HelperFailed, TimeoutError) as e:
            what = "did not answer in time" if isinstance(e, TimeoutError) else f"failed ({e})"
            await self._stop_all(f"a sealing helper process {what}")
            return here()
        except BaseException:  # cancelled mid-exchange: the pipe's state is unknown
            await self._stop_all("a seal was cancelled while its helper was checking it")
            raise
        self._release(helper)
        return checked

    def _release(self, helper: _Helper) -> None:
        if helper in self._helpers:  # not stopped meanwhile
            self._idle.put_nowait(helper)

    async def close(self) -> None:
        """Stop the helpers."""
        async with self._lock:
            helpers = self._take_all()
        for helper in helpers:
            await helper.stop()

    async def _ensure_helpers(self) -> bool:
        """True when helpers run (started now if none run and the retry time has come)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            if self._helpers or loop.time() < self._retry_at:
                return bool(self._helpers)
            started: list[_Helper] = []
            try:
                for _ in range(self.processes):
                    started.append(await _Helper.start())
                # One round trip each: an empty payload, refused by a helper that runs.
                for helper in started:
                    try:
                        await asyncio.wait_for(helper.call(_PROBE), self.timeout_seconds)
                    except KeyturnError:
                        continue
                    raise HelperFailed(f"helper {helper.process.pid} accepted an empty bundle")
            except (HelperFailed, TimeoutError, OSError) as e:
                self._retry_at = loop.time() + self.retry_after_seconds
                log.warning(
                    "sealing helper processes did not start (%s: %s); bundles are checked "
                    "in the server process, and helpers are tried again in %.0f s",
                    type(e).__name__,
                    e,
                    self.retry_after_seconds,
                )
                for helper in started:
                    await helper.stop()
                return False
            self._helpers = started
            for helper in started:
                self._idle.put_nowait(helper)
            return True

    async def _stop_all(self, what: str) -> None:
        async with self._lock:
            helpers = self._take_all()
            self._retry_at = asyncio.get_running_loop().time() + self.retry_after_seconds
        log.warning(
            "%s; this bundle is checked in the server process, new helpers are tried in %.0f s",
            what,
            self.retry_after_seconds,
        )
        for helper in helpers:
            await helper.stop()

    def _take_all(self) -> list[_Helper]:
        """Forget every helper (to stop them), waking whoever waits for one."""
        helpers, self._helpers = self._helpers, []
        stopped, self._idle = self._idle, asyncio.Queue()
        stopped.put_nowait(None)
        return helpers
