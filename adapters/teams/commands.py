"""What people type to the bot, parsed into commands. Pure: text in, a command out.

::

    help
    breakglass <route> key=value … for 30m reason "…" [ticket INC-1] [rollback "step"]…
    breakglass list
    breakglass revoke <request id>
    breakglass token <request id>        (1:1 chat only: the token goes to the requester)

The Slack-style flags of CARDS.md (``--for``, ``--reason``, ``--ticket``, ``--rollback``)
are accepted too. A bare integer (``amount_usd=12500``) is a number; anything else,
and anything quoted, is text — exactly what the payload hash will cover. Every parse
error says what is wrong and repeats the usage line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.errors import KeyturnError

USAGE = (
    'usage: breakglass <route> key=value … for 30m reason "why" [ticket INC-1] [rollback "step"]…'
)
HELP_LINES = (
    'breakglass <route> key=value … for 30m reason "why" [ticket INC-1] [rollback "step"] '
    "— ask for a time-boxed privilege (two approvers)",
    "breakglass list — open and pending windows, with time left",
    "breakglass revoke <request id> — the kill switch: close a window now",
    "breakglass token <request id> — your token for an approved window (1:1 chat only)",
    "help — this list",
)
COMMAND_INVALID = "COMMAND_INVALID"

_ROUTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^(?:(\d{1,3})h)?(?:(\d{1,4})m)?$")
_INTEGER = re.compile(r"^-?(?:0|[1-9]\d{0,15})$")
_TOKEN = re.compile(r'\s*(?:([^\s="]+)=)?(?:"((?:[^"\\]|\\.)*)"|(\S+))')
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
_KEYWORDS = {"for", "reason", "ticket", "rollback"}


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class BreakglassList:
    pass


@dataclass(frozen=True, slots=True)
class BreakglassRevoke:
    request_id: str


@dataclass(frozen=True, slots=True)
class BreakglassTokenRequest:
    request_id: str


@dataclass(frozen=True, slots=True)
class BreakglassRequest:
    route: str
    params: dict[str, Any]
    duration_seconds: int
    reason: str
    ticket: str | None = None
    rollback_steps: tuple[str, ...] = field(default_factory=tuple)


Command = Help | BreakglassList | BreakglassRevoke | BreakglassTokenRequest | BreakglassRequest


def _invalid(problem: str, *, usage: bool = True) -> KeyturnError:
    return KeyturnError(COMMAND_INVALID, f"{problem}\n{USAGE}" if usage else problem)


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    quoted: bool


def _words(text: str) -> list[_Word]:
    """Split on spaces; ``"…"`` and ``key="…"`` are one word each (quotes removed)."""
    words: list[_Word] = []
    rest = text.translate(_SMART_QUOTES).strip()
    pos = 0
    while pos < len(rest):
        match = _TOKEN.match(rest, pos)
        if match is None or match.end() == pos:
            break
        key, quoted, bare = match.group(1), match.group(2), match.group(3)
        prefix = f"{key}=" if key is not None else ""
        if quoted is not None:
            words.append(_Word(prefix + re.sub(r"\\(.)", r"\1", quoted), True))
        else:
            if '"' in bare:
                raise _invalid("a quote is not closed")
            words.append(_Word(prefix + bare, False))
        pos = match.end()
    return words


def parse_duration(text: str) -> int:
    """``30m`` / ``2h`` / ``1h30m`` → seconds.

    Raises:
        KeyturnError: ``COMMAND_INVALID`` naming the bad duration.
    """
    match = _DURATION.match(text.strip().casefold())
    if not text.strip() or match is None or not (match.group(1) or match.group(2)):
        raise _invalid(f'"{text}" is not a duration: use 30m, 2h or 1h30m')
    seconds = int(match.group(1) or 0) * 3600 + int(match.group(2) or 0) * 60
    if seconds <= 0:
        raise _invalid(f'"{text}" is not a duration: use 30m, 2h or 1h30m')
    return seconds


def parse_command(text: str) -> Command:
    """Parse one message to the bot (mentions already removed).

    Raises:
        KeyturnError: ``COMMAND_INVALID`` with a message saying exactly what is wrong.
    """
    words = _words(text)
    if not words:
        return Help()
    head = words[0].text.casefold().lstrip("/")
    if head == "help" and len(words) == 1:
        return Help()
    if head != "breakglass":
        raise _invalid(
            f'I don\'t know "{words[0].text}". Type "help" for what I can do.', usage=False
        )
    if len(words) == 1:
        raise _invalid("say which route you need")
    sub = words[1].text.casefold()
    if sub == "list" and not words[1].quoted:
        if len(words) > 2:
            raise _invalid('"breakglass list" takes nothing more')
        return BreakglassList()
    if sub in ("revoke", "token") and not words[1].quoted:
        if len(words) != 3 or not _REQUEST_ID.match(words[2].text):
            raise _invalid(
                f"breakglass {sub} needs one request id, e.g. breakglass {sub} r-7f2c9a01b3e4"
            )
        request_id = words[2].text
        return (
            BreakglassRevoke(request_id) if sub == "revoke" else BreakglassTokenRequest(request_id)
        )
    return _parse_request(words[1:])


def _parse_request(words: list[_Word]) -> BreakglassRequest:
    route = words[0].text
    if words[0].quoted or not _ROUTE.match(route) or "=" in route:
        raise _invalid(f'"{route}" is not a route name')
    params: dict[str, Any] = {}
    duration: int | None = None
    reason: str | None = None
    ticket: str | None = None
    rollback: list[str] = []
    i = 1
    while i < len(words):
        word = words[i]
        keyword = word.text.casefold().removeprefix("--")
        if not word.quoted and keyword in _KEYWORDS:
            if i + 1 >= len(words):
                raise _invalid(f'"{word.text}" needs a value')
            value = words[i + 1]
            if keyword == "for":
                if duration is not None:
                    raise _invalid('"for" is given twice')
                duration = parse_duration(value.text)
            elif keyword == "reason":
                if reason is not None:
                    raise _invalid('"reason" is given twice')
                reason = value.text
            elif keyword == "ticket":
                if ticket is not None:
                    raise _invalid('"ticket" is given twice')
                ticket = value.text
            else:
                rollback.append(value.text)
            i += 2
            continue
        key, sep, raw = word.text.partition("=")
        if word.quoted and not sep:
            raise _invalid(f'"{word.text}" is not key=value')
        if not sep or not _KEY.match(key):
            raise _invalid(f'"{word.text}" is not key=value')
        if key in params:
            raise _invalid(f"{key} is given twice")
        params[key] = int(raw) if not word.quoted and _INTEGER.match(raw) else raw
        i += 1
    if duration is None:
        raise _invalid('say for how long, e.g. "for 30m"')
    if reason is None or not reason.strip():
        raise _invalid('say why, e.g. reason "INC-4411 mailbox compromise"')
    return BreakglassRequest(
        route=route,
        params=params,
        duration_seconds=duration,
        reason=reason.strip(),
        ticket=ticket,
        rollback_steps=tuple(rollback),
    )
