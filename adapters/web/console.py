"""keyturn's local web console: aiohttp routes mounted into keyturn's one server.

Pages (server-rendered HTML, a little JavaScript for the live feed, no external fetches):

=================================  =======================================================
``GET  /``                         inbox: pending cards, recent requests, demo forms, feed
``GET  /requests/{id}``            request page: status, card, timeline, bundle + verify
``GET  /requests/{id}/bundle.json`` the sealed proof bundle (final requests)
``GET  /feed`` · ``/feed.json``    receipts feed and the latest signed checkpoint
``POST /signin`` · ``/signout``    demo mode only: sign in as a directory person
``POST /requests/{id}/decide``     Approve (typed last 4 when critical) / Deny (reason)
``POST /test-call``                submit a test agent call (demo agent)
``POST /breakglass``               request break-glass as the signed-in person
``POST /requests/{id}/token``      the requester's break-glass token, shown once
``POST /requests/{id}/revoke``     the kill switch
``POST /requests/{id}/resolve``    resolve a failed execution (eligible approver, a note)
=================================  =======================================================

With ``executions`` (keyturn's executors configured), the request page shows what the
executor did, and a failed execution (``rollback_failed``…) is an alert at the top of
the inbox and on its page, with a resolve form, until a person resolves it.

Security: every POST checks the session's CSRF token (hidden form field, constant-time
compare) and, when the browser sends one, that ``Origin`` is this host; the session
cookie is HMAC-signed, HttpOnly, SameSite=Strict; every page is ``no-store`` with a
strict Content-Security-Policy (scripts and styles from this server only). Without
``demo_people`` the console is read-only: no sign-in, no buttons, every POST refused.
The service decides eligibility; refusals are shown to the person who clicked only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from adapters.web.feed import Feed
from adapters.web.pages import FormValues, Notice, Viewer, e, layout
from adapters.web.ports import ConsoleService, ExecutionsLike, RequestViewLike, SubmitTestCall
from adapters.web.screens import (
    BundleSummary,
    ExecutionPanel,
    SecretToken,
    feed_json,
    feed_page,
    inbox_page,
    request_page,
)
from adapters.web.sessions import COOKIE_NAME, MAX_AGE_SECONDS, Session, SessionCodec, csrf_matches
from core.bundle_format import bundle_bytes
from core.bundle_verify import verify_bundle
from core.errors import BundleError, KeyturnError
from core.identity import IdentityKind, IdentityRef
from core.outcomes import Submitted
from core.quorum import Verdict
from core.requests import RequestState

log = logging.getLogger(__name__)

#: States after which a request is sealed into its proof bundle.
FINAL_STATES = frozenset(
    {
        RequestState.DENIED,
        RequestState.EXPIRED,
        RequestState.CANCELLED,
        RequestState.CONSUMED,
        RequestState.REVOKED,
    }
)
PLATFORM = "web"
MAX_FORM_BYTES = 64 * 1024
MAX_PARAMS_CHARS = 32 * 1024
MAX_BREAKGLASS_MINUTES = 24 * 60
# Typed request storage where aiohttp offers it (3.12+), a plain key before.
_SESSION_KEY: Any = (
    web.RequestKey("keyturn_console_session", Session)
    if hasattr(web, "RequestKey")
    else "keyturn_console_session"
)
_STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
_DONE = {
    "approve": "Your approval was recorded.",
    "deny": "Your denial was recorded.",
    "revoke": "The window was closed and its tokens revoked.",
    "resolve": "The execution is resolved; your note is receipted.",
    "gated": "The policy gated this call: it needs approval before it can run.",
    "breakglass": "Break-glass requested: two approvers must now approve it.",
}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class Console:
    """The console's handlers, bound to one service and one session key."""

    def __init__(
        self,
        service: ConsoleService,
        *,
        trusted_did: str,
        demo_people: Sequence[tuple[str, str]] | None,
        submit_test_call: SubmitTestCall | None,
        secret_key: bytes,
        executions: ExecutionsLike | None = None,
    ) -> None:
        self.service = service
        self.executions = executions
        self.trusted_did = trusted_did
        self.demo = demo_people is not None
        self.people: tuple[tuple[str, str], ...] = tuple(
            (str(oid), str(name)) for oid, name in (demo_people or ())
        )
        self.names = dict(self.people)
        self.submit_test_call = submit_test_call
        self.sessions = SessionCodec(secret_key)
        self.feed = Feed(trusted_did)
        self.static = {
            name: resources.files("adapters.web").joinpath("static", name).read_bytes()
            for name in _STATIC_FILES
        }

    # ------------------------------------------------------------------ plumbing

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.inbox),
            web.get("/feed", self.feed_view),
            web.get("/feed.json", self.feed_data),
            web.get("/requests/{request_id}", self.request_view),
            web.get("/requests/{request_id}/bundle.json", self.bundle_download),
            web.get("/console/static/{name}", self.static_file),
            web.post("/signin", self.sign_in),
            web.post("/signout", self.sign_out),
            web.post("/requests/{request_id}/decide", self.decide),
            web.post("/test-call", self.test_call),
            web.post("/breakglass", self.breakglass),
            web.post("/requests/{request_id}/token", self.token),
            web.post("/requests/{request_id}/revoke", self.revoke),
            web.post("/requests/{request_id}/resolve", self.resolve_execution),
        ]

    def _session(self, request: web.Request) -> Session | None:
        cached = request.get(_SESSION_KEY)
        if isinstance(cached, Session):
            return cached
        session = self.sessions.decode(request.cookies.get(COOKIE_NAME), now=int(time.time()))
        # A session for someone who is not (or no longer) a demo person is no session.
        if (
            session is not None
            and session.subject is not None
            and (not self.demo or session.subject not in self.names)
        ):
            session = None
        return session

    def _viewer(self, request: web.Request) -> tuple[Viewer, Session]:
        session = self._session(request)
        if session is None:
            session = self.sessions.new(now=int(time.time()))
        request[_SESSION_KEY] = session
        subject = session.subject if self.demo else None
        return (
            Viewer(
                csrf=session.csrf,
                object_id=subject,
                display_name=self.names.get(subject) if subject else None,
                demo=self.demo,
                people=self.people,
            ),
            session,
        )

    def _set_cookie(
        self, response: web.StreamResponse, request: web.Request, session: Session
    ) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self.sessions.encode(session),
            max_age=MAX_AGE_SECONDS,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )

    def _html(
        self, request: web.Request, session: Session, text: str, *, status: int = 200
    ) -> web.Response:
        response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        if request.cookies.get(COOKIE_NAME) != self.sessions.encode(session):
            self._set_cookie(response, request, session)
        return response

    def _redirect(self, location: str) -> web.Response:
        response = web.Response(status=303, headers={"Location": location})
        response.headers.update(SECURITY_HEADERS)
        return response

    def _refuse(self, request: web.Request, status: int, title: str, text: str) -> web.Response:
        viewer, session = self._viewer(request)
        body = f'<h1>{e(title)}</h1><p>{e(text)}</p><p><a href="/">Back to the inbox</a></p>'
        return self._html(request, session, layout(title, body, viewer, notice=None), status=status)

    async def _form(self, request: web.Request) -> tuple[Mapping[str, str], web.Response | None]:
        """The POSTed form if it passes the CSRF and origin checks, else a 403 page."""
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return {}, self._refuse(request, 413, "Too large", "That form is too large.")
        try:
            raw = await request.post()
        except (ValueError, web.HTTPException):
            return {}, self._refuse(request, 400, "Bad form", "That form could not be read.")
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
        origin = request.headers.get("Origin")
        same_origin = origin is None or urlsplit(origin).netloc == request.host
        if not same_origin or not csrf_matches(self._session(request), form.get("csrf")):
            return form, self._refuse(
                request,
                403,
                "Form refused",
                "This form expired or did not come from this console, so nothing was done. "
                "Reload the page and try again.",
            )
        if not self.demo:
            return form, self._refuse(
                request, 403, "Read-only console", "This console is read-only."
            )
        return form, None

    def _signed_in(self, request: web.Request) -> str | None:
        session = self._session(request)
        return session.subject if session is not None else None

    # ------------------------------------------------------------------ pages

    async def inbox(
        self,
        request: web.Request,
        *,
        notice: Notice | None = None,
        form: FormValues | None = None,
        form_name: str | None = None,
        status: int = 200,
    ) -> web.Response:
        viewer, session = self._viewer(request)
        await self.feed.refresh_checkpoint(self.service.checkpoint)
        pending = await self.service.list_requests(states=[RequestState.PENDING], limit=50)
        recent = [
            v
            for v in await self.service.list_requests(limit=20)
            if v.request.state is not RequestState.PENDING
        ]
        text = inbox_page(
            viewer,
            pending=pending,
            recent=recent,
            lines=self.feed.lines()[-40:],
            checkpoint=self.feed.checkpoint,
            now=datetime.now(UTC),
            can_submit_test_call=self.submit_test_call is not None,
            notice=notice,
            form=form,
            form_name=form_name,
            alerts=await self._alerts(),
        )
        return self._html(request, session, text, status=status)

    async def _alerts(self) -> list[Any]:
        if self.executions is None:
            return []
        try:
            return [r for r in await self.executions.overview(limit=100) if r[1].alerting]
        except KeyturnError as err:
            log.warning("could not list executions: %s", err.reason_code)
            return []

    async def _execution(self, view: RequestViewLike) -> ExecutionPanel | None:
        if self.executions is None or not self.executions.bound(view.request):
            return None
        request_id = view.request.request_id
        status = await self.executions.status(request_id)
        return ExecutionPanel(status, await self.executions.history(request_id))

    async def _load(self, request: web.Request) -> RequestViewLike | web.Response:
        request_id = request.match_info["request_id"]
        try:
            return await self.service.view(request_id)
        except KeyturnError as err:
            if err.reason_code in ("NOT_FOUND", "REQUEST_NOT_FOUND"):
                return self._refuse(request, 404, "Not found", f"There is no request {request_id}.")
            raise

    async def request_view(
        self,
        request: web.Request,
        *,
        notice: Notice | None = None,
        secret: SecretToken | None = None,
        status: int = 200,
    ) -> web.Response:
        loaded = await self._load(request)
        if isinstance(loaded, web.Response):
            return loaded
        view = loaded
        viewer, session = self._viewer(request)
        if notice is None and request.query.get("done") in _DONE:
            notice = Notice(_DONE[request.query["done"]], "success")
        text = request_page(
            view,
            viewer,
            now=datetime.now(UTC),
            bundle=await self._bundle_summary(view),
            lines=self.feed.lines(view.card.request_id),
            notice=notice,
            secret=secret,
            execution=await self._execution(view),
        )
        return self._html(request, session, text, status=status)

    async def _bundle_summary(self, view: RequestViewLike) -> BundleSummary:
        state = view.request.state
        if state not in FINAL_STATES:
            return BundleSummary(
                False, f"The proof bundle is sealed when the request is final (it is {state} now)."
            )
        try:
            bundle = await self.service.bundle(view.request.request_id)
        except KeyturnError as err:
            return BundleSummary(False, f"The proof bundle is not available: {err.message}")
        try:
            report = verify_bundle(bundle, trusted_keyturn_dids={self.trusted_did})
        except BundleError as err:
            return BundleSummary(True, "", failure=(err.reason_code, err.message))
        return BundleSummary(True, "", report=report)

    async def bundle_download(self, request: web.Request) -> web.Response:
        loaded = await self._load(request)
        if isinstance(loaded, web.Response):
            return loaded
        if loaded.request.state not in FINAL_STATES:
            return self._refuse(
                request,
                409,
                "Not sealed yet",
                "The proof bundle is sealed when the request is final.",
            )
        request_id = loaded.request.request_id
        data = bundle_bytes(await self.service.bundle(request_id))
        response = web.Response(body=data, content_type="application/json")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Disposition"] = f'attachment; filename="bundle-{request_id}.json"'
        return response

    async def feed_view(self, request: web.Request) -> web.Response:
        viewer, session = self._viewer(request)
        await self.feed.refresh_checkpoint(self.service.checkpoint)
        return self._html(
            request, session, feed_page(viewer, self.feed.lines(), self.feed.checkpoint)
        )

    async def feed_data(self, request: web.Request) -> web.Response:
        await self.feed.refresh_checkpoint(self.service.checkpoint)
        response = web.json_response(feed_json(self.feed.lines(), self.feed.checkpoint))
        response.headers.update(SECURITY_HEADERS)
        return response

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC_FILES:
            raise web.HTTPNotFound()
        response = web.Response(body=self.static[name], content_type=_STATIC_FILES[name])
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response

    # ------------------------------------------------------------------ sign in / out

    async def sign_in(self, request: web.Request) -> web.Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        person = form.get("person", "")
        if person not in self.names:
            return await self.inbox(
                request, notice=Notice("Choose a person from the directory.", "error"), status=400
            )
        # A new session (and a new CSRF token) on every sign-in: no session fixation.
        session = self.sessions.new(now=int(time.time()), subject=person)
        response = self._redirect("/")
        self._set_cookie(response, request, session)
        return response

    async def sign_out(self, request: web.Request) -> web.Response:
        _, refused = await self._form(request)
        if refused is not None:
            return refused
        response = self._redirect("/")
        self._set_cookie(response, request, self.sessions.new(now=int(time.time())))
        return response

    # ------------------------------------------------------------------ deciding

    async def decide(self, request: web.Request) -> web.Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        subject = self._signed_in(request)
        if subject is None:
            return self._refuse(request, 403, "Sign in first", "Sign in to approve or deny.")
        request_id = request.match_info["request_id"]
        verdict_text = form.get("verdict", "")
        if verdict_text not in ("approve", "deny"):
            return await self.request_view(
                request, notice=Notice("Choose Approve or Deny.", "error"), status=400
            )
        verdict = Verdict(verdict_text)
        reason = form.get("reason", "").strip() or None
        confirmation = form.get("confirmation", "").strip() or None
        if verdict is Verdict.DENY and reason is None:
            return await self.request_view(
                request,
                notice=Notice(
                    "Say why you deny this request: the reason goes on the card and in the "
                    "receipt. Nothing was recorded.",
                    "error",
                    "REASON_REQUIRED",
                ),
                status=400,
            )
        if (
            verdict is Verdict.APPROVE
            and form.get("confirmed") != "yes"
            and not (await self.service.view(request_id)).card.critical
        ):
            # Critical routes ask for the typed last 4 instead; the service checks those.
            return await self.request_view(
                request,
                notice=Notice(
                    "Confirm that you checked the exact action before approving. "
                    "Nothing was recorded.",
                    "error",
                    "CONFIRMATION_REQUIRED",
                ),
                status=400,
            )
        try:
            await self.service.decide(
                request_id,
                IdentityRef(IdentityKind.OBJECT_ID, subject),
                verdict,
                platform=PLATFORM,
                reason=reason if verdict is Verdict.DENY else None,
                typed_confirmation=confirmation,
            )
        except KeyturnError as err:
            return await self.request_view(
                request, notice=Notice(err.message, "error", err.reason_code), status=409
            )
        return self._redirect(f"/requests/{request_id}?done={verdict_text}")

    # ------------------------------------------------------------------ submitting

    async def test_call(self, request: web.Request) -> web.Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        if self._signed_in(request) is None or self.submit_test_call is None:
            return self._refuse(request, 403, "Not available", "Sign in to submit a test call.")
        values = FormValues({k: form.get(k, "") for k in ("route", "params")})
        route = values.get("route").strip()
        params = _params(values.get("params"))
        if not route or isinstance(params, str):
            problem = params if isinstance(params, str) else "Give a tool route."
            return await self.inbox(
                request,
                notice=Notice(problem, "error", "BAD_INPUT"),
                form=values,
                form_name="test-call",
                status=400,
            )
        try:
            submitted = await self.submit_test_call(route, params)
        except KeyturnError as err:
            return await self.inbox(
                request,
                notice=Notice(err.message, "error", err.reason_code),
                form=values,
                form_name="test-call",
                status=409,
            )
        return await self._after_submit(request, submitted, values, "test-call")

    async def _after_submit(
        self, request: web.Request, submitted: Submitted, values: FormValues, form_name: str
    ) -> web.Response:
        if submitted.outcome == "gated" and submitted.request_id:
            done = "breakglass" if form_name == "breakglass" else "gated"
            return self._redirect(f"/requests/{submitted.request_id}?done={done}")
        kind = "success" if submitted.outcome == "allowed" else "error"
        text = f"{submitted.outcome.capitalize()}: {submitted.message}"
        return await self.inbox(
            request,
            notice=Notice(text, kind, submitted.reason_code),
            form=values,
            form_name=form_name,
        )

    async def breakglass(self, request: web.Request) -> web.Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        subject = self._signed_in(request)
        if subject is None:
            return self._refuse(request, 403, "Sign in first", "Sign in to request break-glass.")
        names = ("route", "params", "minutes", "reason", "ticket", "rollback")
        values = FormValues({k: form.get(k, "") for k in names})
        params = _params(values.get("params"))
        minutes = _minutes(values.get("minutes"))
        problem = None
        if not values.get("route").strip():
            problem = "Give a tool route."
        elif isinstance(params, str):
            problem = params
        elif minutes is None:
            problem = f"Give the window in whole minutes, 1 to {MAX_BREAKGLASS_MINUTES}."
        if problem is not None or isinstance(params, str) or minutes is None:
            return await self.inbox(
                request,
                notice=Notice(problem or "Check the form.", "error", "BAD_INPUT"),
                form=values,
                form_name="breakglass",
                status=400,
            )
        try:
            submitted = await self.service.request_breakglass(
                IdentityRef(IdentityKind.OBJECT_ID, subject),
                route=values.get("route").strip(),
                params=params,
                duration_seconds=minutes * 60,
                reason=values.get("reason"),
                ticket=values.get("ticket").strip() or None,
                rollback_steps=[s for s in values.get("rollback").splitlines() if s.strip()],
            )
        except KeyturnError as err:
            return await self.inbox(
                request,
                notice=Notice(err.message, "error", err.reason_code),
                form=values,
                form_name="breakglass",
                status=409,
            )
        return await self._after_submit(request, submitted, values, "breakglass")

    # ------------------------------------------------------------------ break-glass window

    async def token(self, request: web.Request) -> web.Response:
        _, refused = await self._form(request)
        if refused is not None:
            return refused
        subject = self._signed_in(request)
        if subject is None:
            return self._refuse(request, 403, "Sign in first", "Sign in to fetch your token.")
        try:
            issued = await self.service.breakglass_token(
                request.match_info["request_id"], IdentityRef(IdentityKind.OBJECT_ID, subject)
            )
        except KeyturnError as err:
            return await self.request_view(
                request, notice=Notice(err.message, "error", err.reason_code), status=409
            )
        secret = SecretToken(issued.token, issued.expires_at, issued.window_closes_at)
        return await self.request_view(request, secret=secret)

    async def revoke(self, request: web.Request) -> web.Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        subject = self._signed_in(request)
        if subject is None:
            return self._refuse(request, 403, "Sign in first", "Sign in to revoke.")
        request_id = request.match_info["request_id"]
        reason = form.get("reason", "").strip() or "kill switch"
        try:
            await self.service.revoke_breakglass(
                request_id, IdentityRef(IdentityKind.OBJECT_ID, subject), reason=reason[:200]
            )
        except KeyturnError as err:
            return await self.request_view(
                request, notice=Notice(err.message, "error", err.reason_code), status=409
            )
        return self._redirect(f"/requests/{request_id}?done=revoke")

    async def resolve_execution(self, request: web.Request) -> web.Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        subject = self._signed_in(request)
        if subject is None:
            return self._refuse(request, 403, "Sign in first", "Sign in to resolve.")
        if self.executions is None:
            return self._refuse(
                request, 404, "No executors", "keyturn executes nothing itself here."
            )
        request_id = request.match_info["request_id"]
        note = form.get("note", "").strip()
        if not note:
            return await self.request_view(
                request,
                notice=Notice(
                    "Say what you checked and did: the note goes into the receipt. "
                    "Nothing was recorded.",
                    "error",
                    "NOTE_REQUIRED",
                ),
                status=400,
            )
        try:
            await self.executions.resolve(
                request_id, IdentityRef(IdentityKind.OBJECT_ID, subject), note=note[:500]
            )
        except KeyturnError as err:
            return await self.request_view(
                request, notice=Notice(err.message, "error", err.reason_code), status=409
            )
        return self._redirect(f"/requests/{request_id}?done=resolve")


def _params(text: str) -> dict[str, Any] | str:
    """The parameters a person typed, or the problem with them (a sentence)."""
    if len(text) > MAX_PARAMS_CHARS:
        return f"Keep the parameters under {MAX_PARAMS_CHARS:,} characters."
    try:
        value = json.loads(text or "{}")
    except ValueError as err:
        return f"The parameters are not valid JSON: {err}"
    if not isinstance(value, dict):
        return 'The parameters must be a JSON object, like {"amount_usd": 12500}.'
    return value


def _minutes(text: str) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if 1 <= value <= MAX_BREAKGLASS_MINUTES else None


def mount_console(
    web_app: web.Application,
    service: ConsoleService,
    *,
    trusted_did: str,
    demo_people: Sequence[tuple[str, str]] | None,
    submit_test_call: Callable[[str, Mapping[str, Any]], Awaitable[Submitted]] | None,
    secret_key: bytes,
    executions: ExecutionsLike | None = None,
) -> Console:
    """Add the console's routes to ``web_app`` and subscribe its feed to the service's hub.

    Args:
        web_app: keyturn's one aiohttp application.
        service: the application service (see :class:`adapters.web.ports.ConsoleService`).
        trusted_did: keyturn's signing DID; bundles, receipts and checkpoints shown as
            verified must be signed by it.
        demo_people: ``(object_id, display name)`` of the directory people one may sign
            in as (demo mode); ``None`` makes the console read-only.
        submit_test_call: submits a call as the demo agent; ``None`` hides that form.
        secret_key: at least 32 random bytes that sign session cookies.
        executions: keyturn's executors at work (``None``: none configured); shows
            execution state and alerts, and enables resolving a failed execution.

    Returns:
        the mounted :class:`Console` (its ``feed`` holds the receipt lines seen).

    Raises:
        ValueError: ``secret_key`` is shorter than 32 bytes.
    """
    console = Console(
        service,
        trusted_did=trusted_did,
        demo_people=demo_people,
        submit_test_call=submit_test_call,
        secret_key=secret_key,
        executions=executions,
    )
    service.rt.hub.subscribe(console.feed.on_event)
    web_app.add_routes(console.routes())
    return console
