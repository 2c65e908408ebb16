"""Agents (registered by DID), their single-use challenges, jobs and their steps, the
receipts indexed per request, and sealed proof bundles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from adapters.store import tables as t
from adapters.store.base import Repository
from core.errors import LogError, StoreError, TokenError
from core.times import require_aware


@dataclass(frozen=True, slots=True)
class AgentRecord:
    agent_did: str
    name: str
    enabled: bool
    added_at: datetime
    added_by: str


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    agent_did: str
    policy_hash_b64u: str
    created_at: datetime


class SqlAgentRepository(Repository):
    __slots__ = ()

    async def add(self, agent_did: str, *, name: str, at: datetime, by: str) -> None:
        """Register an agent. Raises ``StoreError("AGENT_EXISTS")`` for a known DID."""
        statement = self._insert(t.agents).on_conflict_do_nothing()
        row = {
            "agent_did": agent_did,
            "name": name,
            "enabled": True,
            "added_at": require_aware(at),
            "added_by": by,
        }
        result = await self._write(statement, row, doing="registering the agent")
        if result.rowcount != 1:
            raise StoreError("AGENT_EXISTS", f"agent {agent_did} is already registered")

    async def get(self, agent_did: str) -> AgentRecord | None:
        result = await self._execute(
            select(t.agents).where(t.agents.c.agent_did == agent_did), doing="reading the agent"
        )
        row = result.first()
        if row is None:
            return None
        return AgentRecord(row.agent_did, row.name, bool(row.enabled), row.added_at, row.added_by)

    async def set_enabled(self, agent_did: str, enabled: bool) -> bool:
        statement = (
            update(t.agents).where(t.agents.c.agent_did == agent_did).values(enabled=enabled)
        )
        result = await self._write(statement, doing="changing the agent")
        return result.rowcount == 1

    async def add_challenge(
        self, challenge: str, agent_did: str, *, expires_at: datetime, at: datetime
    ) -> None:
        row = {
            "challenge": challenge,
            "agent_did": agent_did,
            "created_at": require_aware(at),
            "expires_at": require_aware(expires_at),
            "used_at": None,
        }
        await self._write(t.agent_challenges.insert(), row, doing="saving the challenge")

    async def use_challenge(self, challenge: str, agent_did: str, *, now: datetime) -> None:
        """Spend a challenge once (one conditional UPDATE, so two replicas cannot both).

        Raises:
            TokenError: ``CHALLENGE_INVALID`` (unknown, another agent's, expired or used).
        """
        c = t.agent_challenges.c
        statement = (
            update(t.agent_challenges)
            .where(
                c.challenge == challenge,
                c.agent_did == agent_did,
                c.used_at.is_(None),
                c.expires_at > require_aware(now),
            )
            .values(used_at=now)
        )
        result = await self._write(statement, doing="spending the challenge")
        if result.rowcount != 1:
            raise TokenError(
                "CHALLENGE_INVALID",
                "the challenge is unknown, expired, already used or issued to another agent; "
                "ask for a new one",
            )


class SqlJobRepository(Repository):
    __slots__ = ()

    async def add(self, job_id: str, *, agent_did: str, policy_hash: str, at: datetime) -> None:
        row = {
            "job_id": job_id,
            "agent_did": agent_did,
            "policy_hash": policy_hash,
            "created_at": require_aware(at),
        }
        await self._write(t.jobs.insert(), row, doing="creating the job")

    async def get(self, job_id: str) -> JobRecord | None:
        result = await self._execute(
            select(t.jobs).where(t.jobs.c.job_id == job_id), doing="reading the job"
        )
        row = result.first()
        if row is None:
            return None
        return JobRecord(row.job_id, row.agent_did, row.policy_hash, row.created_at)

    async def add_step(
        self, job_id: str, *, route: str, plan_hash: str | None, gated: bool, at: datetime
    ) -> None:
        row = {
            "job_id": job_id,
            "route": route,
            "plan_hash": plan_hash,
            "gated": gated,
            "at": require_aware(at),
        }
        await self._write(t.job_steps.insert(), row, doing="recording the job step")

    async def routes(self, job_id: str) -> frozenset[str]:
        """The routes the job has run so far (each once, however long the job)."""
        c = t.job_steps.c
        result = await self._execute(
            select(c.route).where(c.job_id == job_id).distinct(),
            doing="reading the job's routes",
        )
        return frozenset(result.scalars())

    async def last_gated_plan(self, job_id: str) -> str | None:
        """The plan hash of the job's latest gated step that declared one."""
        c = t.job_steps.c
        result = await self._execute(
            select(c.plan_hash)
            .where(c.job_id == job_id, c.gated.is_(True), c.plan_hash.is_not(None))
            .order_by(c.id.desc())
            .limit(1),
            doing="reading the job's approved plan",
        )
        plan: str | None = result.scalar()
        return plan

    async def index_receipt(self, request_id: str, log_index: int, kind: str) -> None:
        row = {"request_id": request_id, "log_index": log_index, "kind": kind}
        await self._write(t.request_receipts.insert(), row, doing="indexing the receipt")

    async def receipt_indexes(self, request_id: str) -> list[int]:
        c = t.request_receipts.c
        result = await self._execute(
            select(c.log_index).where(c.request_id == request_id).order_by(c.log_index),
            doing="reading the request's receipts",
        )
        return [int(r.log_index) for r in result]

    async def receipt_entries(self, request_id: str) -> list[tuple[int, bytes]]:
        """``(log index, entry bytes)`` of every receipt about the request, in log order,
        read in one statement.

        Raises:
            LogError: ``LOG_GAP`` when an indexed receipt is missing from the log.
        """
        c, e = t.request_receipts.c, t.log_entries.c
        result = await self._execute(
            select(c.log_index, e.entry)
            .select_from(t.request_receipts.outerjoin(t.log_entries, e.idx == c.log_index))
            .where(c.request_id == request_id)
            .order_by(c.log_index),
            doing="reading the request's receipts",
        )
        found: list[tuple[int, bytes]] = []
        for row in result:
            if row.entry is None:
                raise LogError("LOG_GAP", f"log entry {row.log_index} is missing")
            found.append((int(row.log_index), bytes(row.entry)))
        return found

    async def save_bundle(
        self, request_id: str, envelope: Mapping[str, Any], *, at: datetime
    ) -> bool:
        """Keep the sealed bundle; False when another replica sealed it first."""
        statement = self._insert(t.bundles).on_conflict_do_nothing()
        row = {"request_id": request_id, "envelope": dict(envelope), "sealed_at": require_aware(at)}
        result = await self._write(statement, row, doing="saving the proof bundle")
        return result.rowcount == 1

    async def bundle(self, request_id: str) -> dict[str, Any] | None:
        result = await self._execute(
            select(t.bundles.c.envelope).where(t.bundles.c.request_id == request_id),
            doing="reading the proof bundle",
        )
        row = result.first()
        return None if row is None else dict(row.envelope)
