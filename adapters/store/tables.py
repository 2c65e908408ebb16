"""The schema at the head revision, as SQLAlchemy Core tables.

Each row keeps the core value's JSON record verbatim (``record``) next to the few
columns the database indexes and constrains; the constraints are the guarantees:

    decisions  UNIQUE (request_id, approver_id)      one decision per person per request
    grants     UNIQUE (request_id)                   one grant per request
    grants     consumed_at, set by one conditional UPDATE      used at most once
    log_head   one row, locked by every append       dense indexes across replicas
    log_entries PRIMARY KEY idx, UNIQUE leaf_hash    no fork, each entry stored once
    outbox     partial UNIQUE (channel_key, coalesce_key) WHERE unsent   one pending
                                                      message per card to update
    leases     PRIMARY KEY name, conditional UPDATE   one holder per lease at a time

The migrations in ``adapters/store/migrations`` create exactly this (a test compares
them); repositories build their statements from these objects.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from core.times import require_aware

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """An instant stored in UTC and always read back timezone-aware.

    SQLite has no time zone type: instants are stored as naive UTC text in one fixed
    format, so comparing them in SQL (``expires_at <= :now``) is comparing instants.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = require_aware(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Serial = BigInteger().with_variant(Integer(), "sqlite")
Hash = String(64)  # base64url SHA-256 is 43 characters, hex SHA-256 is 64
Name = String(255)

REQUEST_STATES = ("pending", "approved", "denied", "expired", "cancelled", "consumed", "revoked")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


policies = Table(
    "policies",
    metadata,
    Column("policy_hash", Hash, primary_key=True),
    Column("name", Name, nullable=True),
    Column("document", JSON, nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
)

policy_activations = Table(
    "policy_activations",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("policy_hash", Hash, ForeignKey("policies.policy_hash"), nullable=False),
    Column("activated_at", UtcDateTime, nullable=False),
    Column("activated_by", Name, nullable=False),
    Column("note", Text, nullable=True),
    Index(None, "activated_at"),
)

requests = Table(
    "requests",
    metadata,
    Column("request_id", Name, primary_key=True),
    Column("request_hash", Hash, nullable=False),
    Column("job_id", Name, nullable=False),
    Column("policy_hash", Hash, nullable=False),
    Column("tool_route", String(256), nullable=False),
    Column("payload_hash", Hash, nullable=False),
    Column("requester", Name, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("state_changed_at", UtcDateTime, nullable=True),
    Column("record", JSON, nullable=False),
    CheckConstraint(_in("state", REQUEST_STATES), name="state"),
    Index(None, "state", "expires_at"),
    Index(None, "job_id"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("request_id", Name, ForeignKey("requests.request_id"), nullable=False),
    Column("approver_id", Name, nullable=False),
    Column("request_hash", Hash, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("decided_at", UtcDateTime, nullable=False),
    Column("platform", String(32), nullable=False),
    Column("record", JSON, nullable=False),
    UniqueConstraint("request_id", "approver_id"),
    CheckConstraint(_in("verdict", ("approve", "deny")), name="verdict"),
)

grants = Table(
    "grants",
    metadata,
    Column("grant_id", Name, primary_key=True),
    Column("request_id", Name, ForeignKey("requests.request_id"), nullable=False),
    Column("request_hash", Hash, nullable=False),
    Column("payload_hash", Hash, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("consumed_at", UtcDateTime, nullable=True),
    Column("record", JSON, nullable=False),
    UniqueConstraint("request_id"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("jti", Name, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("subject", Name, nullable=False),
    Column("job_id", Name, nullable=True),
    Column("request_id", Name, nullable=True),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("record", JSON, nullable=False),
    UniqueConstraint("jti"),
    Index(None, "job_id"),
)

# Revocations are keyed by token hash alone, without a foreign key: a token keyturn
# never recorded (or whose row was pruned) can still be revoked, and stays revoked.
token_revocations = Table(
    "token_revocations",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("revoked_at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
)

log_head = Table(
    "log_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("size >= 0", name="size"),
)

log_entries = Table(
    "log_entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("appended_at", UtcDateTime, nullable=False),
    UniqueConstraint("leaf_hash"),
    CheckConstraint("idx >= 0", name="idx"),
)

log_checkpoints = Table(
    "log_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("note", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("size >= 0", name="size"),
)

message_refs = Table(
    "message_refs",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("request_id", Name, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("platform", String(16), nullable=False),
    Column("channel", Name, nullable=False),
    Column("message_id", Name, nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=True),
    Column("extra", JSON, nullable=False),
    UniqueConstraint("platform", "channel", "message_id"),
    Index(None, "request_id"),
    CheckConstraint(_in("platform", ("slack", "teams", "web")), name="platform"),
)

identity_links = Table(
    "identity_links",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("platform", String(16), nullable=False),
    Column("workspace_id", Name, nullable=False),
    Column("platform_user_id", Name, nullable=False),
    Column("directory_id", Name, nullable=False),
    Column("method", String(64), nullable=False),
    Column("verified_at", UtcDateTime, nullable=False),
    Column("evidence", JSON, nullable=False),
    UniqueConstraint("platform", "workspace_id", "platform_user_id"),
    Index(None, "directory_id"),
    CheckConstraint(_in("platform", ("slack", "teams")), name="platform"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("channel_key", Name, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("coalesce_key", Name, nullable=True),
    Column("payload", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    # Revision 0002: bumped by every coalescing update, so a worker that sent an older
    # payload cannot mark the newer one as sent.
    Column("version", Integer, nullable=False, server_default=text("0")),
    Index(
        "uq_outbox_pending_coalesce",
        "channel_key",
        "coalesce_key",
        unique=True,
        sqlite_where=text("sent_at IS NULL AND coalesce_key IS NOT NULL"),
        postgresql_where=text("sent_at IS NULL AND coalesce_key IS NOT NULL"),
    ),
    Index(
        "ix_outbox_due",
        "next_attempt_at",
        sqlite_where=text("sent_at IS NULL"),
        postgresql_where=text("sent_at IS NULL"),
    ),
)

# --- agents, jobs, per-request receipt index, sealed bundles (revision 0003) ---------

agents = Table(
    "agents",
    metadata,
    Column("agent_did", Name, primary_key=True),
    Column("name", Name, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
    Column("added_by", Name, nullable=False),
)

agent_challenges = Table(
    "agent_challenges",
    metadata,
    Column("challenge", String(64), primary_key=True),
    Column("agent_did", Name, ForeignKey("agents.agent_did"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", Name, primary_key=True),
    Column("agent_did", Name, nullable=False),
    Column("policy_hash", Hash, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

job_steps = Table(
    "job_steps",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("job_id", Name, ForeignKey("jobs.job_id"), nullable=False),
    Column("route", String(256), nullable=False),
    Column("plan_hash", String(256), nullable=True),
    Column("gated", Boolean, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "job_id"),
)

request_receipts = Table(
    "request_receipts",
    metadata,
    Column("request_id", Name, primary_key=True),
    Column("log_index", BigInteger, primary_key=True),
    Column("kind", String(32), nullable=False),
    # Revision 0005: reconciliation finds the executions (executor_step receipts) fast.
    Index("ix_request_receipts_kind_request_id", "kind", "request_id"),
)

bundles = Table(
    "bundles",
    metadata,
    Column("request_id", Name, primary_key=True),
    Column("envelope", JSON, nullable=False),
    Column("sealed_at", UtcDateTime, nullable=False),
)

# Revision 0004: a Slack Socket Mode envelope id, claimed by the one replica that
# processes it (the primary key is the claim: a second INSERT finds the row).
slack_envelopes = Table(
    "slack_envelopes",
    metadata,
    Column("envelope_id", Name, primary_key=True),
    Column("claimed_at", UtcDateTime, nullable=False),
    Index("ix_slack_envelopes_claimed_at", "claimed_at"),
)

# Revision 0005: named leases ("one replica acts"): a row per lease, taken by one
# conditional UPDATE (held by me, or expired) or, the first time, one INSERT.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", Name, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)
