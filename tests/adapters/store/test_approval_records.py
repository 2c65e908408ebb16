"""Requests, decisions, grants and tokens: stored exactly, and the rules kept by the schema."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from adapters.store import SqlStore, tables
from core.errors import (
    ApprovalRefusedError,
    GateDeniedError,
    IllegalTransitionError,
    StoreError,
)
from core.quorum import Verdict
from core.records import TokenRecord
from core.requests import RequestState
from tests.adapters.store.targets import Target
from tests.adapters.store.usecase import ApprovalService, new_request

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)


async def test_a_request_comes_back_exactly_as_stored(store: SqlStore) -> None:
    request = new_request("r1", now=NOW)
    async with store.unit_of_work() as uow:
        await uow.requests.add(request)
        await uow.commit()
    async with store.unit_of_work(read_only=True) as uow:
        loaded = await uow.requests.get("r1")
    assert loaded == request
    assert loaded.request_hash_b64u == request.request_hash_b64u


async def test_a_request_id_is_stored_once(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.requests.add(new_request("r1", now=NOW))
        await uow.commit()
    with pytest.raises(StoreError) as conflict:
        async with store.unit_of_work() as uow:
            await uow.requests.add(new_request("r1", now=NOW, amount=99_999))
            await uow.commit()
    assert conflict.value.reason_code == "STORE_CONFLICT"
    async with store.unit_of_work(read_only=True) as uow:
        assert (await uow.requests.get("r1")).params["amount_usd"] == 1200


async def test_replace_refuses_a_stale_state(store: SqlStore) -> None:
    request = new_request("r1", now=NOW)
    async with store.unit_of_work() as uow:
        await uow.requests.add(request)
        await uow.commit()
    cancelled = request.transition(RequestState.CANCELLED, at=NOW)
    async with store.unit_of_work() as uow:
        await uow.requests.replace(request, cancelled)
        await uow.commit()
    expired = request.transition(RequestState.EXPIRED, at=NOW)
    with pytest.raises(StoreError) as stale:
        async with store.unit_of_work() as uow:
            await uow.requests.replace(request, expired)
            await uow.commit()
    assert stale.value.reason_code == "STORE_CONFLICT"
    async with store.unit_of_work(read_only=True) as uow:
        assert (await uow.requests.get("r1")).state is RequestState.CANCELLED


async def test_replace_cannot_change_what_was_approved(store: SqlStore) -> None:
    request = new_request("r1", now=NOW)
    other = new_request("r1", now=NOW, amount=5)
    async with store.unit_of_work() as uow:
        await uow.requests.add(request)
        with pytest.raises(ValueError, match="binding"):
            await uow.requests.replace(request, replace(other, state=RequestState.APPROVED))
        with pytest.raises(IllegalTransitionError):
            await uow.requests.replace(request, replace(request, state=RequestState.CONSUMED))


async def test_replace_of_an_unknown_request_is_not_found(store: SqlStore) -> None:
    request = new_request("r1", now=NOW)
    with pytest.raises(StoreError) as missing:
        async with store.unit_of_work() as uow:
            await uow.requests.replace(request, request.transition(RequestState.CANCELLED, at=NOW))
    assert missing.value.reason_code == "NOT_FOUND"


async def test_due_lists_only_pending_requests_past_their_deadline(store: SqlStore) -> None:
    early = new_request("early", now=NOW - timedelta(hours=3))
    later = new_request("later", now=NOW - timedelta(hours=2))
    fresh = new_request("fresh", now=NOW)
    done = new_request("done", now=NOW - timedelta(hours=4))
    async with store.unit_of_work() as uow:
        for request in (later, fresh, early, done):
            await uow.requests.add(request)
        await uow.requests.replace(done, done.transition(RequestState.CANCELLED, at=NOW))
        await uow.commit()
    async with store.unit_of_work(read_only=True) as uow:
        due = await uow.requests.due(now=NOW)
        pending = await uow.requests.find(states=[RequestState.PENDING])
        everything = await uow.requests.find(limit=2)
    assert [r.request_id for r in due] == ["early", "later"]
    assert {r.request_id for r in pending} == {"early", "later", "fresh"}
    assert [r.request_id for r in everything] == ["fresh", "later"]


async def test_the_scheduler_reads_only_clocks_states_and_lapsed_windows(store: SqlStore) -> None:
    """What the once-a-second sweep and waiting polls read, without loading records."""
    service = ApprovalService(store)
    older = new_request("older", now=NOW - timedelta(minutes=5))
    newer = new_request("newer", now=NOW)
    for request in (newer, older):
        await service.open(request, now=request.binding.created_at)
    await service.open(new_request("approved", now=NOW), now=NOW)
    await service.decide("approved", "alice", now=NOW)
    granted = (await service.decide("approved", "bob", now=NOW)).grant
    assert granted is not None
    async with store.unit_of_work(read_only=True) as uow:
        clocks = await uow.requests.pending_clocks()
        states = await uow.requests.states(["newer", "approved", "unknown", "newer"])
        before = await uow.requests.lapsed_windows(now=granted.expires_at - timedelta(seconds=1))
        after = await uow.requests.lapsed_windows(now=granted.expires_at)
    assert clocks == [
        ("older", older.binding.created_at, older.binding.expires_at),
        ("newer", newer.binding.created_at, newer.binding.expires_at),
    ]
    assert states == {"newer": RequestState.PENDING, "approved": RequestState.APPROVED}
    assert before == [] and after == ["approved"]


async def test_one_person_decides_a_request_once_even_past_the_service_checks(
    store: SqlStore,
) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    first = (await service.decide("r1", "alice", now=NOW)).decision
    # A replica that did not see the first decision writes a second one for alice,
    # say from Teams: the unique constraint refuses it.
    second = replace(first, platform="teams", decided_at=NOW + timedelta(seconds=1))
    with pytest.raises(ApprovalRefusedError) as refused:
        async with store.unit_of_work() as uow:
            await uow.decisions.add(second)
            await uow.commit()
    assert refused.value.reason_code == "ALREADY_DECIDED"
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.decisions.for_request("r1") == [first]


async def test_a_decision_for_an_unknown_request_is_refused(store: SqlStore) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    decision = (await service.decide("r1", "alice", now=NOW)).decision
    with pytest.raises(StoreError) as missing:
        async with store.unit_of_work() as uow:
            await uow.decisions.add(replace(decision, request_id="nope"))
    assert missing.value.reason_code == "NOT_FOUND"


async def test_quorum_mints_one_grant_and_the_grant_is_used_once(store: SqlStore) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    first = await service.decide("r1", "alice", now=NOW)
    second = await service.decide("r1", "bob", now=NOW)
    assert first.grant is None and first.request.state is RequestState.PENDING
    assert second.grant is not None and second.request.state is RequestState.APPROVED
    async with store.unit_of_work(read_only=True) as uow:
        stored = await uow.grants.for_request("r1")
        decisions = await uow.decisions.for_request("r1")
    assert stored == second.grant
    assert [d.approver_id for d in decisions] == ["alice", "bob"]
    with pytest.raises(StoreError) as twice:
        async with store.unit_of_work() as uow:
            await uow.grants.add(replace(second.grant, grant_id="another"))
    assert twice.value.reason_code == "GRANT_EXISTS"

    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.grants.consumed_at(second.grant.grant_id) is None
    await service.consume(second.grant.grant_id, now=NOW)
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.grants.consumed_at(second.grant.grant_id) == NOW
        with pytest.raises(StoreError):
            await uow.grants.consumed_at("no-such-grant")
    with pytest.raises(GateDeniedError) as used:
        await service.consume(second.grant.grant_id, now=NOW)
    assert used.value.reason_code == "GRANT_ALREADY_USED"
    async with store.unit_of_work(read_only=True) as uow:
        assert (await uow.requests.get("r1")).state is RequestState.CONSUMED


async def test_an_unknown_or_expired_grant_is_never_marked_used(store: SqlStore) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    await service.decide("r1", "alice", now=NOW)
    grant = (await service.decide("r1", "bob", now=NOW)).grant
    assert grant is not None
    async with store.unit_of_work() as uow:
        with pytest.raises(GateDeniedError) as unknown:
            await uow.grants.consume("grant-nobody-issued", at=NOW)
        with pytest.raises(GateDeniedError) as expired:
            await uow.grants.consume(grant.grant_id, at=grant.expires_at)
        await uow.commit()
    assert unknown.value.reason_code == "GRANT_UNKNOWN"
    assert expired.value.reason_code == "GRANT_EXPIRED"
    async with store.unit_of_work() as uow:
        await uow.grants.consume(grant.grant_id, at=grant.expires_at - timedelta(seconds=1))
        await uow.commit()


async def test_a_deny_ends_the_request_without_a_grant(store: SqlStore) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    denied = await service.decide("r1", "alice", Verdict.DENY, now=NOW, reason="wrong account")
    assert denied.request.state is RequestState.DENIED
    with pytest.raises(ApprovalRefusedError) as late:
        await service.decide("r1", "bob", now=NOW)
    assert late.value.reason_code == "REQUEST_NOT_PENDING"
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.grants.for_request("r1") is None


def _token(n: int, *, job: str = "job-1") -> TokenRecord:
    return TokenRecord(
        token_hash_hex=f"{n:064x}",
        jti=f"jti-{n}",
        kind="cst",
        subject="agent-7",
        job_id=job,
        request_id=None,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
    )


async def test_tokens_are_recorded_once_and_found_by_job(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.tokens.add(_token(1))
        await uow.tokens.add(_token(2))
        await uow.tokens.add(_token(3, job="job-2"))
        await uow.commit()
    with pytest.raises(StoreError) as again:
        async with store.unit_of_work() as uow:
            await uow.tokens.add(replace(_token(4), jti="jti-1"))
    assert again.value.reason_code == "STORE_CONFLICT"
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.tokens.get(_token(1).token_hash_hex) == _token(1)
        assert await uow.tokens.get(_token(9).token_hash_hex) is None
        assert [t.jti for t in await uow.tokens.for_job("job-1")] == ["jti-1", "jti-2"]


async def test_a_revoked_token_is_revoked_on_every_replica_at_once(target: Target) -> None:
    replica_a, replica_b = await target.open(), await target.open()
    try:
        token = _token(1)
        async with replica_a.unit_of_work() as uow:
            await uow.tokens.add(token)
            await uow.commit()
        async with replica_b.unit_of_work(read_only=True) as uow:
            assert not await uow.tokens.is_revoked(token.token_hash_hex)
        async with replica_a.unit_of_work() as uow:
            assert await uow.tokens.revoke(token.token_hash_hex, at=NOW, reason="kill switch")
            assert not await uow.tokens.revoke(token.token_hash_hex, at=NOW, reason="again")
            await uow.commit()
        async with replica_b.unit_of_work(read_only=True) as uow:
            assert await uow.tokens.is_revoked(token.token_hash_hex)
    finally:
        await replica_a.close()
        await replica_b.close()


async def test_a_token_keyturn_never_recorded_can_still_be_revoked(store: SqlStore) -> None:
    unknown = "ab" * 32
    async with store.unit_of_work() as uow:
        assert await uow.tokens.revoke(unknown, at=NOW, reason="leaked in a log")
        await uow.commit()
    async with store.unit_of_work(read_only=True) as uow:
        assert await uow.tokens.is_revoked(unknown)
        with pytest.raises(ValueError):
            await uow.tokens.is_revoked("not-a-hash")


async def test_a_tampered_request_row_is_refused_not_trusted(store: SqlStore) -> None:
    async with store.unit_of_work() as uow:
        await uow.requests.add(new_request("r1", now=NOW))
        await uow.commit()
    async with store.engine.begin() as conn:
        # Someone flips the indexed state without touching the record.
        await conn.execute(text("UPDATE requests SET state = 'approved'"))
    async with store.unit_of_work(read_only=True) as uow:
        with pytest.raises(StoreError) as corrupt:
            await uow.requests.get("r1")
    assert corrupt.value.reason_code == "RECORD_CORRUPT"


async def test_a_record_that_breaks_an_invariant_is_refused(store: SqlStore) -> None:
    service = ApprovalService(store)
    await service.open(new_request("r1", now=NOW), now=NOW)
    async with store.engine.begin() as conn:
        # The stored params no longer match the bound payload hash.
        broken = (await conn.execute(select(tables.requests.c.record))).scalar_one()
        broken["params"]["amount_usd"] = 1
        await conn.execute(update(tables.requests).values(record=broken))
    async with store.unit_of_work(read_only=True) as uow:
        with pytest.raises(StoreError) as corrupt:
            await uow.requests.get("r1")
    assert corrupt.value.reason_code == "RECORD_CORRUPT"
