"""The ports through which ``core`` reaches the outside world.

``core`` reads no clock, opens no file or socket and holds no secret of its own: time,
keys, identity lookups and persistence come in through these protocols. Adapters
implement them with real technology (``FileSigner``, ``EntraDirectory``,
``SqlApprovalStore``); tests use small fakes (``FixedClock``, ``StaticDirectory``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


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
