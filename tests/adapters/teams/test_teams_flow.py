"""Teams end to end: real CloudAdapter, real JWT validation against locally issued keys,
the real service on SQLite, and a connector stand-in that records what Teams would see."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from adapters.signer import FileSigner
from adapters.teams import cards
from adapters.teams.outbound import NOT_INSTALLED_SECONDS
from adapters.teams.settings import ConversationTarget
from bot import demo
from core.identity import IdentityKind, IdentityRef
from core.quorum import Verdict
from tests.adapters.teams.conftest import AAD, APPROVERS_CHANNEL, FEED_CHANNEL, Rig
from tests.adapters.teams.standin import APP_ID, OUTBOUND_TOKEN, TENANT

pytestmark = pytest.mark.asyncio
PAYMENT = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": "Invoice 2026-118"}


async def gated_payment(rig: Rig) -> Any:
    agent = FileSigner.load(rig.app.settings.data_dir / "keys" / "demo-agent.pem").key
    job = await demo._start_job(rig.kt, agent)
    submitted = await rig.kt.submit(
        cst=job.runner_token, job_id=job.job_id, tool_route="payments.transfer", params=PAYMENT
    )
    assert submitted.outcome == "gated"
    return submitted


def card_text(card: dict[str, Any]) -> str:
    """Every text of a card (TextRuns and TextBlocks), for assertions."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("TextRun", "TextBlock"):
                out.append(str(node.get("text")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return "\n".join(out)


def verbs(card: dict[str, Any]) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                found.add(node["verb"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card.get("actions", []))
    return found


async def decisions(rig: Rig, request_id: str) -> list[Any]:
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        return list(await uow.decisions.for_request(request_id))


async def test_two_eligible_approvers_in_teams_mint_a_grant_and_every_copy_is_updated(
    rig: Rig,
) -> None:
    submitted = await gated_payment(rig)
    rid, digest = submitted.request_id, submitted.payload_hash_b64u
    await rig.drain()
    posts = [c for c in rig.connector.calls if c.path == "/v3/conversations"]
    assert len(posts) == 1 and posts[0].body["channelData"]["channel"]["id"] == APPROVERS_CHANNEL
    assert posts[0].authorization == f"Bearer {OUTBOUND_TOKEN}"
    posted = posts[0].body["activity"]["attachments"][0]["content"]
    assert posted["version"] == "1.5"
    assert digest in card_text(posted)  # the FULL payload hash, never shortened
    assert verbs(posted) == {"approve", "deny"}
    assert posted["refresh"]["userIds"] == ["29:bob", "29:carol", "29:dan"]

    answer = await rig.post(rig.click("bob", rid, "approve", confirm=digest[-4:]))
    assert answer.status == 200
    body = await answer.json()
    assert body["type"] == cards.CONTENT_TYPE
    assert "Your approval was recorded (1 of 2)" in card_text(body["value"])
    assert "Bob Li" in card_text(body["value"])

    answer = await rig.post(rig.click("carol", rid, "approve", confirm=digest[-4:]))
    assert answer.status == 200
    final = (await answer.json())["value"]
    view = await rig.kt.view(rid)
    assert view.request.state.value == "approved" and view.grant is not None
    assert "✅ Approved by Bob Li and Carol Diaz" in card_text(final)
    assert verbs(final) == set()  # buttons replaced by the status line

    await rig.drain()
    updates = [c for c in rig.connector.calls if c.method == "PUT"]
    assert updates, "the posted card was not updated"
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        (ref,) = [r for r in await uow.messages.for_request(rid) if r.kind == "card"]
    assert updates[-1].path == f"/v3/conversations/{ref.channel}/activities/{ref.message_id}"
    assert "✅ Approved by Bob Li and Carol Diaz" in card_text(updates[-1].body)
    feed = [
        card_text(c.body)
        for c in rig.connector.calls
        if c.method == "POST" and FEED_CHANNEL in c.path
    ]
    assert any(" approve " in line and "Bob Li" in line for line in feed)
    assert any(" grant " in line for line in feed)


async def test_the_requester_clicking_approve_is_refused_and_nothing_is_recorded(rig: Rig) -> None:
    answer = await rig.post(
        rig.message(
            "alice",
            "breakglass entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
            'principal=alice@corp.example role="Privileged Role Administrator" '
            'for 10m reason "INC-4411 mailbox compromise" ticket INC-4411',
        )
    )
    assert answer.status == 201
    replies = [c for c in rig.connector.calls if "/activities" in c.path]
    assert replies and "Break-glass requested" in card_text(replies[-1].body)
    pending = [v for v in await rig.kt.list_requests() if v.card.breakglass]
    assert len(pending) == 1
    view = pending[0]
    rid = view.request.request_id

    answer = await rig.post(
        rig.click("alice", rid, "approve", confirm=view.card.payload_hash_short)
    )
    assert answer.status == 200
    text = card_text((await answer.json())["value"])
    assert "You requested this" in text or "requester" in text.lower()
    assert await decisions(rig, rid) == []
    assert (await rig.kt.view(rid)).request.state.value == "pending"


async def test_an_outsider_is_told_why_and_nothing_changes(rig: Rig) -> None:
    submitted = await gated_payment(rig)
    answer = await rig.post(
        rig.click(
            "mallory", submitted.request_id, "approve", confirm=submitted.payload_hash_b64u[-4:]
        )
    )
    assert answer.status == 200
    body = (await answer.json())["value"]
    assert body["body"][0]["style"] == "warning"
    assert await decisions(rig, submitted.request_id) == []


async def test_an_automatic_refresh_never_decides(rig: Rig) -> None:
    submitted = await gated_payment(rig)
    answer = await rig.post(
        rig.click(
            "bob",
            submitted.request_id,
            "approve",
            confirm=submitted.payload_hash_b64u[-4:],
            trigger="automatic",
        )
    )
    assert answer.status == 200
    assert await decisions(rig, submitted.request_id) == []


async def test_deny_without_a_reason_is_refused_and_with_one_ends_the_request(rig: Rig) -> None:
    submitted = await gated_payment(rig)
    rid = submitted.request_id
    answer = await rig.post(rig.click("bob", rid, "deny", reason="  "))
    assert "reason" in card_text((await answer.json())["value"]).lower()
    assert await decisions(rig, rid) == []
    answer = await rig.post(rig.click("bob", rid, "deny", reason="wrong beneficiary"))
    assert '❌ Denied by Bob Li: "wrong beneficiary"' in card_text((await answer.json())["value"])
    await rig.drain()
    updates = [c for c in rig.connector.calls if c.method == "PUT"]
    assert updates and "❌ Denied by Bob Li" in card_text(updates[-1].body)
    # An agent asked: it learns the outcome by long-poll; no 1:1 chat to a DID.
    assert not [c for c in rig.connector.calls if c.body.get("isGroup") is False]


@pytest.mark.parametrize(
    "problem",
    [
        "forged",
        "expired",
        "wrong_audience",
        "unknown_kid",
        "garbage",
        "missing",
        "wrong_serviceurl",
    ],
)
async def test_bad_tokens_are_401_and_nothing_is_recorded(rig: Rig, problem: str) -> None:
    submitted = await gated_payment(rig)
    rig.connector.calls.clear()
    import time

    tokens: dict[str, str | None] = {
        "forged": rig.issuer.token(rig.service_url, key=rig.issuer.other),
        "expired": rig.issuer.token(
            rig.service_url, exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200
        ),
        "wrong_audience": rig.issuer.token(rig.service_url, aud="someone-else"),
        "unknown_kid": rig.issuer.token(rig.service_url, kid="not-a-known-kid"),
        "garbage": "not.a.jwt",
        "missing": None,
        "wrong_serviceurl": rig.issuer.token("https://evil.example/"),
    }
    click = rig.click(
        "bob", submitted.request_id, "approve", confirm=submitted.payload_hash_b64u[-4:]
    )
    answer = await rig.post(click, token=tokens[problem])
    assert answer.status == 401
    assert await decisions(rig, submitted.request_id) == []
    assert rig.connector.calls == []


async def test_another_tenant_is_refused_and_nothing_is_recorded(rig: Rig) -> None:
    submitted = await gated_payment(rig)
    click = rig.click(
        "bob", submitted.request_id, "approve", confirm=submitted.payload_hash_b64u[-4:]
    )
    click["conversation"]["tenantId"] = "00000000-0000-4000-8000-0000000000ff"
    click["channelData"]["tenant"]["id"] = "00000000-0000-4000-8000-0000000000ff"
    answer = await rig.post(click)
    assert answer.status == 403
    assert await decisions(rig, submitted.request_id) == []


async def test_the_same_person_in_slack_and_teams_counts_once(rig: Rig) -> None:
    submitted = await gated_payment(rig)
    rid, last4 = submitted.request_id, submitted.payload_hash_b64u[-4:]
    slack_like = await rig.kt.decide(
        rid,
        IdentityRef(IdentityKind.EMAIL, "bob@corp.example"),
        Verdict.APPROVE,
        platform="slack",
        typed_confirmation=last4,
    )
    assert slack_like.approvals == 1
    answer = await rig.post(rig.click("bob", rid, "approve", confirm=last4))
    assert answer.status == 200
    text = card_text((await answer.json())["value"])
    assert "already" in text.lower()
    assert len(await decisions(rig, rid)) == 1
    assert (await rig.kt.view(rid)).request.state.value == "pending"


async def queued(rig: Rig, channel: str) -> list[Any]:
    """The unsent outbox rows of one Teams channel, oldest first."""
    async with rig.app.store.unit_of_work() as uow:
        items = await uow.outbox.claim_due(
            now=rig.kt.rt.clock.now() + timedelta(days=1), limit=1000, lease_seconds=1
        )
        await uow.rollback()
    return [i for i in items if i.channel_key == f"teams:{channel}"]


async def test_a_throttled_connector_delivers_later_in_order_and_drops_nothing(rig: Rig) -> None:
    submitted = await gated_payment(rig)
    rid = submitted.request_id
    await rig.kt.decide(
        rid,
        IdentityRef(IdentityKind.OBJECT_ID, AAD["bob"]),
        Verdict.APPROVE,
        platform="teams",
        typed_confirmation=submitted.payload_hash_b64u[-4:],
    )
    feed_rows = await queued(rig, FEED_CHANNEL)
    indexes = [row.payload["receipt"]["index"] for row in feed_rows]
    assert len(indexes) >= 2 and all(row.kind == "feed" for row in feed_rows)
    backlog = await rig.worker.backlog()

    rig.connector.throttle = 2  # the first send of each channel gets 429, Retry-After: 2
    assert await rig.drain() == 0
    assert rig.connector.calls == [] and rig.connector.throttle == 0
    assert await rig.worker.backlog() == backlog  # nothing dropped

    rig.advance(1)  # still inside Retry-After: the worker holds the channels back
    assert await rig.drain() == 0
    assert rig.connector.calls == []

    rig.advance(2)
    assert await rig.drain() > 0
    assert await rig.worker.backlog() == 0
    card_calls = [
        c for c in rig.connector.calls if APPROVERS_CHANNEL in str(c.body) or c.method == "PUT"
    ]
    assert [c.method for c in card_calls] == ["POST", "PUT"]  # post, then its update
    assert "1 of 2" in card_text(card_calls[-1].body)
    feed = [c for c in rig.connector.calls if FEED_CHANNEL in c.path]
    assert len(feed) == 1  # every receipt folded into one message, in log order
    text = card_text(feed[0].body)
    positions = [text.index(f"#{i} ") for i in indexes]
    assert positions == sorted(positions)


async def test_feed_receipts_are_folded_into_one_message(rig: Rig) -> None:
    submitted = await gated_payment(rig)
    for who in ("bob", "carol"):
        await rig.kt.decide(
            submitted.request_id,
            IdentityRef(IdentityKind.OBJECT_ID, AAD[who]),
            Verdict.APPROVE,
            platform="teams",
            typed_confirmation=submitted.payload_hash_b64u[-4:],
        )
    rows = await queued(rig, FEED_CHANNEL)
    assert len(rows) >= 4  # created, two approvals, the grant
    await rig.drain()
    feed = [c for c in rig.connector.calls if FEED_CHANNEL in c.path]
    assert len(feed) == 1
    text = card_text(feed[0].body)
    for row in rows:
        assert f"#{row.payload['receipt']['index']} " in text


async def test_breakglass_token_goes_to_the_requester_only_in_a_1to1_chat(rig: Rig) -> None:
    await rig.post(
        rig.message(
            "alice",
            "breakglass entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
            'principal=alice@corp.example role="Privileged Role Administrator" '
            'for 10m reason "INC-4411"',
        )
    )
    view = next(v for v in await rig.kt.list_requests() if v.card.breakglass)
    rid, last4 = view.request.request_id, view.card.payload_hash_short
    for who in ("bob", "carol"):
        answer = await rig.post(rig.click(who, rid, "approve", confirm=last4))
        assert answer.status == 200
    assert (await rig.kt.view(rid)).request.state.value == "approved"
    rig.connector.calls.clear()
    await rig.drain()
    calls = rig.connector.calls
    with_token = [i for i, c in enumerate(calls) if "break-glass token" in card_text(c.body)]
    assert len(with_token) == 1
    sent = calls[with_token[0]]
    created = calls[with_token[0] - 1]  # the 1:1 chat is created, then the token sent
    assert created.path == "/v3/conversations" and created.body["isGroup"] is False
    assert created.body["members"] == [{"id": "alice"}]
    assert sent.path.startswith("/v3/conversations/a:dm-")
    token_text = card_text(sent.body).split("\n")[1]
    assert token_text.count(".") == 2  # a compact JWS, sent to alice's 1:1 chat only

    # Asking for it in a channel is refused; in the 1:1 chat it is answered.
    rig.connector.calls.clear()
    await rig.post(rig.message("alice", f"breakglass token {rid}", personal=False))
    assert "only given in a 1:1 chat" in card_text(rig.connector.calls[-1].body)


async def test_breakglass_parse_errors_answer_with_the_exact_problem(rig: Rig) -> None:
    await rig.post(rig.message("alice", "breakglass entra.role.assign principal=x for 2x reason y"))
    reply = card_text(rig.connector.calls[-1].body)
    assert '"2x" is not a duration: use 30m, 2h or 1h30m' in reply
    assert "usage: breakglass" in reply
    await rig.post(
        rig.message(
            "alice",
            "breakglass entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
            'principal=alice@corp.example role="Privileged Role Administrator" '
            'for 2h reason "INC-1"',
        )
    )
    assert "(30m max)" in card_text(rig.connector.calls[-1].body)


async def test_list_and_revoke_the_window(rig: Rig) -> None:
    await rig.post(
        rig.message(
            "alice",
            "breakglass entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
            'principal=alice@corp.example role="Privileged Role Administrator" '
            'for 10m reason "INC-4411"',
        )
    )
    await rig.post(rig.message("alice", "breakglass list"))
    listing = card_text(rig.connector.calls[-1].body)
    view = next(v for v in await rig.kt.list_requests() if v.card.breakglass)
    rid = view.request.request_id
    assert rid in listing and "pending approval" in listing
    for who in ("bob", "carol"):
        await rig.post(rig.click(who, rid, "approve", confirm=view.card.payload_hash_short))
    await rig.post(rig.message("alice", f"breakglass revoke {rid}"))
    assert "every token revoked" in card_text(rig.connector.calls[-1].body)
    assert (await rig.kt.view(rid)).request.state.value == "revoked"
    rig.connector.calls.clear()
    await rig.drain()
    sent = [card_text(c.body) for c in rig.connector.calls]
    assert any("Your request" in t and "Revoked" in t for t in sent)  # 1:1 to alice
    assert any("Rollback checklist" in t for t in sent)


def bot_added(rig: Rig, kind: str) -> dict[str, Any]:
    """What Teams sends when keyturn is installed in / added to the team."""
    team = {"id": "19:general@thread.tacv2", "name": "Payments"}
    fields: dict[str, Any] = {
        "conversation": {
            "id": "19:general@thread.tacv2",
            "tenantId": TENANT,
            "conversationType": "channel",
            "isGroup": True,
        },
    }
    if kind == "conversationUpdate":
        fields["membersAdded"] = [{"id": f"28:{APP_ID}"}]
    else:
        fields["action"] = "add"
    activity = rig.activity("carol", type=kind, **fields)
    activity["channelData"] |= {"team": team, "eventType": "teamMemberAdded"}
    return activity


@pytest.mark.parametrize("kind", ["conversationUpdate", "installationUpdate"])
async def test_installing_in_a_team_captures_where_to_post_cards(rig: Rig, kind: str) -> None:
    # The approvers channel is configured without a service URL: only the install says it.
    unconfigured = rig.settings.model_copy(
        update={
            "approvers": ConversationTarget(channel_id=APPROVERS_CHANNEL, tenant_id=TENANT),
            "security_channel": None,
        }
    )
    rig.teams.sender.settings = unconfigured
    submitted = await gated_payment(rig)
    assert await rig.drain() == 0  # not installed yet: held, not dropped
    assert rig.connector.calls == [] and await rig.worker.backlog() > 0

    answer = await rig.post(bot_added(rig, kind))
    assert answer.status in (200, 201)
    assert await rig.teams.sender.references.service_url(unconfigured.approvers) == rig.service_url
    rig.advance(NOT_INSTALLED_SECONDS + 1)
    await rig.drain()
    posts = [c for c in rig.connector.calls if c.path == "/v3/conversations"]
    assert len(posts) == 1
    assert posts[0].body["channelData"]["channel"]["id"] == APPROVERS_CHANNEL
    assert submitted.payload_hash_b64u in card_text(
        posts[0].body["activity"]["attachments"][0]["content"]
    )


async def test_an_install_from_another_tenant_is_not_captured(rig: Rig) -> None:
    other = "00000000-0000-4000-8000-0000000000ff"
    activity = bot_added(rig, "installationUpdate")
    activity["conversation"]["tenantId"] = other
    activity["channelData"]["tenant"]["id"] = other
    await rig.post(activity)
    book = rig.teams.sender.references
    assert await book.lookup("19:general@thread.tacv2") is None
    target = ConversationTarget(channel_id="19:general@thread.tacv2", tenant_id=other)
    assert await book.service_url(target) is None


async def test_a_forged_install_is_401_and_captures_nothing(rig: Rig) -> None:
    answer = await rig.post(bot_added(rig, "installationUpdate"), token="not.a.jwt")
    assert answer.status == 401
    assert await rig.teams.sender.references.lookup("19:general@thread.tacv2") is None
