"""Where the store lives and how long it waits: database URL and time limits.

Two back ends are supported, each through one async driver:

* SQLite (the embedded default), ``sqlite+aiosqlite:///<data dir>/keyturn.db``, in WAL
  mode with ``synchronous=FULL``: a commit is on disk when it returns;
* PostgreSQL (several replicas), ``postgresql+psycopg://user@host:5432/db``.

Plain ``sqlite:///…`` and ``postgresql://…`` URLs are accepted and given their async
driver; any other driver or database is refused at start-up with ``CONFIG_INVALID``
rather than half working.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from core.errors import ConfigError

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+psycopg"
#: The embedded default's file name inside the data directory.
SQLITE_FILE_NAME = "keyturn.db"

_SCHEMA_NAME = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")
_APPLICATION_NAME = re.compile(r"\A[A-Za-z0-9_.-]{1,63}\Z")
_DRIVERS = {
    "sqlite": SQLITE_DRIVER,
    SQLITE_DRIVER: SQLITE_DRIVER,
    "postgresql": POSTGRES_DRIVER,
    "postgres": POSTGRES_DRIVER,
    POSTGRES_DRIVER: POSTGRES_DRIVER,
}


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Time limits and pool size; the defaults suit one bot process per host.

    Attributes:
        busy_timeout_ms: SQLite: how long a writer waits for another writer's lock
            before the unit of work fails with ``STORE_BUSY``.
        lock_timeout_ms: PostgreSQL: the same for row locks (``lock_timeout``).
        idle_in_transaction_timeout_ms: PostgreSQL: a session that sits idle inside a
            transaction this long (a replica frozen while holding a request lock) is
            ended by the server, so its locks cannot block the other replicas forever.
        connect_timeout_s: PostgreSQL: how long to wait for a connection; past it the
            request fails closed with ``STORE_UNAVAILABLE``.
        pool_size: connections kept open per process (as many again may be opened
            for a burst and are closed after it). A busy server holds one per unit of
            work in flight; a pool smaller than that opens and closes connections all
            the time (on SQLite each is a thread and a file open: 3–15 ms each).
        pg_schema: PostgreSQL schema to work in (``search_path``); ``None`` keeps the
            server's default. Tests use a fresh schema per run.
        application_name: PostgreSQL: how this replica's sessions are named in
            ``pg_stat_activity``.
    """

    busy_timeout_ms: int = 10_000
    lock_timeout_ms: int = 10_000
    idle_in_transaction_timeout_ms: int = 60_000
    connect_timeout_s: int = 5
    pool_size: int = 20
    pg_schema: str | None = None
    application_name: str = "keyturn"

    def __post_init__(self) -> None:
        for name in ("busy_timeout_ms", "lock_timeout_ms", "idle_in_transaction_timeout_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    "CONFIG_INVALID", f"store setting {name} must be a positive integer"
                )
        if not isinstance(self.connect_timeout_s, int) or self.connect_timeout_s <= 0:
            raise ConfigError("CONFIG_INVALID", "store setting connect_timeout_s must be positive")
        if not isinstance(self.pool_size, int) or not 1 <= self.pool_size <= 100:
            raise ConfigError("CONFIG_INVALID", "store setting pool_size must be 1 to 100")
        if self.pg_schema is not None and not _SCHEMA_NAME.match(self.pg_schema):
            # The name goes into a connection option, so only plain identifiers pass.
            raise ConfigError(
                "CONFIG_INVALID",
                f"store setting pg_schema {self.pg_schema!r} is not a lower-case identifier",
            )
        if not _APPLICATION_NAME.match(self.application_name):
            raise ConfigError(
                "CONFIG_INVALID", "store setting application_name must be 1-63 of [A-Za-z0-9_.-]"
            )


def sqlite_url(data_dir: Path) -> str:
    """The embedded default's URL: ``keyturn.db`` inside ``data_dir`` (which must exist)."""
    return f"{SQLITE_DRIVER}:///{(Path(data_dir) / SQLITE_FILE_NAME).resolve()}"


def database_url(url: str) -> URL:
    """Parse a store URL and give it keyturn's async driver.

    Raises:
        ConfigError: ``CONFIG_INVALID`` for an unparsable URL, another database or
            driver, or an in-memory SQLite database (it would vanish between
            connections, and with it every approval).
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise ConfigError("CONFIG_INVALID", "the store URL is not a database URL") from e
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            "CONFIG_INVALID",
            f"store URL scheme {parsed.drivername!r} is not supported: use sqlite:/// or "
            "postgresql://",
        )
    parsed = parsed.set(drivername=driver)
    if driver == SQLITE_DRIVER and parsed.database in (None, "", ":memory:"):
        raise ConfigError("CONFIG_INVALID", "the SQLite store needs a file path, not memory")
    return parsed


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"
