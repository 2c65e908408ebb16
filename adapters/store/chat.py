"""Chat-side facts: where each card was posted, and who a chat user is in the directory.

* :class:`MessageRef` — a message keyturn posted (platform, channel, message or
  activity id), so the card can be updated when the request moves on.
* :class:`IdentityLink` — a Slack or Teams user tied to a directory object id, with
  when and how the tie was verified. A Slack user and a Teams user linked to the same
  object id are the same person for quorum. A link never silently moves to another
  person: re-linking to a different object id is refused until the old link is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update

from adapters.store import tables as t
from adapters.store.base import Repository
from core.errors import StoreError
from core.times import require_aware

MESSAGE_PLATFORMS = frozenset({"slack", "teams", "web"})
LINK_PLATFORMS = frozenset({"slack", "teams"})


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A posted message.

    Attributes:
        platform: ``slack``, ``teams`` or ``web``.
        channel: Slack channel id, Teams conversation id.
        message_id: Slack ``ts``, Teams activity id.
        kind: what the message is (``card``, ``feed``, ``dm``…).
        extra: what the platform needs to update it later (Teams service URL…).
    """

    platform: str
    channel: str
    message_id: str
    kind: str
    posted_at: datetime
    request_id: str | None = None
    updated_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.platform not in MESSAGE_PLATFORMS:
            raise ValueError(f"unknown platform {self.platform!r}")
        if not (self.channel and self.message_id and self.kind):
            raise ValueError("a message reference needs a channel, a message id and a kind")
        require_aware(self.posted_at)


@dataclass(frozen=True, slots=True)
class IdentityLink:
    """A chat user tied to a directory object id.

    Attributes:
        workspace_id: Slack team id or Teams (Entra) tenant id.
        method: how the tie was verified (``teams_aad_object_id``, ``slack_email``…).
        evidence: what the verification saw, for the receipts (no secrets).
    """

    platform: str
    workspace_id: str
    platform_user_id: str
    directory_id: str
    method: str
    verified_at: datetime
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.platform not in LINK_PLATFORMS:
            raise ValueError(f"unknown platform {self.platform!r}")
        if not (self.workspace_id and self.platform_user_id and self.directory_id and self.method):
            raise ValueError("an identity link needs every identifier and a method")
        require_aware(self.verified_at)


_REF_COLUMNS = (
    t.message_refs.c.platform,
    t.message_refs.c.channel,
    t.message_refs.c.message_id,
    t.message_refs.c.kind,
    t.message_refs.c.posted_at,
    t.message_refs.c.request_id,
    t.message_refs.c.updated_at,
    t.message_refs.c.extra,
)
_REF_KEY = (
    (t.message_refs.c.platform == bindparam("platform"))
    & (t.message_refs.c.channel == bindparam("channel"))
    & (t.message_refs.c.message_id == bindparam("message_id"))
)
_FIND_REF = select(*_REF_COLUMNS).where(_REF_KEY)
_REFS_FOR = (
    select(*_REF_COLUMNS)
    .where(t.message_refs.c.request_id == bindparam("request_id"))
    .order_by(t.message_refs.c.id)
)
_TOUCH_REF = (
    update(t.message_refs)
    .where(
        (t.message_refs.c.platform == bindparam("k_platform"))
        & (t.message_refs.c.channel == bindparam("k_channel"))
        & (t.message_refs.c.message_id == bindparam("k_message_id"))
    )
    .values(updated_at=bindparam("at"))
)

_LINK_COLUMNS = (
    t.identity_links.c.platform,
    t.identity_links.c.workspace_id,
    t.identity_links.c.platform_user_id,
    t.identity_links.c.directory_id,
    t.identity_links.c.method,
    t.identity_links.c.verified_at,
    t.identity_links.c.evidence,
)
_LINK_KEY = (
    (t.identity_links.c.platform == bindparam("platform"))
    & (t.identity_links.c.workspace_id == bindparam("workspace_id"))
    & (t.identity_links.c.platform_user_id == bindparam("platform_user_id"))
)
_RESOLVE = select(*_LINK_COLUMNS).where(_LINK_KEY)
_LINKS_FOR = (
    select(*_LINK_COLUMNS)
    .where(t.identity_links.c.directory_id == bindparam("directory_id"))
    .order_by(t.identity_links.c.platform, t.identity_links.c.workspace_id)
)
_UNLINK = delete(t.identity_links).where(_LINK_KEY)


class SqlMessageRefRepository(Repository):
    __slots__ = ()

    async def add(self, ref: MessageRef) -> bool:
        """Remember a posted message; True when new (the same message twice is a no-op)."""
        row = {
            "platform": ref.platform,
            "channel": ref.channel,
            "message_id": ref.message_id,
            "kind": ref.kind,
            "posted_at": ref.posted_at,
            "request_id": ref.request_id,
            "updated_at": ref.updated_at,
            "extra": dict(ref.extra),
        }
        statement = self._prepared(
            "messages.add",
            lambda insert: insert(t.message_refs).on_conflict_do_nothing(
                index_elements=["platform", "channel", "message_id"]
            ),
        )
        result = await self._write(statement, row, doing="saving the message reference")
        return result.rowcount == 1

    async def find(self, platform: str, channel: str, message_id: str) -> MessageRef | None:
        key = {"platform": platform, "channel": channel, "message_id": message_id}
        result = await self._execute(_FIND_REF, key, doing="reading the message reference")
        row = result.first()
        return None if row is None else _ref(row)

    async def for_request(
        self, request_id: str, *, platform: str | None = None
    ) -> list[MessageRef]:
        """Every message posted about ``request_id`` (optionally on one platform)."""
        result = await self._execute(
            _REFS_FOR, {"request_id": request_id}, doing="reading message references"
        )
        refs = [_ref(row) for row in result]
        return refs if platform is None else [r for r in refs if r.platform == platform]

    async def mark_updated(
        self, platform: str, channel: str, message_id: str, *, at: datetime
    ) -> bool:
        """Record that the message was updated; False when it is unknown."""
        params = {
            "k_platform": platform,
            "k_channel": channel,
            "k_message_id": message_id,
            "at": require_aware(at),
        }
        result = await self._write(_TOUCH_REF, params, doing="updating the message reference")
        return result.rowcount == 1


class SqlIdentityLinkRepository(Repository):
    __slots__ = ()

    async def link(self, link: IdentityLink) -> None:
        """Record (or re-verify) a link.

        Re-verifying the same user → same object id refreshes ``method``,
        ``verified_at`` and ``evidence``.

        Raises:
            StoreError: ``IDENTITY_LINK_CONFLICT`` when the chat user is linked to a
                different object id (unlink first: a link never moves silently).
        """
        row = {
            "platform": link.platform,
            "workspace_id": link.workspace_id,
            "platform_user_id": link.platform_user_id,
            "directory_id": link.directory_id,
            "method": link.method,
            "verified_at": link.verified_at,
            "evidence": dict(link.evidence),
        }
        statement = self._prepared("identities.link", _link_upsert)
        result = await self._write(statement, row, doing="saving the identity link")
        if result.rowcount != 1:
            raise StoreError(
                "IDENTITY_LINK_CONFLICT",
                f"this {link.platform} user is linked to another directory identity; "
                "remove that link first",
            )

    async def resolve(
        self, platform: str, workspace_id: str, platform_user_id: str
    ) -> IdentityLink | None:
        key = _link_key(platform, workspace_id, platform_user_id)
        result = await self._execute(_RESOLVE, key, doing="resolving the identity link")
        row = result.first()
        return None if row is None else _link(row)

    async def for_directory_id(self, directory_id: str) -> list[IdentityLink]:
        """Every chat identity linked to one person (Slack ↔ Teams goes through here)."""
        result = await self._execute(
            _LINKS_FOR, {"directory_id": directory_id}, doing="reading identity links"
        )
        return [_link(row) for row in result]

    async def unlink(self, platform: str, workspace_id: str, platform_user_id: str) -> bool:
        """Remove a link; True when there was one."""
        key = _link_key(platform, workspace_id, platform_user_id)
        result = await self._write(_UNLINK, key, doing="removing the identity link")
        return result.rowcount == 1


def _link_upsert(insert: Callable[[Table], Any]) -> Any:
    # Re-verifying the same person refreshes the evidence; for a different person the
    # WHERE fails, nothing is updated, and the row count (0) tells the caller.
    statement = insert(t.identity_links)
    return statement.on_conflict_do_update(
        index_elements=["platform", "workspace_id", "platform_user_id"],
        set_={
            "method": statement.excluded.method,
            "verified_at": statement.excluded.verified_at,
            "evidence": statement.excluded.evidence,
        },
        where=t.identity_links.c.directory_id == statement.excluded.directory_id,
    )


def _link_key(platform: str, workspace_id: str, platform_user_id: str) -> dict[str, str]:
    return {
        "platform": platform,
        "workspace_id": workspace_id,
        "platform_user_id": platform_user_id,
    }


def _ref(row: Any) -> MessageRef:
    return MessageRef(
        platform=row.platform,
        channel=row.channel,
        message_id=row.message_id,
        kind=row.kind,
        posted_at=row.posted_at,
        request_id=row.request_id,
        updated_at=row.updated_at,
        extra=row.extra,
    )


def _link(row: Any) -> IdentityLink:
    return IdentityLink(
        platform=row.platform,
        workspace_id=row.workspace_id,
        platform_user_id=row.platform_user_id,
        directory_id=row.directory_id,
        method=row.method,
        verified_at=row.verified_at,
        evidence=row.evidence,
    )
