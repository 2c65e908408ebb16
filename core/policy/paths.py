"""Parameter paths: ``amount_usd``, ``message.toRecipients[*].emailAddress.address``.

A path is dot-separated keys, each optionally followed by ``[n]`` (one list element)
or ``[*]`` (every element). Resolution never raises and tells three things apart,
because the policy treats them differently (fail closed):

* a value (``None``/JSON null counts as absent);
* :data:`ABSENT`: a key on the way is missing (or null);
* :data:`MISTYPED`: something on the way is not the object or list the path expects.

A path with ``[*]`` resolves to a tuple of element values (each of which may be
:data:`MISTYPED` when an element lacks the rest of the path), or to ``ABSENT`` /
``MISTYPED`` when the list itself cannot be reached.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from core.policy.model import invalid


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ABSENT: Final = _Sentinel("ABSENT")
MISTYPED: Final = _Sentinel("MISTYPED")
EACH: Final = _Sentinel("EACH")

Step = str | int | _Sentinel
Getter = Callable[[Any], Any]

MAX_PATH_LENGTH = 256
MAX_PATH_STEPS = 16
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[(?:\*|0|[1-9][0-9]{0,5})\])*)")
_INDEX = re.compile(r"\[(\*|[0-9]+)\]")


def parse_path(text: object, *, where: str) -> tuple[Step, ...]:
    """Split a path into steps.

    Raises:
        PolicyError: ``POLICY_INVALID`` naming ``where`` for a malformed path.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_PATH_LENGTH:
        raise invalid(f"{where}: a path is a non-empty string of at most {MAX_PATH_LENGTH} chars")
    steps: list[Step] = []
    for part in text.split("."):
        m = _SEGMENT.fullmatch(part)
        if m is None:
            raise invalid(f"{where}: {text!r} is not a valid path (keys, [n] and [*] only)")
        steps.append(m.group(1))
        for index in _INDEX.findall(m.group(2)):
            steps.append(EACH if index == "*" else int(index))
    if len(steps) > MAX_PATH_STEPS:
        raise invalid(f"{where}: path {text!r} is deeper than {MAX_PATH_STEPS} steps")
    return tuple(steps)


def is_multi(steps: tuple[Step, ...]) -> bool:
    return EACH in steps


def _is_map(value: object) -> bool:
    # type() first: decoded JSON is plain dicts, and the ABC check costs more.
    return type(value) is dict or isinstance(value, Mapping)


def _is_seq(value: object) -> bool:
    return type(value) is list or isinstance(value, list | tuple)


def getter(steps: tuple[Step, ...]) -> Getter:
    """A function from a root object to the value (or values) at ``steps``."""
    if not is_multi(steps):
        if len(steps) == 1 and isinstance(steps[0], str):
            key = steps[0]

            def one(root: Any) -> Any:
                if not _is_map(root):
                    return MISTYPED
                value = root.get(key)
                return ABSENT if value is None else value

            return one

        def single(root: Any) -> Any:
            return _walk_single(root, steps)

        return single
    first = steps.index(EACH)
    prefix, suffix = steps[:first], steps[first + 1 :]
    if EACH not in suffix:

        def each(root: Any) -> Any:
            container = _walk_single(root, prefix) if prefix else root
            if container is ABSENT or container is MISTYPED:
                return container
            if not _is_seq(container):
                return MISTYPED
            out = []
            for item in container:
                value = _walk_single(item, suffix) if suffix else item
                # Absence below an element is unknown: an optional leaf may treat a
                # missing list as empty, never an element that lacks what is read.
                out.append(MISTYPED if value is ABSENT or value is None else value)
            return tuple(out)

        return each

    def nested(root: Any) -> Any:
        out: list[Any] = []
        top = _walk_multi(root, steps, 0, out, inside=False)
        return top if top is not None else tuple(out)

    return nested


def _step(value: Any, step: Step) -> Any:
    if isinstance(step, str):
        if not _is_map(value):
            return MISTYPED
        value = value.get(step)
    else:  # an index
        if not _is_seq(value):
            return MISTYPED
        assert isinstance(step, int)
        value = value[step] if step < len(value) else None
    return ABSENT if value is None else value


def _walk_single(value: Any, steps: tuple[Step, ...]) -> Any:
    for step in steps:
        if type(step) is str:  # the common case, inlined: this runs per element
            if type(value) is not dict and not isinstance(value, Mapping):
                return MISTYPED
            value = value.get(step)
            if value is None:
                return ABSENT
            continue
        value = _step(value, step)
        if value is ABSENT or value is MISTYPED:
            return value
    return value


def _walk_multi(
    value: Any, steps: tuple[Step, ...], i: int, out: list[Any], *, inside: bool
) -> Any:
    """Append element values to ``out``; return a sentinel only for the top-level list.

    Absence below an element is MISTYPED (unknown), as in :func:`getter`.
    """
    while i < len(steps):
        step = steps[i]
        if step is EACH:
            if not _is_seq(value):
                if inside:
                    out.append(MISTYPED)
                    return None
                return MISTYPED
            for item in value:
                _walk_multi(item, steps, i + 1, out, inside=True)
            return None
        value = _step(value, step)
        if value is ABSENT or value is MISTYPED:
            if inside:
                out.append(MISTYPED)
                return None
            return value
        i += 1
    out.append(MISTYPED if value is None else value)
    return None
