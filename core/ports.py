"""The ports through which ``core`` reaches the outside world.

``core`` reads no clock, opens no file or socket and holds no secret of its own: time,
keys, identity lookups and persistence come in through these protocols. Adapters
implement them with real technology (``FileSigner``, ``EntraDirectory``,
``SqlApprovalStore``); tests use small fakes (``FixedClock``, ``StaticDirectory``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from core.identity import Eligibility, IdentityRef, Resolution


class Clock(Protocol):
    """Where "now" comes from. Read in one place per use case, then passed down."""

    def now(self) -> datetime: ...


class Signer(Protocol):
    """An Ed25519 signing key known by its ``did:key``."""

    @property
    def did(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def kid(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class RevocationList(Protocol):
    """Answers whether a token (by the hex SHA-256 of its compact form) is revoked."""

    def is_revoked(self, token_hash_hex: str) -> bool: ...


class GrantLedger(Protocol):
    """Records that a grant was used. Must be atomic across replicas.

    ``consume`` raises ``GateDeniedError("GRANT_ALREADY_USED")`` when the grant was
    consumed before; the store makes this a single conditional write.
    """

    def consume(self, grant_id: str, *, at: datetime) -> None: ...


class Directory(Protocol):
    """Resolves identities and confirms group membership (Entra ID, static file).

    Both methods fail closed: an unreachable, throttled-past-deadline, partial or
    malformed directory answer raises ``DirectoryError`` and is never read as "not a
    member" or "member".
    """

    async def resolve(
        self, ref: IdentityRef, *, now: datetime, allow_guests: bool = False
    ) -> Resolution:
        """Raises ``DirectoryError``: IDENTITY_NOT_FOUND, IDENTITY_AMBIGUOUS,
        GUEST_NOT_ALLOWED, ACCOUNT_DISABLED, DIRECTORY_UNAVAILABLE."""
        ...

    async def eligibility(
        self,
        object_id: str,
        group_ids: Sequence[str],
        *,
        now: datetime,
        check_pim: bool = False,
        bypass_cache: bool = False,
    ) -> Eligibility:
        """Raises ``DirectoryError`` (DIRECTORY_UNAVAILABLE, IDENTITY_NOT_FOUND, …)."""
        ...
