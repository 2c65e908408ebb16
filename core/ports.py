"""The ports through which ``core`` reaches the outside world.

``core`` reads no clock, opens no file or socket and holds no secret of its own: time,
keys, identity lookups and persistence come in through these protocols. Adapters
implement them with real technology (``FileSigner``, ``EntraDirectory``,
``SqlApprovalStore``); tests use small fakes (``FixedClock``, ``StaticDirectory``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from core.identity import Eligibility, IdentityRef, Resolution

if TYPE_CHECKING:  # value types only: ports.py must stay importable from every core module
    from core.grants import Grant
    from core.quorum import ApproverDecision
    from core.records import TokenRecord
    from core.requests import ApprovalRequest, RequestState


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


# --- Persistence ------------------------------------------------------------------
#
# The store guarantees (DESIGN.md "Storage") are enforced by the database, not by
# in-process locks: one decision per approver per request, one grant per request, one
# consumption per grant, a gap-free log. A unit of work rolls back unless committed.


class RequestRepository(Protocol):
    async def add(self, request: ApprovalRequest) -> None:
        """Raises ``StoreError("STORE_CONFLICT")`` when the request id exists."""
        ...

    async def get(self, request_id: str, *, for_update: bool = False) -> ApprovalRequest:
        """``for_update`` locks the request until the unit of work ends (SELECT … FOR
        UPDATE on PostgreSQL; SQLite units of work hold the write lock from the start).

        Raises ``StoreError("NOT_FOUND")``."""
        ...

    async def replace(self, before: ApprovalRequest, after: ApprovalRequest) -> None:
        """Store ``after`` only if the stored state is still ``before.state``.

        Raises ``StoreError("STORE_CONFLICT")`` when another writer moved it first."""
        ...

    async def find(
        self, *, states: Sequence[RequestState] | None = None, limit: int = 100
    ) -> list[ApprovalRequest]:
        """Newest first, optionally only in the given states."""
        ...

    async def due(self, *, now: datetime, limit: int = 100) -> list[ApprovalRequest]:
        """Pending requests whose deadline has passed (for the expiry job)."""
        ...


class DecisionRepository(Protocol):
    async def add(self, decision: ApproverDecision) -> None:
        """Raises ``ApprovalRefusedError("ALREADY_DECIDED")`` when this approver already
        decided this request (a unique constraint, so it holds across replicas)."""
        ...

    async def for_request(self, request_id: str) -> list[ApproverDecision]: ...


class GrantRepository(Protocol):
    async def add(self, grant: Grant) -> None:
        """Raises ``StoreError("GRANT_EXISTS")``: at most one grant per request."""
        ...

    async def for_request(self, request_id: str) -> Grant | None: ...

    async def consume(self, grant_id: str, *, at: datetime) -> None:
        """Mark the grant used, once. Raises ``GateDeniedError("GRANT_ALREADY_USED")``
        (or ``GRANT_UNKNOWN``). A single conditional UPDATE, so two racing gates cannot
        both succeed."""
        ...


class TokenRepository(Protocol):
    async def add(self, token: TokenRecord) -> None: ...

    async def revoke(self, token_hash_hex: str, *, at: datetime, reason: str) -> bool:
        """True when this call revoked it (False: it was already revoked)."""
        ...

    async def is_revoked(self, token_hash_hex: str) -> bool: ...


class LogRepository(Protocol):
    """The receipt log's durable part: dense, append-only leaves and signed checkpoints.

    The Merkle tree over the leaf hashes is rebuilt in memory (``core.merkle``) from
    :meth:`leaf_hashes`; only leaves and checkpoints need to be durable.
    """

    async def append(self, entry: bytes, *, at: datetime) -> int:
        """Append one entry; returns its 0-based index. Indexes are dense across
        replicas (serialised by the database), and the entry is stored exactly once."""
        ...

    async def size(self) -> int: ...

    async def entries(self, start: int, end: int) -> list[bytes]: ...

    async def leaf_hashes(self, start: int, end: int) -> list[bytes]: ...

    async def add_checkpoint(self, size: int, note: str, *, at: datetime) -> None: ...

    async def latest_checkpoint(self) -> tuple[int, str] | None: ...

    async def checkpoints(self) -> list[tuple[int, str]]: ...


class UnitOfWork(Protocol):
    """One transaction over every repository; rolls back unless :meth:`commit` ran."""

    @property
    def requests(self) -> RequestRepository: ...

    @property
    def decisions(self) -> DecisionRepository: ...

    @property
    def grants(self) -> GrantRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def log(self) -> LogRepository: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def commit(self) -> None: ...
