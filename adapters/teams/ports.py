"""What the Teams surface needs from the rest of keyturn, as protocols (never ``bot``)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from core.requests import RequestState
from core.surfaces import DecidingService


class TeamsService(DecidingService, Protocol):
    """The methods of ``bot.service.Keyturn`` this surface calls."""

    @property
    def rt(self) -> Any: ...  # the runtime: only ``rt.signer.did`` (feed lines)

    async def view(self, request_id: str) -> Any: ...

    async def list_requests(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 50
    ) -> list[Any]: ...


class ChatUnit(Protocol):
    """The parts of ``adapters.store.SqlUnitOfWork`` the outbox sender uses."""

    outbox: Any  # SqlOutboxRepository
    messages: Any  # SqlMessageRefRepository

    async def commit(self) -> None: ...


class ChatStore(Protocol):
    """``adapters.store.SqlStore`` (only its unit of work)."""

    def unit_of_work(self, *, read_only: bool = False) -> AbstractAsyncContextManager[Any]: ...
