"""What the application service is built from: the store, keys, directory, clock, log.

``bot.bootstrap`` builds one :class:`Runtime`; the use cases in :mod:`bot.service`
read the clock once per use case (``now = runtime.clock.now()``) and pass it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from adapters.store import SqlStore
from core.ports import Directory, Signer
from core.tokens import TokenVerifier

log = logging.getLogger(__name__)


class SystemClock:
    """The one place keyturn reads the wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """``r-7f2c9a01b3e4``: short enough to read aloud, random enough not to collide."""
    return f"{prefix}-{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class Event:
    """Something people should see: a card to refresh, a receipt for the feed."""

    kind: str  # "request" (card changed) | "receipt" | "checkpoint" | "breakglass_token"
    request_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Event], Awaitable[None]]


class Hub:
    """In-process fan-out of events to the surfaces (chat adapters, web console).

    Listeners run after the unit of work committed; a failing listener is logged and
    never undoes or blocks the use case (the outbox retries chat deliveries).
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._waiters: dict[str, set[Waiter]] = {}

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, event: Event) -> None:
        if event.request_id is not None:
            self.wake(event.request_id, event.data.get("state"))
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("event listener failed for %s", event.kind)

    def waiter(self, request_id: str) -> Waiter:
        """An event set each time ``request_id`` changes in this process, until
        :meth:`forget`: the waiter stays registered across wakes, so one that is
        cleared to wait again misses no change."""
        waiter = Waiter()
        self._waiters.setdefault(request_id, set()).add(waiter)
        return waiter

    def forget(self, request_id: str, waiter: Waiter) -> None:
        waiters = self._waiters.get(request_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                self._waiters.pop(request_id, None)

    def waited_for(self) -> list[str]:
        """The request ids someone in this process is waiting on."""
        return list(self._waiters)

    def wake(self, request_id: str, state: object = None) -> None:
        """Wake everyone waiting on ``request_id`` (``state``: its new state, if known)."""
        for waiter in self._waiters.get(request_id, ()):
            waiter.wake(state)


class Waiter(asyncio.Event):
    """Set when a request changes; ``state`` is its new state when the change said so
    (a hint for what to read next, never a decision: the reader checks the store)."""

    def __init__(self) -> None:
        super().__init__()
        self.state: str | None = None

    def wake(self, state: object) -> None:
        self.state = state if isinstance(state, str) else None
        self.set()


class PendingWatch:
    """Finds requests that stopped being pending on *another* replica, for waiting polls.

    A change made in this process wakes its waiters through the :class:`Hub` at once.
    For changes made elsewhere, one task reads the states of every request waited on
    in this process with one query per ``every_seconds`` (instead of one query per
    waiting poll) and wakes the waiters of those no longer pending. It runs only while
    someone waits; :meth:`ensure_running` (re)starts it.
    """

    def __init__(self, store: SqlStore, hub: Hub, *, every_seconds: float = 1.0) -> None:
        self._store = store
        self._hub = hub
        self._every = every_seconds
        self._task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            waited = self._hub.waited_for()
            if not waited:
                return  # nobody waits: the next waiter starts a new task
            try:
                async with self._store.unit_of_work(read_only=True) as uow:
                    states = await uow.requests.states(waited)
            except Exception:
                log.warning("reading the states of waited-on requests failed", exc_info=True)
                continue
            for request_id in waited:
                state = states.get(request_id)
                if state is None or state.value != "pending":
                    self._hub.wake(request_id)  # gone or moved on: let the poll look


class ServiceMetrics(Protocol):
    """What the use cases report (``adapters.http.Metrics`` is one)."""

    def observe_state(self, state: str) -> None: ...

    def observe_decision_latency(self, seconds: float) -> None: ...


@dataclass
class Runtime:
    store: SqlStore
    signer: Signer
    directory: Directory
    clock: Any  # core.ports.Clock
    tokens: TokenVerifier
    audience: str
    public_url: str
    runner_ttl_seconds: int = 900
    challenge_ttl_seconds: int = 120
    hub: Hub = field(default_factory=Hub)
    #: Where request transitions and decision latency are counted (None: nowhere).
    metrics: ServiceMetrics | None = None

    def observe(self, state: str, *, decision_seconds: float | None = None) -> None:
        """Count a request entering ``state``; metrics never break a use case."""
        if self.metrics is None:
            return
        try:
            self.metrics.observe_state(state)
            if decision_seconds is not None:
                self.metrics.observe_decision_latency(decision_seconds)
        except Exception:
            log.exception("recording metrics failed")
