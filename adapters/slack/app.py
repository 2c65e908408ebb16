"""The Bolt ``AsyncApp``: approve/deny clicks, modals and ``/breakglass``.

Every handler acknowledges at once and leaves the slow part to a bounded work queue
(:mod:`adapters.slack.work`): Bolt runs with ``process_before_response=True``, and a
handler only reads the already parsed, already verified payload, offers a job and
acknowledges, so Slack's 3-second window [A.3] never waits on the directory, the
database or Slack's Web API. keyturn's own buttons are answered by
:class:`KeyturnButtons`, a Bolt global middleware that runs after Bolt's request
verification and authorization: it looks the ``action_id`` up in a table instead of
trying listeners one by one, and skips Bolt's per-call keyword-argument building,
which together were about a quarter of the CPU a click costs before its ack (a click
storm is acknowledged one click at a time on one event loop). Modals and
``/breakglass`` keep Bolt's listeners. When the queue is full the ack still goes out and the
user is told nothing was recorded (an ephemeral message, or the modal's own error
line). Modals open from a second queue (``replies``) so a decision storm does not
make a ``trigger_id`` (about 3 seconds of life) expire.

A click is trusted only as far as Slack's signature on it (Bolt's request verification,
always on, 5-minute window): the clicker is ``body.user.id`` of the signed payload,
turned into a directory identity by the email on their Slack profile (``users.info``).
Refusals go back as an ephemeral message with the service's own words; nothing is
recorded. A Slack retry (``X-Slack-Retry-Num``) of a click already counted is a no-op;
the store makes every decision count once whatever arrives twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.logger import get_bolt_app_logger
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks as bk
from adapters.slack.commands import (
    HELP,
    USAGE,
    BreakglassAsk,
    BreakglassHelp,
    BreakglassList,
    BreakglassRevoke,
    BreakglassTokenAsk,
    parse_breakglass,
)
from adapters.slack.links import remember_link
from adapters.slack.ports import KeyturnService
from adapters.slack.settings import SlackSettings
from adapters.slack.work import BUSY, Job, Offer, WorkQueue
from core.cards import time_left
from core.errors import ApprovalRefusedError, ConfigError, DirectoryError, KeyturnError, PolicyError
from core.identity import IdentityKind, IdentityRef
from core.quorum import Verdict
from core.requests import RequestState

log = logging.getLogger(__name__)

COMMAND = "/breakglass"
PLATFORM = "slack"
#: Shown under a modal's input when the queue is full (Slack keeps the modal open).
NOT_OURS = "This button is not keyturn's."
BUSY_FIELD = "keyturn is busy; nothing was recorded. Submit again in a few seconds."
#: How long a Slack profile lookup is reused (see :class:`SlackIdentities`).
IDENTITY_TTL_SECONDS = 30.0
IDENTITY_CACHE_MAX = 10_000


def _is_retry(request: Any) -> bool:
    """Whether Slack says this is a re-delivery (``X-Slack-Retry-Num`` ≥ 1).

    Bolt keeps header values as lists, and Socket Mode copies an envelope's
    ``retry_attempt`` there, which is 0 on a first delivery: only a number ≥ 1 is a
    retry (a retry's "already decided" is not told again; a first click's is).
    """
    headers: Mapping[str, Any] = getattr(request, "headers", {}) or {}
    value = headers.get("x-slack-retry-num")
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return int(str(value)) >= 1
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class SlackWork:
    """The two queues behind the listeners (see :mod:`adapters.slack.work`).

    ``decisions``: identity, eligibility, the service call and its replies.
    ``replies``: modal opens, payload views and "busy" notices, which must not wait
    behind a decision storm.
    """

    decisions: WorkQueue = field(default_factory=lambda: WorkQueue("slack-decisions"))
    replies: WorkQueue = field(default_factory=lambda: WorkQueue("slack-replies"))

    @classmethod
    def from_settings(cls, settings: SlackSettings) -> SlackWork:
        return cls(
            decisions=WorkQueue(
                "slack-decisions",
                workers=settings.work_concurrency,
                capacity=settings.work_capacity,
            ),
            replies=WorkQueue(
                "slack-replies", workers=settings.work_concurrency, capacity=settings.work_capacity
            ),
        )

    async def join(self) -> None:
        """Wait until both queues are idle (a reply may follow a decision)."""
        while not (self.decisions.idle and self.replies.idle):
            await self.decisions.join()
            await self.replies.join()

    async def close(self, *, deadline_seconds: float) -> list[Job]:
        """Drain both (decisions first: they may queue replies), then stop."""
        left = await self.decisions.close(deadline_seconds=deadline_seconds)
        return left + await self.replies.close(deadline_seconds=deadline_seconds)


class SlackIdentities:
    """Slack user → directory identity, through the email on the Slack profile [A.8].

    A successful lookup is reused for :data:`IDENTITY_TTL_SECONDS`, and concurrent
    lookups of one user share one ``users.info`` call: a storm of clicks by a few
    people must not become a storm of ``users.info`` (Tier 4, about 100 per minute).
    The Slack profile only names the person; whether they may approve is decided by
    the directory on every decision, never cached here. Refusals are not cached.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        workspace_id: str,
        *,
        ttl_seconds: float = IDENTITY_TTL_SECONDS,
        max_entries: int = IDENTITY_CACHE_MAX,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._workspace_id = workspace_id
        self._ttl = ttl_seconds
        self._max = max_entries
        self._monotonic = monotonic
        self._known: dict[str, tuple[float, IdentityRef]] = {}
        self._asking: dict[str, asyncio.Future[IdentityRef]] = {}

    async def identify(self, user_id: str, team_id: str | None) -> IdentityRef:
        """Raises:
        ApprovalRefusedError: ``SLACK_WORKSPACE_UNKNOWN``, ``SLACK_ACCOUNT_NOT_ELIGIBLE``,
            ``SLACK_EMAIL_MISSING``.
        DirectoryError: ``DIRECTORY_UNAVAILABLE`` when Slack cannot say who this is.
        """
        if team_id != self._workspace_id:
            raise ApprovalRefusedError(
                "SLACK_WORKSPACE_UNKNOWN",
                "This Slack workspace is not the one keyturn serves, so nothing was recorded.",
            )
        known = self._known.get(user_id)
        if known is not None and known[0] > self._monotonic():
            return known[1]
        asking = self._asking.get(user_id)
        if asking is None:
            asking = asyncio.ensure_future(self._lookup(user_id))
            self._asking[user_id] = asking
            asking.add_done_callback(lambda _: self._asking.pop(user_id, None))
        return await asyncio.shield(asking)

    async def _lookup(self, user_id: str) -> IdentityRef:
        try:
            found = await self._client.users_info(user=user_id)
        except SlackApiError as e:
            raise DirectoryError(
                "DIRECTORY_UNAVAILABLE",
                "Slack could not tell keyturn who you are right now, so nothing was recorded. "
                "Try again in a minute.",
            ) from e
        user = found.get("user") or {}
        if user.get("deleted") or user.get("is_bot") or user.get("is_app_user"):
            raise ApprovalRefusedError(
                "SLACK_ACCOUNT_NOT_ELIGIBLE", "This Slack account cannot act on keyturn requests."
            )
        if user.get("is_restricted") or user.get("is_ultra_restricted"):
            raise ApprovalRefusedError(
                "SLACK_ACCOUNT_NOT_ELIGIBLE",
                "Guest accounts in Slack cannot act on keyturn requests.",
            )
        email = (user.get("profile") or {}).get("email")
        if not isinstance(email, str) or "@" not in email:
            raise ApprovalRefusedError(
                "SLACK_EMAIL_MISSING",
                "keyturn cannot read an email on your Slack profile, so it cannot match you "
                "to the directory; nothing was recorded.",
            )
        identity = IdentityRef(IdentityKind.EMAIL, email)
        if len(self._known) >= self._max:
            self._known.pop(next(iter(self._known)))  # the oldest entry
        self._known[user_id] = (self._monotonic() + self._ttl, identity)
        return identity


#: Handles one click on a keyturn button: offers its work (no I/O), returns at once.
ButtonHandler = Callable[[dict[str, Any], AsyncBoltRequest], None]


class KeyturnButtons(AsyncMiddleware):
    """Bolt global middleware that acknowledges clicks on keyturn's own buttons.

    Registered after Bolt's built-in middleware (``AsyncApp.use``), so a request
    reaches it only once its signature, age and workspace have been checked. A
    ``block_actions`` payload whose action is in ``handlers`` is handed to its handler
    and answered with an empty 200 (the ack); anything else goes on to Bolt's
    listeners (modals, ``/breakglass``) or its "unhandled request" answer.
    """

    def __init__(self, handlers: Mapping[str, ButtonHandler]) -> None:
        self._handlers = dict(handlers)

    @property
    def action_ids(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # Bolt passes it by this name
    ) -> BoltResponse:
        body = req.body
        if body.get("type") == "block_actions":
            actions = body.get("actions")
            if isinstance(actions, list) and actions and isinstance(actions[0], Mapping):
                handler = self._handlers.get(str(actions[0].get("action_id")))
                if handler is not None:
                    handler(body, req)
                    return BoltResponse(status=200, body="")
        return await next()


class KeyturnBolt(AsyncApp):
    """Bolt's ``AsyncApp`` with one Web API client for every request.

    Since Bolt 1.15 ``_init_context`` builds a new ``AsyncWebClient`` per request (so
    that an app swapping tokens per request cannot race on a shared one), reading the
    proxy environment variables each time: about 15% of the CPU a click costs before
    its ack. keyturn has one workspace and one bot token and never changes the
    client's token, so every request gets the app's client, with the same context
    keys Bolt sets (``tests/adapters/slack/test_request.py`` compares them with
    Bolt's own method, so a Bolt upgrade that adds one fails the tests).
    """

    def _init_context(self, req: AsyncBoltRequest) -> None:
        req.context["logger"] = get_bolt_app_logger(
            app_name=self.name, base_logger=self._base_logger
        )
        req.context["token"] = self._token
        req.context["client"] = self._async_client
        req.context["listener_runner"] = self.listener_runner


def build_slack_app(
    service: KeyturnService,
    *,
    settings: SlackSettings,
    client: AsyncWebClient | None = None,
    work: SlackWork | None = None,
) -> AsyncApp:
    """The Bolt app with keyturn's listeners.

    ``work`` holds the queues the listeners hand their slow part to; the caller
    closes it on shutdown (:func:`adapters.slack.mount.mount_slack` does).

    Raises:
        ConfigError: ``CONFIG_MISSING`` without a signing secret (unsigned requests
            would be accepted otherwise) or without a bot token.
    """
    secret = settings.signing_secret.get_secret_value()
    token = settings.bot_token.get_secret_value()
    if not secret.strip():
        raise ConfigError(
            "CONFIG_MISSING",
            "Slack needs its signing secret (slack.signing_secret); keyturn will not accept "
            "unsigned Slack requests",
        )
    if not token.strip():
        raise ConfigError("CONFIG_MISSING", "Slack needs the bot token (slack.bot_token)")
    web = client or AsyncWebClient(token=token)
    queues = work or SlackWork.from_settings(settings)
    # slack_sdk logs response_url bodies at DEBUG, and a break-glass token travels in one
    # (``/breakglass token``): keep that one logger above DEBUG so no token is logged.
    webhook_log = logging.getLogger("slack_sdk.webhook.async_client")
    if webhook_log.getEffectiveLevel() < logging.INFO:
        webhook_log.setLevel(logging.INFO)
    app = KeyturnBolt(
        signing_secret=secret,
        client=web,
        request_verification_enabled=True,
        # The listeners do no I/O before their ack (slow work is queued), so Bolt can
        # answer when a listener returns instead of polling for the ack every 10 ms.
        process_before_response=True,
        logger=logging.getLogger("slack_bolt.keyturn"),
    )
    who = SlackIdentities(web, settings.workspace_id)

    async def ephemeral(channel: str | None, user: str, text: str) -> None:
        try:
            if channel:
                await web.chat_postEphemeral(channel=channel, user=user, text=text)
            else:
                await web.chat_postMessage(channel=user, text=text)
        except SlackApiError as e:
            log.warning("could not tell a Slack user about a refusal: %s", e.response.get("error"))

    def teller(body: Mapping[str, Any], channel: str | None) -> Callable[[str], Awaitable[None]]:
        user_id = str(body["user"]["id"])

        async def tell(text: str) -> None:
            await ephemeral(channel, user_id, text)

        return tell

    def later(
        queue: WorkQueue,
        name: str,
        run: Callable[[], Awaitable[object]],
        tell: Callable[[str], Awaitable[None]],
        *,
        key: str | None = None,
    ) -> Offer:
        """Offer slow work; when the queue is full, the user hears so (never silence)."""
        offered = queue.offer(Job(name, run, tell, key))
        if offered is Offer.BUSY:
            notice = Job(f"busy notice for {name}", lambda: tell(BUSY), tell)
            if queues.replies.offer(notice) is Offer.BUSY:
                log.error("%s was not recorded and its user could not be told (overload)", name)
        return offered

    def click_key(body: Mapping[str, Any]) -> str:
        action = body["actions"][0]
        return ":".join(
            str(part)
            for part in (
                body["user"]["id"],
                action.get("action_id"),
                action.get("value"),
                action.get("action_ts"),
            )
        )

    async def act(
        body: Mapping[str, Any],
        channel: str | None,
        call: Callable[[IdentityRef], Awaitable[object]],
        *,
        retry: bool = False,
    ) -> bool:
        """Identify the clicker, run ``call``; refusals go to the clicker only.

        On success the Slack user ↔ directory person link is recorded.
        """
        user_id = str(body["user"]["id"])
        team = (body.get("team") or {}).get("id") or body["user"].get("team_id")
        try:
            identity = await who.identify(user_id, team)
            await call(identity)
        except KeyturnError as e:
            if retry and e.reason_code == "ALREADY_DECIDED":
                return False  # Slack re-sent a click we already counted
            await ephemeral(channel, user_id, e.message)
            return False
        await remember_link(service, workspace_id=str(team), user_id=user_id, identity=identity)
        return True

    async def decide(
        body: Mapping[str, Any],
        request_id: str,
        verdict: Verdict,
        *,
        channel: str | None,
        retry: bool,
        reason: str | None = None,
        typed: str | None = None,
    ) -> None:
        async def call(identity: IdentityRef) -> object:
            return await service.decide(
                request_id,
                identity,
                verdict,
                platform=PLATFORM,
                reason=reason,
                typed_confirmation=typed,
            )

        await act(body, channel, call, retry=retry)

    def _channel(body: Mapping[str, Any]) -> str | None:
        channel = body.get("channel") or {}
        return channel.get("id") if isinstance(channel, Mapping) else None

    # keyturn's buttons (see KeyturnButtons): each offers its work and returns; the
    # middleware sends the ack.

    def approve(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        request_id = str(body["actions"][0]["value"])
        channel, retry = _channel(body), _is_retry(request)
        later(
            queues.decisions,
            f"approve {request_id} by {body['user']['id']}",
            lambda: decide(body, request_id, Verdict.APPROVE, channel=channel, retry=retry),
            teller(body, channel),
            key=click_key(body),
        )

    def revoke(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        request_id = str(body["actions"][0]["value"])

        async def call(identity: IdentityRef) -> object:
            # The card is redrawn through the outbox (the service publishes the change).
            await service.revoke_breakglass(request_id, identity, reason="kill switch")
            return None

        later(
            queues.decisions,
            f"revoke {request_id} by {body['user']['id']}",
            lambda: act(body, _channel(body), call),
            teller(body, _channel(body)),
            key=click_key(body),
        )

    def rollback_done(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        channel = _channel(body)
        tell = teller(body, channel)
        try:
            request_id, index = bk.read_step_value(str(body["actions"][0]["value"]))
        except ValueError:
            later(queues.replies, "refusal of a foreign button", lambda: tell(NOT_OURS), tell)
            return

        async def call(identity: IdentityRef) -> object:
            await service.rollback_step_done(request_id, index, identity)
            return None

        later(
            queues.decisions,
            f"rollback step {index} of {request_id} by {body['user']['id']}",
            lambda: act(body, channel, call),
            tell,
            key=click_key(body),
        )

    def approve_typed(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        request_id = str(body["actions"][0]["value"])
        modal = bk.confirm_modal(request_id, _channel(body), _route(body))
        later(
            queues.replies,
            f"confirm dialog for {request_id}",
            lambda: _open(body, modal),
            teller(body, _channel(body)),
        )

    def deny(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        request_id = str(body["actions"][0]["value"])
        modal = bk.deny_modal(request_id, _channel(body))
        later(
            queues.replies,
            f"deny dialog for {request_id}",
            lambda: _open(body, modal),
            teller(body, _channel(body)),
        )

    def show_payload(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        request_id = str(body["actions"][0]["value"])
        tell = teller(body, _channel(body))

        async def run() -> None:
            try:
                view = await service.view(request_id)
            except KeyturnError as e:
                await tell(e.message)
                return
            modal = bk.payload_modal(view.card, sorted(view.request.sensitive_params))
            await _open(body, modal)

        later(queues.replies, f"payload of {request_id}", run, tell)

    app.use(
        KeyturnButtons(
            {
                bk.APPROVE: approve,
                bk.REVOKE: revoke,
                bk.ROLLBACK_DONE: rollback_done,
                bk.APPROVE_TYPED: approve_typed,
                bk.DENY: deny,
                bk.SHOW_PAYLOAD: show_payload,
            }
        )
    )

    async def _open(body: Mapping[str, Any], view: dict[str, Any]) -> None:
        try:
            await web.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackApiError as e:
            log.warning("views.open failed: %s", e.response.get("error"))
            await ephemeral(
                _channel(body),
                str(body["user"]["id"]),
                "Slack could not open the dialog in time; click the button again.",
            )

    def _route(body: Mapping[str, Any]) -> str:
        message = body.get("message") or {}
        text = str(message.get("text") or "")
        # fallback_text: "… Approval needed: <route> (<id>)…"
        marker = "Approval needed: "
        if marker in text:
            return text.split(marker, 1)[1].split(" (", 1)[0]
        return "this route"

    async def submitted(
        ack: Any,
        body: Mapping[str, Any],
        view: Mapping[str, Any],
        request: Any,
        *,
        verdict: Verdict,
        block: str,
        reason: str | None = None,
        typed: str | None = None,
    ) -> None:
        request_id, channel = bk.read_metadata(view.get("private_metadata") or "")
        retry = _is_retry(request)
        user_id = str(body["user"]["id"])
        offered = queues.decisions.offer(
            Job(
                f"{verdict.value} {request_id} by {user_id} (dialog)",
                lambda: decide(
                    body,
                    request_id,
                    verdict,
                    channel=channel,
                    retry=retry,
                    reason=reason,
                    typed=typed,
                ),
                teller(body, channel),
                key=f"view:{view.get('id')}:{view.get('hash')}:{user_id}",
            )
        )
        if offered is Offer.BUSY:
            # The modal stays open with this line under the input: the user sees that
            # nothing was recorded and can submit again.
            await ack(response_action="errors", errors={block: BUSY_FIELD})
            return
        await ack()

    @app.view(bk.DENY_VIEW)
    async def deny_submitted(
        ack: Any, body: dict[str, Any], view: dict[str, Any], request: Any
    ) -> None:
        value = _input(view, bk.REASON_BLOCK)
        if not value.strip():
            await ack(
                response_action="errors",
                errors={bk.REASON_BLOCK: "Say why you deny it; the requester sees the reason."},
            )
            return
        await submitted(
            ack,
            body,
            view,
            request,
            verdict=Verdict.DENY,
            block=bk.REASON_BLOCK,
            reason=value.strip(),
        )

    @app.view(bk.CONFIRM_VIEW)
    async def confirm_submitted(
        ack: Any, body: dict[str, Any], view: dict[str, Any], request: Any
    ) -> None:
        value = _input(view, bk.LAST4_BLOCK).strip()
        if len(value) != 4:
            await ack(
                response_action="errors",
                errors={bk.LAST4_BLOCK: "Type the 4 last characters of the payload hash."},
            )
            return
        await submitted(
            ack, body, view, request, verdict=Verdict.APPROVE, block=bk.LAST4_BLOCK, typed=value
        )

    @app.command(COMMAND)
    async def breakglass(ack: Any, command: dict[str, Any], respond: Any) -> None:
        try:
            parsed = parse_breakglass(str(command.get("text") or ""))
        except KeyturnError as e:
            await ack(text=f"{e.message}\n{USAGE}")
            return
        if isinstance(parsed, BreakglassHelp):
            await ack(text=HELP)
            return
        user_id = str(command["user_id"])

        async def tell(text: str) -> None:
            await respond(text=text, response_type="ephemeral", replace_original=False)

        async def run() -> None:
            try:
                identity = await who.identify(user_id, command.get("team_id"))
                text = await _run_breakglass(parsed, identity)
            except PolicyError as e:
                text = f"{e.message}\n{USAGE}"
            except KeyturnError as e:
                text = e.message
            await tell(text)

        offered = queues.decisions.offer(
            Job(
                f"{COMMAND} {type(parsed).__name__} by {user_id}",
                run,
                tell,
                key=f"command:{command.get('trigger_id')}:{user_id}",
            )
        )
        if offered is Offer.BUSY:
            await ack(text=BUSY)  # the slash command's own answer: no extra call needed
            return
        await ack()

    async def _run_breakglass(parsed: Any, identity: IdentityRef) -> str:
        if isinstance(parsed, BreakglassAsk):
            submitted = await service.request_breakglass(
                identity,
                route=parsed.route,
                params=parsed.params,
                duration_seconds=parsed.duration_seconds,
                reason=parsed.reason,
                ticket=parsed.ticket,
                rollback_steps=parsed.rollback_steps,
            )
            needs = "; ".join(submitted.needs)
            return (
                f"Break-glass request {submitted.request_id} is waiting for approval "
                f"({needs}). You will get a DM when it is decided; then run "
                f"`/breakglass token {submitted.request_id}`."
            )
        if isinstance(parsed, BreakglassList):
            return await _list()
        if isinstance(parsed, BreakglassRevoke):
            await service.revoke_breakglass(parsed.request_id, identity, reason="kill switch")
            return f"Window {parsed.request_id} closed; its tokens are revoked."
        if isinstance(parsed, BreakglassTokenAsk):
            issued = await service.breakglass_token(parsed.request_id, identity)
            # The token is for this person only: it goes in this ephemeral answer and
            # nowhere else (no log line, no outbox row).
            return (
                f"Your break-glass token for {parsed.request_id} (shown only to you; expires "
                f"{issued.expires_at:%H:%M} UTC, window closes "
                f"{issued.window_closes_at:%H:%M} UTC):\n```{issued.token}```"
            )
        raise KeyturnError("COMMAND_INVALID", USAGE)

    async def _list() -> str:
        now = service.rt.clock.now()
        views = await service.list_requests(
            states=[RequestState.PENDING, RequestState.APPROVED], limit=50
        )
        lines = []
        for view in views:
            card = view.card
            if not card.breakglass:
                continue
            if card.pending:
                left = time_left(view.request.binding.expires_at, now)
                lines.append(f"• {card.request_id} {card.route}: pending approval, expires {left}")
            else:
                lines.append(f"• {card.request_id} {card.route}: {card.window_line or card.state}")
        return "\n".join(lines) if lines else "No break-glass windows are open or pending."

    return app


def _input(view: Mapping[str, Any], block_id: str) -> str:
    state = ((view.get("state") or {}).get("values") or {}).get(block_id) or {}
    value = (state.get(bk.INPUT_ACTION) or {}).get("value")
    return value if isinstance(value, str) else ""
