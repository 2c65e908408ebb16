"""Tool parameters as keyturn hashes them: plain JSON, nothing else.

The payload hash covers the JCS form of the parameters, so what an approver sees and
what the gate recomputes must be plain JSON: objects with text keys, arrays, text,
finite numbers, booleans and null. Tuples become arrays; anything else (sets, bytes,
dates, arbitrary objects) is refused rather than guessed at, because two guesses
(``str(x)`` here, ``repr(x)`` there) would hash differently.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from adapters.agents.errors import InvalidCall

MAX_DEPTH = 64


def json_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh plain-JSON copy of ``params`` (sharing nothing with the caller's objects).

    Raises:
        InvalidCall: ``PARAMS_NOT_JSON`` naming the first value without a JSON form.
    """
    if not isinstance(params, Mapping):
        raise InvalidCall("PARAMS_NOT_JSON", "the parameters must be a mapping of names to values")
    return _object(params, "params", 1)


def call_params(
    signature: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The parameters of one real call: bound to ``signature``, defaults applied.

    Named parameters become keys; ``*args`` becomes a list under its name; ``**kwargs``
    entries become keys of their own. Parameters in ``exclude`` are left out.

    Raises:
        InvalidCall: ``ARGUMENTS_INVALID`` when the arguments do not fit the signature,
            ``PARAMS_NOT_JSON`` when a value has no JSON form.
    """
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        raise InvalidCall("ARGUMENTS_INVALID", f"the arguments do not fit the function: {e}") from e
    bound.apply_defaults()
    params: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name in exclude:
            continue
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            params.update(_object(value, name, 1))
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            params[name] = _value(list(value), name, 1)
        else:
            params[name] = _value(value, name, 1)
    return params


def _object(value: Mapping[Any, Any], where: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise _not_json(f"{where} has a key that is not text ({type(key).__name__})")
        out[key] = _value(item, f"{where}.{key}", depth + 1)
    return out


def _value(value: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise _not_json(f"{where} nests deeper than {MAX_DEPTH} levels")
    # Subclasses (enums, custom str types) become the plain value they hold, read
    # through the base type's own method so an overridden __str__ cannot change it.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _not_json(f"{where} is {value}, which JSON cannot carry")
        return float.__float__(value)
    if isinstance(value, Mapping):
        return _object(value, where, depth)
    if isinstance(value, list | tuple):
        return [_value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise _not_json(
        f"{where} is a {type(value).__name__}, which has no JSON form; pass plain values "
        "(or exclude the argument from the approval)"
    )


def _not_json(message: str) -> InvalidCall:
    return InvalidCall("PARAMS_NOT_JSON", message)
