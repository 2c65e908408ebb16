"""Break-glass on the channel card (Revoke while the window is open), the rollback
checklist's Done buttons, and the Slack ↔ directory identity links clicks leave."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

import pytest

from adapters.slack import blocks as bk
from tests.adapters.slack.conftest import APPROVERS, SECURITY, Rig, block_action, eventually
from tests.adapters.slack.standin import TEAM

pytestmark = pytest.mark.asyncio

STEPS = ("remove the role assignment", "rotate the mailbox password")
ASK = (
    "entra.role.assign tenant_id=00000000-0000-4000-8000-0000000000aa "
    'principal=alice@corp.example role="Privileged Role Administrator" '
    '--for 30m --reason "INC-4411" ' + " ".join(f'--rollback "{s}"' for s in STEPS)
)


async def _open_window(rig: Rig) -> str:
    await rig.command("UALICE", ASK)
    hook = await eventually(lambda: _webhook(rig))
    request_id = hook["text"].split("request ", 1)[1].split(" ", 1)[0]
    last4 = (await rig.app.service.view(request_id)).card.payload_hash_short
    for n, user in enumerate(("UBOB", "UCAROL"), start=1):
        await rig.submit_view(user, bk.CONFIRM_VIEW, request_id, bk.LAST4_BLOCK, last4)
        await eventually(lambda n=n: _decisions(rig, request_id, n))
    assert (await rig.app.service.view(request_id)).request.state.value == "approved"
    return request_id


async def _webhook(rig: Rig) -> dict[str, Any] | None:
    return rig.slack.webhooks[0] if rig.slack.webhooks else None


async def _decisions(rig: Rig, request_id: str, n: int) -> bool:
    return len((await rig.app.service.view(request_id)).decisions) >= n


async def _state(rig: Rig, request_id: str, state: str) -> bool:
    return (await rig.app.service.view(request_id)).request.state.value == state


async def _calls(rig: Rig, method: str, n: int = 1) -> list[dict[str, Any]] | None:
    found = rig.slack.of(method)
    return found if len(found) >= n else None


def _accessories(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b["accessory"] for b in blocks if "accessory" in b]


def _card_messages(rig: Rig) -> list[dict[str, Any]]:
    posts = [c for c in rig.slack.of("chat.postMessage") if c["channel"] == APPROVERS]
    updates = [c for c in rig.slack.of("chat.update") if c["channel"] == APPROVERS]
    return posts + updates


def _with_value(body: str, value: str, channel: str) -> str:
    payload = json.loads(unquote(body[len("payload=") :]))
    payload["actions"][0]["value"] = value
    payload["channel"]["id"] = channel
    return "payload=" + quote(json.dumps(payload))


async def test_open_window_card_shows_until_when_and_a_revoke_button(rig: Rig) -> None:
    request_id = await _open_window(rig)
    await rig.deliver()
    latest = _card_messages(rig)[-1]
    revoke = [a for a in _accessories(latest["blocks"]) if a["action_id"] == bk.REVOKE]
    assert len(revoke) == 1 and revoke[0]["value"] == request_id
    assert revoke[0]["style"] == "danger" and "confirm" in revoke[0]
    window = (await rig.app.service.view(request_id)).card.window_line
    assert window and window.startswith("Window open until")
    assert window in str(latest["blocks"])


async def test_revoke_by_an_outsider_is_refused_ephemerally_and_the_window_stays_open(
    rig: Rig,
) -> None:
    request_id = await _open_window(rig)
    await rig.click("UMALLORY", bk.REVOKE, request_id)
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert refusal[0]["user"] == "UMALLORY"
    assert "requester or an eligible approver" in refusal[0]["text"]
    assert await _state(rig, request_id, "approved")


async def test_revoke_click_closes_the_window_and_the_card_loses_its_button(rig: Rig) -> None:
    request_id = await _open_window(rig)
    await rig.click("UALICE", bk.REVOKE, request_id)
    await eventually(lambda: _state(rig, request_id, "revoked"))
    await rig.deliver()
    latest = _card_messages(rig)[-1]
    assert not [a for a in _accessories(latest["blocks"]) if a["action_id"] == bk.REVOKE]
    assert "Revoked" in str(latest["blocks"])
    # a second click finds nothing to revoke and says so, to the clicker only
    await rig.click("UALICE", bk.REVOKE, request_id)
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert refusal[0]["user"] == "UALICE" and "revoke" in refusal[0]["text"]


async def test_rollback_checklist_has_one_done_button_per_step_and_records_who_did_it(
    rig: Rig,
) -> None:
    request_id = await _open_window(rig)
    await rig.click("UALICE", bk.REVOKE, request_id)
    await eventually(lambda: _state(rig, request_id, "revoked"))
    await rig.deliver()
    posted = [
        c
        for c in rig.slack.of("chat.postMessage")
        if c["channel"] == SECURITY and "Rollback checklist" in c["text"]
    ]
    assert len(posted) == 1
    buttons = [a for a in _accessories(posted[0]["blocks"]) if a["action_id"] == bk.ROLLBACK_DONE]
    assert [b["value"] for b in buttons] == [bk.step_value(request_id, i) for i in (0, 1)]
    for step in STEPS:
        assert step in str(posted[0]["blocks"])

    body = block_action("UCAROL", bk.ROLLBACK_DONE, request_id, rig.webhook_url)
    await rig.post(_with_value(body, buttons[1]["value"], SECURITY))
    done = await eventually(lambda: rig.surface.sender.steps_done(request_id))
    assert list(done) == [1] and done[1].startswith("Carol Diaz at ")

    async def checklist_updated() -> list[dict[str, Any]]:
        # The click's card update is queued after its receipt commits: deliver until sent.
        await rig.deliver()
        return [c for c in rig.slack.of("chat.update") if c["channel"] == SECURITY]

    updates = await eventually(checklist_updated)
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        refs = await uow.messages.for_request(request_id, platform="slack")
    checklist = [r for r in refs if r.kind == "checklist"]
    assert [(r.channel, r.message_id) for r in checklist] == [(SECURITY, updates[0]["ts"])]
    assert len(updates) == 1
    redrawn = updates[0]["blocks"]
    left = [a["value"] for a in _accessories(redrawn) if a["action_id"] == bk.ROLLBACK_DONE]
    assert left == [bk.step_value(request_id, 0)]
    assert "done by Carol Diaz" in str(redrawn) and "1 of 2 steps done" in str(redrawn)
    assert not rig.slack.of("chat.postEphemeral")


async def test_done_before_the_window_closes_is_refused_and_not_receipted(rig: Rig) -> None:
    request_id = await _open_window(rig)
    body = block_action("UCAROL", bk.ROLLBACK_DONE, request_id, rig.webhook_url)
    await rig.post(_with_value(body, bk.step_value(request_id, 0), SECURITY))
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert refusal[0]["user"] == "UCAROL" and "close the window" in refusal[0]["text"]
    assert await rig.surface.sender.steps_done(request_id) == {}


async def test_a_forged_done_value_is_refused_without_calling_the_service(rig: Rig) -> None:
    body = block_action("UCAROL", bk.ROLLBACK_DONE, "x", rig.webhook_url)
    await rig.post(_with_value(body, "not-a-step", SECURITY))
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert "not keyturn's" in refusal[0]["text"]
    assert not rig.slack.of("users.info")


async def test_an_accepted_click_links_the_slack_user_to_the_directory_person(rig: Rig) -> None:
    request_id = await rig.agent_request()
    await rig.click("UBOB", bk.APPROVE, request_id)
    await eventually(lambda: _decisions(rig, request_id, 1))
    bob = (await rig.app.service.view(request_id)).decisions[0].approver_id

    async def linked() -> Any:
        async with rig.app.store.unit_of_work(read_only=True) as uow:
            return await uow.identities.resolve("slack", TEAM, "UBOB")

    link = await eventually(linked)
    assert link.directory_id == bob
    assert link.evidence == {"kind": "email", "value": "bob@corp.example"}


async def test_a_refused_click_leaves_no_link(rig: Rig) -> None:
    request_id = await rig.agent_request()
    await rig.click("UMALLORY", bk.APPROVE, request_id)
    await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        assert await uow.identities.resolve("slack", TEAM, "UMALLORY") is None


async def test_a_slack_account_that_now_resolves_to_someone_else_keeps_its_old_link(
    rig: Rig,
) -> None:
    from adapters.slack.links import remember_link
    from core.identity import IdentityKind, IdentityRef

    bob = IdentityRef(IdentityKind.EMAIL, "bob@corp.example")
    dan = IdentityRef(IdentityKind.EMAIL, "dan@corp.example")
    first = await remember_link(rig.app.service, workspace_id=TEAM, user_id="UX", identity=bob)
    assert first is not None
    moved = await remember_link(rig.app.service, workspace_id=TEAM, user_id="UX", identity=dan)
    assert moved is None
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        kept = await uow.identities.resolve("slack", TEAM, "UX")
    assert kept is not None and kept.directory_id == first.directory_id


def _checklists_to(rig: Rig, channel: str, method: str) -> list[dict[str, Any]]:
    return [
        c
        for c in rig.slack.of(method)
        if c["channel"] == channel and "Rollback checklist" in c["text"]
    ]


def _done_buttons(blocks: list[dict[str, Any]]) -> list[str]:
    return [a["value"] for a in _accessories(blocks) if a["action_id"] == bk.ROLLBACK_DONE]


async def _close_by(rig: Rig, request_id: str, how: str) -> None:
    if how == "revoke":
        await rig.click("UBOB", bk.REVOKE, request_id)  # an approver's kill switch
        await eventually(lambda: _state(rig, request_id, "revoked"))
    else:
        rig.clock.advance(31 * 60)  # past the 30-minute window
        await rig.app.service.run_due()
        assert await _state(rig, request_id, "expired")


@pytest.mark.parametrize("how", ["revoke", "expiry"])
async def test_the_requester_gets_the_rollback_checklist_by_dm_and_done_works_from_both_copies(
    rig: Rig, how: str
) -> None:
    request_id = await _open_window(rig)
    await _close_by(rig, request_id, how)
    await rig.deliver()
    (channel_copy,) = _checklists_to(rig, SECURITY, "chat.postMessage")
    (dm_copy,) = _checklists_to(rig, "UALICE", "chat.postMessage")  # Alice asked for it
    steps = [bk.step_value(request_id, i) for i in (0, 1)]
    assert _done_buttons(channel_copy["blocks"]) == _done_buttons(dm_copy["blocks"]) == steps
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        refs = await uow.messages.for_request(request_id, platform="slack")
    posted = {r.channel: r.message_id for r in refs if r.kind.startswith("checklist")}
    assert {(r.kind, r.channel) for r in refs if r.kind.startswith("checklist")} == {
        ("checklist", SECURITY),
        ("checklist_dm", "UALICE"),
    }

    # Alice ticks step 1 in her DM: receipted, and both copies are redrawn
    body = block_action("UALICE", bk.ROLLBACK_DONE, request_id, rig.webhook_url)
    await rig.post(_with_value(body, steps[0], "DALICE"))
    await rig.surface.work.join()
    await rig.deliver()
    assert list(await rig.surface.sender.steps_done(request_id)) == [0]
    for channel in (SECURITY, "UALICE"):
        (update,) = _checklists_to(rig, channel, "chat.update")
        assert update["ts"] == posted[channel]  # redrawn in place, not reposted
        assert _done_buttons(update["blocks"]) == steps[1:]
        assert "done by Alice" in str(update["blocks"])

    # Carol ticks step 2 in the security channel: the DM copy follows
    body = block_action("UCAROL", bk.ROLLBACK_DONE, request_id, rig.webhook_url)
    await rig.post(_with_value(body, steps[1], SECURITY))
    await rig.surface.work.join()
    await rig.deliver()
    dm_updates = _checklists_to(rig, "UALICE", "chat.update")
    assert len(dm_updates) == 2 and not _done_buttons(dm_updates[-1]["blocks"])
    assert "2 of 2 steps done" in str(dm_updates[-1]["blocks"])
    assert len(_checklists_to(rig, "UALICE", "chat.postMessage")) == 1
    assert not rig.slack.of("chat.postEphemeral")


async def test_a_step_clicked_done_on_a_stale_copy_is_refused_and_receipted_once(
    rig: Rig,
) -> None:
    request_id = await _open_window(rig)
    await _close_by(rig, request_id, "revoke")
    await rig.deliver()
    step = bk.step_value(request_id, 0)
    # Carol clicks in the channel, Alice in her DM copy before it is redrawn
    for user, channel in (("UCAROL", SECURITY), ("UALICE", "DALICE")):
        body = block_action(user, bk.ROLLBACK_DONE, request_id, rig.webhook_url)
        await rig.post(_with_value(body, step, channel))
        await rig.surface.work.join()
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert refusal[0]["user"] == "UALICE" and refusal[0]["channel"] == "DALICE"
    assert "already marked done by Carol Diaz" in refusal[0]["text"]
    kinds = []
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        for index in await uow.jobs.receipt_indexes(request_id):
            (entry,) = await uow.log.entries(index, index + 1)
            kinds.append(json.loads(entry)["payload"]["kind"])
    assert kinds.count("breakglass_rolled_back") == 1


async def test_a_rollback_step_ticked_by_an_outsider_is_refused_and_nothing_is_recorded(
    rig: Rig,
) -> None:
    # Mallory is in the directory and can see the security channel, but she neither
    # asked for the window nor may approve it: her "Done" would be false evidence
    # that the privilege was rolled back.
    request_id = await _open_window(rig)
    await _close_by(rig, request_id, "revoke")
    await rig.deliver()
    body = block_action("UMALLORY", bk.ROLLBACK_DONE, request_id, rig.webhook_url)
    await rig.post(_with_value(body, bk.step_value(request_id, 0), SECURITY))
    await rig.surface.work.join()
    refusal = await eventually(lambda: _calls(rig, "chat.postEphemeral"))
    assert refusal[0]["user"] == "UMALLORY" and refusal[0]["channel"] == SECURITY
    assert "requester or an eligible approver" in refusal[0]["text"]
    assert not await rig.surface.sender.steps_done(request_id)
    async with rig.app.store.unit_of_work(read_only=True) as uow:
        kinds = []
        for index in await uow.jobs.receipt_indexes(request_id):
            (entry,) = await uow.log.entries(index, index + 1)
            kinds.append(json.loads(entry)["payload"]["kind"])
    assert "breakglass_rolled_back" not in kinds
