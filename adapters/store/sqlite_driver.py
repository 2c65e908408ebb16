"""aiosqlite with one trip to its thread per statement, and BEGIN riding on the first one.

aiosqlite runs each sqlite3 call on a worker thread; a trip there and back costs about
80 µs on the reference machine (a thread wake-up and an event-loop wake-up), while a
durable single-row commit costs 140 µs. SQLAlchemy's stock adapter makes three or four
trips per statement (open a cursor, execute, fetch, close) and two more per unit of
work (BEGIN, and a ROLLBACK when the connection returns to the pool). This adapter,
passed to SQLAlchemy as the DBAPI module of its aiosqlite dialect, makes:

* one trip per statement: the cursor is opened, executed, fetched and closed on the
  worker thread in one call;
* no trip for BEGIN: the engine's ``begin`` hook calls :meth:`OneTripConnection.defer_begin`
  and the ``BEGIN IMMEDIATE`` is executed just before the unit's first statement, in
  the same trip (the write lock is still taken before anything is read);
* no trip for ROLLBACK or COMMIT when no statement ran, nor for the pool's reset of a
  connection whose transaction already ended;
* no trip once a unit's transaction is open: ``BEGIN IMMEDIATE`` is first tried on
  the event loop's thread without waiting (only when another process holds the lock
  does it go to the thread, to wait in SQLite's busy handler); a reading unit's first
  statement takes its snapshot on the thread. After that every statement and the
  ROLLBACK run on the loop's thread (tens of µs; none can wait on another connection:
  the unit holds the write lock, or reads its WAL snapshot). Under load a trip costs
  a whole turn of the event loop, paid while every other writer waits for the lock
  (bench_service: the write lock went from held most of the run to under half of
  it). COMMIT, which fsyncs, still goes to the thread: the loop runs on meanwhile.

Commit is fail-closed: if SQLite ended the transaction itself (it may roll back on
some I/O or lock errors), committing raises instead of silently committing nothing.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from threading import Thread
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Result = tuple[Any, int, int | None, list[Any]]  # description, rowcount, lastrowid, rows
_Outcome = tuple[bool, Exception | None, _Result | None]  # BEGIN ran, statement error, result


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A DBAPI cursor whose every execute is one call on the connection's thread."""

    __slots__ = ("_lastrowid_value", "_result_description", "_rowcount_value")

    def __init__(self, adapt_connection: OneTripConnection) -> None:
        # Deliberately not calling the base __init__: it opens an aiosqlite cursor,
        # which is a trip of its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._result_description: Any = None
        self._rowcount_value = -1
        self._lastrowid_value: int | None = None

    @property
    def description(self) -> Any:
        return self._result_description

    @property
    def rowcount(self) -> int:
        return self._rowcount_value

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid_value

    async def _async_soft_close(self) -> None:
        return None  # nothing is left open on the thread

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, OneTripConnection)
        self._store(adapt.run(_execute, operation, parameters))

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, OneTripConnection)
        self._store(adapt.run(_executemany, operation, seq_of_parameters))

    def _store(self, result: _Result) -> None:
        description, rowcount, lastrowid, rows = result
        self._result_description = description
        self._rowcount_value = rowcount
        self._lastrowid_value = lastrowid
        self._rows = collections.deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """The adapted connection: tracks the transaction so idle trips are skipped."""

    __slots__ = ("_begin", "_in_transaction")
    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass, as SQLAlchemy's own

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None
        self._in_transaction = False

    def defer_begin(self, statement: str) -> None:
        """Run ``statement`` (``BEGIN IMMEDIATE``…) right before the next one."""
        self._begin = statement

    def run(self, fn: Callable[..., _Result], *args: Any) -> _Result:
        """Call ``fn(sqlite3_connection, *args)``, after a deferred BEGIN.

        Once the transaction is open nothing a statement does waits on another
        connection (it holds the write lock, or reads its WAL snapshot), so statements
        run here, on the event loop's thread, in tens of microseconds. A trip to the
        worker thread would cost an event-loop wake-up instead, which under load is a
        whole turn of the loop, paid while the unit holds SQLite's write lock and every
        writer waits.
        ``BEGIN IMMEDIATE`` is tried here without waiting, and only when another
        process holds the lock goes to the thread to wait in SQLite's busy handler.
        Reading units (``BEGIN DEFERRED``) take their snapshot on the thread.
        """
        begin, self._begin = self._begin, None
        if self._execute_mutex.locked():  # a trip is still out (a cancelled unit): queue
            return self._run_on_thread(begin, fn, args)
        if begin == "BEGIN IMMEDIATE" and not self._in_transaction:
            try:
                began = await_(_at_once(_begin_without_waiting, _raw(self._connection), begin))
            except Exception as e:  # BEGIN itself failed: no transaction was opened
                self._handle_exception(e)
            if began:
                self._in_transaction = True
                begin = None
        if begin is None and self._in_transaction:
            try:
                result: _Result = await_(_at_once(fn, _raw(self._connection), *args))
            except Exception as e:
                self._handle_exception(e)
            return result
        return self._run_on_thread(begin, fn, args)

    def _run_on_thread(
        self, begin: str | None, fn: Callable[..., _Result], args: Sequence[Any]
    ) -> _Result:
        try:
            outcome: _Outcome = await_(self._trip(_begin_then, begin, fn, args))
        except Exception as e:  # BEGIN itself failed: no transaction was opened
            self._handle_exception(e)
        began, error, result = outcome
        if began:
            self._in_transaction = True
        if error is not None:
            self._handle_exception(error)
        assert result is not None
        return result

    def commit(self) -> None:
        """COMMIT (an fsync): here when this disk's commits are fast, else on the thread.

        Under load a trip to the thread costs a whole turn of the event loop, paid
        while the unit holds the write lock and every other writer waits behind it;
        an fsync on a fast disk costs a fraction of that (0.2 ms on the reference
        machine, against a 2.9 ms median hold of the write lock with every commit on
        the thread, in bench_service). :data:`COMMIT_TIMES` decides, from the commits
        measured so far: a slow disk (or a slow moment of it) sends commits back to
        the thread, so the loop is never held for long.
        """
        self._begin = None
        if not self._in_transaction:
            return  # nothing ran since BEGIN was asked for: nothing to commit
        try:
            if COMMIT_TIMES.fast and not self._execute_mutex.locked():
                await_(_at_once(_timed_commit, self._connection))
            else:
                await_(self._trip(_timed_commit))
        except Exception as e:
            self._handle_exception(e)
        self._in_transaction = False

    def rollback(self) -> None:
        self._begin = None
        if not self._in_transaction:
            return
        self._in_transaction = False
        try:
            if self._execute_mutex.locked():  # a trip is still out: queue behind it
                await_(self._trip(_rollback))
            else:  # no fsync and no lock to wait for: like a statement, it runs here
                await_(_at_once(_rollback, self._connection))
        except Exception as e:
            self._handle_exception(e)

    async def _trip(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._execute_mutex:
            return await self._connection._execute(fn, self._connection, *args)


async def _at_once(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the event loop's thread, never suspending: awaited through
    ``await_`` so SQLAlchemy sees the async hand-off it requires, at no loop turn."""
    return fn(*args)


def _raw(connection: Any) -> sqlite3.Connection:  # runs on the connection's thread
    raw: sqlite3.Connection = connection._conn  # raises "no active connection" if closed
    return raw


def _begin_without_waiting(raw: sqlite3.Connection, begin: str) -> bool:
    """Run ``begin`` unless the write lock is held elsewhere (then False, nothing begun)."""
    row = raw.execute("PRAGMA busy_timeout").fetchone()
    busy_ms = int(row[0]) if row else 0
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        raw.execute(begin)
    except sqlite3.OperationalError as e:
        if str(getattr(e, "sqlite_errorname", "")).startswith("SQLITE_BUSY"):
            return False
        raise
    finally:
        raw.execute(f"PRAGMA busy_timeout = {busy_ms}")
    return True


def _begin_then(
    connection: Any, begin: str | None, fn: Callable[..., _Result], args: Sequence[Any]
) -> _Outcome:
    raw = _raw(connection)
    if begin is not None:
        raw.execute(begin)  # raises out of the trip: nothing began
    try:
        result: _Result = fn(raw, *args)
    except Exception as e:  # the transaction (if any) is open: report both facts
        return begin is not None, e, None
    return begin is not None, None, result


def _execute(raw: sqlite3.Connection, operation: str, parameters: Any) -> _Result:
    cursor = raw.cursor()
    try:
        cursor.execute(operation, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _executemany(raw: sqlite3.Connection, operation: str, seq_of_parameters: Any) -> _Result:
    cursor = raw.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


def _commit(connection: Any) -> None:
    raw = _raw(connection)
    if not raw.in_transaction:
        raise sqlite3.OperationalError(
            "SQLite had already ended the transaction (rolled back after an error); "
            "nothing was committed"
        )
    raw.commit()


class CommitTimes:
    """How long this process's SQLite commits take: a moving average, and whether
    that is short enough to commit on the event loop's thread (see
    :meth:`OneTripConnection.commit`).

    Starts on the thread until a few commits have been measured. One slow commit
    weighs enough (an exponential average with weight 1/4) that two in a row move
    commits to the thread; they come back once commits are fast again.
    """

    FAST_SECONDS = 0.001
    WARM_UP = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()  # commits are measured on both threads
        self.average = 0.0
        self.count = 0

    @property
    def fast(self) -> bool:
        return self.count >= self.WARM_UP and self.average < self.FAST_SECONDS

    def add(self, seconds: float) -> None:
        with self._lock:
            self.count += 1
            if self.count == 1:
                self.average = seconds
            else:
                self.average += (seconds - self.average) / 4


COMMIT_TIMES = CommitTimes()


def _timed_commit(connection: Any) -> None:
    start = time.perf_counter()
    try:
        _commit(connection)
    finally:
        COMMIT_TIMES.add(time.perf_counter() - start)


def _rollback(connection: Any) -> None:
    _raw(connection).rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module handed to SQLAlchemy (``create_async_engine(module=…)``)."""

    def __init__(self) -> None:
        import aiosqlite

        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        # Statements inside an open transaction run on the event loop's thread (see
        # OneTripConnection.run); the units of work never share a connection at once.
        connection = self.aiosqlite.connect(*arg, **{**kw, "check_same_thread": False})
        # aiosqlite's worker must not keep the interpreter alive at exit.
        thread = connection if isinstance(connection, Thread) else connection._thread
        thread.daemon = True
        try:
            return OneTripConnection(self, await_(connection))
        except BaseException:
            # A failed connect has queued the stop of aiosqlite's thread, which reports
            # back to this event loop: wait for it, or it would find the loop closed.
            await_(asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0))
            raise
