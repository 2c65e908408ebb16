"""Outbox: a version counter, so coalescing cannot lose an update that is in flight.

Without it, a worker that claimed a card update and sent the old payload would mark
the row sent after another replica had coalesced a newer payload into it, and the
newer card state would never be posted. Every coalescing update now bumps
``version``; marking sent only succeeds for the version that was claimed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN with a constant default is a plain ALTER on both back ends (no table
    # rewrite on PostgreSQL 11+, no batch copy on SQLite).
    op.add_column(
        "outbox",
        sa.Column("version", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("outbox", "version")
