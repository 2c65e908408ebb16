"""keyturn's application log: configured once, one line per record, no secrets.

:func:`configure_logging` sets up the root logger for ``keyturn serve`` and ``keyturn
demo``: JSON lines (``{"ts": …, "level": …, "logger": …, "msg": …}``) for log
collectors, or ``key=value`` lines for people. Calling it again does nothing, so a
command and the library code it runs cannot stack handlers.

Every line carries the HTTP ``request_id`` of the exchange it was written during, when
there is one: :func:`request_id_middleware` puts the id the agent API answers with
(``X-Request-Id``) into a context variable that :class:`RequestIdFilter` reads.

Never log tokens: :class:`RedactingFormatter` masks anything shaped like a compact JWS
(our CSTs), a ``Bearer`` credential or a PEM private key before the line is written,
as a last line of defence behind the rule that callers never pass them in. The audit
trail is the receipt log, not this one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import IO, Any, Literal

from aiohttp import web

from adapters.http import request_id_of

LogFormat = Literal["json", "kv"]

#: The HTTP request id of the exchange being handled (``-`` outside one).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "keyturn_request_id", default="-"
)

_HANDLER_NAME = "keyturn"
_COMPACT_JWS = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_PEM_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S
)
_NOISY = ("aiohttp.access", "sqlalchemy.engine", "aiosqlite", "asyncio")


def redact(text: str) -> str:
    """``text`` with tokens, bearer credentials and private keys masked."""
    text = _PEM_KEY.sub("[private key redacted]", text)
    text = _COMPACT_JWS.sub("[token redacted]", text)
    return _BEARER.sub(r"\1 [redacted]", text)


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` from :data:`request_id_var`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class RedactingFormatter(logging.Formatter):
    """One line per record, JSON or ``key=value``, with secrets masked."""

    def __init__(self, fmt: LogFormat = "json") -> None:
        super().__init__()
        if fmt not in ("json", "kv"):
            raise ValueError(f"unknown log format {fmt!r} (json or kv)")
        self.style_name = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            fields["request_id"] = request_id
        if record.exc_info:
            fields["exc"] = redact(self.formatException(record.exc_info))
        if self.style_name == "json":
            return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        return " ".join(f"{key}={_kv(value)}" for key, value in fields.items())


def _kv(value: Any) -> str:
    text = str(value)
    if text and not any(c.isspace() or c in '"=' for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def configure_logging(
    *, fmt: LogFormat = "json", level: int | str = logging.INFO, stream: IO[str] | None = None
) -> bool:
    """Send every log record to ``stream`` (stderr) as one redacted line; once per process.

    Args:
        fmt: ``json`` (JSON lines) or ``kv`` (``key=value``).
        level: the root logger's level.
        stream: where lines go; stdout is left to the commands (and to MCP's protocol).

    Returns:
        True when this call configured logging, False when it was already configured.

    Raises:
        ValueError: an unknown ``fmt``.
    """
    formatter = RedactingFormatter(fmt)
    root = logging.getLogger()
    if any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        return False
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (tests and daemons swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def request_id_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that puts each exchange's ``X-Request-Id`` in the log lines."""

    @web.middleware
    async def keyturn_log_request_id(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        token = request_id_var.set(request_id_of(request))
        try:
            return await handler(request)
        finally:
            request_id_var.reset(token)

    return keyturn_log_request_id


__all__ = [
    "RedactingFormatter",
    "RequestIdFilter",
    "configure_logging",
    "redact",
    "request_id_middleware",
    "request_id_var",
]
