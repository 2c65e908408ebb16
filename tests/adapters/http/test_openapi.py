"""The OpenAPI document is the API: the file, the served copy, the routes and the
answers all agree with it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from adapters.http import openapi_document
from adapters.http.openapi import render
from core import canonical
from tests.adapters.http.fake_service import JOB_PREFIX
from tests.adapters.http.harness import AGENT_KEY, PAYMENT, SMALL_PAYMENT, Api

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "manifests" / "openapi.json"
REGENERATE = "regenerate: .venv/bin/python -m adapters.http manifests/openapi.json"


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validate_openapi(document)


def test_the_manifest_file_is_the_generated_document() -> None:
    assert MANIFEST.read_text(encoding="utf-8") == render(openapi_document()), REGENERATE


@pytest.mark.asyncio
async def test_the_served_document_equals_the_manifest(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status == 200
    assert await r.json() == json.loads(MANIFEST.read_text(encoding="utf-8"))


@pytest.mark.asyncio
async def test_every_route_is_documented_and_every_documented_path_is_routed(api: Api) -> None:
    app = api.client.server.app
    assert app is not None
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert routed == documented


class Documented:
    """Checks live answers against the documented responses of each operation."""

    def __init__(self) -> None:
        self.document = openapi_document()
        self.checked: set[str] = set()

    def check(self, method: str, path: str, status: int, content_type: str, body: Any) -> None:
        operation = self.document["paths"][path][method.lower()]
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {path} answered undocumented {status}"
        content = responses[str(status)]["content"]
        media = content_type.split(";")[0]
        assert media in content, f"{method} {path} {status} answered {media}"
        schema = {"$ref": content[media]["schema"].get("$ref", "#/x"), **self.document}
        if "$ref" not in content[media]["schema"]:
            schema = {**content[media]["schema"], "components": self.document["components"]}
        errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
        assert not errors, f"{method} {path} {status}: {errors[0].message}"
        self.checked.add(f"{operation['operationId']}:{status}")


@pytest.mark.asyncio
async def test_live_answers_match_their_documented_schemas(api: Api) -> None:
    doc = Documented()
    client = api.client

    async def call(method: str, template: str, url: str, **kw: Any) -> Any:
        r = await client.request(method, url, **kw)
        body = await r.json() if r.content_type == "application/json" else await r.text()
        doc.check(method, template, r.status, r.headers["Content-Type"], body)
        return body

    challenge = await call(
        "POST", "/v1/agents/challenge", "/v1/agents/challenge", json={"agent_did": AGENT_KEY.did}
    )
    await call("POST", "/v1/agents/challenge", "/v1/agents/challenge", json={"agent_did": "x"})
    await call(
        "POST",
        "/v1/agents/challenge",
        "/v1/agents/challenge",
        data=b"{",
        headers={"Content-Type": "application/json"},
    )
    await call(
        "POST",
        "/v1/agents/challenge",
        "/v1/agents/challenge",
        data=b"{}",
        headers={"Content-Type": "text/plain"},
    )
    assert challenge["agent_did"] == AGENT_KEY.did
    signed = AGENT_KEY.sign(JOB_PREFIX + challenge["challenge"].encode())
    answer = {
        "agent_did": AGENT_KEY.did,
        "challenge": challenge["challenge"],
        "signature_b64u": canonical.b64u_encode(signed),
    }
    job = await call("POST", "/v1/jobs", "/v1/jobs", json=answer)
    await call("POST", "/v1/jobs", "/v1/jobs", json=answer)  # the challenge is used up
    job_id, token = job["job_id"], job["runner_token"]
    auth = {"X-CST": token}

    def sub(params: dict[str, Any], route: str = "payments.transfer") -> dict[str, Any]:
        return {"job_id": job_id, "tool_route": route, "params": params}

    await call("POST", "/v1/requests", "/v1/requests", json=sub(SMALL_PAYMENT), headers=auth)
    gated = await call("POST", "/v1/requests", "/v1/requests", json=sub(PAYMENT), headers=auth)
    await call("POST", "/v1/requests", "/v1/requests", json=sub({}, "shell.exec"), headers=auth)
    await call("POST", "/v1/requests", "/v1/requests", json=sub({}))
    request_id = gated["request_id"]
    status_path = "/v1/requests/{request_id}"
    await call("GET", status_path, f"/v1/requests/{request_id}", headers=auth)
    await call("GET", status_path, "/v1/requests/nope", headers=auth)
    await call("GET", "/v1/bundles/{request_id}", f"/v1/bundles/{request_id}")
    api.service.approve(request_id)
    status = await call("GET", status_path, f"/v1/requests/{request_id}?wait=1", headers=auth)
    check = {"grant": status["grant"], "tool_route": "payments.transfer", "params": PAYMENT}
    job_auth = {"X-CST": status["job_token"]}
    await call("POST", "/v1/gate/check", "/v1/gate/check", json=check, headers=job_auth)
    await call("POST", "/v1/gate/check", "/v1/gate/check", json=check, headers=job_auth)
    await call("POST", "/v1/gate/admit", "/v1/gate/admit", json=sub(SMALL_PAYMENT), headers=auth)
    await call("POST", "/v1/gate/admit", "/v1/gate/admit", json=sub(PAYMENT), headers=auth)
    await call("GET", "/v1/bundles/{request_id}", f"/v1/bundles/{request_id}")
    await call("GET", "/v1/bundles/{request_id}", "/v1/bundles/none")
    await call("GET", "/v1/log/checkpoint", "/v1/log/checkpoint")
    await call("GET", "/v1/log/proof/inclusion", "/v1/log/proof/inclusion?index=0")
    await call("GET", "/v1/log/proof/inclusion", "/v1/log/proof/inclusion?index=999")
    await call("GET", "/v1/log/proof/consistency", "/v1/log/proof/consistency?old=1")
    await call("GET", "/.well-known/keyturn", "/.well-known/keyturn")
    await call("GET", "/healthz", "/healthz")
    await call("GET", "/readyz", "/readyz")
    api.service.ready = False
    await call("GET", "/readyz", "/readyz")
    await call("GET", "/openapi.json", "/openapi.json")
    r = await client.get("/metrics")
    doc.check("GET", "/metrics", r.status, r.headers["Content-Type"], await r.text())

    operations = {
        op["operationId"]
        for operations in doc.document["paths"].values()
        for op in operations.values()
    }
    assert {c.split(":")[0] for c in doc.checked} == operations
    assert {"startJob:201", "submitRequest:202", "submitRequest:403", "gateCheck:403"} <= (
        doc.checked
    )


def test_every_documented_error_code_in_the_api_module_is_described() -> None:
    problems = (ROOT / "adapters" / "http" / "problems.py").read_text(encoding="utf-8")
    sources = "".join(
        (ROOT / "adapters" / "http" / name).read_text(encoding="utf-8")
        for name in ("agent_api.py", "bodies.py", "exchange.py")
    )
    raised = set(re.findall(r'ApiError\(\s*\d{3},\s*"([A-Z_]+)"', sources))
    raised |= set(re.findall(r'_token_error\(\s*"([A-Z_]+)"', sources))
    assert "TOKEN_AMBIGUOUS" in raised and "INVALID_QUERY" in raised
    assert raised, "the pattern found no codes: the test would prove nothing"
    missing = {code for code in raised if code not in problems}
    assert not missing, f"codes raised but not listed in problems.py: {sorted(missing)}"
