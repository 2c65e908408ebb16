"""What a job did so far, as the policy asks it: its routes, and its latest approved plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.store import SqlStore

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)
AGENT = "did:key:z6MkAgent"


async def test_a_long_job_reports_each_route_once_and_its_latest_gated_plan(
    store: SqlStore,
) -> None:
    async with store.unit_of_work() as uow:
        await uow.agents.add(AGENT, name="agent", at=NOW, by="test")
        await uow.jobs.add("job-1", agent_did=AGENT, policy_hash="hash-1", at=NOW)
        await uow.jobs.add("job-2", agent_did=AGENT, policy_hash="hash-1", at=NOW)
        assert await uow.jobs.routes("job-1") == frozenset()
        assert await uow.jobs.last_gated_plan("job-1") is None
        steps = [
            ("crm.search", None, False),
            ("payments.simulate", "plan-a", True),
            ("crm.search", None, False),
            ("payments.simulate", "plan-b", True),
            ("payments.transfer", None, True),  # gated without a plan: not a plan
            ("crm.search", "plan-c", False),  # a plan on an ungated step: not approved
        ]
        for n, (route, plan, gated) in enumerate(steps * 50):
            at = NOW + timedelta(seconds=n)
            await uow.jobs.add_step("job-1", route=route, plan_hash=plan, gated=gated, at=at)
        await uow.jobs.add_step("job-2", route="mail.send", plan_hash="plan-z", gated=True, at=NOW)
        await uow.commit()
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.jobs.routes("job-1") == {
            "crm.search",
            "payments.simulate",
            "payments.transfer",
        }
        assert await uow.jobs.last_gated_plan("job-1") == "plan-b"
        assert await uow.jobs.routes("job-2") == {"mail.send"}
        assert await uow.jobs.last_gated_plan("job-2") == "plan-z"
