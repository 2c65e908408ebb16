"""``/breakglass``: a pure parser from the command text to what the person asked for.

::

    /breakglass <route> key=value … --for 30m --reason "…" [--ticket INC-1] [--rollback "step"]…
    /breakglass list | revoke <id> | token <id> | help

Values are text; a plain integer (``amount=500``) is a number; ``key:=<json>`` takes a
JSON value as is. Every error names the exact problem and is followed by the usage
line. Parse errors raise ``KeyturnError("COMMAND_INVALID", …)``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from core.errors import KeyturnError

USAGE = (
    'usage: /breakglass <route> key=value … --for 30m --reason "…" [--ticket INC-1] '
    '[--rollback "step"]… | list | revoke <id> | token <id> | help'
)
HELP = "\n".join(
    [
        "*/breakglass* asks two approvers for a time-boxed privilege.",
        '• `/breakglass entra.role.assign principal=alice@corp.example role="Privileged Role '
        'Administrator" --for 30m --reason "INC-4411 mailbox compromise" --ticket INC-4411`',
        "• `/breakglass list`: open and pending windows with time left",
        "• `/breakglass token <id>`: your token once approved (shown only to you)",
        "• `/breakglass revoke <id>`: the kill switch",
        USAGE,
    ]
)
MAX_DURATION_SECONDS = 24 * 3600
_DURATION = re.compile(r"\A(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
_KEY = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
_INT = re.compile(r"\A-?(?:0|[1-9][0-9]{0,17})\Z")
_ID = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class BreakglassAsk:
    route: str
    params: dict[str, Any]
    duration_seconds: int
    reason: str
    ticket: str | None = None
    rollback_steps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BreakglassList:
    pass


@dataclass(frozen=True, slots=True)
class BreakglassRevoke:
    request_id: str


@dataclass(frozen=True, slots=True)
class BreakglassTokenAsk:
    request_id: str


@dataclass(frozen=True, slots=True)
class BreakglassHelp:
    pass


BreakglassCommand = (
    BreakglassAsk | BreakglassList | BreakglassRevoke | BreakglassTokenAsk | BreakglassHelp
)


def _invalid(message: str) -> KeyturnError:
    return KeyturnError("COMMAND_INVALID", message)


def parse_duration(text: str) -> int:
    """``30m`` / ``1h30m`` / ``90s`` → seconds.

    Raises:
        KeyturnError: ``COMMAND_INVALID``.
    """
    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise _invalid(f"--for {text or '(nothing)'} is not a duration; write e.g. 30m or 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise _invalid("--for must be longer than 0")
    if total > MAX_DURATION_SECONDS:
        raise _invalid(f"--for {text} is longer than a day; ask for less")
    return total


def _param(token: str) -> tuple[str, Any]:
    eq = token.find("=")
    if eq <= 0:
        raise _invalid(f"{token!r} is not key=value")
    value: Any
    if token[eq - 1] == ":":
        key, raw = token[: eq - 1], token[eq + 1 :]
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _invalid(f"{key}:= takes JSON; {raw!r} is not JSON") from e
    else:
        key, raw = token[:eq], token[eq + 1 :]
        value = int(raw) if _INT.match(raw) else raw
    if not _KEY.match(key):
        raise _invalid(f"{key!r} is not a parameter name")
    return key, value


def _request_id(words: list[str], verb: str) -> str:
    if len(words) != 2 or not _ID.match(words[1]):
        raise _invalid(f"/breakglass {verb} takes one request id, e.g. r-7f2c9a01b3e4")
    return words[1]


def parse_breakglass(text: str) -> BreakglassCommand:
    """Parse ``/breakglass`` text.

    Raises:
        KeyturnError: ``COMMAND_INVALID`` with the exact problem (show it with :data:`USAGE`).
    """
    try:
        words = shlex.split(text or "")
    except ValueError as e:
        raise _invalid(f"could not read the command: {e} (check your quotes)") from e
    if not words:
        raise _invalid("say what you need: a route and its parameters, or list/revoke/token")
    verb = words[0].lower()
    if verb == "help":
        return BreakglassHelp()
    if verb == "list":
        if len(words) != 1:
            raise _invalid("/breakglass list takes no arguments")
        return BreakglassList()
    if verb == "revoke":
        return BreakglassRevoke(_request_id(words, "revoke"))
    if verb == "token":
        return BreakglassTokenAsk(_request_id(words, "token"))
    route = words[0]
    if route.startswith("-") or "=" in route:
        raise _invalid("start with the route, e.g. /breakglass entra.role.assign …")
    params: dict[str, Any] = {}
    options: dict[str, str] = {}
    steps: list[str] = []
    rest = iter(words[1:])
    for word in rest:
        if word.startswith("--"):
            name = word[2:]
            if name not in ("for", "reason", "ticket", "rollback"):
                raise _invalid(f"unknown option {word}")
            value = next(rest, None)
            if value is None or value.startswith("--"):
                raise _invalid(f"{word} needs a value")
            if name == "rollback":
                steps.append(value)
            elif name in options:
                raise _invalid(f"{word} given twice")
            else:
                options[name] = value
            continue
        key, param = _param(word)
        if key in params:
            raise _invalid(f"parameter {key} given twice")
        params[key] = param
    if "for" not in options:
        raise _invalid("say how long with --for, e.g. --for 30m")
    reason = options.get("reason", "").strip()
    if not reason:
        raise _invalid('say why with --reason "…": it goes on the card')
    return BreakglassAsk(
        route=route,
        params=params,
        duration_seconds=parse_duration(options["for"]),
        reason=reason,
        ticket=options.get("ticket"),
        rollback_steps=tuple(steps),
    )
