"""The slow half of a Slack interaction, kept off the acknowledgement path.

Slack wants its HTTP 200 (or Socket Mode acknowledgement) within 3 seconds, and a
click storm must not make acknowledgements wait behind decisions. Bolt runs with
``process_before_response=True``: a listener checks what it can without I/O, offers
a :class:`Job` to a :class:`WorkQueue`, sets the ack and returns, and Bolt answers at
once. (With the default ``False`` Bolt runs the listener as a task and polls for the
ack every 10 ms; its lazy listeners start one unbounded task per request, each with a
deep copy of the request. Neither bounds the work a storm starts.)

::

    listener ── offer(job) ──▶ QUEUED ──▶ queue (≤ capacity) ──▶ N workers ──▶ job.run()
                  │                                                  └ error ▶ job.tell(FAILED)
                  ├──────────▶ DUPLICATE  (the same delivery is already waiting: once is enough)
                  └──────────▶ BUSY       (full or closing: nothing recorded, the user is told)

Exactly-once is the store's guarantee (a second decision by one person is refused with
``ALREADY_DECIDED``); the queue only folds a re-delivery of a click that is still
waiting. Nothing offered is dropped silently: a job runs, or its user is told it did
not (busy, failed, or keyturn stopped first), and the log says so.

Acknowledgements come first: a worker starts a job only once no new offer has arrived
for ``quiet_seconds`` (a storm of clicks is acked before the decisions it asked for take
the event loop), but never later than ``max_defer_seconds`` after the job was offered,
so steady traffic cannot starve the work. The pause is 20 ms: with 5 ms, gaps inside a
storm (the senders are slower than keyturn's acks) let decisions start mid-storm, and
a decision holds the loop for milliseconds at a time (``tests/bench/bench_slack.py``
saw click rounds cost twice the CPU on the loop and their p99 ack double). Nobody
notices a decision 20 ms later.

Shutdown drains: :meth:`WorkQueue.close` refuses new offers, lets the workers finish
what is queued (bounded by ``capacity``) until a deadline, then cancels what is left
and tells each of those users that their click was not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FAILED = "keyturn could not finish handling your click; look at the card before clicking again."
STOPPED = (
    "keyturn was restarting and did not record your click; if the card still asks for "
    "your decision, click again."
)
BUSY = (
    "keyturn is busy right now and did not record your click; nothing changed. "
    "Try again in a few seconds."
)
#: How long telling one user about an unrecorded click may take during shutdown.
TELL_TIMEOUT_SECONDS = 3.0


class Offer(enum.Enum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Job:
    """One piece of slow work and a way to tell its user when it cannot be done.

    Attributes:
        name: for the log ("approve r-7f2c by U123"); no secrets, no payload values.
        run: the work (identity, eligibility, the service call, replies).
        tell: sends the user a short message (ephemeral / ``response_url``).
        key: identifies the delivery; an offer whose key is already waiting is a
            re-delivery and is folded into the waiting one.
    """

    name: str
    run: Callable[[], Awaitable[object]]
    tell: Callable[[str], Awaitable[None]]
    key: str | None = None


class WorkQueue:
    """A bounded in-process queue with a fixed number of workers.

    Workers start with the first offer (inside the running event loop) and stop at
    :meth:`close`.
    """

    def __init__(
        self,
        name: str,
        *,
        workers: int = 4,
        capacity: int = 1000,
        quiet_seconds: float = 0.02,
        max_defer_seconds: float = 0.5,
    ) -> None:
        if workers < 1 or capacity < 1:
            raise ValueError("a work queue needs ≥ 1 worker and room for ≥ 1 job")
        if quiet_seconds < 0 or max_defer_seconds < quiet_seconds:
            raise ValueError("quiet_seconds ≥ 0 and max_defer_seconds ≥ quiet_seconds")
        self.name = name
        self._workers = workers
        self._quiet = quiet_seconds
        self._max_defer = max_defer_seconds
        self._last_offer = 0.0
        self._queue: asyncio.Queue[tuple[Job, float]] = asyncio.Queue(maxsize=capacity)
        self._waiting: set[str] = set()
        self._running: set[Job] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet started)."""
        return self._queue.qsize()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing running."""
        return self._queue.empty() and not self._running

    def offer(self, job: Job) -> Offer:
        """Queue ``job`` without waiting; never does I/O (called before the ack)."""
        if self._closed:
            return Offer.BUSY
        if job.key is not None and job.key in self._waiting:
            return Offer.DUPLICATE
        now = asyncio.get_running_loop().time()
        try:
            self._queue.put_nowait((job, now))
        except asyncio.QueueFull:
            log.warning("%s work queue full: %s refused (the user is told)", self.name, job.name)
            return Offer.BUSY
        self._last_offer = now
        if job.key is not None:
            self._waiting.add(job.key)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._work(), name=f"{self.name}-work-{n}")
                for n in range(self._workers)
            ]
        return Offer.QUEUED

    async def join(self) -> None:
        """Return when every queued job has finished (tests, shutdown)."""
        await self._queue.join()

    async def close(self, *, deadline_seconds: float = 10.0) -> list[Job]:
        """Refuse new work, drain until ``deadline_seconds``, then stop.

        Returns the jobs that did not finish (their users have been told).
        """
        self._closed = True
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=deadline_seconds)
        unfinished = list(self._running)
        while not self._queue.empty():
            unfinished.append(self._queue.get_nowait()[0])
            self._queue.task_done()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for job in unfinished:
            log.warning("%s work queue stopped before %s finished", self.name, job.name)
            await self._tell(job, STOPPED)
        return unfinished

    async def _after_the_acks(self, offered_at: float) -> None:
        """Wait until offers have paused for ``quiet_seconds`` (at most until
        ``max_defer_seconds`` after ``offered_at``)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            now = loop.time()
            quiet_for = now - self._last_offer
            if quiet_for >= self._quiet or now - offered_at >= self._max_defer:
                return
            await asyncio.sleep(min(self._quiet - quiet_for, offered_at + self._max_defer - now))

    async def _work(self) -> None:
        while True:
            job, offered_at = await self._queue.get()
            self._running.add(job)  # taken: not idle, and told about if stopped
            try:
                await self._after_the_acks(offered_at)
                if job.key is not None:
                    self._waiting.discard(job.key)
                await job.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The job handles keyturn's own refusals; anything else is a bug or an
                # outage: logged, and the user is not left guessing.
                log.exception("%s: %s failed", self.name, job.name)
                await self._tell(job, FAILED)
            finally:
                self._running.discard(job)
                self._queue.task_done()

    @staticmethod
    async def _tell(job: Job, text: str) -> None:
        try:
            await asyncio.wait_for(job.tell(text), timeout=TELL_TIMEOUT_SECONDS)
        except Exception:
            log.warning("could not tell the user of %s that it was not done", job.name)
