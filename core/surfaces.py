"""What every people-facing surface (Slack, Teams, the web console) asks of keyturn.

The application service (``bot/service``) implements it; each surface's own port
extends it with the reading methods it needs, typed to what it reads. Defined once
here so the three surfaces cannot drift apart on what a decision or a break-glass
request takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from core.identity import IdentityRef, Resolution
from core.outcomes import DecisionRecorded, Submitted
from core.quorum import Verdict


class DecidingService(Protocol):
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
