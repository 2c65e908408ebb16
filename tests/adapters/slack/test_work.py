"""Ack first, work later: the bounded queue behind the Slack listeners.

Signed requests go into the real Bolt app; the one decision worker is held by a gate
job, so each test sees exactly what was acknowledged, what waits, what was refused
and what ran. No timing assertions: "the ack did not wait" is shown by the ack
arriving while the work it queued cannot run.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from adapters.slack import blocks as bk
from adapters.slack.app import BUSY_FIELD
from adapters.slack.work import BUSY, FAILED, STOPPED, Job, Offer, WorkQueue
from tests.adapters.slack.conftest import (
    APPROVERS,
    Rig,
    block_action,
    eventually,
    make_rig,
    signed,
)

pytestmark = pytest.mark.asyncio


async def _nobody(_: str) -> None:
    return None


async def _hold(rig: Rig) -> asyncio.Event:
    """Occupy the decision queue's only worker until the returned event is set."""
    started, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    assert rig.surface.work.decisions.offer(Job("gate", hold, _nobody)) is Offer.QUEUED
    await started.wait()
    return release


async def _decisions(rig: Rig, request_id: str) -> int:
    return len((await rig.app.service.view(request_id)).decisions)


async def _ephemerals_to(rig: Rig, user: str) -> list[dict[str, Any]]:
    return [c for c in rig.slack.of("chat.postEphemeral") if c["user"] == user]


async def test_the_ack_does_not_wait_for_the_decision(tmp_path: Path) -> None:
    async with make_rig(tmp_path, work_concurrency=1) as rig:
        request_id = await rig.agent_request()
        release = await _hold(rig)
        response = await rig.click("UBOB", bk.APPROVE, request_id)
        # acknowledged while the only worker is still held: the ack did not wait
        assert response.status == 200
        assert rig.surface.work.decisions.depth == 1
        assert await _decisions(rig, request_id) == 0
        assert not rig.slack.of("users.info")  # nothing slow ran before the ack
        release.set()
        await rig.surface.work.join()
        assert await _decisions(rig, request_id) == 1


async def test_a_full_queue_still_acks_and_tells_the_clicker_nothing_was_recorded(
    tmp_path: Path,
) -> None:
    async with make_rig(tmp_path, work_concurrency=1, work_capacity=1) as rig:
        request_id = await rig.agent_request()
        release = await _hold(rig)
        assert (await rig.click("UBOB", bk.APPROVE, request_id)).status == 200  # waits
        assert (await rig.click("UCAROL", bk.APPROVE, request_id)).status == 200  # refused
        told = await eventually(lambda: _ephemerals_to(rig, "UCAROL"))
        assert told[0]["text"] == BUSY and told[0]["channel"] == APPROVERS
        release.set()
        await rig.surface.work.join()
        view = await rig.app.service.view(request_id)
        assert len(view.decisions) == 1 and view.request.state.value == "pending"
        # Carol clicks again once keyturn has room: counted, once
        await rig.click("UCAROL", bk.APPROVE, request_id)
        await rig.surface.work.join()
        view = await rig.app.service.view(request_id)
        assert len(view.decisions) == 2 and view.request.state.value == "approved"
        assert not await _ephemerals_to(rig, "UBOB")


async def test_a_busy_modal_submission_keeps_the_modal_open_and_records_nothing(
    tmp_path: Path,
) -> None:
    async with make_rig(tmp_path, work_concurrency=1, work_capacity=1) as rig:
        request_id = await rig.agent_request()
        release = await _hold(rig)
        await rig.click("UBOB", bk.APPROVE, request_id)  # fills the queue
        response = await rig.submit_view(
            "UDAN", bk.DENY_VIEW, request_id, bk.REASON_BLOCK, "wrong destination"
        )
        assert response.status == 200
        answer = await response.json()
        assert answer == {"response_action": "errors", "errors": {bk.REASON_BLOCK: BUSY_FIELD}}
        release.set()
        await rig.surface.work.join()
        view = await rig.app.service.view(request_id)
        assert [d.verdict.value for d in view.decisions] == ["approve"]


async def test_a_busy_slash_command_says_so_in_its_own_answer(tmp_path: Path) -> None:
    async with make_rig(tmp_path, work_concurrency=1, work_capacity=1) as rig:
        request_id = await rig.agent_request()
        release = await _hold(rig)
        await rig.click("UBOB", bk.APPROVE, request_id)  # fills the queue
        response = await rig.command("UALICE", "list")
        assert response.status == 200
        assert await response.text() == BUSY  # Slack shows it to the user, ephemerally
        release.set()
        await rig.surface.work.join()
        assert not rig.slack.webhooks  # the refused command did not run later either


async def test_a_slack_retry_of_a_waiting_click_is_folded_into_it(tmp_path: Path) -> None:
    async with make_rig(tmp_path, work_concurrency=1) as rig:
        request_id = await rig.agent_request()
        release = await _hold(rig)
        body = block_action("UBOB", bk.APPROVE, request_id, rig.webhook_url)
        await rig.post(body)
        retry = await rig.post(body, headers={**signed(body), "X-Slack-Retry-Num": "1"})
        assert retry.status == 200
        assert rig.surface.work.decisions.depth == 1  # one job for one click
        release.set()
        await rig.surface.work.join()
        assert await _decisions(rig, request_id) == 1
        assert not rig.slack.of("chat.postEphemeral")  # nobody was told "already approved"


async def test_shutdown_drains_acknowledged_clicks_and_their_card_update_waits_in_the_outbox(
    tmp_path: Path,
) -> None:
    async with make_rig(tmp_path, work_concurrency=1) as rig:
        request_id = await rig.agent_request()
        await rig.deliver()
        release = await _hold(rig)
        for user in ("UBOB", "UCAROL"):
            assert (await rig.click(user, bk.APPROVE, request_id)).status == 200
        closing = asyncio.create_task(rig.http.close())  # aiohttp shutdown → drain
        await eventually(_async(lambda: rig.surface.work.decisions.closed))
        assert rig.surface.work.decisions.offer(Job("late", _never, _nobody)) is Offer.BUSY
        release.set()
        await closing
        view = await rig.app.service.view(request_id)
        assert len(view.decisions) == 2 and view.request.state.value == "approved"
        assert not rig.slack.of("chat.postEphemeral")  # nobody was told to click again
        # the card update of the drained decisions is durable, for the next start to send
        assert await rig.worker.backlog() >= 1


def _async(check: Any) -> Any:
    async def run() -> Any:
        return check()

    return run


async def _never() -> None:
    await asyncio.Event().wait()


async def test_work_left_at_the_shutdown_deadline_is_cancelled_and_its_users_told() -> None:
    told: list[tuple[str, str]] = []

    def tell(who: str) -> Any:
        async def say(text: str) -> None:
            told.append((who, text))

        return say

    queue = WorkQueue("test", workers=1, capacity=5)
    running = asyncio.Event()

    async def stuck() -> None:
        running.set()
        await asyncio.Event().wait()

    assert queue.offer(Job("stuck", stuck, tell("alice"))) is Offer.QUEUED
    assert queue.offer(Job("waiting", _never, tell("bob"))) is Offer.QUEUED
    await running.wait()
    left = await queue.close(deadline_seconds=0.05)
    assert sorted(j.name for j in left) == ["stuck", "waiting"]
    assert sorted(told) == [("alice", STOPPED), ("bob", STOPPED)]
    assert queue.offer(Job("after", _never, tell("carol"))) is Offer.BUSY


async def test_a_job_that_crashes_is_logged_its_user_told_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[str] = []
    ran: list[str] = []

    async def say(text: str) -> None:
        told.append(text)

    async def crash() -> None:
        raise RuntimeError("a bug")

    async def fine() -> None:
        ran.append("fine")

    queue = WorkQueue("test", workers=1, capacity=5)
    with caplog.at_level(logging.ERROR, logger="adapters.slack.work"):
        queue.offer(Job("crash", crash, say))
        queue.offer(Job("fine", fine, say))
        await queue.join()
    assert told == [FAILED] and ran == ["fine"]
    assert "crash failed" in caplog.text
    assert await queue.close(deadline_seconds=1) == []


async def test_queue_refuses_nonsense_sizes() -> None:
    with pytest.raises(ValueError):
        WorkQueue("x", workers=0)
    with pytest.raises(ValueError):
        WorkQueue("x", capacity=0)


async def test_work_waits_for_the_acks_of_a_storm_but_never_past_its_deferral_bound() -> None:
    loop = asyncio.get_running_loop()
    queue = WorkQueue("storm", workers=1, quiet_seconds=0.05, max_defer_seconds=0.3)
    started: dict[str, float] = {}

    def job(name: str) -> Job:
        async def run() -> None:
            started[name] = loop.time()

        async def tell(_: str) -> None:
            return None

        return Job(name, run, tell)

    t0 = loop.time()
    queue.offer(job("first"))
    await asyncio.sleep(0.02)
    queue.offer(job("second"))  # still arriving: nothing starts yet
    await asyncio.sleep(0.02)
    assert started == {}
    await queue.join()
    # Started only once offers had paused for quiet_seconds.
    assert started["first"] - t0 >= 0.02 + 0.05 - 0.005
    # A steady stream of offers cannot hold a job back past max_defer_seconds.
    started.clear()
    t1 = loop.time()
    queue.offer(job("steady-0"))
    for n in range(1, 40):
        await asyncio.sleep(0.01)
        queue.offer(job(f"steady-{n}"))
        if "steady-0" in started:
            break
    assert "steady-0" in started and started["steady-0"] - t1 < 0.3 + 0.05
    await queue.close(deadline_seconds=5)
