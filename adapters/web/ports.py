"""What the web console needs from keyturn's application service.

The console never imports ``bot``: ``bot/`` hands it the real service, which fits
:class:`ConsoleService` structurally. Only the calls listed here are made; policy,
eligibility and quorum are decided by the service, never by the console.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from core.cards import Card
from core.executor import ExecutionStatus
from core.grants import Grant
from core.identity import IdentityRef
from core.outcomes import Submitted
from core.policy import Policy
from core.quorum import ApproverDecision
from core.requests import ApprovalRequest, RequestState
from core.surfaces import DecidingService


class RequestViewLike(Protocol):
    """A request with everything needed to draw it (``bot.service.RequestView``)."""

    @property
    def request(self) -> ApprovalRequest: ...

    @property
    def decisions(self) -> Sequence[ApproverDecision]: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def grant(self) -> Grant | None: ...

    @property
    def card(self) -> Card: ...


class EventLike(Protocol):
    """One event of the service's in-process hub (``bot.service.runtime.Event``)."""

    @property
    def kind(self) -> str: ...

    @property
    def request_id(self) -> str | None: ...

    @property
    def data(self) -> dict[str, Any]: ...


Listener = Callable[[EventLike], Awaitable[None]]


class HubLike(Protocol):
    def subscribe(self, listener: Listener) -> None: ...


class RuntimeLike(Protocol):
    @property
    def hub(self) -> HubLike: ...


class BreakglassTokenLike(Protocol):
    """A break-glass token for its requester; ``token`` is a secret shown once."""

    @property
    def token(self) -> str: ...

    @property
    def expires_at(self) -> datetime: ...

    @property
    def window_closes_at(self) -> datetime: ...


class ConsoleService(DecidingService, Protocol):
    """The use cases the console calls (``bot.service.keyturn.Keyturn``)."""

    @property
    def rt(self) -> RuntimeLike: ...

    async def list_requests(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 50
    ) -> Sequence[RequestViewLike]: ...

    async def view(self, request_id: str) -> RequestViewLike: ...

    async def bundle(self, request_id: str) -> Mapping[str, Any]: ...

    async def checkpoint(self) -> str: ...


class StepRecordLike(Protocol):
    """One verified ``executor_step`` receipt (``bot.service.execution.StepRecord``)."""

    @property
    def index(self) -> int: ...

    @property
    def at(self) -> datetime: ...

    @property
    def step(self) -> str: ...

    @property
    def outcome(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def detail(self) -> str: ...

    @property
    def actor(self) -> str: ...

    @property
    def actor_name(self) -> str | None: ...


class ExecutionsLike(Protocol):
    """keyturn's executors at work (``bot.service.execution.Executions``)."""

    def bound(self, request: ApprovalRequest) -> bool: ...

    async def status(self, request_id: str) -> ExecutionStatus: ...

    async def history(self, request_id: str) -> Sequence[StepRecordLike]: ...

    async def overview(
        self, *, include_settled: bool = False, limit: int = 200
    ) -> Sequence[tuple[ApprovalRequest, ExecutionStatus]]: ...

    async def resolve(self, request_id: str, by: IdentityRef, *, note: str) -> ExecutionStatus: ...


SubmitTestCall = Callable[[str, Mapping[str, Any]], Awaitable[Submitted]]
"""Submit one call as the demo agent (``bot/`` implements it with the agent's key)."""
