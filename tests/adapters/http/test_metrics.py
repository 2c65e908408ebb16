"""/metrics exposes what operators alert on, from a registry private to the app."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http import Metrics
from tests.adapters.http.harness import PAYMENT, SMALL_PAYMENT, Api


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.asyncio
async def test_metrics_count_outcomes_gate_denials_and_traffic(api: Api) -> None:
    job_id, token = await api.start_job()
    await api.submit(token, job_id, "payments.transfer", SMALL_PAYMENT)
    r = await api.submit(token, job_id, "payments.transfer", PAYMENT)
    request_id = (await r.json())["request_id"]
    await api.submit(token, job_id, "shell.exec", {})
    api.service.approve(request_id)
    status = await (
        await api.client.get(f"/v1/requests/{request_id}", headers={"X-CST": token})
    ).json()
    for params in ({**PAYMENT, "memo": "changed"}, PAYMENT, PAYMENT):
        await api.client.post(
            "/v1/gate/check",
            json={"grant": status["grant"], "tool_route": "payments.transfer", "params": params},
            headers={"X-CST": status["job_token"]},
        )
    api.metrics.observe_decision_latency(42.0)
    api.metrics.feed_failure("slack")
    api.metrics.set_outbox_backlog(3)
    api.metrics.observe_state("approved")

    r = await api.client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = _samples(await r.text())
    for outcome in ("allowed", "gated", "denied"):
        assert samples[("keyturn_requests_submitted_total", (("outcome", outcome),))] == 1
    assert samples[("keyturn_gate_checks_total", (("result", "pass"),))] == 1
    assert samples[("keyturn_gate_checks_total", (("result", "denied"),))] == 2
    denials = "keyturn_gate_denials_total"
    assert samples[(denials, (("reason", "PAYLOAD_HASH_MISMATCH"),))] == 1
    assert samples[(denials, (("reason", "GRANT_ALREADY_USED"),))] == 1
    assert samples[("keyturn_decision_latency_seconds_count", ())] == 1
    assert samples[("keyturn_feed_delivery_failures_total", (("platform", "slack"),))] == 1
    assert samples[("keyturn_outbox_backlog", ())] == 3
    assert samples[("keyturn_request_transitions_total", (("state", "approved"),))] == 1
    submit_201 = (
        "keyturn_http_requests_total",
        (("method", "POST"), ("route", "/v1/jobs"), ("status", "201")),
    )
    assert samples[submit_201] == 1


@pytest.mark.asyncio
async def test_request_ids_in_paths_do_not_become_metric_labels(api: Api) -> None:
    for n in range(3):
        await api.client.get(f"/v1/bundles/r-{n}")
    text = await (await api.client.get("/metrics")).text()
    assert "r-1" not in text
    assert 'route="/v1/bundles/{request_id}"' in text


def test_label_values_outside_the_known_sets_are_folded() -> None:
    metrics = Metrics()
    metrics.observe_gate("denied", "not a code; drop table")
    metrics.observe_submit("maybe")
    metrics.feed_failure("Slack Workspace #1")
    samples = _samples(metrics.exposition().decode())
    assert samples[("keyturn_gate_denials_total", (("reason", "OTHER"),))] == 1
    assert samples[("keyturn_requests_submitted_total", (("outcome", "other"),))] == 1
    assert samples[("keyturn_feed_delivery_failures_total", (("platform", "other"),))] == 1


def test_two_apps_in_one_process_keep_separate_counts() -> None:
    first, second = Metrics(), Metrics()
    first.feed_failure("teams")
    assert 'keyturn_feed_delivery_failures_total{platform="teams"} 1.0' in (
        first.exposition().decode()
    )
    assert 'platform="teams"' not in second.exposition().decode()
