"""The webhook executor: a signed POST of ``{call_id, step, route, params, grant}``.

keyturn signs each call with its own Ed25519 key (see :mod:`core.webhook_call` for the
exact bytes and the receiver recipe), so the receiver verifies it offline with the key
published at ``/.well-known/keyturn``. Execute goes to the route's ``url``; rollback is a
second signed call to the declared ``rollback_url`` at window end or on the kill switch.
Verification is the receiver's acknowledgement: a 2xx whose JSON echoes the call id with
``"done": true`` (a receiver that does not say it did something has not done it).

URLs must be ``https://``; ``http://127.0.0.1`` / ``http://localhost`` only with
``allow_loopback_http=True`` (tests, local development). Redirects are not followed:
a redirect would carry a signed call somewhere nobody configured.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from core.errors import ConfigError, GateDeniedError
from core.executor import Action, StepResult
from core.ports import Clock, Signer
from core.webhook_call import call_body, sign_call

KIND = "webhook"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_REPLY_BYTES = 64 * 1024


def check_url(value: object, *, what: str, allow_loopback_http: bool) -> str:
    """``value`` when it is an https URL (or loopback http when allowed).

    Raises:
        ConfigError: ``CONFIG_INVALID`` otherwise.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError("CONFIG_INVALID", f"{what} must be a URL")
    try:
        url = URL(value)
    except (TypeError, ValueError) as e:
        raise ConfigError("CONFIG_INVALID", f"{what} is not a URL") from e
    if url.user or url.password or url.fragment:
        raise ConfigError("CONFIG_INVALID", f"{what} must not carry credentials or a fragment")
    if url.scheme == "https" and url.host:
        return value
    if url.scheme == "http" and allow_loopback_http and url.host in _LOOPBACK:
        return value
    raise ConfigError(
        "CONFIG_INVALID", f"{what} must be https:// (plain http only to 127.0.0.1 in tests)"
    )


class WebhookExecutor:
    """Runs a route by signed webhook calls. Owns its ``aiohttp`` session unless given one."""

    def __init__(
        self,
        *,
        url: str,
        rollback_url: str,
        signer: Signer,
        clock: Clock,
        timeout_seconds: float = 10.0,
        allow_loopback_http: bool = False,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = check_url(url, what="url", allow_loopback_http=allow_loopback_http)
        self._rollback_url = check_url(
            rollback_url, what="rollback_url", allow_loopback_http=allow_loopback_http
        )
        self._signer = signer
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session = session
        self._owns_session = session is None

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, signer: Signer, clock: Clock, **kwargs: Any
    ) -> WebhookExecutor:
        """From an executor binding's options (``url``, ``rollback_url``, ``timeout_seconds``).

        Raises:
            ConfigError: a missing or non-https URL (a webhook route must declare its rollback).
        """
        return cls(
            url=options.get("url"),  # type: ignore[arg-type]  # checked by check_url
            rollback_url=options.get("rollback_url"),  # type: ignore[arg-type]
            signer=signer,
            clock=clock,
            timeout_seconds=float(options.get("timeout_seconds", 10.0)),
            allow_loopback_http=bool(options.get("allow_loopback_http", False)),
            **kwargs,
        )

    @property
    def kind(self) -> str:
        return KIND

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def check_target(self, action: Action) -> None:
        """A webhook carries the grant; a call without one is never sent.

        Raises:
            GateDeniedError: ``TARGET_NOT_ALLOWED`` when the action has no grant envelope.
        """
        if not isinstance(action.grant, Mapping) or "payload" not in action.grant:
            raise GateDeniedError("TARGET_NOT_ALLOWED", "a webhook call must carry its grant")

    async def execute(self, action: Action) -> StepResult:
        return await self._call(self._url, "execute", action)

    async def rollback(self, action: Action) -> StepResult:
        return await self._call(self._rollback_url, "rollback", action)

    async def verify(self, action: Action) -> StepResult:
        return _acknowledged(action, "execute")

    async def verify_rollback(self, action: Action) -> StepResult:
        return _acknowledged(action, "rollback")

    async def _call(self, url: str, step: str, action: Action) -> StepResult:
        call_id = f"{step}-{uuid.uuid4().hex}"
        body = call_body(
            call_id=call_id, step=step, route=action.route, params=action.params, grant=action.grant
        )
        headers = sign_call(body, self._signer, now=self._clock.now())
        headers["Content-Type"] = "application/json"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(MAX_REPLY_BYTES)
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as e:
            return StepResult.from_status(
                None, f"the receiver could not be reached ({type(e).__name__})"
            )
        ack = _ack(raw, call_id)
        reference = {"call_id": call_id, "step": step, "acknowledged": "yes" if ack else "no"}
        result = StepResult.from_status(
            status, f"the receiver answered {status}", reference=reference
        )
        if retry_after and retry_after.isdigit() and result.transient:
            return StepResult(
                False,
                result.detail,
                transient=True,
                status=status,
                reference=reference,
                retry_after=float(retry_after),
            )
        return result


def _ack(raw: bytes, call_id: str) -> bool:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("call_id") == call_id and data.get("done") is True


def _acknowledged(action: Action, step: str) -> StepResult:
    ref = action.reference
    if ref.get("step") == step and ref.get("acknowledged") == "yes":
        return StepResult(True, f"the receiver confirmed {step} call {ref.get('call_id')}")
    return StepResult(False, f"the receiver did not confirm the {step} call")
