"""Slack Socket Mode envelopes claimed by a replica (each envelope is processed once).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slack_envelopes",
        sa.Column("envelope_id", sa.String(255), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("envelope_id", name="pk_slack_envelopes"),
    )
    op.create_index("ix_slack_envelopes_claimed_at", "slack_envelopes", ["claimed_at"])


def downgrade() -> None:
    op.drop_table("slack_envelopes")
