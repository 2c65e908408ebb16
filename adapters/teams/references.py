"""Conversation references: where (which regional service URL) a team can be reached.

Teams tells a bot its region's service URL only on incoming activities, and posting
proactively into a channel needs it. When keyturn is installed in (or added to) a team,
Teams sends an ``installationUpdate`` and a ``conversationUpdate``; both are
authenticated (their JWT binds ``serviceurl`` to the activity's ``serviceUrl``) and
tenant-checked before this module sees them. :func:`references_from` reads the
conversation, team and channel ids they name, and :class:`ConversationBook` keeps one
reference per id in the store's ``message_refs`` table (no new table)::

    platform "teams", channel <conversation/team/channel id or "tenant:<id>">,
    message_id "conversation-reference", kind "conversation",
    extra {service_url, tenant_id, team_id, conversation_id, captured_from}

The first capture of an id is kept (the table has no upsert; a service URL moves only
with a tenant's region). A service URL set in the settings always wins over a captured
one, so an operator can override a stale capture by configuring it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from adapters.store.chat import MessageRef
from adapters.teams.ports import ChatStore
from adapters.teams.settings import ConversationTarget, is_loopback

PLATFORM = "teams"
KIND = "conversation"
MESSAGE_ID = "conversation-reference"
#: Activities that announce an installation or a membership change of the bot.
CAPTURED_TYPES = frozenset({"conversationUpdate", "installationUpdate"})


@dataclass(frozen=True, slots=True)
class CapturedReference:
    """One id the bot can reach, and how."""

    key: str
    service_url: str
    tenant_id: str
    team_id: str | None
    conversation_id: str

    def __post_init__(self) -> None:
        if not (self.key and reachable(self.service_url) and self.tenant_id):
            raise ValueError("a conversation reference needs a key, an https URL and a tenant")


def reachable(service_url: str) -> bool:
    """https, or plain http to a loopback address (a local connector in development)."""
    if service_url.startswith("https://"):
        return True
    if not service_url.startswith("http://"):
        return False
    host = urlsplit(service_url).hostname
    return is_loopback(host)


def tenant_key(tenant_id: str) -> str:
    return f"tenant:{tenant_id.casefold()}"


def _base_conversation(conversation_id: str) -> str:
    # A channel reply thread is "19:…@thread.tacv2;messageid=…"; the channel is before ";".
    return conversation_id.split(";", 1)[0]


def references_from(activity: Any, *, tenant_id: str | None) -> list[CapturedReference]:
    """Pure: the references an installation/membership activity announces.

    Nothing for other activity types, a missing tenant or a non-https service URL
    (Teams' connector is https only; a plain-http URL would send tokens in clear, so
    only a loopback development connector may use it).
    """
    if activity.type not in CAPTURED_TYPES or not tenant_id:
        return []
    service_url = str(activity.service_url or "")
    if not reachable(service_url):
        return []
    conversation = activity.conversation
    conversation_id = _base_conversation(str(getattr(conversation, "id", "") or ""))
    data: Mapping[str, Any] = (
        activity.channel_data if isinstance(activity.channel_data, Mapping) else {}
    )
    team, channel = data.get("team"), data.get("channel")
    team_id = str(team.get("id") or "") or None if isinstance(team, Mapping) else None
    channel_id = str(channel.get("id") or "") if isinstance(channel, Mapping) else ""
    ids = [conversation_id, team_id, channel_id]
    keys = [*dict.fromkeys(i for i in ids if i), tenant_key(tenant_id)]
    return [
        CapturedReference(
            key=key,
            service_url=service_url,
            tenant_id=tenant_id,
            team_id=team_id,
            conversation_id=conversation_id,
        )
        for key in keys
    ]


class ConversationBook:
    """Captured conversation references, kept in the store's message references."""

    def __init__(self, store: ChatStore, clock: Any) -> None:
        self.store = store
        self.clock = clock

    async def capture(self, activity: Any, *, tenant_id: str | None) -> list[str]:
        """Remember what ``activity`` announces; returns the keys newly stored."""
        found = references_from(activity, tenant_id=tenant_id)
        if not found:
            return []
        stored: list[str] = []
        async with self.store.unit_of_work() as uow:
            for ref in found:
                added = await uow.messages.add(
                    MessageRef(
                        platform=PLATFORM,
                        channel=ref.key,
                        message_id=MESSAGE_ID,
                        kind=KIND,
                        posted_at=self.clock(),
                        extra={
                            "service_url": ref.service_url,
                            "tenant_id": ref.tenant_id,
                            "team_id": ref.team_id,
                            "conversation_id": ref.conversation_id,
                            "captured_from": str(activity.type),
                        },
                    )
                )
                if added:
                    stored.append(ref.key)
            await uow.commit()
        return stored

    async def lookup(self, key: str) -> Mapping[str, Any] | None:
        """The captured reference for a conversation id (or :func:`tenant_key`)."""
        async with self.store.unit_of_work(read_only=True) as uow:
            ref = await uow.messages.find(PLATFORM, key, MESSAGE_ID)
        return None if ref is None or ref.kind != KIND else ref.extra

    async def service_url(self, target: ConversationTarget) -> str | None:
        """Where to reach ``target``: the configured URL, else the one captured for its
        channel, else the one captured for its tenant; None when nothing is known.

        A captured reference of another tenant is never used (fail closed).
        """
        if target.service_url:
            return target.service_url
        for key in (target.channel_id, tenant_key(target.tenant_id)):
            extra = await self.lookup(key)
            if extra is None:
                continue
            if str(extra.get("tenant_id") or "").casefold() != target.tenant_id.casefold():
                continue
            url = str(extra.get("service_url") or "")
            if reachable(url):
                return url
        return None
