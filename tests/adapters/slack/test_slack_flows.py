"""Signed requests into the real Bolt app, the real service behind it, Slack's Web API
replaced by a local stand-in."""

from __future__ import annotations

import time
from typing import Any

import pytest

from adapters.slack import blocks as bk
from adapters.slack.commands import USAGE
from tests.adapters.slack.conftest import APPROVERS, SECURITY, Rig, eventually, signed

pytestmark = pytest.mark.asyncio


async def decisions(rig: Rig, request_id: str) -> int:
    return len((await rig.app.service.view(request_id)).decisions)


async def test_two_eligible_approvers_update_the_card_mint_a_grant_and_feed_the_log(
    rig: Rig,
) -> None:
    request_id = await rig.agent_request()
    await rig.deliver()
    posted = [c for c in rig.slack.of("chat.postMessage") if c["channel"] == APPROVERS]
    assert len(posted) == 1
    action_ids = [
        e["action_id"] for b in posted[0]["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert action_ids == [bk.APPROVE, bk.DENY, bk.SHOW_PAYLOAD]

    for user in ("UBOB", "UCAROL"):
        response = await rig.click(user, bk.APPROVE, request_id)
        assert response.status == 200
        expected = 1 if user == "UBOB" else 2
        await eventually(lambda e=expected: _has(rig, request_id, e))

    view = await rig.app.service.view(request_id)
    assert view.request.state.value == "approved"
    assert view.grant is not None

    async def card_updated() -> list[dict[str, Any]]:
        # The card update is queued after the decision commits: deliver until it is sent.
        await rig.deliver()
        return list(rig.slack.of("chat.update"))

    updates = await eventually(card_updated)
    assert updates, "the card was not updated in place"
    last = updates[-1]
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        refs = await uow.messages.for_request(request_id, platform="slack")
    assert [(r.channel, r.message_id) for r in refs] == [(last["channel"], last["ts"])]
    text = str(last["blocks"])
    assert "Approved by Bob Li and Carol Diaz" in text
    assert not [b for b in last["blocks"] if b["type"] == "actions"]  # no buttons once final
    feed = "\n".join(
        c["text"] for c in rig.slack.of("chat.postMessage") if c["channel"] == SECURITY
    )
    assert "approve" in feed and "grant" in feed and request_id[:11] in feed
    assert not rig.slack.of("chat.postEphemeral")


async def _has(rig: Rig, request_id: str, count: int) -> bool:
    return await decisions(rig, request_id) >= count


async def test_card_is_updated_not_reposted_and_storm_is_coalesced(rig: Rig) -> None:
    request_id = await rig.agent_request()
    await rig.deliver()
    await rig.click("UBOB", bk.APPROVE, request_id)
    await eventually(lambda: _has(rig, request_id, 1))
    for _ in range(5):  # five more card changes queued before the worker runs
        await rig.surface.publisher(_request_event(request_id))
    await rig.deliver()
    cards = [c for c in rig.slack.of("chat.postMessage") if c["channel"] == APPROVERS]
    assert len(cards) == 1
    assert len(rig.slack.of("chat.update")) == 1


def _request_event(request_id: str) -> object:
    from bot.service.runtime import Event

    return Event("request", request_id, {})


async def test_requester_and_outsider_are_refused_ephemerally_and_nothing_is_recorded(
    rig: Rig,
) -> None:
    answer = await rig.command(
        "UALICE",
        "entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
        'principal=alice@corp.example role="Privileged Role Administrator" '
        '--for 30m --reason "INC-4411 mailbox compromise" --ticket INC-4411',
    )
    assert answer.status == 200
    hook = await eventually(lambda: _webhook(rig))
    assert "waiting for approval" in hook["text"], hook
    request_id = hook["text"].split("request ", 1)[1].split(" ", 1)[0]
    await rig.deliver()
    card = next(c for c in rig.slack.of("chat.postMessage") if c["channel"] == APPROVERS)
    assert "BREAK-GLASS" in str(card["blocks"])
    # break-glass is critical: Approve opens the type-the-last-4 modal
    await rig.click("UALICE", bk.APPROVE_TYPED, request_id)
    opened = await eventually(lambda: _calls(rig, "views.open"))
    assert opened[0]["view"]["callback_id"] == bk.CONFIRM_VIEW
    last4 = (await rig.app.service.view(request_id)).card.payload_hash_short
    await rig.submit_view("UALICE", bk.CONFIRM_VIEW, request_id, bk.LAST4_BLOCK, last4)
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert refusal[0]["user"] == "UALICE"
    assert "requested" in refusal[0]["text"].lower()
    assert await decisions(rig, request_id) == 0

    other = await rig.agent_request()
    await rig.click("UMALLORY", bk.APPROVE, other)
    refusals = await eventually(lambda: _calls(rig, "chat.postEphemeral", 2))
    assert refusals[1]["user"] == "UMALLORY"
    assert await decisions(rig, other) == 0


async def _webhook(rig: Rig, n: int = 1) -> dict[str, str] | None:
    return rig.slack.webhooks[n - 1] if len(rig.slack.webhooks) >= n else None


async def _calls(rig: Rig, method: str, n: int = 1) -> list[dict[str, object]] | None:
    found = rig.slack.of(method)
    return found if len(found) >= n else None


async def test_breakglass_token_goes_to_the_requester_only(rig: Rig) -> None:
    await rig.command(
        "UALICE",
        "entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
        'principal=alice@corp.example role="Privileged Role Administrator" '
        '--for 30m --reason "INC-4411"',
    )
    hook = await eventually(lambda: _webhook(rig))
    request_id = hook["text"].split("request ", 1)[1].split(" ", 1)[0]
    last4 = (await rig.app.service.view(request_id)).card.payload_hash_short
    for n, user in enumerate(("UBOB", "UCAROL"), start=1):
        await rig.submit_view(user, bk.CONFIRM_VIEW, request_id, bk.LAST4_BLOCK, last4)
        await eventually(lambda n=n: _has(rig, request_id, n))
    assert (await rig.app.service.view(request_id)).request.state.value == "approved"
    await rig.command("UBOB", f"token {request_id}")
    refused = await eventually(lambda: _webhook(rig, 2))
    assert "only the person who asked" in refused["text"]
    await rig.command("UALICE", f"token {request_id}")
    given = await eventually(lambda: _webhook(rig, 3))
    assert "shown only to you" in given["text"] and "```" in given["text"]
    await rig.deliver()
    dms = [c for c in rig.slack.of("chat.postMessage") if c["channel"] == "UALICE"]
    assert dms and "/breakglass token" in dms[0]["text"]
    assert not any("```ey" in str(c.args) for c in rig.slack.calls)  # no token in any message


@pytest.mark.parametrize("how", ["unsigned", "stale", "wrong_secret"])
async def test_unverified_requests_are_refused_and_nothing_is_recorded(rig: Rig, how: str) -> None:
    from tests.adapters.slack.conftest import block_action

    request_id = await rig.agent_request()
    body = block_action("UBOB", bk.APPROVE, request_id, rig.webhook_url)
    headers = {
        "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
        "stale": signed(body, timestamp=int(time.time()) - 301),
        "wrong_secret": signed(body, secret="not-the-secret"),
    }[how]
    response = await rig.post(body, headers=headers)
    assert response.status == 401
    assert await decisions(rig, request_id) == 0
    assert not rig.slack.of("users.info")


async def test_the_same_approver_clicking_twice_counts_once(rig: Rig) -> None:
    request_id = await rig.agent_request()
    await rig.click("UBOB", bk.APPROVE, request_id)
    await eventually(lambda: _has(rig, request_id, 1))
    await rig.click("UBOB", bk.APPROVE, request_id)
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert "already" in str(refusal[0]["text"]).lower()
    # a Slack retry of a counted click is a silent no-op
    from tests.adapters.slack.conftest import block_action

    body = block_action("UBOB", bk.APPROVE, request_id, rig.webhook_url)
    retry = await rig.post(body, headers={**signed(body), "X-Slack-Retry-Num": "1"})
    assert retry.status == 200
    await rig.surface.work.join()  # the retry has been worked on
    assert len(rig.slack.of("chat.postEphemeral")) == 1  # the retry told nobody anything
    view = await rig.app.service.view(request_id)
    assert len(view.decisions) == 1 and view.request.state.value == "pending"
    # three clicks by one person inside the identity cache's lifetime: one profile lookup
    assert len(rig.slack.of("users.info")) == 1


async def test_deny_asks_for_a_reason_and_records_it(rig: Rig) -> None:
    request_id = await rig.agent_request()
    await rig.click("UDAN", bk.DENY, request_id)
    opened = await eventually(lambda: _calls(rig, "views.open"))
    assert opened[0]["view"]["callback_id"] == bk.DENY_VIEW
    empty = await rig.submit_view("UDAN", bk.DENY_VIEW, request_id, bk.REASON_BLOCK, "  ")
    assert (await empty.json())["response_action"] == "errors"
    assert await decisions(rig, request_id) == 0
    await rig.submit_view("UDAN", bk.DENY_VIEW, request_id, bk.REASON_BLOCK, "wrong bucket")
    await eventually(lambda: _has(rig, request_id, 1))
    view = await rig.app.service.view(request_id)
    assert view.request.state.value == "denied"
    assert view.card.status_line == '❌ Denied by Dan Ortiz: "wrong bucket"'


async def test_rate_limited_post_is_delivered_after_retry_after_in_order(rig: Rig) -> None:
    rig.slack.rate_limit_next("chat.postMessage", retry_after=30, channel=APPROVERS)
    first = await rig.agent_request()
    second = await rig.agent_request()
    await rig.deliver()
    assert [c for c in rig.slack.of("chat.postMessage") if c["channel"] == APPROVERS] == []
    assert rig.slack.of("chat.postMessage#429")
    assert await rig.worker.backlog() > 0
    rig.clock.advance(29)
    await rig.deliver()
    assert [c for c in rig.slack.of("chat.postMessage") if c["channel"] == APPROVERS] == []
    rig.clock.advance(1)
    await rig.deliver()
    cards = [c for c in rig.slack.of("chat.postMessage") if c["channel"] == APPROVERS]
    assert [first in c["text"] or second in c["text"] for c in cards] == [True, True]
    assert first in cards[0]["text"] and second in cards[1]["text"]
    assert await rig.worker.backlog() == 0


async def test_breakglass_with_bad_arguments_answers_with_the_usage_line(rig: Rig) -> None:
    response = await rig.command("UALICE", "entra.role.assign principal=alice@corp.example --for")
    assert response.status == 200
    text = await response.text()
    assert "--for needs a value" in text and USAGE in text
    too_long = await rig.command(
        "UALICE",
        "entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
        'principal=alice@corp.example role="Privileged Role Administrator" '
        '--for 2h --reason "x"',
    )
    assert too_long.status == 200
    hook = await eventually(lambda: _webhook(rig))
    assert hook["text"] == f"--for 120m is longer than this route allows (30m max)\n{USAGE}"


async def test_the_app_refuses_to_start_without_a_signing_secret(rig: Rig) -> None:
    from pydantic import SecretStr, ValidationError

    from adapters.slack import SlackSettings, build_slack_app
    from core.errors import ConfigError

    with pytest.raises(ValidationError):
        SlackSettings(
            bot_token=SecretStr("xoxb-test"),
            signing_secret=SecretStr(""),
            approvers_channel="C1",
            security_channel="C2",
            workspace_id="T1",
        )
    unchecked = SlackSettings.model_construct(
        bot_token=SecretStr("xoxb-test"),
        signing_secret=SecretStr("  "),
        approvers_channel="C1",
        security_channel="C2",
        workspace_id="T1",
    )
    with pytest.raises(ConfigError) as refused:
        build_slack_app(rig.app.service, settings=unchecked)
    assert refused.value.reason_code == "CONFIG_MISSING"
    assert SECRET_SHOWN not in repr(unchecked)


SECRET_SHOWN = "xoxb-test"


async def test_other_workspaces_are_refused(rig: Rig) -> None:
    import json as _json
    from urllib.parse import quote, unquote

    from tests.adapters.slack.conftest import block_action

    request_id = await rig.agent_request()
    body = block_action("UBOB", bk.APPROVE, request_id, rig.webhook_url)
    payload = _json.loads(unquote(body[len("payload=") :]))
    payload["team"]["id"] = "TOTHER"
    payload["user"]["team_id"] = "TOTHER"
    other = "payload=" + quote(_json.dumps(payload))
    assert (await rig.post(other)).status == 200
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert "workspace" in str(refusal[0]["text"])
    assert await decisions(rig, request_id) == 0


async def test_keyturn_starts_while_slack_cannot_be_reached_and_bolt_stays_lazy(
    rig: Rig,
) -> None:
    # auth.test at start-up is an optimisation: a network outage towards Slack must
    # not stop keyturn (the web console, Teams, the agent API) from starting.
    import socket

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from slack_sdk.web.async_client import AsyncWebClient

    from adapters.slack import mount_slack
    from adapters.slack.mount import warm_authorization
    from tests.adapters.slack.conftest import slack_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    client = AsyncWebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{closed}/api/")
    web_app = web.Application()
    surface = mount_slack(
        web_app,
        rig.app.service,
        settings=slack_settings(),
        client=client,
    )
    assert await warm_authorization(surface.app) is False
    http = TestClient(TestServer(web_app))
    await http.start_server()  # raised ClientConnectorError from the start-up hook
    try:
        body = "ssl_check=1&token=unused"
        assert (await http.post("/slack/events", data=body, headers=signed(body))).status == 200
    finally:
        await http.close()
