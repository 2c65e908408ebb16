"""What the Teams surface needs from the rest of keyturn, as protocols (never ``bot``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from core.identity import IdentityRef
from core.quorum import Verdict
from core.requests import RequestState


class TeamsService(Protocol):
    """The methods of ``bot.service.Keyturn`` this surface calls."""

    @property
    def rt(self) -> Any: ...  # the runtime: only ``rt.signer.did`` (feed lines)

    async def view(self, request_id: str) -> Any: ...

    async def list_requests(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 50
    ) -> list[Any]: ...

    async def decide(
        self,
        request_id: str,
        identity: IdentityRef,
        verdict: Verdict,
        *,
        platform: str,
        reason: str | None = None,
        typed_confirmation: str | None = None,
    ) -> Any: ...

    async def request_breakglass(
        self,
        requester: IdentityRef,
        *,
        route: str,
        params: Mapping[str, Any],
        duration_seconds: int,
        reason: str,
        ticket: str | None = None,
        rollback_steps: Sequence[str] = (),
    ) -> Any: ...

    async def breakglass_token(self, request_id: str, requester: IdentityRef) -> Any: ...

    async def revoke_breakglass(
        self, request_id: str, by: IdentityRef, *, reason: str = "kill switch"
    ) -> None: ...

    async def rollback_step_done(
        self, request_id: str, step_index: int, by: IdentityRef
    ) -> None: ...


class ChatUnit(Protocol):
    """The parts of ``adapters.store.SqlUnitOfWork`` the outbox sender uses."""

    outbox: Any  # SqlOutboxRepository
    messages: Any  # SqlMessageRefRepository

    async def commit(self) -> None: ...


class ChatStore(Protocol):
    """``adapters.store.SqlStore`` (only its unit of work)."""

    def unit_of_work(self, *, read_only: bool = False) -> AbstractAsyncContextManager[Any]: ...
