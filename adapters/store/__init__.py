"""keyturn's store: SQLAlchemy 2 (async) on SQLite by default, PostgreSQL for replicas.

Modules: :mod:`~adapters.store.settings` (URLs, time limits), :mod:`~adapters.store.engine`
(engines, error mapping), :mod:`~adapters.store.tables` (the schema),
:mod:`~adapters.store.approvals` (requests, decisions, grants, tokens),
:mod:`~adapters.store.ledger` (the receipt log), :mod:`~adapters.store.policies`,
:mod:`~adapters.store.chat` (message references, identity links),
:mod:`~adapters.store.outbox`, :mod:`~adapters.store.unit` (``SqlStore``, the unit of
work, ``open_store``), :mod:`~adapters.store.migrate` (Alembic, run from code) and
:mod:`~adapters.store.verify` (``verify_log``).

Reason codes raised here (all ``StoreError`` unless stated): ``STORE_UNAVAILABLE``,
``STORE_BUSY``, ``STORE_CONFLICT``, ``STORE_FAILED``, ``STORE_READ_ONLY``,
``NOT_FOUND``, ``RECORD_CORRUPT``, ``GRANT_EXISTS``, ``LOG_DUPLICATE_ENTRY``,
``IDENTITY_LINK_CONFLICT``, ``STORE_SCHEMA_OUTDATED``, ``STORE_SCHEMA_UNKNOWN``;
``ApprovalRefusedError("ALREADY_DECIDED")``; ``GateDeniedError`` ``GRANT_ALREADY_USED``,
``GRANT_UNKNOWN``, ``GRANT_EXPIRED``; ``LogError`` ``LOG_GAP``,
``LOG_SIZE_OUT_OF_RANGE``, ``LOG_HEAD_MISMATCH``, ``LOG_LEAF_HASH_MISMATCH``,
``LOG_ROOT_MISMATCH``, ``CHECKPOINT_SIZE_MISMATCH``, ``CHECKPOINT_MALFORMED``.
"""

from adapters.store.chat import IdentityLink, MessageRef
from adapters.store.migrate import current_revision, head_revision, upgrade, upgrade_database
from adapters.store.outbox import OutboxItem
from adapters.store.policies import PolicyActivation, StoredPolicy
from adapters.store.settings import StoreSettings, database_url, sqlite_url
from adapters.store.unit import SqlStore, SqlUnitOfWork, open_store
from adapters.store.verify import LogVerification, verify_log

__all__ = [
    "IdentityLink",
    "LogVerification",
    "MessageRef",
    "OutboxItem",
    "PolicyActivation",
    "SqlStore",
    "SqlUnitOfWork",
    "StoreSettings",
    "StoredPolicy",
    "current_revision",
    "database_url",
    "head_revision",
    "open_store",
    "sqlite_url",
    "upgrade",
    "upgrade_database",
    "verify_log",
]
