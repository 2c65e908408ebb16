"""Request bodies of the agent API: read within a limit, parsed strictly, validated.

A body is refused, before the service sees it, when it is larger than the limit
(``413 BODY_TOO_LARGE``: counted while reading, so an endless body costs at most
the limit), not declared as JSON (``415``), not UTF-8 JSON, has a duplicate key or a
non-finite number (``400 MALFORMED_JSON``: two parsers could read it differently),
nests deeper than the parser allows (``400 JSON_TOO_DEEP``), or does not match its
model — unknown fields included (``400 INVALID_BODY``, naming the field).

The models are the wire format; the OpenAPI document is generated from them.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.http.problems import ApiError

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a body."""

PATH_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""What a request id in a URL path may look like."""

_READ_CHUNK = 64 * 1024

Did = Annotated[str, Field(min_length=1, max_length=512, description="the agent's did:key")]
Route = Annotated[
    str, Field(min_length=1, max_length=256, description="tool route, e.g. payments.transfer")
]
Ident = Annotated[str, Field(min_length=1, max_length=256)]
Digest = Annotated[str, Field(min_length=1, max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChallengeBody(_Body):
    """Ask for a proof-of-possession challenge for an agent key."""

    agent_did: Did


class StartJobBody(_Body):
    """Answer the challenge: Ed25519 over ``keyturn-job-v1\\n{challenge}`` (UTF-8)."""

    agent_did: Did
    challenge: Annotated[str, Field(min_length=1, max_length=1024)]
    signature_b64u: Annotated[
        str, Field(min_length=1, max_length=256, description="base64url, no padding")
    ]


class SubmitBody(_Body):
    """One exact tool call the agent wants to run."""

    job_id: Ident
    tool_route: Route
    params: dict[str, Any] = Field(description="the exact parameters (a JSON object)")
    plan_hash: Digest | None = None
    span_id: Ident | None = None
    justification: Annotated[str, Field(max_length=4000)] | None = None
    context: dict[str, Any] | None = None


class GateCheckBody(_Body):
    """The call about to run, with the grant that approved it."""

    grant: dict[str, Any] = Field(description="the grant envelope, as received")
    tool_route: Route
    params: dict[str, Any]
    plan_hash: Digest | None = None
    context: dict[str, Any] | None = None


class AdmitBody(_Body):
    """An ungated call the agent is about to run (recorded in the job's history)."""

    job_id: Ident
    tool_route: Route
    params: dict[str, Any]
    plan_hash: Digest | None = None
    context: dict[str, Any] | None = None


M = TypeVar("M", bound=_Body)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` bytes.

    Raises:
        ApiError: ``415 UNSUPPORTED_MEDIA_TYPE``, ``413 BODY_TOO_LARGE``.
    """
    if request.content_type != "application/json" or (
        request.charset is not None and request.charset.lower() not in ("utf-8", "utf8")
    ):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with the header 'Content-Type: application/json'",
        )
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(min(_READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "BODY_TOO_LARGE", f"the body is larger than {limit} bytes; send a smaller request"
    )


def parse_json(raw: bytes) -> Any:
    """Parse ``raw`` as strict UTF-8 JSON.

    Raises:
        ApiError: ``400 MALFORMED_JSON`` (not UTF-8, not JSON, duplicate key, NaN or an
            infinite number) or ``400 JSON_TOO_DEEP``.
    """
    if not raw.strip():
        raise ApiError(400, "MALFORMED_JSON", "the body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "MALFORMED_JSON", "the body is not valid UTF-8") from e
    try:
        value = json.loads(
            text,
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except _Refused as e:
        raise ApiError(400, "MALFORMED_JSON", str(e)) from e
    except RecursionError as e:
        raise _too_deep() from e
    except ValueError as e:  # JSONDecodeError, or an integer with too many digits
        raise ApiError(400, "MALFORMED_JSON", _decode_message(e)) from e
    if _depth(value) > MAX_DEPTH:
        raise _too_deep()
    return value


def validate(model: type[M], value: Any) -> M:
    """``value`` as ``model``.

    Raises:
        ApiError: ``400 INVALID_BODY`` naming the first offending fields (never their values).
    """
    if not isinstance(value, dict):
        raise ApiError(400, "INVALID_BODY", "the body must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise ApiError(400, "INVALID_BODY", _describe(e, model)) from e


async def read_model(request: web.Request, model: type[M], limit: int) -> M:
    """Read, parse and validate a request body (see the module docstring for refusals)."""
    return validate(model, parse_json(await read_body(request, limit)))


class _Refused(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the key {_shown(key)} appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number; send finite numbers only")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _Refused(f"the number {text[:32]} is too large")
    return number


def _decode_message(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return (
            f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )
    return "the body has a number with too many digits"


def _too_deep() -> ApiError:
    return ApiError(
        400, "JSON_TOO_DEEP", f"the body nests deeper than {MAX_DEPTH} levels; flatten it"
    )


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _shown(name: object) -> str:
    text = str(name)
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _describe(error: ValidationError, model: type[BaseModel]) -> str:
    parts: list[str] = []
    for item in error.errors(include_input=False, include_url=False)[:3]:
        field = ".".join(str(p) for p in item["loc"]) or "body"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            parts.append(f"unknown field {_shown(field)} (allowed: {allowed})")
        elif item["type"] == "missing":
            parts.append(f"field {_shown(field)} is required")
        else:
            parts.append(f"field {_shown(field)}: {item['msg'].lower()}")
    return "; ".join(parts)
