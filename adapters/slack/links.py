"""Remember which Slack user is which directory person (``identity_links``).

After a click keyturn accepted, the Slack user id is tied to the directory object id
the profile email resolved to. The link is evidence for later ("this Slack account
acted as Carol Diaz, matched by email at 10:43"), and a Slack user and a Teams user
linked to the same object id are one person. A link never moves silently: if the
Slack account now resolves to someone else the store refuses, and keyturn logs it
for an administrator instead of failing the click that was already recorded.
"""

from __future__ import annotations

import logging

from adapters.slack.ports import KeyturnService
from adapters.store import IdentityLink
from core.errors import KeyturnError
from core.identity import IdentityRef

log = logging.getLogger(__name__)

PLATFORM = "slack"
METHOD = "slack_profile_email"


async def remember_link(
    service: KeyturnService, *, workspace_id: str, user_id: str, identity: IdentityRef
) -> IdentityLink | None:
    """Record (or re-verify) ``user_id`` ↔ the directory person behind ``identity``.

    Returns the link, or None when it could not be recorded (logged; never raised:
    the action it follows has already been counted).
    """
    try:
        person = (await service.resolve(identity)).person
        link = IdentityLink(
            platform=PLATFORM,
            workspace_id=workspace_id,
            platform_user_id=user_id,
            directory_id=person.object_id,
            method=METHOD,
            verified_at=service.rt.clock.now(),
            evidence={"kind": str(identity.kind), "value": identity.value},
        )
        async with service.rt.store.unit_of_work() as uow:
            await uow.identities.link(link)
            await uow.commit()
    except KeyturnError as e:
        log.warning(
            "slack user %s in %s: identity link not recorded (%s)",
            user_id,
            workspace_id,
            e.reason_code,
        )
        return None
    return link
