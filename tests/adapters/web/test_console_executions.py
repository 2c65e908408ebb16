"""The console with keyturn's executors configured: the executor's state on the request
page, a failed rollback as an alert on the inbox and the page, and the resolve form that
only an eligible approver other than the requester can use (the service decides)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from core.executor import ExecutionState
from tests.adapters.web.conftest import Running, Visitor, serve_console
from tests.bot.test_executors_wiring import (
    Receiver,
    approve,
    settled,
    start,
    write_config,
)
from tests.bot.test_executors_wiring import (
    receiver as receiver,  # the fixture
)

pytestmark = pytest.mark.asyncio
ALERT_TITLE = "Executions that need a person (1)"


@pytest_asyncio.fixture
async def console(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Running]:
    app = await start(write_config(tmp_path / "data", receiver), receiver)
    running, runner = await serve_console(app)
    try:
        yield running
    finally:
        await runner.cleanup()
        await app.close()


async def state(running: Running, request_id: str) -> ExecutionState:
    assert running.app.executions is not None
    return (await running.app.executions.status(request_id)).state


async def test_a_failed_rollback_is_an_alert_until_an_eligible_approver_resolves_it(
    console: Running,
    receiver: Receiver,
) -> None:
    request_id = await approve(console.app)
    await settled(console.app)
    alice, carol, dan = Visitor(console.url), Visitor(console.url), Visitor(console.url)
    try:
        await alice.sign_in("alice")
        _, page = await alice.get(f"/requests/{request_id}")
        assert "Executed by keyturn" in page and '<strong class="execution-state">verified' in page
        assert "<code>execute</code> ✓" in page and "<code>verify</code> ✓" in page
        assert ALERT_TITLE not in (await alice.get("/"))[1]

        receiver.script["rollback"] = [403]
        await carol.sign_in("carol")
        await carol.get(f"/requests/{request_id}")
        status, _ = await carol.post(f"/requests/{request_id}/revoke", {"reason": "contained"})
        assert status == 200
        assert await state(console, request_id) is ExecutionState.ROLLBACK_FAILED

        # Loud everywhere: the inbox and the request page, for everyone.
        _, inbox = await alice.get("/")
        assert ALERT_TITLE in inbox and f'href="/requests/{request_id}"' in inbox
        _, page = await alice.get(f"/requests/{request_id}")
        assert 'class="execution alert" role="alert"' in page
        assert "the change may still be in place" in page
        # The requester gets no resolve form; the service would refuse her anyway.
        assert f'action="/requests/{request_id}/resolve"' not in page
        assert "An eligible approver other than you must resolve it." in page

        # Someone who is not an approver of this request is refused; nothing changes.
        await dan.sign_in("dan")
        await dan.get(f"/requests/{request_id}")
        status, page = await dan.post(f"/requests/{request_id}/resolve", {"note": "fixed"})
        assert status == 409 and "NOT_ALLOWED_TO_RESOLVE" in page
        assert await state(console, request_id) is ExecutionState.ROLLBACK_FAILED

        # A form without its CSRF token does nothing.
        status, _ = await carol.post(
            f"/requests/{request_id}/resolve", {"note": "fixed"}, csrf=False
        )
        assert status == 403
        assert await state(console, request_id) is ExecutionState.ROLLBACK_FAILED

        _, page = await carol.get(f"/requests/{request_id}")
        assert f'action="/requests/{request_id}/resolve"' in page
        status, page = await carol.post(f"/requests/{request_id}/resolve", {"note": "  "})
        assert status == 400 and "NOTE_REQUIRED" in page
        status, page = await carol.post(
            f"/requests/{request_id}/resolve", {"note": "revoked the grant by hand <b>now</b>"}
        )
        assert status == 200 and "your note is receipted" in page
        assert '<strong class="execution-state">resolved' in page
        assert "revoked the grant by hand &lt;b&gt;now&lt;/b&gt;" in page  # escaped
        assert await state(console, request_id) is ExecutionState.RESOLVED
        assert ALERT_TITLE not in (await alice.get("/"))[1]
    finally:
        for visitor in (alice, carol, dan):
            await visitor.close()
