"""Executors in the running product: an app built from a TOML file with a webhook executor,
a real local receiver (aiohttp) that follows the README's recipe, two approvals, and
everything that follows without anyone calling an executor by hand: executed at once,
verified, rolled back when the window ends (or the kill switch is pulled, or after a
restart), replays refused, failures paged and resolved by a person."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.signer import FileSigner
from bot import demo
from bot.bootstrap import App, build, scheduler
from bot.service.runtime import Event
from bot.settings import KeyturnSettings, load_settings
from core import canonical
from core.errors import ConfigError, GateDeniedError
from core.executor import ExecutionState
from core.feed import feed_line
from core.quorum import Verdict
from core.receipts import ReceiptKind, verify_receipt
from core.webhook_call import verify_webhook_call
from tests.bot.test_service_e2e import MovableClock, person

pytestmark = pytest.mark.asyncio
S = ExecutionState
ROUTE = "entra.role.assign"
PARAMS = {
    "tenant_id": "00000000-0000-4000-8000-0000000000aa",
    "principal": "alice@corp.example",
    "role": "Privileged Role Administrator",
}


@dataclass
class Receiver:
    """The customer's automation: verifies every call offline with keyturn's public key
    (from /.well-known/keyturn), remembers call ids, and keeps the privilege it granted."""

    clock: MovableClock  # the same moving time as keyturn's
    public_key: bytes = b""
    seen: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)
    steps: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    #: Scripted answers per step (an HTTP status), used before the normal behaviour.
    script: dict[str, list[int]] = field(default_factory=dict)
    origin: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.raw.append((body, headers))
        try:
            data = verify_webhook_call(body, headers, self.public_key, self.clock.now(), self.seen)
        except GateDeniedError as e:
            self.refused.append(e.reason_code)
            status = 409 if e.reason_code == "WEBHOOK_REPLAYED" else 401
            return web.json_response({"error": e.reason_code}, status=status)
        step = data["step"]
        queued = self.script.get(step)
        if queued:
            return web.json_response({"error": "scripted"}, status=queued.pop(0))
        self.steps.append(step)
        grant_id = data["grant"].grant_id
        if step == "execute":
            self.active.add(grant_id)
        else:
            self.active.discard(grant_id)  # idempotent: undoing nothing is done
        return web.json_response({"call_id": data["call_id"], "done": True})


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(MovableClock(datetime.now(UTC).replace(microsecond=0)))
    app = web.Application()
    app.router.add_post("/grant", r.handle)
    app.router.add_post("/revoke", r.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield r
    finally:
        await runner.cleanup()


def write_config(data_dir: Path, receiver: Receiver, *, executors: str | None = None) -> Path:
    """A keyturn.toml as an operator writes it: the demo's policy and directory, one
    webhook executor bound to the policy's break-glass route."""
    files = demo.prepare(data_dir)
    issuer = FileSigner.load(files.issuer_key).did
    if executors is None:
        executors = f"""
[executors."entra.role.assign"]
kind = "webhook"
url = "{receiver.origin}/grant"
rollback_url = "{receiver.origin}/revoke"
timeout_seconds = 5
"""
    path = data_dir / "keyturn.toml"
    path.write_text(
        f"""
data_dir = "{data_dir}"
policy_file = "{files.policy}"
directory_file = "{files.directory}"
trusted_policy_issuers = ["{issuer}"]

[log]
origin = "keyturn/test"

[execution]
allow_loopback_http = true
max_attempts = 2
first_delay_seconds = 0.01
{executors}
""",
        encoding="utf-8",
    )
    return path


async def start(config: Path, receiver: Receiver) -> App:
    app = await build(load_settings(config), create_key=True, clock=receiver.clock)
    # The receiver trusts the key keyturn publishes, as the README's recipe says.
    known = await app.service.well_known()
    receiver.public_key = canonical.b64u_decode(known["public_key_b64u"])
    return app


@pytest_asyncio.fixture
async def world(tmp_path: Path, receiver: Receiver) -> AsyncIterator[tuple[App, Receiver]]:
    app = await start(write_config(tmp_path / "data", receiver), receiver)
    try:
        yield app, receiver
    finally:
        await app.close()


async def approve(app: App, *, minutes: int = 10) -> str:
    kt = app.service
    bg = await kt.request_breakglass(
        person("alice"),
        route=ROUTE,
        params=PARAMS,
        duration_seconds=minutes * 60,
        reason="INC-4411 mailbox compromise",
        ticket="INC-4411",
    )
    for who in ("bob", "carol"):
        await kt.decide(
            bg.request_id,
            person(who),
            Verdict.APPROVE,
            platform="test",
            typed_confirmation=bg.payload_hash_b64u[-4:],
        )
    return str(bg.request_id)


async def settled(app: App) -> None:
    assert app.executions is not None
    await app.executions.drain(timeout=30)


async def state(app: App, request_id: str) -> ExecutionState:
    assert app.executions is not None
    return (await app.executions.status(request_id)).state


async def step_receipts(app: App, request_id: str) -> list[tuple[int, Any]]:
    found = []
    kt = app.service
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        for index in await uow.jobs.receipt_indexes(request_id):
            envelope = json.loads((await uow.log.entries(index, index + 1))[0])
            receipt = verify_receipt(envelope, trusted_signers={kt.rt.signer.did})
            if receipt.kind is ReceiptKind.EXECUTOR_STEP:
                found.append((index, receipt))
    return found


def alerts_of(app: App) -> list[Event]:
    seen: list[Event] = []

    async def listen(event: Event) -> None:
        if event.kind == "executor_alert":
            seen.append(event)

    app.service.rt.hub.subscribe(listen)
    return seen


# ---------------------------------------------------------------------- the whole life


async def test_two_approvals_execute_at_once_then_the_window_end_rolls_back(
    world: tuple[App, Receiver],
) -> None:
    app, receiver = world
    kt = app.service
    request_id = await approve(app)
    await settled(app)
    assert await state(app, request_id) is S.VERIFIED
    view = await kt.view(request_id)
    assert view.grant is not None and receiver.active == {view.grant.grant_id}
    assert receiver.steps == ["execute"] and receiver.refused == []
    # The gate consumed the grant once, for exactly the params the receiver got.
    body = json.loads(receiver.raw[0][0])
    assert body["params"] == PARAMS and body["grant"]["payload"]["request_id"] == request_id
    async with kt.rt.store.unit_of_work(read_only=True) as uow:
        assert await uow.grants.consumed_at(view.grant.grant_id) is not None

    receiver.clock.advance(599)
    await kt.run_due()
    assert await state(app, request_id) is S.VERIFIED and receiver.active  # not yet
    receiver.clock.advance(2)
    assert await kt.run_due() >= 1
    assert await state(app, request_id) is S.ROLLED_BACK
    assert receiver.active == set() and receiver.steps == ["execute", "rollback"]
    steps = [
        (r.details["step"], r.details["outcome"]) for _, r in await step_receipts(app, request_id)
    ]
    assert steps == [
        ("execute", "ok"),
        ("verify", "ok"),
        ("rollback", "ok"),
        ("verify_rollback", "ok"),
    ]
    assert (await kt.view(request_id)).request.state.value == "expired"


async def test_the_kill_switch_mid_window_rolls_back_at_once(world: tuple[App, Receiver]) -> None:
    app, receiver = world
    request_id = await approve(app)
    await settled(app)
    receiver.clock.advance(120)
    await app.service.revoke_breakglass(request_id, person("carol"), reason="contained")
    assert await state(app, request_id) is S.ROLLED_BACK
    assert receiver.active == set()
    assert (await app.service.view(request_id)).request.state.value == "revoked"


async def test_a_restarted_keyturn_still_rolls_back_on_time(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path / "data", receiver)
    first = await start(config, receiver)
    try:
        request_id = await approve(first)
        await settled(first)
        assert await state(first, request_id) is S.VERIFIED
    finally:
        await first.close()  # keyturn stops mid-window

    receiver.clock.advance(300)
    second = await start(config, receiver)
    ticking = asyncio.create_task(scheduler(second.service, every_seconds=0.01))
    try:
        await asyncio.sleep(0.2)  # many scheduler runs, inside the window
        assert await state(second, request_id) is S.VERIFIED and receiver.active
        receiver.clock.advance(301)
        for _ in range(500):
            if await state(second, request_id) is S.ROLLED_BACK:
                break
            await asyncio.sleep(0.01)
        assert await state(second, request_id) is S.ROLLED_BACK
        assert receiver.active == set() and receiver.steps == ["execute", "rollback"]
    finally:
        # Stopped and awaited before the store closes, as App.close and serve() do: a
        # scheduler cancelled mid-unit-of-work must finish its rollback on a live store.
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
        await second.close()


async def test_an_approval_that_landed_while_no_executor_ran_is_executed_after_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path / "data", receiver)
    settings = load_settings(config)
    bare = await build(
        settings.model_copy(update={"executors": {}}),
        create_key=True,
        clock=receiver.clock,
    )
    try:
        assert bare.executions is None
        request_id = await approve(bare)
    finally:
        await bare.close()
    assert receiver.raw == []

    app = await start(config, receiver)
    try:
        assert app.executions is not None
        assert await app.executions.sweep() == 1
        await settled(app)
        assert await state(app, request_id) is S.VERIFIED and len(receiver.active) == 1
        assert await app.executions.sweep() == 0  # started once, not again
        await settled(app)
        assert receiver.steps == ["execute"]
    finally:
        await app.close()


# ---------------------------------------------------------------------- replays


async def test_replaying_the_grant_or_the_signed_call_is_refused(
    world: tuple[App, Receiver],
) -> None:
    app, receiver = world
    assert app.executions is not None
    request_id = await approve(app)
    await settled(app)
    with pytest.raises(GateDeniedError) as again:
        await app.executions.execute_breakglass(request_id, person("alice"))
    assert again.value.reason_code == "GRANT_ALREADY_USED"
    # The sweep does not try again either.
    assert await app.executions.sweep() == 0
    assert receiver.steps == ["execute"]
    # A captured call sent again is refused by the receiver's recipe.
    body, headers = receiver.raw[0]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            receiver.origin + "/grant",
            data=body,
            headers={k: v for k, v in headers.items() if k.lower().startswith("x-keyturn")},
        ) as resp,
    ):
        assert resp.status == 409
    assert receiver.refused == ["WEBHOOK_REPLAYED"] and len(receiver.active) == 1


# ---------------------------------------------------------------------- failures


async def test_a_refused_rollback_pages_stays_visible_and_only_a_person_clears_it(
    world: tuple[App, Receiver],
) -> None:
    app, receiver = world
    assert app.executions is not None
    alerts = alerts_of(app)
    feed: list[str] = []

    async def listen(event: Event) -> None:
        if event.kind == "receipt":
            receipt = verify_receipt(
                event.data["envelope"], trusted_signers={app.service.rt.signer.did}
            )
            feed.append(feed_line(event.data["index"], receipt))

    app.service.rt.hub.subscribe(listen)
    request_id = await approve(app)
    await settled(app)
    receiver.script["rollback"] = [403]  # the receiver says "no": never retried
    await app.service.revoke_breakglass(request_id, person("carol"))
    status = await app.executions.status(request_id)
    assert status.state is S.ROLLBACK_FAILED and status.alerting
    assert len(receiver.active) == 1  # still there: that is what the page is about
    assert [a.data["state"] for a in alerts] == ["rollback_failed"]
    loud = [line for line in feed if "EXEC-ALERT" in line]
    assert len(loud) == 1 and "NEEDS A PERSON" in loud[0] and "rollback ✗ FAILED" in loud[0]
    listed = [(r.request_id, s.state) for r, s in await app.executions.overview()]
    assert listed == [(request_id, S.ROLLBACK_FAILED)]

    # The window end runs again later (nothing is open any more: no second rollback).
    receiver.clock.advance(700)
    await app.service.run_due()
    assert (await app.executions.status(request_id)).state is S.ROLLBACK_FAILED

    resolved = await app.executions.resolve(
        request_id, person("carol"), note="removed the grant by hand in the automation"
    )
    assert resolved.state is S.RESOLVED
    assert await app.executions.overview() == []
    assert any("resolve ✓" in line and "Carol Diaz" in line for line in feed)


async def test_a_transient_failure_is_retried_and_a_no_is_not(
    world: tuple[App, Receiver],
) -> None:
    app, receiver = world
    receiver.script["execute"] = [503]
    first = await approve(app)
    await settled(app)
    assert await state(app, first) is S.VERIFIED
    [execute] = [r for _, r in await step_receipts(app, first) if r.details["step"] == "execute"]
    assert execute.details["attempts"] == 2

    alerts = alerts_of(app)
    receiver.clock.advance(601)
    await app.service.run_due()  # the first window ends and rolls back
    receiver.script["execute"] = [400]
    second = await approve(app)
    await settled(app)
    assert await state(app, second) is S.EXECUTE_FAILED
    [execute] = [r for _, r in await step_receipts(app, second) if r.details["step"] == "execute"]
    assert execute.details["attempts"] == 1 and execute.details["status"] == 400
    assert [a.data["state"] for a in alerts] == ["execute_failed"]
    # The call was sent, so the window's end still sends the declared rollback.
    receiver.clock.advance(601)
    await app.service.run_due()
    assert await state(app, second) is S.ROLLED_BACK
    assert receiver.steps == ["execute", "rollback", "rollback"]


async def test_a_requester_who_left_before_approval_is_refused_before_anything_is_sent(
    world: tuple[App, Receiver],
) -> None:
    """Refused before sending: paged, visible, and nothing to undo at the window end."""
    app, receiver = world
    assert app.executions is not None
    alerts = alerts_of(app)
    kt = app.service
    bg = await kt.request_breakglass(
        person("alice"), route=ROUTE, params=PARAMS, duration_seconds=600, reason="INC-1"
    )
    directory = app.settings.directory_file
    assert directory is not None
    text = directory.read_text(encoding="utf-8")
    gone = text.replace(
        "  - object_id: alice\n    display_name: Alice Chen\n    emails: [alice@corp.example]\n",
        "",
    )
    assert gone != text
    directory.write_text(gone, encoding="utf-8")
    later = os.stat(directory).st_mtime + 5
    os.utime(directory, (later, later))  # the directory reloads on change
    for who in ("bob", "carol"):
        await kt.decide(
            bg.request_id,
            person(who),
            Verdict.APPROVE,
            platform="test",
            typed_confirmation=bg.payload_hash_b64u[-4:],
        )
    await settled(app)
    status = await app.executions.status(str(bg.request_id))
    assert status.state is S.EXECUTE_FAILED and status.reference["sent"] == "no"
    assert receiver.raw == []
    assert [a.data["state"] for a in alerts] == ["execute_failed"]
    receiver.clock.advance(601)
    await kt.run_due()
    assert receiver.raw == []  # no rollback for a call never sent
    assert (await app.executions.status(str(bg.request_id))).state is S.EXECUTE_FAILED


async def test_a_grant_used_outside_keyturn_is_paged_and_rolled_back_at_window_end(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path / "data", receiver)
    settings = load_settings(config)
    bare = await build(
        settings.model_copy(update={"executors": {}}),
        create_key=True,
        clock=receiver.clock,
    )
    try:
        request_id = await approve(bare, minutes=30)
        # The requester takes her token and uses the grant herself, outside keyturn.
        token = await bare.service.breakglass_token(request_id, person("alice"))
        view = await bare.service.view(request_id)
        assert view.grant is not None and view.grant.envelope is not None
        await bare.service.gate_check(
            cst=token.token,
            grant=view.grant.envelope,
            tool_route=ROUTE,
            params=PARAMS,
            context={"reason": "INC-4411 mailbox compromise", "ticket": "INC-4411"},
        )
    finally:
        await bare.close()

    app = await start(config, receiver)
    try:
        assert app.executions is not None
        alerts = alerts_of(app)
        assert await app.executions.run_approved(request_id) is None  # maybe in flight
        receiver.clock.advance(11 * 60)
        status = await app.executions.run_approved(request_id)
        assert status is not None and status.state is S.EXECUTE_FAILED
        assert [a.data["state"] for a in alerts] == ["execute_failed"]
        assert receiver.raw == []
        receiver.clock.advance(20 * 60)
        await app.service.run_due()
        # Whatever was done with the grant is undone at the window's end, to be safe.
        assert (await app.executions.status(request_id)).state is S.ROLLED_BACK
        assert receiver.steps == ["rollback"]
    finally:
        await app.close()


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("section", "names"),
    [
        (
            '[executors."entra.role.assign"]\nkind = "webhook"\nurl = "https://a.example/x"\n'
            'rolback_url = "https://a.example/y"\n',
            ("executors", "rolback_url"),
        ),
        ('[executors."entra.role.assign"]\nurl = "https://a.example/x"\n', ("executors", "kind")),
        (
            '[executors."entra.role.assign"]\nkind = "webhook"\nroutes = []\n',
            ("executors.entra.role.assign.routes",),
        ),
        ('[executors."not a name"]\nkind = "webhook"\n', ("executor name", "not a name")),
    ],
)
async def test_a_misconfigured_executors_section_stops_start_up_naming_the_setting(
    tmp_path: Path, receiver: Receiver, section: str, names: tuple[str, ...]
) -> None:
    config = write_config(tmp_path / "data", receiver, executors=section)
    with pytest.raises(ConfigError) as e:
        load_settings(config)
    assert e.value.reason_code == "CONFIG_INVALID"
    for name in names:
        assert name in e.value.message


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            '[executors."entra.role.assign"]\nkind = "webhook"\n'
            'url = "http://automation.example/x"\nrollback_url = "https://a.example/y"\n',
            "setting executors.entra.role.assign: url must be https://",
        ),
        (
            '[executors."entra.role.assign"]\nkind = "webhook"\nurl = "https://a.example/x"\n',
            "setting executors.entra.role.assign: rollback_url must be a URL",
        ),
        (
            '[executors."entra.role.assign"]\nkind = "entra.role.assign"\n'
            'roles = {"Privileged Role Administrator" = "e8611ab8-c189-46e8-94e1-60213ab1f814"}\n',
            "setting executors.entra.role.assign: executor entra.role.assign needs the Entra",
        ),
        (
            '[executors."entra.role.assign"]\nkind = "teleport"\n',
            "setting executors.entra.role.assign: executors.entra.role.assign: unknown kind",
        ),
    ],
)
async def test_an_executor_its_adapter_refuses_stops_start_up_and_nothing_is_left_open(
    tmp_path: Path, receiver: Receiver, section: str, expected: str
) -> None:
    settings: KeyturnSettings = load_settings(
        write_config(tmp_path / "data", receiver, executors=section)
    )
    with pytest.raises(ConfigError) as e:
        await build(settings, create_key=True)
    assert e.value.message.startswith(expected), e.value.message


async def test_every_receipt_kind_is_in_the_published_bundle_schema() -> None:
    """A bundle with executor steps must pass ``keyturn verify``'s schema check too."""
    schema = json.loads(
        (
            Path(__file__).resolve().parents[2]
            / "manifests"
            / "schemas"
            / "keyturn-proof-bundle.schema.json"
        ).read_text()
    )
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            kind = node.get("kind")
            if isinstance(kind, dict) and "enum" in kind:
                found.append(set(kind["enum"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # A reconciliation finding is about a role or group, never about a request, so no
    # bundle can hold one (the verifier refuses receipts about other requests).
    bundled = {k.value for k in ReceiptKind} - {ReceiptKind.RECONCILE_FINDING.value}
    assert found and all(bundled <= kinds for kinds in found)


async def test_executors_come_with_reconciliation_which_serve_runs_and_config_can_turn_off(
    tmp_path: Path, receiver: Receiver
) -> None:
    from bot.server import build_web_app

    config = write_config(tmp_path / "data", receiver)
    app = await start(config, receiver)
    try:
        assert app.reconciler is not None
        web_app = build_web_app(app)
        runner = web.AppRunner(web_app)
        await runner.setup()  # runs the background context: scheduler and reconciliation
        try:
            report = await app.reconciler.run_once(receiver.clock.now())
            assert not report.errors
        finally:
            await runner.cleanup()
    finally:
        await app.close()
    off = write_config(tmp_path / "off", receiver)
    off.write_text(off.read_text(encoding="utf-8") + "\n[reconcile]\nenabled = false\n")
    app = await start(off, receiver)
    try:
        assert app.reconciler is None
    finally:
        await app.close()


async def test_watching_a_role_without_a_role_executor_stops_start_up_naming_reconcile(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path / "data", receiver)
    config.write_text(
        config.read_text(encoding="utf-8")
        + '\n[reconcile]\nwatch_roles = ["62e90394-69f5-4237-9190-012177145e10"]\n'
    )
    with pytest.raises(ConfigError) as e:
        await build(load_settings(config), create_key=True, clock=receiver.clock)
    assert e.value.message.startswith("setting reconcile:"), e.value.message


async def test_a_call_cut_off_by_a_crash_in_a_short_window_is_still_paged_and_rolled_back(
    tmp_path: Path, receiver: Receiver
) -> None:
    """keyturn passed the gate and stopped before receipting the call (a crash); the
    window (5 minutes) closes before the unreceipted-use grace is over. Its close finds
    nothing receipted, and the sweep only looks at open windows: reconciliation must
    still page it and roll it back."""
    config = write_config(tmp_path / "data", receiver)
    settings = load_settings(config)
    crashed = await build(
        settings.model_copy(update={"executors": {}}), create_key=True, clock=receiver.clock
    )
    try:
        request_id = await approve(crashed, minutes=5)
        token = await crashed.service.breakglass_token(request_id, person("alice"))
        view = await crashed.service.view(request_id)
        assert view.grant is not None and view.grant.envelope is not None
        await crashed.service.gate_check(
            cst=token.token,
            grant=view.grant.envelope,
            tool_route=ROUTE,
            params=PARAMS,
            context={"reason": "INC-4411 mailbox compromise", "ticket": "INC-4411"},
        )  # … and the process died here, its call to the receiver maybe sent
    finally:
        await crashed.close()

    app = await start(config, receiver)
    try:
        assert app.executions is not None and app.reconciler is not None
        alerts = alerts_of(app)
        assert await app.executions.run_approved(request_id) is None  # maybe in flight
        receiver.clock.advance(6 * 60)
        await app.service.run_due()  # the window closes
        assert (await app.service.view(request_id)).request.state.value == "expired"
        receiver.clock.advance(6 * 60)
        await app.executions.sweep()
        await app.executions.drain()
        report = await app.reconciler.run_once(receiver.clock.now())
        assert not report.errors
        assert (await app.executions.status(request_id)).state is S.ROLLED_BACK
        assert [a.data["state"] for a in alerts] == ["execute_failed"]
        assert receiver.steps == ["rollback"]
    finally:
        await app.close()
