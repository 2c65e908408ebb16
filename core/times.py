"""Timestamps as keyturn writes and reads them.

Time is always an argument in ``core`` (the clock is read once, in ``bot``); this
module only converts. Instants are timezone-aware UTC ``datetime`` objects; on the
wire they are RFC 3339 strings with a ``Z`` suffix and millisecond precision, and in
tokens they are integer epoch seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.errors import KeyturnError


def require_aware(moment: datetime) -> datetime:
    """Return ``moment`` in UTC; naive datetimes are a programming error.

    Raises:
        ValueError: ``moment`` has no timezone.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: keyturn only handles timezone-aware instants")
    return moment.astimezone(UTC)


def to_iso(moment: datetime) -> str:
    """``2026-11-23T10:41:00.000Z`` (UTC, milliseconds)."""
    moment = require_aware(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: object, *, code: str = "MALFORMED_TIMESTAMP") -> datetime:
    """Parse an ISO 8601 / RFC 3339 instant that carries an offset.

    Raises:
        KeyturnError: with ``code`` when the text is not a timezone-qualified instant.
    """
    if not isinstance(text, str) or not text:
        raise KeyturnError(code, "timestamp is missing or not text")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise KeyturnError(code, f"{text!r} is not an ISO 8601 timestamp") from e
    if parsed.tzinfo is None:
        raise KeyturnError(code, f"{text!r} has no timezone offset")
    return parsed.astimezone(UTC)


def to_epoch(moment: datetime) -> int:
    """Whole epoch seconds (floor), as JWT claims carry them."""
    return int(require_aware(moment).timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def truncate_ms(moment: datetime) -> datetime:
    """Drop sub-millisecond precision so a value survives a round trip through :func:`to_iso`."""
    moment = require_aware(moment)
    return moment - timedelta(microseconds=moment.microsecond % 1000)
