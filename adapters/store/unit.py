"""``SqlStore`` and its unit of work: one transaction over every repository.

::

    store = await open_store(url, auto_upgrade=True)
    async with store.unit_of_work() as uow:
        request = await uow.requests.get(request_id, for_update=True)
        ...
        await uow.commit()          # nothing is saved unless this runs
    await store.close()

A unit of work holds one pooled connection and one transaction. Leaving the ``async
with`` block without :meth:`SqlUnitOfWork.commit` (an exception, a refusal, or simply
forgetting) rolls everything back. After an error from the store the transaction may
be unusable (PostgreSQL aborts it), so the only thing to do is leave the block. A unit
of work that is cancelled mid-statement throws its connection away rather than return
a connection in an unknown protocol state to the pool.

Lock order, everywhere: request (or grant) rows first, the log head last (append just
before commit), so replicas cannot deadlock. On SQLite the writing units of one
process also queue, in arrival order, before taking SQLite's write lock
(:class:`WriterQueue`: latency only, no guarantee rests on it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.approvals import (
    SqlDecisionRepository,
    SqlGrantRepository,
    SqlRequestRepository,
    SqlTokenRepository,
)
from adapters.store.chat import SqlIdentityLinkRepository, SqlMessageRefRepository
from adapters.store.engine import READ_ONLY_OPTION, create_engine, store_error
from adapters.store.jobs import SqlAgentRepository, SqlJobRepository
from adapters.store.ledger import SqlLogRepository
from adapters.store.migrate import current_revision, head_revision, known_revisions, upgrade
from adapters.store.outbox import SqlOutboxRepository
from adapters.store.policies import SqlPolicyRepository
from adapters.store.settings import StoreSettings, database_url
from core.errors import StoreError

log = logging.getLogger(__name__)


class SqlUnitOfWork:
    """``core.ports.UnitOfWork`` on SQL, plus keyturn's adapter-side repositories.

    Attributes:
        requests, decisions, grants, tokens, log: the core ports.
        policies, messages, identities, outbox: adapter repositories (policies by
            hash, chat message references, identity links, the chat outbox).
    """

    requests: SqlRequestRepository
    decisions: SqlDecisionRepository
    grants: SqlGrantRepository
    tokens: SqlTokenRepository
    log: SqlLogRepository
    policies: SqlPolicyRepository
    messages: SqlMessageRefRepository
    identities: SqlIdentityLinkRepository
    outbox: SqlOutboxRepository
    agents: SqlAgentRepository
    jobs: SqlJobRepository

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        read_only: bool = False,
        writers: WriterQueue | None = None,
    ) -> None:
        self._engine = engine
        self._read_only = read_only
        self._writers = None if read_only else writers
        self._queued = False
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        """Check a connection out and begin (SQLite: ``BEGIN IMMEDIATE``).

        Raises:
            StoreError: ``STORE_UNAVAILABLE`` when the database cannot be reached,
                ``STORE_BUSY`` when SQLite's write lock is not granted in time.
        """
        if self._conn is not None or self._queued:
            raise RuntimeError("a unit of work is entered once")
        if self._writers is not None:
            await self._writers.acquire()
            self._queued = True
        try:
            conn = await self._engine.connect()
        except BaseException as e:
            self._leave_queue()
            if isinstance(e, SQLAlchemyError):
                raise store_error(e, "connecting to the database") from e
            raise
        try:
            if self._read_only:
                options: dict[str, Any] = {READ_ONLY_OPTION: True}
                if conn.dialect.name == "postgresql":
                    # One snapshot for every read of the unit (verify_log relies on it).
                    options["isolation_level"] = "REPEATABLE READ"
                await conn.execution_options(**options)
            await conn.begin()
        except BaseException as e:
            await _discard(conn)
            self._leave_queue()
            if isinstance(e, SQLAlchemyError):
                raise store_error(e, "beginning a transaction") from e
            raise
        self._conn = conn
        read_only = self._read_only
        self.requests = SqlRequestRepository(conn, read_only=read_only)
        self.decisions = SqlDecisionRepository(conn, read_only=read_only)
        self.grants = SqlGrantRepository(conn, read_only=read_only)
        self.tokens = SqlTokenRepository(conn, read_only=read_only)
        self.log = SqlLogRepository(conn, read_only=read_only)
        self.policies = SqlPolicyRepository(conn, read_only=read_only)
        self.messages = SqlMessageRefRepository(conn, read_only=read_only)
        self.identities = SqlIdentityLinkRepository(conn, read_only=read_only)
        self.outbox = SqlOutboxRepository(conn, read_only=read_only)
        self.agents = SqlAgentRepository(conn, read_only=read_only)
        self.jobs = SqlJobRepository(conn, read_only=read_only)
        return self

    async def commit(self) -> None:
        """Make everything done so far durable (fsynced on both back ends).

        Raises:
            StoreError: ``STORE_UNAVAILABLE`` (the message says when the outcome is
                unknown: the connection was lost during COMMIT), ``STORE_CONFLICT``.
        """
        conn = self._require()
        try:
            await conn.commit()
        except SQLAlchemyError as e:
            raise store_error(e, "committing") from e

    async def rollback(self) -> None:
        """Discard everything since the last commit (leaving the block does it too)."""
        conn = self._require()
        try:
            await conn.rollback()
        except SQLAlchemyError as e:
            raise store_error(e, "rolling back") from e

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            exc = exc_info[1] if len(exc_info) > 1 else None
            if isinstance(exc, BaseException) and not isinstance(exc, Exception):
                # Cancelled (or interrupted) possibly mid-statement: the driver may be
                # half way through a protocol exchange, so the connection is not
                # reused. The server rolls back the transaction when it goes.
                await _discard(conn)
                return
            try:
                if conn.in_transaction():
                    await conn.rollback()
                await conn.close()
            except Exception:  # never mask the block's own exception
                log.warning("rollback failed; discarding the connection", exc_info=True)
                await _discard(conn)
        finally:
            self._leave_queue()

    def _leave_queue(self) -> None:
        if self._queued and self._writers is not None:
            self._queued = False
            self._writers.release()

    def _require(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("use the unit of work inside `async with`")
        return self._conn


class WriterQueue:
    """SQLite only, and for latency only: this process's writing units of work take
    SQLite's write lock one after another, in arrival order.

    SQLite serialises writers by itself (``BEGIN IMMEDIATE``), and every guarantee
    rests on that, across processes too; this queue adds none. But a writer that finds
    the lock taken sleeps in SQLite's busy handler with growing back-off (1, 2, 5 …
    100 ms), so in a burst of clicks some waited a second for a lock that was free
    after 2 ms (measured: max 1.2 s with five concurrent flows). Waiting here first
    keeps the order and the wake-up prompt. Waiting longer than the busy timeout is
    ``STORE_BUSY``, as it would be in SQLite; so is a second writing unit opened by a
    task that already holds one (it could never proceed).
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner: asyncio.Task[Any] | None = None

    async def acquire(self) -> None:
        """Raises ``StoreError("STORE_BUSY")`` past the timeout."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            raise StoreError(
                "STORE_BUSY", "a writing unit of work is already open in this task; nest none"
            )
        try:
            if self._lock.locked():
                await asyncio.wait_for(self._lock.acquire(), self._timeout)
            else:
                await self._lock.acquire()  # free: returns at once, no task is made
        except TimeoutError as e:
            raise StoreError(
                "STORE_BUSY", "the database stayed locked by another unit of work in this process"
            ) from e
        self._owner = task

    def release(self) -> None:
        self._owner = None
        if self._lock is not None and self._lock.locked():
            self._lock.release()


async def _discard(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    except Exception:  # the connection is being thrown away anyway
        log.debug("invalidating a broken connection failed", exc_info=True)
    try:
        await conn.close()
    except Exception:  # likewise
        log.debug("closing a broken connection failed", exc_info=True)


class SqlStore:
    """The database behind keyturn: hands out units of work."""

    def __init__(self, engine: AsyncEngine, url: URL, settings: StoreSettings) -> None:
        self._engine = engine
        self._url = url
        self.settings = settings
        self._writers = (
            WriterQueue(settings.busy_timeout_ms / 1000)
            if engine.dialect.name == "sqlite"
            else None
        )

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def unit_of_work(self, *, read_only: bool = False) -> SqlUnitOfWork:
        """A new unit of work; ``read_only`` ones read one snapshot, take no write lock
        on SQLite, and refuse writes with ``STORE_READ_ONLY``."""
        return SqlUnitOfWork(self._engine, read_only=read_only, writers=self._writers)

    async def revision(self) -> str | None:
        return await current_revision(self._engine)

    async def close(self) -> None:
        await self._engine.dispose()

    def __repr__(self) -> str:
        # Never show a password from the URL.
        return f"SqlStore({self._url.render_as_string(hide_password=True)!r})"


async def open_store(
    url: str, *, auto_upgrade: bool, settings: StoreSettings | None = None
) -> SqlStore:
    """Open the store at ``url`` and make sure its schema is the code's.

    Args:
        url: ``sqlite:///<path>`` (see ``sqlite_url``) or ``postgresql://…``.
        auto_upgrade: upgrade an empty or older schema now (the embedded default on
            first run); otherwise such a database is refused, and an operator runs
            ``keyturn db upgrade`` (the usual choice with several replicas).

    Raises:
        ConfigError: ``CONFIG_INVALID`` for an unsupported URL.
        StoreError: ``STORE_UNAVAILABLE`` when the database cannot be reached;
            ``STORE_SCHEMA_OUTDATED`` when it needs an upgrade and ``auto_upgrade`` is
            off; ``STORE_SCHEMA_UNKNOWN`` when it was migrated by a newer keyturn.
    """
    resolved = settings or StoreSettings()
    parsed = database_url(url)
    engine = create_engine(parsed, resolved)
    try:
        current = await current_revision(engine)
        head = head_revision()
        if current != head:
            if current is not None and current not in known_revisions():
                raise StoreError(
                    "STORE_SCHEMA_UNKNOWN",
                    f"the database is at schema revision {current}, which this keyturn "
                    "does not know (was it upgraded by a newer version?)",
                )
            if not auto_upgrade:
                raise StoreError(
                    "STORE_SCHEMA_OUTDATED",
                    f"the database schema is at {current or 'nothing'}, keyturn needs "
                    f"{head}: run `keyturn db upgrade`",
                )
            await upgrade(engine)
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine, parsed, resolved)
