"""Fuzzing the JSON endpoints: whatever arrives, the answer is never a 500 and every
refusal is a JSON error with a stable code.

The app is the real aiohttp app on the fake service (real core rules), served on a
loop owned by this module so that Hypothesis can drive it from a plain test.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adapters.http.harness import AGENT_KEY, PAYMENT, Api, running_api

CODE = re.compile(r"\A[A-Z][A-Z0-9_]{2,63}\Z")
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Live:
    loop: asyncio.AbstractEventLoop
    api: Api
    job_id: str
    token: str
    grant: dict[str, Any]
    job_token: str

    def send(self, method: str, path: str, **kw: Any) -> tuple[int, Mapping[str, str], bytes]:
        async def go() -> tuple[int, Mapping[str, str], bytes]:
            r = await self.api.client.request(method, path, **kw)
            return r.status, r.headers.copy(), await r.read()

        return self.loop.run_until_complete(go())


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    context = running_api()
    api = loop.run_until_complete(context.__aenter__())
    try:
        job_id, token = loop.run_until_complete(api.start_job())

        async def approved() -> tuple[dict[str, Any], str]:
            r = await api.submit(token, job_id, "payments.transfer", PAYMENT)
            request_id = (await r.json())["request_id"]
            api.service.approve(request_id)
            r = await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": token})
            status = await r.json()
            return status["grant"], status["job_token"]

        grant, job_token = loop.run_until_complete(approved())
        yield Live(loop, api, job_id, token, grant, job_token)
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


def assert_sound(status: int, headers: Mapping[str, str], raw: bytes) -> None:
    assert status < 500, raw[:300]
    assert headers.get("X-Request-Id")
    if status >= 400:
        assert headers["Content-Type"].startswith("application/json")
        error = json.loads(raw)["error"]
        assert CODE.match(error["code"]), error
        assert isinstance(error["message"], str) and error["message"].strip()
        assert error["request_id"] == headers["X-Request-Id"]


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
objects = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
routes = st.sampled_from(
    ["payments.transfer", "storage.export", "m365.graph.sendMail", "shell.exec", "a..b", ""]
) | st.text(max_size=30)
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
content_types = st.sampled_from(
    ["application/json"] * 6
    + [
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "multipart/form-data; boundary=x",
    ]
)

POSTS = ["/v1/agents/challenge", "/v1/jobs", "/v1/requests", "/v1/gate/check", "/v1/gate/admit"]


def sometimes(draw: st.DrawFn, strategy: st.SearchStrategy[Any], usual: Any) -> Any:
    """``usual`` most of the time, so that fuzzing reaches past the first checks."""
    return draw(strategy) if draw(st.integers(0, 4)) == 0 else usual


@st.composite
def headers(draw: st.DrawFn, live: Live) -> dict[str, str]:
    out = {"Content-Type": draw(content_types)}
    token = draw(st.sampled_from([live.token, live.token, live.job_token, None]))
    token = sometimes(draw, printable, token)
    if token is not None:
        out["Authorization"] = sometimes(draw, printable, f"Bearer {token}")
    if draw(st.integers(0, 3)) == 0:
        out["X-CST"] = draw(st.sampled_from([live.token, live.job_token]) | printable)
    if draw(st.booleans()):
        out["X-Request-Id"] = draw(printable)
    return out


@st.composite
def bodies(draw: st.DrawFn, path: str, live: Live) -> Any:
    text = st.text(max_size=40)
    fields: dict[str, Any] = {
        "/v1/agents/challenge": {"agent_did": st.just(AGENT_KEY.did) | text},
        "/v1/jobs": {
            "agent_did": st.just(AGENT_KEY.did) | text,
            "challenge": text,
            "signature_b64u": text,
        },
        "/v1/requests": {
            "job_id": st.just(live.job_id) | text,
            "tool_route": routes,
            "params": objects | st.just(PAYMENT),
        },
        "/v1/gate/check": {
            "grant": st.just(live.grant) | objects,
            "tool_route": routes,
            "params": objects | st.just(PAYMENT),
        },
        "/v1/gate/admit": {
            "job_id": st.just(live.job_id) | text,
            "tool_route": routes,
            "params": objects | st.just(PAYMENT),
        },
    }[path]
    optional = {
        "plan_hash": st.text(max_size=50) | st.none(),
        "span_id": text,
        "justification": text,
        "context": objects | st.none(),
    }
    shaped = st.fixed_dictionaries(
        fields, optional=optional if path in ("/v1/requests", "/v1/gate/admit") else {}
    )
    body = sometimes(draw, objects | json_values, draw(shaped))
    if isinstance(body, dict) and draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=8))] = draw(json_values)
    return body


@FUZZ
@given(data=st.data())
def test_random_json_bodies_never_cause_a_500(live: Live, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(POSTS))
    body = data.draw(bodies(path, live))
    raw = json.dumps(body, allow_nan=False).encode("utf-8", "surrogatepass")
    sent = data.draw(headers(live))
    assert_sound(*live.send("POST", path, data=raw, headers=sent))


@FUZZ
@given(data=st.data())
def test_random_bytes_never_cause_a_500(live: Live, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(POSTS))
    raw = data.draw(st.binary(max_size=400))
    sent = data.draw(headers(live))
    assert_sound(*live.send("POST", path, data=raw, headers=sent))


@FUZZ
@given(data=st.data())
def test_random_paths_and_queries_never_cause_a_500(live: Live, data: st.DataObject) -> None:
    segment = quote(data.draw(st.text(max_size=40)), safe="")
    path = data.draw(
        st.sampled_from(
            [
                f"/v1/requests/{segment}",
                f"/v1/bundles/{segment}",
                "/v1/log/proof/inclusion",
                "/v1/log/proof/consistency",
                "/v1/log/checkpoint",
                f"/v1/{segment}",
            ]
        )
    )
    keys = st.sampled_from(["wait", "index", "size", "old", "new"]) | st.text(max_size=6)
    query = data.draw(st.lists(st.tuples(keys, st.text(max_size=12)), max_size=3))
    if query:
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    method = data.draw(st.sampled_from(["GET", "GET", "POST", "DELETE"]))
    sent = data.draw(headers(live))
    assert_sound(*live.send(method, path, headers=sent))
