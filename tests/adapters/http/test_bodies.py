"""Bad bodies are refused at the edge, with a code a person can act on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.adapters.http.harness import AGENT_KEY, BODY_LIMIT, Api, running_api

pytestmark = pytest.mark.asyncio

JSON = {"Content-Type": "application/json"}


async def _refusal(api: Api, body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = await api.client.post("/v1/agents/challenge", data=body, headers=headers or JSON)
    payload = await r.json()
    assert payload["error"]["request_id"] == r.headers["X-Request-Id"]
    return {"status": r.status, **payload["error"]}


async def test_a_body_over_the_limit_is_413_before_the_service_sees_it(api: Api) -> None:
    body = b'{"agent_did": "' + b"x" * BODY_LIMIT + b'"}'
    error = await _refusal(api, body)
    assert (error["status"], error["code"]) == (413, "BODY_TOO_LARGE")
    assert str(BODY_LIMIT) in error["message"]
    assert api.service.calls == []


async def test_a_chunked_body_is_cut_off_while_reading(api: Api) -> None:
    async def endless() -> AsyncIterator[bytes]:
        # No Content-Length: only counting while reading can stop this body.
        yield b'{"agent_did": "'
        for _ in range(1000):
            yield b"x" * 1024

    r = await api.client.post("/v1/agents/challenge", data=endless(), headers=JSON)
    assert r.status == 413
    assert (await r.json())["error"]["code"] == "BODY_TOO_LARGE"
    assert api.service.calls == []


async def test_a_body_at_the_limit_is_read() -> None:
    async with running_api(body_limit=200) as api:
        body = b'{"agent_did": "' + AGENT_KEY.did.encode() + b'"}'
        body += b" " * (200 - len(body))
        r = await api.client.post("/v1/agents/challenge", data=body, headers=JSON)
        assert r.status == 200


@pytest.mark.parametrize(
    ("body", "code", "hint"),
    [
        (b"", "MALFORMED_JSON", "empty"),
        (b'{"agent_did": ', "MALFORMED_JSON", "not valid JSON"),
        (b'{"agent_did": "a", "agent_did": "b"}', "MALFORMED_JSON", "twice"),
        (b'{"agent_did": "a", "n": NaN}', "MALFORMED_JSON", "NaN"),
        (b'{"agent_did": "a", "n": -Infinity}', "MALFORMED_JSON", "Infinity"),
        (b'{"agent_did": "a", "n": 1e999}', "MALFORMED_JSON", "too large"),
        (b'{"agent_did": "\xff"}', "MALFORMED_JSON", "UTF-8"),
        (b"[" * 70 + b"]" * 70, "JSON_TOO_DEEP", "64"),
        (b"[1, 2]", "INVALID_BODY", "object"),
        (b'{"agent_did": "a", "role": "admin"}', "INVALID_BODY", "'role'"),
        (b"{}", "INVALID_BODY", "'agent_did' is required"),
        (b'{"agent_did": 7}', "INVALID_BODY", "'agent_did'"),
        (b'{"agent_did": ""}', "INVALID_BODY", "'agent_did'"),
    ],
)
async def test_bad_json_is_400_with_a_stable_code(
    api: Api, body: bytes, code: str, hint: str
) -> None:
    error = await _refusal(api, body)
    assert (error["status"], error["code"]) == (400, code)
    assert hint in error["message"]
    assert api.service.calls == []


async def test_nesting_that_would_exhaust_the_parser_is_400() -> None:
    async with running_api(body_limit=1 << 20) as api:
        error = await _refusal(api, b"[" * 200_000 + b"]" * 200_000)
        assert (error["status"], error["code"]) == (400, "JSON_TOO_DEEP")


async def test_a_refusal_names_the_field_but_not_its_value(api: Api) -> None:
    error = await _refusal(api, b'{"agent_did": ["sk-live-very-secret"]}')
    assert "'agent_did'" in error["message"]
    assert "sk-live-very-secret" not in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_a_body_that_is_not_declared_json_is_415(api: Api, content_type: str) -> None:
    error = await _refusal(api, b'{"agent_did": "a"}', {"Content-Type": content_type})
    assert (error["status"], error["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")


async def test_json_with_an_explicit_utf8_charset_is_accepted(api: Api) -> None:
    body = ('{"agent_did": "' + AGENT_KEY.did + '"}').encode()
    r = await api.client.post(
        "/v1/agents/challenge",
        data=body,
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert r.status == 200


async def test_unknown_query_parameters_on_a_post_are_refused(api: Api) -> None:
    r = await api.client.post("/v1/agents/challenge?debug=1", json={"agent_did": AGENT_KEY.did})
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "INVALID_QUERY"
