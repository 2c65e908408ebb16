"""Baseline: policies, requests, decisions, grants, tokens, the receipt log, chat references,
identity links and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out rather than imported from adapters.store.tables: a migration is history
# and must keep creating what it created, whatever the tables module says later.
_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)
_HASH = sa.String(64)
_NAME = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("policy_hash", _HASH, nullable=False),
        sa.Column("name", _NAME, nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("added_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("policy_hash", name="pk_policies"),
    )
    op.create_table(
        "policy_activations",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("policy_hash", _HASH, nullable=False),
        sa.Column("activated_at", _TIME, nullable=False),
        sa.Column("activated_by", _NAME, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_policy_activations"),
        sa.ForeignKeyConstraint(
            ["policy_hash"],
            ["policies.policy_hash"],
            name="fk_policy_activations_policy_hash_policies",
        ),
    )
    op.create_index(
        "ix_policy_activations_activated_at", "policy_activations", ["activated_at"]
    )

    op.create_table(
        "requests",
        sa.Column("request_id", _NAME, nullable=False),
        sa.Column("request_hash", _HASH, nullable=False),
        sa.Column("job_id", _NAME, nullable=False),
        sa.Column("policy_hash", _HASH, nullable=False),
        sa.Column("tool_route", sa.String(256), nullable=False),
        sa.Column("payload_hash", _HASH, nullable=False),
        sa.Column("requester", _NAME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("state_changed_at", _TIME, nullable=True),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_requests"),
        sa.CheckConstraint(
            "state IN ('pending', 'approved', 'denied', 'expired', 'cancelled', "
            "'consumed', 'revoked')",
            name="ck_requests_state",
        ),
    )
    op.create_index("ix_requests_state_expires_at", "requests", ["state", "expires_at"])
    op.create_index("ix_requests_job_id", "requests", ["job_id"])

    op.create_table(
        "decisions",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("request_id", _NAME, nullable=False),
        sa.Column("approver_id", _NAME, nullable=False),
        sa.Column("request_hash", _HASH, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("decided_at", _TIME, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.request_id"], name="fk_decisions_request_id_requests"
        ),
        sa.UniqueConstraint(
            "request_id", "approver_id", name="uq_decisions_request_id_approver_id"
        ),
        sa.CheckConstraint("verdict IN ('approve', 'deny')", name="ck_decisions_verdict"),
    )

    op.create_table(
        "grants",
        sa.Column("grant_id", _NAME, nullable=False),
        sa.Column("request_id", _NAME, nullable=False),
        sa.Column("request_hash", _HASH, nullable=False),
        sa.Column("payload_hash", _HASH, nullable=False),
        sa.Column("issued_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("consumed_at", _TIME, nullable=True),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name="pk_grants"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.request_id"], name="fk_grants_request_id_requests"
        ),
        sa.UniqueConstraint("request_id", name="uq_grants_request_id"),
    )

    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("jti", _NAME, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", _NAME, nullable=False),
        sa.Column("job_id", _NAME, nullable=True),
        sa.Column("request_id", _NAME, nullable=True),
        sa.Column("issued_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_tokens"),
        sa.UniqueConstraint("jti", name="uq_tokens_jti"),
    )
    op.create_index("ix_tokens_job_id", "tokens", ["job_id"])
    op.create_table(
        "token_revocations",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("revoked_at", _TIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_token_revocations"),
    )

    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log_head"),
        sa.CheckConstraint("id = 1", name="ck_log_head_single_row"),
        sa.CheckConstraint("size >= 0", name="ck_log_head_size"),
    )
    op.execute("INSERT INTO log_head (id, size) VALUES (1, 0)")
    op.create_table(
        "log_entries",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("appended_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_log_entries"),
        sa.UniqueConstraint("leaf_hash", name="uq_log_entries_leaf_hash"),
        sa.CheckConstraint("idx >= 0", name="ck_log_entries_idx"),
    )
    if op.get_bind().dialect.name == "sqlite":
        # SQLite appends in one statement (INSERT … SELECT size FROM log_head) and this
        # trigger moves the head in the same statement; the unit of work's BEGIN
        # IMMEDIATE already serialises appenders. PostgreSQL does both in one CTE.
        op.execute(
            "CREATE TRIGGER log_head_follows_entries AFTER INSERT ON log_entries "
            "BEGIN UPDATE log_head SET size = size + 1 WHERE id = 1; END"
        )
    op.create_table(
        "log_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_log_checkpoints"),
        sa.CheckConstraint("size >= 0", name="ck_log_checkpoints_size"),
    )

    op.create_table(
        "message_refs",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("request_id", _NAME, nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("channel", _NAME, nullable=False),
        sa.Column("message_id", _NAME, nullable=False),
        sa.Column("posted_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message_refs"),
        sa.UniqueConstraint(
            "platform", "channel", "message_id", name="uq_message_refs_platform_channel_message_id"
        ),
        sa.CheckConstraint(
            "platform IN ('slack', 'teams', 'web')", name="ck_message_refs_platform"
        ),
    )
    op.create_index("ix_message_refs_request_id", "message_refs", ["request_id"])

    op.create_table(
        "identity_links",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("workspace_id", _NAME, nullable=False),
        sa.Column("platform_user_id", _NAME, nullable=False),
        sa.Column("directory_id", _NAME, nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("verified_at", _TIME, nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_links"),
        sa.UniqueConstraint(
            "platform",
            "workspace_id",
            "platform_user_id",
            name="uq_identity_links_platform_workspace_id_platform_user_id",
        ),
        sa.CheckConstraint("platform IN ('slack', 'teams')", name="ck_identity_links_platform"),
    )
    op.create_index("ix_identity_links_directory_id", "identity_links", ["directory_id"])

    op.create_table(
        "outbox",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("channel_key", _NAME, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("coalesce_key", _NAME, nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("sent_at", _TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index(
        "uq_outbox_pending_coalesce",
        "outbox",
        ["channel_key", "coalesce_key"],
        unique=True,
        sqlite_where=sa.text("sent_at IS NULL AND coalesce_key IS NOT NULL"),
        postgresql_where=sa.text("sent_at IS NULL AND coalesce_key IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_due",
        "outbox",
        ["next_attempt_at"],
        sqlite_where=sa.text("sent_at IS NULL"),
        postgresql_where=sa.text("sent_at IS NULL"),
    )


def downgrade() -> None:
    for table in (
        "outbox",
        "identity_links",
        "message_refs",
        "log_checkpoints",
        "log_entries",
        "log_head",
        "token_revocations",
        "tokens",
        "grants",
        "decisions",
        "requests",
        "policy_activations",
        "policies",
    ):
        op.drop_table(table)
