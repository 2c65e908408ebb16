"""HTTP to keyturn for the client: one exchange, retried only when that is safe.

Reads (status polls, challenges) are retried on any network failure, 5xx or 429. A
write (submitting a call, checking a grant, starting a job) is retried only when it
cannot have been recorded: the connection was never made, or keyturn answered 429,
502, 503 or 504. Waits between tries follow exponential backoff with full jitter and
honour ``Retry-After``; nothing waits past the caller's deadline.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from adapters.agents.errors import (
    InvalidCall,
    KeyturnClientError,
    ServiceUnavailable,
    TokenRefused,
)

_jitter = secrets.SystemRandom()

Retry = Literal["reads", "writes"]
_RETRY_WRITES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits U(0, min(max, initial·mⁿ))."""

    initial: float = 0.5
    maximum: float = 10.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        return _jitter.uniform(0.0, min(self.maximum, self.initial * self.multiplier**attempt))


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    trace_id: str | None


class OutOfTime(Exception):
    """The deadline passed before keyturn answered usefully; ``last`` says why."""

    def __init__(self, last: str) -> None:
        self.last = last
        super().__init__(last)


class Transport:
    """keyturn's base URL, an aiohttp session (owned or lent) and the retry rules."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None,
        request_timeout: float,
        backoff: Backoff,
    ) -> None:
        self.url = url.rstrip("/")
        self.request_timeout = request_timeout
        self.backoff = backoff
        self._session = session
        self._owns_session = session is None

    async def aclose(self) -> None:
        """Close the session if this transport opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise KeyturnClientError("SESSION_CLOSED", "the HTTP session given was closed")
            self._session = aiohttp.ClientSession()
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        *,
        deadline: float,
        retry: Retry,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        token: str | None = None,
        extra_time: float = 0.0,
    ) -> Reply:
        """One exchange, retried as ``retry`` allows until ``deadline``.

        Raises:
            OutOfTime: the deadline passed (the last failure is described).
            ServiceUnavailable: a write failed in a way that may have been recorded.
        """
        loop = asyncio.get_running_loop()
        session = self.session_now()
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, allow_nan=False).encode("ascii")
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise OutOfTime("the time allowed ran out")
            timeout = aiohttp.ClientTimeout(total=min(remaining, self.request_timeout + extra_time))
            retry_after = 0.0
            try:
                async with session.request(
                    method,
                    self.url + path,
                    data=data,
                    params=query,
                    headers=headers,
                    timeout=timeout,
                ) as response:
                    reply = Reply(
                        response.status, await _read(response), response.headers.get("X-Request-Id")
                    )
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except aiohttp.ClientConnectorError as e:  # never connected: nothing was sent
                last = f"cannot connect to keyturn ({type(e).__name__})"
            except (aiohttp.ClientError, TimeoutError) as e:
                last = f"the exchange with keyturn failed ({type(e).__name__})"
                if retry == "writes":
                    raise ServiceUnavailable(
                        "CONNECTION_LOST",
                        "the connection failed mid-request; keyturn may or may not have "
                        "recorded it, so it was not repeated",
                    ) from e
            else:
                retryable = (
                    reply.status in _RETRY_WRITES
                    if retry == "writes"
                    else reply.status >= 500 or reply.status == 429
                )
                if not retryable:
                    return reply
                last = f"keyturn answered {reply.status}"
            delay = max(self.backoff.delay(attempt), min(retry_after, self.backoff.maximum))
            attempt += 1
            if loop.time() + delay >= deadline:
                raise OutOfTime(last)
            await asyncio.sleep(delay)


def expect(
    reply: Reply,
    expected: set[int],
    *,
    on_403: type[KeyturnClientError] = KeyturnClientError,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The JSON object of an expected answer.

    Raises:
        KeyturnClientError: the refusal the answer describes (``TokenRefused`` for 401,
            ``on_403`` for 403, ``InvalidCall`` for 400/413/415, ``ServiceUnavailable``
            for 5xx), or ``UNEXPECTED_ANSWER``.
    """
    if reply.status in expected and isinstance(reply.body, dict):
        return reply.body
    raise refusal(reply, on_403, request_id)


async def _read(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    if response.content_type != "application/json":
        return raw.decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _retry_after(text: str | None) -> float:
    """Seconds from a ``Retry-After`` header (an HTTP date or junk counts as none)."""
    try:
        seconds = float(text) if text else 0.0
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def refusal(
    reply: Reply, on_403: type[KeyturnClientError], request_id: str | None
) -> KeyturnClientError:
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(code, str) or not isinstance(message, str):
        code, message = "UNEXPECTED_ANSWER", f"keyturn answered {reply.status} without an error"
    kind: type[KeyturnClientError]
    if reply.status == 401:
        kind = TokenRefused
    elif reply.status == 403:
        kind = on_403
    elif reply.status in (400, 413, 415):
        kind = InvalidCall
    elif reply.status >= 500:
        kind = ServiceUnavailable
    else:
        kind = KeyturnClientError
    return kind(code, message, status=reply.status, request_id=request_id, trace_id=reply.trace_id)
