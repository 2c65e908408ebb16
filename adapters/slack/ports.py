"""What the Slack surface needs from keyturn's application service (bot passes it in)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from adapters.store import SqlStore
from core.cards import Card
from core.requests import ApprovalRequest, RequestState
from core.surfaces import DecidingService


class Clock(Protocol):
    def now(self) -> datetime: ...


class Signer(Protocol):
    @property
    def did(self) -> str: ...


class Hub(Protocol):
    def subscribe(self, listener: Any) -> None: ...


class Runtime(Protocol):
    @property
    def store(self) -> SqlStore: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def signer(self) -> Signer: ...

    @property
    def hub(self) -> Hub: ...


class View(Protocol):
    @property
    def request(self) -> ApprovalRequest: ...

    @property
    def card(self) -> Card: ...


class BreakglassToken(Protocol):
    token: str
    expires_at: datetime
    window_closes_at: datetime


class KeyturnService(DecidingService, Protocol):
    """The methods of ``bot.service.Keyturn`` the Slack surface calls."""

    @property
    def rt(self) -> Runtime: ...

    async def view(self, request_id: str) -> View: ...

    async def list_requests(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 50
    ) -> Sequence[View]: ...
