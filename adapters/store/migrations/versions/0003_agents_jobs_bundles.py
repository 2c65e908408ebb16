"""Agents and their proof-of-possession challenges, jobs and their steps, the index of
receipts per request (for sealing) and sealed proof bundles.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)
_HASH = sa.String(64)
_NAME = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("agent_did", _NAME, nullable=False),
        sa.Column("name", _NAME, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("added_at", _TIME, nullable=False),
        sa.Column("added_by", _NAME, nullable=False),
        sa.PrimaryKeyConstraint("agent_did", name="pk_agents"),
    )
    op.create_table(
        "agent_challenges",
        sa.Column("challenge", sa.String(64), nullable=False),
        sa.Column("agent_did", _NAME, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("challenge", name="pk_agent_challenges"),
        sa.ForeignKeyConstraint(
            ["agent_did"], ["agents.agent_did"], name="fk_agent_challenges_agent_did_agents"
        ),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", _NAME, nullable=False),
        sa.Column("agent_did", _NAME, nullable=False),
        sa.Column("policy_hash", _HASH, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_jobs"),
    )
    op.create_table(
        "job_steps",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("job_id", _NAME, nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("plan_hash", sa.String(256), nullable=True),
        sa.Column("gated", sa.Boolean(), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_steps"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.job_id"], name="fk_job_steps_job_id_jobs"),
    )
    op.create_index("ix_job_steps_job_id", "job_steps", ["job_id"])
    op.create_table(
        "request_receipts",
        sa.Column("request_id", _NAME, nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "log_index", name="pk_request_receipts"),
    )
    op.create_table(
        "bundles",
        sa.Column("request_id", _NAME, nullable=False),
        sa.Column("envelope", sa.JSON(), nullable=False),
        sa.Column("sealed_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_bundles"),
    )


def downgrade() -> None:
    for table in ("bundles", "request_receipts", "job_steps", "jobs", "agent_challenges", "agents"):
        op.drop_table(table)
