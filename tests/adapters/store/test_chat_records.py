"""Policies, message references, identity links and the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.store import IdentityLink, MessageRef, SqlStore
from core.errors import StoreError
from tests.adapters.store.targets import Target

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)


async def test_policies_are_kept_by_hash_with_their_activation_history(store: SqlStore) -> None:
    first = {"payload": {"name": "payments-v1", "rules": [1.5, "x"]}, "signature_b64u": "sig"}
    second = {"payload": {"name": "payments-v2"}}
    async with store.unit_of_work() as uow:
        assert await uow.policies.active() is None
        assert await uow.policies.active_hash() is None
        assert await uow.policies.add("hash-1", first, at=NOW, name="payments-v1")
        assert not await uow.policies.add("hash-1", {"other": True}, at=NOW)
        assert await uow.policies.add("hash-2", second, at=NOW)
        await uow.policies.activate("hash-1", at=NOW, by="ops@example.com")
        await uow.policies.activate("hash-2", at=NOW + timedelta(hours=1), by="ops@example.com")
        await uow.policies.activate(
            "hash-1", at=NOW + timedelta(hours=2), by="ops", note="roll back"
        )
        await uow.commit()
    async with store.unit_of_work(read_only=True) as uow:
        stored = await uow.policies.get("hash-1")
        active = await uow.policies.active()
        active_hash = await uow.policies.active_hash()
        history = await uow.policies.history()
    assert stored.document == first and stored.name == "payments-v1"
    assert active_hash == "hash-1"  # the latest activation, a roll-back included
    assert active is not None and active.policy_hash_b64u == "hash-1"
    assert [(a.policy_hash_b64u, a.note) for a in history] == [
        ("hash-1", "roll back"),
        ("hash-2", None),
        ("hash-1", None),
    ]


async def test_only_a_stored_policy_can_be_activated(store: SqlStore) -> None:
    with pytest.raises(StoreError) as missing:
        async with store.unit_of_work() as uow:
            await uow.policies.activate("never-stored", at=NOW, by="ops")
    assert missing.value.reason_code == "NOT_FOUND"
    async with store.unit_of_work(read_only=True) as uow:
        with pytest.raises(StoreError):
            await uow.policies.get("never-stored")


async def test_message_refs_find_every_card_of_a_request(store: SqlStore) -> None:
    slack = MessageRef("slack", "C123", "1737368400.000100", "card", NOW, request_id="r1")
    teams = MessageRef(
        "teams",
        "19:abc@thread.v2",
        "1737368400123",
        "card",
        NOW,
        request_id="r1",
        extra={"service_url": "https://smba.trafficmanager.net/emea/"},
    )
    feed = MessageRef("slack", "C999", "1737368400.000200", "feed", NOW)
    async with store.unit_of_work() as uow:
        assert await uow.messages.add(slack)
        assert await uow.messages.add(teams)
        assert await uow.messages.add(feed)
        assert not await uow.messages.add(slack)
        assert await uow.messages.mark_updated("slack", "C123", slack.message_id, at=NOW)
        assert not await uow.messages.mark_updated("slack", "C123", "unknown", at=NOW)
        await uow.commit()
    async with store.unit_of_work(read_only=True) as uow:
        refs = await uow.messages.for_request("r1")
        only_teams = await uow.messages.for_request("r1", platform="teams")
        found = await uow.messages.find("slack", "C123", slack.message_id)
    assert [r.platform for r in refs] == ["slack", "teams"]
    assert only_teams == [teams]
    assert found is not None and found.updated_at == NOW


async def test_identity_links_tie_slack_and_teams_to_one_person(store: SqlStore) -> None:
    slack = IdentityLink("slack", "T01", "U123", "oid-alice", "slack_email", NOW, {"email": "a@x"})
    teams = IdentityLink("teams", "tenant-1", "29:abc", "oid-alice", "teams_aad_object_id", NOW)
    async with store.unit_of_work() as uow:
        await uow.identities.link(slack)
        await uow.identities.link(teams)
        later = NOW + timedelta(days=1)
        await uow.identities.link(
            IdentityLink("slack", "T01", "U123", "oid-alice", "slack_oauth", later)
        )
        await uow.commit()
    async with store.unit_of_work(read_only=True) as uow:
        both = await uow.identities.for_directory_id("oid-alice")
        resolved = await uow.identities.resolve("slack", "T01", "U123")
    assert {link.platform for link in both} == {"slack", "teams"}
    assert resolved is not None
    assert (resolved.method, resolved.verified_at) == ("slack_oauth", NOW + timedelta(days=1))


async def test_a_link_never_moves_to_another_person_silently(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.identities.link(IdentityLink("slack", "T01", "U123", "oid-alice", "m", NOW))
        await uow.commit()
    with pytest.raises(StoreError) as moved:
        async with store.unit_of_work() as uow:
            await uow.identities.link(IdentityLink("slack", "T01", "U123", "oid-mallory", "m", NOW))
            await uow.commit()
    assert moved.value.reason_code == "IDENTITY_LINK_CONFLICT"
    async with store.unit_of_work() as uow:
        kept = await uow.identities.resolve("slack", "T01", "U123")
        assert kept is not None and kept.directory_id == "oid-alice"
        assert await uow.identities.unlink("slack", "T01", "U123")
        assert not await uow.identities.unlink("slack", "T01", "U123")
        await uow.identities.link(IdentityLink("slack", "T01", "U123", "oid-mallory", "m", NOW))
        await uow.commit()


async def test_outbox_coalesces_pending_updates_of_one_card(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        post = await uow.outbox.enqueue("slack:C1", "post_card", {"n": 0}, at=NOW)
        first = await uow.outbox.enqueue(
            "slack:C1", "update_card", {"n": 1}, at=NOW, coalesce_key="card:r1"
        )
        second = await uow.outbox.enqueue(
            "slack:C1", "update_card", {"n": 2}, at=NOW, coalesce_key="card:r1"
        )
        other = await uow.outbox.enqueue(
            "slack:C2", "update_card", {"n": 3}, at=NOW, coalesce_key="card:r1"
        )
        assert await uow.outbox.backlog() == 3
        assert await uow.outbox.backlog(channel_key="slack:C1") == 2
        await uow.commit()
    assert first == second and len({post, first, other}) == 3
    async with store.unit_of_work() as uow:
        claimed = await uow.outbox.claim_due(now=NOW)
        await uow.commit()
    assert [(i.channel_key, i.payload) for i in claimed] == [
        ("slack:C1", {"n": 0}),
        ("slack:C1", {"n": 2}),
        ("slack:C2", {"n": 3}),
    ]
    assert all(i.attempts == 1 for i in claimed)


async def test_an_update_coalesced_while_in_flight_is_sent_next(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.outbox.enqueue("slack:C1", "update_card", {"n": 1}, at=NOW, coalesce_key="c")
        await uow.commit()
    async with store.unit_of_work() as uow:
        (item,) = await uow.outbox.claim_due(now=NOW, lease_seconds=30)
        await uow.commit()
    # While the worker sends n=1, another replica records n=2 for the same card.
    async with store.unit_of_work() as uow:
        again = await uow.outbox.enqueue(
            "slack:C1", "update_card", {"n": 2}, at=NOW, coalesce_key="c"
        )
        await uow.commit()
    assert again == item.id
    sent_at = NOW + timedelta(seconds=1)
    async with store.unit_of_work() as uow:
        assert not await uow.outbox.mark_sent(item.id, version=item.version, at=sent_at)
        await uow.commit()
    async with store.unit_of_work() as uow:
        (newer,) = await uow.outbox.claim_due(now=sent_at)
        assert newer.payload == {"n": 2} and newer.version == item.version + 1
        assert await uow.outbox.mark_sent(newer.id, version=newer.version, at=sent_at)
        assert await uow.outbox.backlog() == 0
        await uow.commit()


async def test_outbox_leases_retries_and_prunes(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        item_id = await uow.outbox.enqueue("teams:conv", "post_card", {"x": 1}, at=NOW)
        await uow.commit()
    async with store.unit_of_work() as uow:
        (item,) = await uow.outbox.claim_due(now=NOW, lease_seconds=60)
        assert item.id == item_id
        # Leased: nobody else gets it.
        assert await uow.outbox.claim_due(now=NOW + timedelta(seconds=59)) == []
        await uow.outbox.mark_failed(item_id, at=NOW, error="429 rate limited", retry_after=5)
        assert await uow.outbox.claim_due(now=NOW + timedelta(seconds=4)) == []
        (retry,) = await uow.outbox.claim_due(now=NOW + timedelta(seconds=5))
        assert (retry.attempts, retry.last_error) == (2, "429 rate limited")
        await uow.commit()
    async with store.unit_of_work() as uow:
        # The worker died: its lease runs out and the message comes back.
        (again,) = await uow.outbox.claim_due(now=NOW + timedelta(seconds=66))
        assert again.attempts == 3
        assert await uow.outbox.mark_sent(item_id, version=again.version, at=NOW)
        assert await uow.outbox.prune_sent(before=NOW) == 0
        assert await uow.outbox.prune_sent(before=NOW + timedelta(seconds=1)) == 1
        await uow.commit()


@pytest.mark.postgres
async def test_two_workers_never_claim_the_same_message(pg_target: Target) -> None:
    store = await pg_target.open()
    try:
        async with store.unit_of_work() as uow:
            for n in range(6):
                await uow.outbox.enqueue(f"slack:C{n % 2}", "post_card", {"n": n}, at=NOW)
            await uow.commit()
        async with store.unit_of_work() as first, store.unit_of_work() as second:
            # Both transactions are open at once; SKIP LOCKED hands them disjoint rows.
            mine = await first.outbox.claim_due(now=NOW, limit=4)
            theirs = await second.outbox.claim_due(now=NOW, limit=4)
            await first.commit()
            await second.commit()
    finally:
        await store.close()
    assert len(mine) == 4 and len(theirs) == 2
    assert not {i.id for i in mine} & {i.id for i in theirs}
