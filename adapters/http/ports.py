"""What the agent API needs from keyturn's application service.

The service is built in ``bot/`` and handed in; this adapter never imports it. The
methods and their refusals are described in the service interface note: failures are
:mod:`core.errors` with a reason code, which :mod:`adapters.http.problems` maps to
HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from core.outcomes import Challenge, GatePassed, JobStarted, RequestStatus, Submitted


class AgentService(Protocol):
    """The use cases behind the agent-facing HTTP API."""

    async def agent_challenge(self, agent_did: str) -> Challenge: ...

    async def start_job(
        self, *, agent_did: str, challenge: str, signature_b64u: str
    ) -> JobStarted: ...

    async def submit(
        self,
        *,
        cst: str,
        job_id: str,
        tool_route: str,
        params: Mapping[str, Any],
        plan_hash: str | None = None,
        span_id: str | None = None,
        justification: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Submitted: ...

    async def request_status(
        self, *, cst: str, request_id: str, wait_seconds: float = 0
    ) -> RequestStatus: ...

    async def gate_check(
        self,
        *,
        cst: str,
        grant: Mapping[str, Any],
        tool_route: str,
        params: Mapping[str, Any],
        plan_hash: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> GatePassed: ...

    async def admit(
        self,
        *,
        cst: str,
        job_id: str,
        tool_route: str,
        params: Mapping[str, Any],
        plan_hash: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Submitted: ...

    async def agent_bundle(self, *, cst: str, request_id: str) -> Mapping[str, Any]: ...

    async def checkpoint(self) -> str: ...

    async def inclusion_proof(self, index: int, size: int | None = None) -> Mapping[str, Any]: ...

    async def consistency_proof(
        self, old_size: int, new_size: int | None = None
    ) -> Mapping[str, Any]: ...

    async def well_known(self) -> Mapping[str, Any]: ...

    async def readiness(self) -> Mapping[str, Any]: ...
