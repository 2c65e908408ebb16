"""Slack's HTTP request as Bolt's request, with the form body decoded at C speed.

``slack_bolt.adapter.aiohttp.to_bolt_request`` hands Bolt the raw body and Bolt
percent-decodes it with ``urllib.parse.parse_qsl``, a pure-Python loop over every
``%XX`` escape: about 30 µs per KB of click payload on the 2-core reference machine,
and a real ``block_actions`` payload carries the whole message (several KB). That is
the largest single cost on the path that must acknowledge within Slack's 3 seconds,
ahead of Bolt's routing and the signature check together.

:func:`to_bolt_request` gives Bolt the same request: the raw body exactly as received
(``raw_body``, which Bolt's request verification signs and checks: nothing about the
signature changes), the same headers and query, and the body parsed to the same dict
Bolt would build (:func:`parse_body`, property-tested against Bolt's own parser), with
the percent-decoding done by CPython's C codecs. Whatever the fast decoder does not
handle exactly (non-ASCII text, a backslash, a malformed escape) goes to urllib.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest


def unquote_plus(text: str) -> str:
    """``urllib.parse.unquote(text.replace("+", " "))`` (UTF-8, errors replaced), in C.

    ``%XX`` becomes ``\\xXX`` for the ``unicode_escape`` codec, whose result (one
    character per byte) is read back as UTF-8. Only plain-ASCII text without
    backslashes takes this path, and a malformed escape makes the codec raise, so the
    result is always urllib's.
    """
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    if not text.isascii() or "\\" in text:
        return unquote(text)
    try:
        octets = text.replace("%", "\\x").encode("ascii").decode("unicode_escape")
    except UnicodeDecodeError:
        return unquote(text)  # a "%" not followed by two hex digits: urllib keeps it
    return octets.encode("latin-1").decode("utf-8", "replace")


def parse_qsl(body: str) -> list[tuple[str, str]]:
    """``urllib.parse.parse_qsl(body, keep_blank_values=True)`` with :func:`unquote_plus`."""
    pairs = []
    for field in body.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def parse_body(body: str, content_type: str | None) -> dict[str, Any]:
    """The dict ``slack_bolt.request.internals.parse_body`` builds from ``body``."""
    if not body:
        return {}
    if content_type == "application/json" or body.startswith("{"):
        parsed: dict[str, Any] = json.loads(body)
        return parsed
    params = dict(parse_qsl(body))
    if "payload" in body:  # Bolt's own test: a form with a JSON payload field
        payload = params.get("payload")
        return json.loads(payload) if payload is not None else {}
    return params


async def to_bolt_request(request: web.Request) -> AsyncBoltRequest:
    """Bolt's request for ``request``: raw body kept for the signature check."""
    raw = await request.text()
    bolt = AsyncBoltRequest(body="", query=request.query_string, headers=request.headers)  # type: ignore[arg-type]
    bolt.raw_body = raw
    bolt.body = parse_body(raw, bolt.content_type)
    bolt.context = build_async_context(AsyncBoltContext({}), bolt.body)
    return bolt
