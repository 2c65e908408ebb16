"""What the Slack surface needs from keyturn's application service (bot passes it in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from adapters.store import SqlStore
from core.cards import Card
from core.identity import IdentityRef, Resolution
from core.outcomes import DecisionRecorded, Submitted
from core.quorum import Verdict
from core.requests import ApprovalRequest, RequestState


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


class KeyturnService(Protocol):
    """The methods of ``bot.service.Keyturn`` the Slack surface calls."""

    @property
    def rt(self) -> Runtime: ...

    async def view(self, request_id: str) -> View: ...

    async def list_requests(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 50
    ) -> Sequence[View]: ...

    async def resolve(self, identity: IdentityRef) -> Resolution: ...

    async def decide(
        self,
        request_id: str,
        identity: IdentityRef,
        verdict: Verdict,
        *,
        platform: str,
        reason: str | None = None,
        typed_confirmation: str | None = None,
    ) -> DecisionRecorded: ...

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
    ) -> Submitted: ...

    async def breakglass_token(self, request_id: str, requester: IdentityRef) -> Any: ...

    async def revoke_breakglass(
        self, request_id: str, by: IdentityRef, *, reason: str = "kill switch"
    ) -> None: ...

    async def rollback_step_done(
        self, request_id: str, step_index: int, by: IdentityRef
    ) -> None: ...
