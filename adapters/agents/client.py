"""The keyturn client for agents: start a job, ask for approval, pass the gate.

::

    async with Gate("https://keyturn.example", agent_did=key.did, agent_key=key) as gate:
        approval = await gate.require("payments.transfer", params)  # waits for people
        await gate.check(approval, "payments.transfer", params)     # consumes the grant
        ...run the transfer...

:meth:`Gate.require` raises instead of returning whenever the call must not run
(see :mod:`adapters.agents.errors`); only a returned :class:`Approval` followed by a
:meth:`Gate.check` that returns means "run it now".

Waiting is a long poll (``GET /v1/requests/{id}?wait=…``) bounded by the caller's
``timeout``. Failures are retried as :mod:`adapters.agents.transport` explains: a write
only when it cannot have been recorded, so one call never opens two approval
requests or spends a grant twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol, Self

import aiohttp

from adapters.agents.approval import Admission, Approval
from adapters.agents.errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalTimeout,
    GateRefused,
    InvalidCall,
    KeyturnClientError,
    PolicyDenied,
    ServiceUnavailable,
)
from adapters.agents.params import json_params
from adapters.agents.transport import Backoff, OutOfTime, Reply, Transport, expect
from core import canonical
from core.requests import payload_hash

JOB_PROOF_PREFIX = b"keyturn-job-v1\n"


class AgentKey(Protocol):
    """An Ed25519 signer named by a did:key (``core.keys.SigningKey``, ``FileSigner``)."""

    @property
    def did(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class Gate:
    """A keyturn client bound to one agent and, once started, one job.

    Args:
        url: keyturn's base URL (``https://keyturn.example``).
        agent_did: the agent's registered DID (defaults to ``agent_key.did``).
        agent_key: signs the job challenge; anything with ``.did`` and ``.sign(bytes)``.
        session: an ``aiohttp.ClientSession`` to use; when omitted the gate opens one
            and closes it in :meth:`aclose`.
        poll_seconds: the longest single long poll asked of the server.
        min_poll_interval: the least time between two polls, should the server answer
            a poll at once without a change.
        request_timeout: the longest a single HTTP exchange may take (polls add their wait).
        backoff: how long to wait between retries.

    Raises:
        ValueError: ``agent_did`` is not ``agent_key``'s DID.
    """

    def __init__(
        self,
        url: str,
        *,
        agent_did: str | None = None,
        agent_key: AgentKey | None = None,
        session: aiohttp.ClientSession | None = None,
        poll_seconds: float = 25.0,
        min_poll_interval: float = 1.0,
        request_timeout: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        if agent_key is not None and agent_did is not None and agent_did != agent_key.did:
            raise ValueError("agent_did does not name agent_key")
        self._http = Transport(
            url, session=session, request_timeout=request_timeout, backoff=backoff or Backoff()
        )
        self._agent_key = agent_key
        self._agent_did = agent_did or (agent_key.did if agent_key is not None else None)
        self._poll_seconds = poll_seconds
        self._min_poll_interval = min_poll_interval
        self._request_timeout = request_timeout
        self._job_id: str | None = None
        self._runner_token: str | None = None
        self._starting = asyncio.Lock()

    @classmethod
    def with_runner_token(
        cls,
        url: str,
        *,
        job_id: str,
        runner_token: str,
        session: aiohttp.ClientSession | None = None,
        **options: Any,
    ) -> Gate:
        """A gate for a job started elsewhere (its runner token handed to this process)."""
        gate = cls(url, session=session, **options)
        gate._job_id, gate._runner_token = job_id, runner_token
        return gate

    @property
    def job_id(self) -> str | None:
        return self._job_id

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this gate opened it."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return (
            f"Gate(url={self._http.url!r}, agent_did={self._agent_did!r}, job_id={self._job_id!r})"
        )

    # --- the job ----------------------------------------------------------------------

    async def start_job(self, *, timeout: float | None = None) -> str:
        """Prove possession of the agent key and start a new job; returns its id.

        Raises:
            TokenRefused: the challenge or signature was refused.
            PolicyDenied: the agent is unknown to keyturn or disabled.
            ServiceUnavailable: keyturn could not be reached in time.
            KeyturnClientError: ``NO_AGENT_KEY`` when the gate has no key to prove.
        """
        key, did = self._agent_key, self._agent_did
        if key is None or did is None:
            raise KeyturnClientError("NO_AGENT_KEY", "this gate has no agent key to start a job")
        deadline = self._deadline(self._request_timeout * 2 if timeout is None else timeout)
        try:
            reply = await self._http.call(
                "POST",
                "/v1/agents/challenge",
                body={"agent_did": did},
                deadline=deadline,
                retry="reads",  # asking for a challenge records nothing that matters
            )
            challenge = _field(expect(reply, {200}, on_403=PolicyDenied), "challenge")
            signature = canonical.b64u_encode(key.sign(JOB_PROOF_PREFIX + challenge.encode()))
            reply = await self._http.call(
                "POST",
                "/v1/jobs",
                body={"agent_did": did, "challenge": challenge, "signature_b64u": signature},
                deadline=deadline,
                retry="writes",
            )
        except OutOfTime as e:
            raise ServiceUnavailable("SERVICE_UNAVAILABLE", e.last) from e
        job = expect(reply, {201}, on_403=PolicyDenied)
        self._job_id, self._runner_token = _field(job, "job_id"), _field(job, "runner_token")
        return self._job_id

    async def _job(self, deadline: float) -> tuple[str, str]:
        async with self._starting:
            if self._job_id is None or self._runner_token is None:
                remaining = deadline - asyncio.get_running_loop().time()
                await self.start_job(timeout=min(remaining, self._request_timeout * 2))
            assert self._job_id is not None and self._runner_token is not None
            return self._job_id, self._runner_token

    # --- asking -----------------------------------------------------------------------

    async def require(
        self,
        route: str,
        params: Mapping[str, Any],
        *,
        plan_hash: str | None = None,
        span_id: str | None = None,
        justification: str | None = None,
        context: Mapping[str, Any] | None = None,
        timeout: float = 600.0,
    ) -> Approval:
        """Submit the exact call and, if it is gated, wait until people decide.

        Returns:
            an :class:`Approval`: approved (grant + job token) or allowed outright.

        Raises:
            PolicyDenied: the policy denies the call.
            ApprovalDenied: denied, cancelled or revoked (``REQUEST_DENIED``, …).
            ApprovalExpired: the request's deadline passed without a decision.
            ApprovalTimeout: ``timeout`` seconds passed first (network trouble included).
            GateRefused: keyturn's answer does not match the parameters sent.
            TokenRefused, InvalidCall, ServiceUnavailable, KeyturnClientError.
        """
        deadline = self._deadline(timeout)
        plain = json_params(params)
        digest = _local_hash(plain)
        job_id, runner = await self._job(deadline)
        body: dict[str, Any] = {"job_id": job_id, "tool_route": route, "params": plain}
        optional = {
            "plan_hash": plan_hash,
            "span_id": span_id,
            "justification": justification,
            "context": json_params(context) if context is not None else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        try:
            reply = await self._http.call(
                "POST", "/v1/requests", body=body, token=runner, deadline=deadline, retry="writes"
            )
        except OutOfTime as e:
            raise ApprovalTimeout("APPROVAL_TIMEOUT", f"no answer in time: {e.last}") from e
        submitted = expect(reply, {200, 202}, on_403=PolicyDenied)
        _same_call(submitted, route, digest)
        if reply.status == 200:
            return Approval(outcome="allowed", tool_route=route, payload_hash_b64u=digest)
        request_id = _field(submitted, "request_id")
        return await self._wait(request_id, route, digest, runner, deadline)

    async def wait(
        self, request_id: str, route: str, params: Mapping[str, Any], *, timeout: float = 600.0
    ) -> Approval:
        """Keep waiting on a request this job opened earlier (same route and parameters).

        Raises:
            as :meth:`require`, but never :class:`PolicyDenied`.
        """
        deadline = self._deadline(timeout)
        digest = _local_hash(json_params(params))
        _job_id, runner = await self._job(deadline)
        return await self._wait(request_id, route, digest, runner, deadline)

    async def _wait(
        self, request_id: str, route: str, digest: str, runner: str, deadline: float
    ) -> Approval:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ApprovalTimeout(
                    "APPROVAL_TIMEOUT",
                    "nobody decided before the wait ran out; the call must not run",
                    request_id=request_id,
                )
            wait = min(self._poll_seconds, remaining)
            started = loop.time()
            try:
                reply = await self._http.call(
                    "GET",
                    f"/v1/requests/{request_id}",
                    query={"wait": f"{wait:.3f}"},
                    token=runner,
                    deadline=deadline,
                    retry="reads",
                    extra_time=wait,
                )
            except OutOfTime as e:
                raise ApprovalTimeout(
                    "APPROVAL_TIMEOUT", f"no decision in time: {e.last}", request_id=request_id
                ) from e
            status = expect(reply, {200}, request_id=request_id)
            state = status.get("state")
            if state == "approved":
                return _approval(status, request_id, route, digest)
            if state != "pending":
                raise _final(state, status, request_id)
            idle = self._min_poll_interval - (loop.time() - started)
            if idle > 0:  # the server answered at once without a change: do not spin
                await asyncio.sleep(min(idle, max(deadline - loop.time(), 0)))

    # --- the gate ---------------------------------------------------------------------

    async def check(
        self,
        approval: Approval,
        route: str,
        params: Mapping[str, Any],
        *,
        plan_hash: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Admission:
        """Present the call about to run to the gate; returns only if it may run now.

        A gated approval spends its grant (once); an "allowed" one is admitted as an
        ungated call. The parameters sent are exactly ``params``: if they differ from
        the approved ones, keyturn refuses (and records the refusal).

        Raises:
            GateRefused: the gate refused (``PAYLOAD_HASH_MISMATCH``, ``GRANT_ALREADY_USED``,
                ``ROUTE_MISMATCH``, ``APPROVAL_REQUIRED``, …) or its answer does not
                match the call.
            TokenRefused, InvalidCall, ServiceUnavailable, KeyturnClientError.
        """
        if approval.grant is None:
            return await self.admit(route, params, plan_hash=plan_hash, context=context)
        if not approval.job_token:
            raise GateRefused("JOB_TOKEN_MISSING", "the approval carries no job token")
        plain = json_params(params)
        digest = _local_hash(plain)
        body: dict[str, Any] = {"grant": dict(approval.grant), "tool_route": route, "params": plain}
        if plan_hash is not None:
            body["plan_hash"] = plan_hash
        if context is not None:
            body["context"] = json_params(context)
        reply = await self._write("/v1/gate/check", body, approval.job_token)
        passed = expect(reply, {200}, on_403=GateRefused, request_id=approval.request_id)
        if passed.get("result") != "pass":
            raise GateRefused("GATE_ANSWER_INVALID", "the gate did not answer 'pass'")
        _same_call(passed, route, digest)
        if not canonical.digests_equal(digest, approval.payload_hash_b64u):
            # The server let a different payload through: fail closed regardless.
            raise GateRefused("PAYLOAD_HASH_MISMATCH", "the call differs from the approved one")
        return Admission(
            tool_route=route,
            payload_hash_b64u=digest,
            grant_id=_optional_str(passed, "grant_id"),
            request_id=_optional_str(passed, "request_id"),
            receipt_index=_optional_int(passed, "receipt_index"),
        )

    async def admit(
        self,
        route: str,
        params: Mapping[str, Any],
        *,
        plan_hash: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Admission:
        """Ask the gate to admit an ungated call about to run (recorded in the job).

        Raises:
            GateRefused: ``APPROVAL_REQUIRED`` (the exact call is gated) or the policy's
                denial code.
            TokenRefused, InvalidCall, ServiceUnavailable, KeyturnClientError.
        """
        plain = json_params(params)
        digest = _local_hash(plain)
        job_id, runner = await self._job(self._deadline(self._request_timeout * 2))
        body: dict[str, Any] = {"job_id": job_id, "tool_route": route, "params": plain}
        if plan_hash is not None:
            body["plan_hash"] = plan_hash
        if context is not None:
            body["context"] = json_params(context)
        reply = await self._write("/v1/gate/admit", body, runner)
        admitted = expect(reply, {200}, on_403=GateRefused)
        if admitted.get("outcome") != "allowed":
            raise GateRefused("GATE_ANSWER_INVALID", "the gate did not admit the call")
        _same_call(admitted, route, digest)
        return Admission(
            tool_route=route,
            payload_hash_b64u=digest,
            receipt_index=_optional_int(admitted, "receipt_index"),
        )

    async def _write(self, path: str, body: dict[str, Any], token: str) -> Reply:
        try:
            return await self._http.call(
                "POST",
                path,
                body=body,
                token=token,
                deadline=self._deadline(self._request_timeout * 2),
                retry="writes",
            )
        except OutOfTime as e:
            raise ServiceUnavailable("SERVICE_UNAVAILABLE", e.last) from e

    # --- HTTP -------------------------------------------------------------------------

    def _deadline(self, seconds: float) -> float:
        return asyncio.get_running_loop().time() + max(seconds, 0.0)


# --- answers ----------------------------------------------------------------------------


def _local_hash(params: dict[str, Any]) -> str:
    try:
        return payload_hash(params)
    except Exception as e:  # CanonicalizationError: huge integers, lone surrogates
        raise InvalidCall("PARAMS_NOT_JSON", f"the parameters have no canonical form: {e}") from e


def _field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise KeyturnClientError("UNEXPECTED_ANSWER", f"keyturn's answer has no {name}")
    return value


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _optional_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _same_call(answer: Mapping[str, Any], route: str, digest: str) -> None:
    """Refuse an answer about another call (a proxy or a bug must not swap calls)."""
    if answer.get("tool_route") != route:
        raise GateRefused("ROUTE_MISMATCH", "keyturn answered about another route")
    answered = answer.get("payload_hash_b64u")
    if not isinstance(answered, str) or not canonical.digests_equal(answered, digest):
        raise GateRefused("PAYLOAD_HASH_MISMATCH", "keyturn hashed other parameters than sent")


def _approval(status: Mapping[str, Any], request_id: str, route: str, digest: str) -> Approval:
    _same_call(status, route, digest)
    grant, job_token = status.get("grant"), status.get("job_token")
    if not isinstance(grant, dict) or not isinstance(job_token, str) or not job_token:
        raise KeyturnClientError(
            "UNEXPECTED_ANSWER",
            "approved, but no grant or job token was handed over",
            request_id=request_id,
        )
    approval = Approval.from_grant(grant, job_token)
    if approval.tool_route != route or not canonical.digests_equal(
        approval.payload_hash_b64u, digest
    ):
        raise GateRefused(
            "PAYLOAD_HASH_MISMATCH", "the grant is for another call", request_id=request_id
        )
    approved_by = status.get("approved_by")
    return Approval(
        outcome="approved",
        tool_route=route,
        payload_hash_b64u=digest,
        request_id=request_id,
        grant=grant,
        job_token=job_token,
        job_token_expires_at=_optional_str(status, "job_token_expires_at"),
        approved_by=tuple(a for a in approved_by if isinstance(a, str))
        if isinstance(approved_by, list)
        else (),
    )


def _final(state: object, status: Mapping[str, Any], request_id: str) -> KeyturnClientError:
    line = _optional_str(status, "status_line")
    if state == "expired":
        return ApprovalExpired(
            "REQUEST_EXPIRED", line or "nobody decided before the deadline", request_id=request_id
        )
    if isinstance(state, str) and state.isalpha():
        code = f"REQUEST_{state.upper()}"
        return ApprovalDenied(code, line or f"the request was {state}", request_id=request_id)
    return ApprovalDenied(
        "REQUEST_STATE_UNKNOWN", "keyturn reported no known state", request_id=request_id
    )
