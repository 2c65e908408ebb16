"""Named leases (one replica reconciles at a time) and an index to find executions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.create_index(
        "ix_request_receipts_kind_request_id", "request_receipts", ["kind", "request_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_request_receipts_kind_request_id", table_name="request_receipts")
    op.drop_table("leases")
