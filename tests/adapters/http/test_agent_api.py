"""The agent API end to end against the fake service: every endpoint, happy and refused."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from core import canonical
from core.checkpoint import verify_checkpoint
from core.keys import SigningKey
from core.requests import payload_hash
from tests.adapters.http.fake_service import JOB_PREFIX, ORIGIN
from tests.adapters.http.harness import AGENT_KEY, PAYMENT, SMALL_PAYMENT, Api, running_api

pytestmark = pytest.mark.asyncio


async def _error(response: Any) -> dict[str, Any]:
    body = await response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert isinstance(error["message"], str) and error["message"]
    return error


async def _gated(api: Api, params: dict[str, Any] = PAYMENT) -> tuple[str, str, str]:
    job_id, token = await api.start_job()
    r = await api.submit(token, job_id, "payments.transfer", params)
    assert r.status == 202
    return job_id, token, (await r.json())["request_id"]


async def _approved(api: Api) -> tuple[str, dict[str, Any]]:
    _job_id, token, request_id = await _gated(api)
    api.service.approve(request_id)
    r = await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": token})
    status = await r.json()
    assert status["state"] == "approved"
    return request_id, status


# --- jobs ---------------------------------------------------------------------------


async def test_agent_proving_its_key_gets_a_runner_token_for_a_new_job(api: Api) -> None:
    r = await api.client.post("/v1/agents/challenge", json={"agent_did": AGENT_KEY.did})
    assert r.status == 200
    challenge = await r.json()
    assert challenge["agent_did"] == AGENT_KEY.did
    signature = canonical.b64u_encode(AGENT_KEY.sign(JOB_PREFIX + challenge["challenge"].encode()))
    r = await api.client.post(
        "/v1/jobs",
        json={
            "agent_did": AGENT_KEY.did,
            "challenge": challenge["challenge"],
            "signature_b64u": signature,
        },
    )
    assert r.status == 201
    job = await r.json()
    assert job["job_id"] in api.service.jobs
    assert job["runner_token"].count(".") == 2
    assert r.headers["Cache-Control"] == "no-store"


async def test_unregistered_agent_is_refused_a_challenge(api: Api) -> None:
    stranger = SigningKey.from_seed(bytes([9]) * 32)
    r = await api.client.post("/v1/agents/challenge", json={"agent_did": stranger.did})
    assert r.status == 403
    assert (await _error(r))["code"] == "AGENT_UNKNOWN"


async def test_disabled_agent_is_refused(api: Api) -> None:
    api.service.register(AGENT_KEY.did, enabled=False)
    r = await api.client.post("/v1/agents/challenge", json={"agent_did": AGENT_KEY.did})
    assert r.status == 403
    assert (await _error(r))["code"] == "AGENT_DISABLED"


async def test_a_challenge_cannot_be_answered_twice(api: Api) -> None:
    r = await api.client.post("/v1/agents/challenge", json={"agent_did": AGENT_KEY.did})
    challenge = (await r.json())["challenge"]
    body = {
        "agent_did": AGENT_KEY.did,
        "challenge": challenge,
        "signature_b64u": canonical.b64u_encode(AGENT_KEY.sign(JOB_PREFIX + challenge.encode())),
    }
    assert (await api.client.post("/v1/jobs", json=body)).status == 201
    again = await api.client.post("/v1/jobs", json=body)
    assert again.status == 401
    assert (await _error(again))["code"] == "CHALLENGE_USED"
    assert again.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_signature_by_another_key_does_not_start_a_job(api: Api) -> None:
    thief = SigningKey.from_seed(bytes([3]) * 32)
    r = await api.client.post("/v1/agents/challenge", json={"agent_did": AGENT_KEY.did})
    challenge = (await r.json())["challenge"]
    r = await api.client.post(
        "/v1/jobs",
        json={
            "agent_did": AGENT_KEY.did,
            "challenge": challenge,
            "signature_b64u": canonical.b64u_encode(thief.sign(JOB_PREFIX + challenge.encode())),
        },
    )
    assert r.status == 401
    assert (await _error(r))["code"] == "SIGNATURE_INVALID"
    assert api.service.jobs == {}


# --- submitting -------------------------------------------------------------------------


async def test_an_ungated_call_is_allowed_with_200(api: Api) -> None:
    job_id, token = await api.start_job()
    r = await api.submit(token, job_id, "payments.transfer", SMALL_PAYMENT)
    assert r.status == 200
    body = await r.json()
    assert body["outcome"] == "allowed"
    assert body["payload_hash_b64u"] == payload_hash(SMALL_PAYMENT)
    assert api.service.pending() == []


async def test_a_gated_call_answers_202_with_request_id_hash_rule_and_card(api: Api) -> None:
    job_id, token = await api.start_job()
    r = await api.submit(token, job_id, "payments.transfer", PAYMENT, justification="invoice")
    assert r.status == 202
    body = await r.json()
    assert body["outcome"] == "gated"
    assert body["payload_hash_b64u"] == payload_hash(PAYMENT)
    assert [rule["rule_id"] for rule in body["rules"]] == ["payments-500"]
    assert body["card_url"].endswith(body["request_id"])
    assert r.headers["Location"] == f"/v1/requests/{body['request_id']}"
    assert api.service.pending() == [body["request_id"]]


async def test_an_unknown_route_is_denied_by_default_with_403(api: Api) -> None:
    job_id, token = await api.start_job()
    r = await api.submit(token, job_id, "shell.exec", {"cmd": "rm -rf /"})
    assert r.status == 403
    error = await _error(r)
    assert error["code"] == "NO_MATCHING_RULE"
    assert error["decision"]["outcome"] == "denied"
    assert api.service.requests == {}


async def test_a_malformed_route_is_400_invalid_call(api: Api) -> None:
    job_id, token = await api.start_job()
    r = await api.submit(token, job_id, "not a route!", {})
    assert r.status == 400
    assert (await _error(r))["code"] == "INVALID_CALL"


async def test_parameters_without_canonical_form_are_400(api: Api) -> None:
    job_id, token = await api.start_job()
    r = await api.submit(token, job_id, "payments.transfer", {"amount_usd": 2**60})
    assert r.status == 400
    assert (await _error(r))["code"] == "CANONICALIZATION_FAILED"


async def test_submitting_without_a_token_is_401_token_missing(api: Api) -> None:
    r = await api.client.post(
        "/v1/requests", json={"job_id": "job-1", "tool_route": "payments.transfer", "params": {}}
    )
    assert r.status == 401
    assert (await _error(r))["code"] == "TOKEN_MISSING"
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="keyturn"'
    assert api.service.calls == []


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "TOKEN_MALFORMED"),
        ({"Authorization": "Bearer "}, "TOKEN_MALFORMED"),
        ({"Authorization": "Bearer a.b.c", "X-CST": "d.e.f"}, "TOKEN_AMBIGUOUS"),
        ({"X-CST": "not-a-token"}, "TOKEN_MALFORMED"),
    ],
)
async def test_bad_token_headers_are_401_with_their_reason(
    api: Api, headers: dict[str, str], code: str
) -> None:
    r = await api.client.post(
        "/v1/requests",
        json={"job_id": "job-1", "tool_route": "payments.transfer", "params": {}},
        headers=headers,
    )
    assert r.status == 401
    assert (await _error(r))["code"] == code


async def test_the_token_is_accepted_in_x_cst_too(api: Api) -> None:
    job_id, token = await api.start_job()
    r = await api.client.post(
        "/v1/requests",
        json={"job_id": job_id, "tool_route": "payments.transfer", "params": SMALL_PAYMENT},
        headers={"X-CST": token},
    )
    assert r.status == 200


async def test_a_runner_token_cannot_submit_for_another_job(api: Api) -> None:
    _job_a, token_a = await api.start_job()
    job_b, _token_b = await api.start_job()
    r = await api.submit(token_a, job_b, "payments.transfer", PAYMENT)
    assert r.status == 401
    assert (await _error(r))["code"].startswith("TOKEN_")
    assert api.service.requests == {}


# --- waiting --------------------------------------------------------------------------


async def test_a_long_poll_wakes_up_when_the_request_is_approved() -> None:
    async with running_api(long_poll_max=120.0) as api:
        _job, token, request_id = await _gated(api)

        async def approve_soon() -> None:
            while not api.service.waits:  # the poll is parked in the service
                await asyncio.sleep(0.01)
            api.service.approve(request_id)

        approver = asyncio.create_task(approve_soon())
        # Bounded so that a poll that does not wake fails the test instead of hanging it.
        async with asyncio.timeout(20):
            r = await api.client.get(
                f"/v1/requests/{request_id}?wait=120", headers={"X-CST": token}
            )
        await approver
        status = await r.json()
        assert status["state"] == "approved"
        assert status["grant"]["payload"]["payload_hash_b64u"] == payload_hash(PAYMENT)
        assert status["job_token"].count(".") == 2
        assert api.service.waits == [120.0]


async def test_the_wait_is_capped_at_the_long_poll_maximum(api: Api) -> None:
    _job, token, request_id = await _gated(api)
    api.service.deny(request_id)
    r = await api.client.get(f"/v1/requests/{request_id}?wait=30", headers={"X-CST": token})
    assert r.status == 200
    assert api.service.waits == [2.0]
    body = await r.json()
    assert body["state"] == "denied"
    assert "grant" not in body and "job_token" not in body


@pytest.mark.parametrize(
    "query", ["wait=abc", "wait=-1", "wait=nan", "wait=1e9", "wait=1&wait=2", "timeout=5"]
)
async def test_a_bad_wait_is_400_invalid_query(api: Api, query: str) -> None:
    _job, token, request_id = await _gated(api)
    r = await api.client.get(f"/v1/requests/{request_id}?{query}", headers={"X-CST": token})
    assert r.status == 400
    assert (await _error(r))["code"] == "INVALID_QUERY"
    assert api.service.waits == []


async def test_another_jobs_request_is_not_found(api: Api) -> None:
    _job, _token, request_id = await _gated(api)
    _other_job, other_token = await api.start_job()
    r = await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": other_token})
    assert r.status == 404
    assert (await _error(r))["code"] == "NOT_FOUND"


async def test_a_request_id_with_odd_characters_is_400_invalid_path(api: Api) -> None:
    _job, token = await api.start_job()
    r = await api.client.get("/v1/requests/r%20%3Cscript%3E", headers={"X-CST": token})
    assert r.status == 400
    assert (await _error(r))["code"] == "INVALID_PATH"


# --- the gate ---------------------------------------------------------------------------


async def _check(api: Api, status: dict[str, Any], params: dict[str, Any], token: str) -> Any:
    return await api.client.post(
        "/v1/gate/check",
        json={"grant": status["grant"], "tool_route": "payments.transfer", "params": params},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_the_gate_passes_the_approved_call_once(api: Api) -> None:
    request_id, status = await _approved(api)
    first = await _check(api, status, PAYMENT, status["job_token"])
    assert first.status == 200
    passed = await first.json()
    assert passed["result"] == "pass"
    assert passed["request_id"] == request_id
    again = await _check(api, status, PAYMENT, status["job_token"])
    assert again.status == 403
    assert (await _error(again))["code"] == "GRANT_ALREADY_USED"


async def test_a_changed_payload_is_refused_without_burning_the_grant(api: Api) -> None:
    _request_id, status = await _approved(api)
    tampered = {**PAYMENT, "to_account": "GB33BUKB20201555555555"}
    r = await _check(api, status, tampered, status["job_token"])
    assert r.status == 403
    assert (await _error(r))["code"] == "PAYLOAD_HASH_MISMATCH"
    assert (await _check(api, status, PAYMENT, status["job_token"])).status == 200


async def test_a_runner_token_never_passes_the_gate(api: Api) -> None:
    _job_id, token, request_id = await _gated(api)
    api.service.approve(request_id)
    r = await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": token})
    status = await r.json()
    refused = await _check(api, status, PAYMENT, token)
    assert refused.status == 403
    assert (await _error(refused))["code"] in {
        "TOKEN_SCOPE_HASH_MISMATCH",
        "RUNNER_TOKEN_CANNOT_EXECUTE",
    }
    assert api.service.ledger.used == {}


async def test_an_ungated_call_is_admitted_and_a_gated_one_is_not(api: Api) -> None:
    job_id, token = await api.start_job()
    headers = {"X-CST": token}
    small = {"job_id": job_id, "tool_route": "payments.transfer", "params": SMALL_PAYMENT}
    r = await api.client.post("/v1/gate/admit", json=small, headers=headers)
    assert r.status == 200
    assert (await r.json())["outcome"] == "allowed"
    big = {**small, "params": PAYMENT}
    r = await api.client.post("/v1/gate/admit", json=big, headers=headers)
    assert r.status == 403
    assert (await _error(r))["code"] == "APPROVAL_REQUIRED"


# --- proofs -----------------------------------------------------------------------------


async def test_a_bundle_exists_only_once_the_request_is_finished(api: Api) -> None:
    _job_id, token, request_id = await _gated(api)
    api.service.approve(request_id)
    status = await (
        await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": token})
    ).json()
    mine = {"X-CST": token}
    r = await api.client.get(f"/v1/bundles/{request_id}", headers=mine)
    assert r.status == 409
    assert (await _error(r))["code"] == "NOT_SEALED"
    assert (await _check(api, status, PAYMENT, status["job_token"])).status == 200
    r = await api.client.get(f"/v1/bundles/{request_id}", headers=mine)
    assert r.status == 200
    assert (await r.json())["request"]["request_id"] == request_id
    r = await api.client.get("/v1/bundles/r-404", headers=mine)
    assert r.status == 404
    assert (await _error(r))["code"] == "NOT_FOUND"


async def test_a_bundle_holds_exact_parameters_so_only_the_requesting_job_gets_it(
    api: Api,
) -> None:
    _job_id, token, request_id = await _gated(api)
    api.service.approve(request_id)
    status = await (
        await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": token})
    ).json()
    assert (await _check(api, status, PAYMENT, status["job_token"])).status == 200
    r = await api.client.get(f"/v1/bundles/{request_id}")
    assert r.status == 401  # no token: who is asking?
    _other_job, other_token = await api.start_job()
    r = await api.client.get(f"/v1/bundles/{request_id}", headers={"X-CST": other_token})
    assert r.status == 404  # another agent's job: as if there were no such request
    assert (await _error(r))["code"] == "NOT_FOUND"


async def test_the_checkpoint_is_a_signed_note_that_verifies(api: Api) -> None:
    await _gated(api)
    r = await api.client.get("/v1/log/checkpoint")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    checkpoint = verify_checkpoint(
        await r.text(), origin=ORIGIN, public_keys={ORIGIN: api.service.key.public_key}
    )
    assert checkpoint.size == api.service.tree.size >= 1


async def test_inclusion_and_consistency_proofs(api: Api) -> None:
    await _approved(api)
    size = api.service.tree.size
    r = await api.client.get(f"/v1/log/proof/inclusion?index=0&size={size}")
    assert r.status == 200
    assert (await r.json())["size"] == size
    r = await api.client.get("/v1/log/proof/consistency?old=1")
    assert r.status == 200
    assert (await r.json())["new"] == size
    r = await api.client.get(f"/v1/log/proof/inclusion?index={size}")
    assert r.status == 400
    assert (await _error(r))["code"] == "LOG_SIZE_OUT_OF_RANGE"
    r = await api.client.get("/v1/log/proof/inclusion?size=1")
    assert r.status == 400
    assert (await _error(r))["code"] == "INVALID_QUERY"
    r = await api.client.get("/v1/log/proof/consistency?old=-1")
    assert r.status == 400
    assert (await _error(r))["code"] == "INVALID_QUERY"


async def test_well_known_names_the_service_key(api: Api) -> None:
    r = await api.client.get("/.well-known/keyturn")
    assert r.status == 200
    assert (await r.json())["service_did"] == api.service.key.did


# --- operations -------------------------------------------------------------------------


async def test_health_and_readiness(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert (r.status, await r.json()) == (200, {"status": "ok"})
    r = await api.client.get("/readyz")
    assert r.status == 200
    assert (await r.json())["checks"] == {"database": "ok", "signer": "ok"}


async def test_not_ready_is_503_without_the_stores_details(api: Api) -> None:
    api.service.ready = False
    r = await api.client.get("/readyz")
    assert r.status == 503
    text = await r.text()
    assert "STORE_UNAVAILABLE" in text
    assert "secret" not in text and "postgresql" not in text
    api.service.ready = True
    api.service.explode_with = RuntimeError("boom")
    r = await api.client.get("/readyz")
    assert r.status == 503
    assert (await _error(r))["code"] == "NOT_READY"


async def test_an_unexpected_error_is_500_logged_and_not_leaked(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.service.explode_with = RuntimeError("/srv/keyturn/db.sqlite password=hunter2")
    with caplog.at_level(logging.INFO, logger="adapters.http"):
        r = await api.client.post("/v1/agents/challenge", json={"agent_did": AGENT_KEY.did})
    assert r.status == 500
    error = await _error(r)
    assert error["code"] == "INTERNAL_ERROR"
    assert "hunter2" not in await r.text()
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert len(logged) == 1
    assert error["request_id"] in logged[0].getMessage()


async def test_a_keyturn_error_without_an_http_meaning_is_500(api: Api) -> None:
    from core.errors import ConfigError

    api.service.explode_with = ConfigError("CONFIG_MISSING", "KEYTURN_DB_URL is not set")
    r = await api.client.get("/.well-known/keyturn")
    assert r.status == 500
    assert "KEYTURN_DB_URL" not in await r.text()


async def test_every_answer_carries_a_request_id(api: Api) -> None:
    paths = ["/healthz", "/v1/nope", "/metrics", "/openapi.json", "/v1/log/checkpoint"]
    seen = set()
    for path in paths:
        r = await api.client.get(path)
        seen.add(r.headers["X-Request-Id"])
    assert len(seen) == len(paths)
    r = await api.client.get("/healthz", headers={"X-Request-Id": "trace-1234abcd"})
    assert r.headers["X-Request-Id"] == "trace-1234abcd"
    r = await api.client.get("/healthz", headers={"X-Request-Id": "bad id\twith junk"})
    assert r.headers["X-Request-Id"] != "bad id\twith junk"


async def test_unknown_paths_and_methods_under_v1_get_json_errors(api: Api) -> None:
    r = await api.client.get("/v1/does/not/exist")
    assert r.status == 404
    assert (await _error(r))["code"] == "NOT_FOUND"
    r = await api.client.put("/v1/jobs", json={})
    assert r.status == 405
    assert (await _error(r))["code"] == "METHOD_NOT_ALLOWED"
    assert r.headers["Allow"] == "POST"


async def test_tokens_and_parameters_never_reach_the_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        job_id, token, request_id = await _gated(api)
        api.service.approve(request_id)
        r = await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": token})
        status = await r.json()
        await _check(api, status, {**PAYMENT, "memo": "x"}, status["job_token"])
        await api.submit("garbage-token", job_id, "payments.transfer", PAYMENT)
    text = caplog.text
    assert caplog.records  # refusals are logged …
    for secret in (token, status["job_token"], PAYMENT["to_account"], "garbage-token"):
        assert secret not in text  # … without tokens or parameter values


async def test_mounted_beside_other_routes_it_leaves_them_alone() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from adapters.http import Metrics, mount_agent_api
    from tests.adapters.http.fake_service import FakeAgentService

    async def slack(request: web.Request) -> web.Response:
        if request.query.get("missing"):
            raise web.HTTPNotFound(text="slack says no")
        return web.Response(text="slack ok")

    app = web.Application()
    app.router.add_post("/slack/events", slack)
    mount_agent_api(app, FakeAgentService(), long_poll_max_seconds=1.0, metrics=Metrics())
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/slack/events")
        assert (r.status, await r.text()) == (200, "slack ok")
        assert r.headers["X-Request-Id"]
        r = await client.post("/slack/events?missing=1")
        assert (r.status, await r.text()) == (404, "slack says no")
        r = await client.get("/unknown")
        assert r.status == 404 and r.content_type != "application/json"
        r = await client.get("/healthz")
        assert r.status == 200
