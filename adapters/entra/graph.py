"""Microsoft Graph over aiohttp: one request with bounded retries, and reply parsing.

Error tree (all ``core.errors.DirectoryError``)::

    DirectoryError
     ├── DIRECTORY_UNAVAILABLE     unreachable, timeout, 5xx, throttled past the deadline,
     │                             unexpected 4xx, non-JSON or malformed body, foreign nextLink
     ├── DIRECTORY_AUTH_FAILED     Graph answered 401/403 (token rejected, permission missing)
     └── IDENTITY_NOT_FOUND        404 where the caller says it means "no such user"

Retry rule (learn.microsoft.com/graph/throttling): 429, 503 and 504 are retried after
``Retry-After`` seconds (or a short exponential backoff when the header is absent), as
are connection errors and timeouts, but only while the retry can start before the
operation's deadline and for at most ``MAX_ATTEMPTS`` tries. A wait that would end past
the deadline is not started: the operation is refused at once, so a click on Slack or
Teams gets its answer within the platform's limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
from yarl import URL

from core.errors import DirectoryError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
MAX_BODY_BYTES = 4 * 1024 * 1024
_RETRYABLE_STATUS = frozenset({429, 503, 504})
_BACKOFF_FIRST_SECONDS = 0.25


class Timer(Protocol):
    """Where retries read elapsed time and wait. Tests pass a fake that does not sleep."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemTimer:
    """The real monotonic clock and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Operation:
    """One directory operation: what it is for (for messages) and when it must give up.

    ``purpose`` completes "The directory could not …" ("confirm eligibility").
    ``deadline`` is a ``Timer.monotonic()`` value.
    """

    purpose: str
    deadline: float
    budget: float = 0.0  # the deadline's length in seconds, for messages

    def unavailable(self, why: str) -> DirectoryError:
        return DirectoryError(
            "DIRECTORY_UNAVAILABLE", f"The directory could not {self.purpose}: {why}."
        )


@dataclass(frozen=True, slots=True)
class GraphReply:
    """A Graph answer that was not retried away: status and raw body."""

    status: int
    body: bytes

    def graph_error_code(self) -> str:
        """Graph's ``error.code`` when the body carries one, else ``""``."""
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return ""
        error = data.get("error") if isinstance(data, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, str):
            return ""
        return "".join(c for c in code if c.isalnum() or c in "._-")[:80]

    def json_object(self, op: Operation) -> dict[str, Any]:
        """The body as a JSON object.

        Raises:
            DirectoryError: DIRECTORY_UNAVAILABLE when it is not JSON or not an object.
        """
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise op.unavailable("Microsoft Graph sent a body that is not JSON") from e
        if not isinstance(data, dict):
            raise op.unavailable("Microsoft Graph sent JSON that is not an object")
        return data

    def expect_ok(self, op: Operation, *, not_found: str | None = None) -> None:
        """Raise unless the status is 200.

        Args:
            op: the operation, for the message.
            not_found: when given, a 404 raises IDENTITY_NOT_FOUND with this message.

        Raises:
            DirectoryError: IDENTITY_NOT_FOUND, DIRECTORY_AUTH_FAILED or DIRECTORY_UNAVAILABLE.
        """
        if self.status == 200:
            return
        code = self.graph_error_code()
        shown = f"{self.status} {code}".strip()
        if self.status == 404 and not_found is not None:
            raise DirectoryError("IDENTITY_NOT_FOUND", not_found)
        if self.status in (401, 403):
            raise DirectoryError(
                "DIRECTORY_AUTH_FAILED",
                f"The directory could not {op.purpose}: Microsoft Graph refused keyturn's "
                f"access ({shown}); run `keyturn entra check` to see which permission is missing.",
            )
        raise op.unavailable(f"Microsoft Graph answered {shown}")


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse ``Retry-After`` (delta-seconds or an HTTP-date); ``None`` if absent or unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(delta, 0.0)


class GraphClient:
    """Sends requests to Graph under ``base_url`` with a bearer token.

    Owns its ``aiohttp.ClientSession`` unless one is given; call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        request_timeout_seconds: float,
        timer: Timer,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base = URL(base_url.rstrip("/"))
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)
        self._timer = timer
        self._session = session
        self._owns_session = session is None

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def url(self, path: str) -> URL:
        """``base_url`` + ``path``; ``path`` must already be safe (ids are validated GUIDs)."""
        return URL(f"{self._base}/{path.lstrip('/')}", encoded=False)

    def same_service(self, link: str) -> URL | None:
        """``link`` as a URL when it points under ``base_url`` (an ``@odata.nextLink``).

        A link elsewhere is refused (``None``): following it would send the bearer token
        to whoever wrote the link.
        """
        try:
            url = URL(link, encoded=True)
        except (TypeError, ValueError):
            return None
        if url.origin() != self._base.origin():
            return None
        base_path = self._base.path.rstrip("/") + "/"
        if not (url.path + "/").startswith(base_path):
            return None
        return url

    async def request(
        self,
        method: str,
        url: URL,
        *,
        token: str,
        op: Operation,
        params: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> GraphReply:
        """Send one request, retrying throttling and transport errors within ``op.deadline``.

        Raises:
            DirectoryError: DIRECTORY_UNAVAILABLE when Graph cannot be reached or keeps
                throttling past the deadline.
        """
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        attempt = 0
        while True:
            attempt += 1
            backoff = _BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1)
            cause: Exception | None = None
            try:
                reply, retry_after = await self._send(method, url, headers, params, json_body)
            except (aiohttp.ClientError, TimeoutError) as e:
                cause = e
                why = f"Microsoft Graph could not be reached ({type(e).__name__})"
                wait = backoff
                log.warning("graph %s %s failed: %s", method, url.path, type(e).__name__)
            else:
                if reply.status not in _RETRYABLE_STATUS:
                    return reply
                code = reply.graph_error_code()
                why = (
                    "Microsoft Graph is throttling keyturn"
                    if reply.status == 429
                    else f"Microsoft Graph answered {reply.status} {code}".rstrip()
                )
                parsed = retry_after_seconds(retry_after)
                wait = backoff if parsed is None else parsed
                log.info(
                    "graph %s %s answered %s; retry after %.2f s",
                    method,
                    url.path,
                    reply.status,
                    wait,
                )
            if attempt >= MAX_ATTEMPTS:
                raise op.unavailable(f"{why}, and {attempt} attempts failed") from cause
            remaining = op.deadline - self._timer.monotonic()
            if wait > remaining:
                raise op.unavailable(
                    f"{why}; waiting {wait:.1f} s to retry would pass the "
                    f"{self._deadline_text(op)} deadline"
                ) from cause
            await self._timer.sleep(wait)

    @staticmethod
    def _deadline_text(op: Operation) -> str:
        return f"{op.budget:.1f} s" if op.budget else "operation's"

    async def _send(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        params: dict[str, str] | None,
        json_body: Any,
    ) -> tuple[GraphReply, str | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method,
            url,
            params=params,
            json=json_body,
            headers=headers,
            timeout=self._timeout,
            allow_redirects=False,  # a redirect would carry the bearer token elsewhere
        ) as resp:
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    # An over-long answer is not parsed: an empty body reads as malformed.
                    chunks = []
                    break
                chunks.append(chunk)
            return GraphReply(resp.status, b"".join(chunks)), resp.headers.get("Retry-After")
