"""``keyturn demo``: the embedded default, with no Slack, Teams or Entra credentials.

It creates a data directory with a SQLite store, keyturn's fresh Ed25519 key, a demo
policy signed by a demo issuer key, a static directory (a requester, three approvers in
different groups, one outsider) and a registered demo agent. Nothing fake is seeded
into the log: every card and receipt comes from the real use cases.

``--scripted`` runs the whole story and exits 0 only if every step behaved as the
two-person rule demands: a gated payment approved by two people and executed once, a
replay and a tampered payload refused, a break-glass window opened and revoked with
the kill switch, and every sealed proof bundle verified offline.

The break-glass route is executed by keyturn itself: ``keyturn demo`` starts a local
webhook receiver (:mod:`bot.demo_receiver`, the README's receiver recipe) and binds the
policy's ``entra.role.assign`` executor to it, so the story shows the approved action
executed and verified at once, and rolled back (and verified gone) by the kill switch.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from adapters.agents.sdk import Gate, KeyturnClientError
from adapters.signer import FileSigner, generate_key_file
from bot.bootstrap import App, build
from bot.service.breakglass import breakglass_token, request_breakglass, revoke
from bot.settings import ExecutionSettings, ExecutorSettings, KeyturnSettings
from core.bundle_format import bundle_bytes
from core.canonical import b64u_encode
from core.errors import KeyturnError
from core.identity import IdentityKind, IdentityRef
from core.keys import SigningKey
from core.policy.wpc import sign_wpc
from core.quorum import Verdict
from core.requests import RequestState

AGENT_NAME = "invoice-bot"


@dataclass(frozen=True, slots=True)
class DemoFiles:
    data_dir: Path
    policy: Path
    directory: Path
    issuer_key: Path
    agent_key: Path


def asset_text(name: str) -> str:
    return resources.files("bot").joinpath("assets", name).read_text(encoding="utf-8")


def prepare(data_dir: Path) -> DemoFiles:
    """Create (once) the demo's keys, signed policy and directory under ``data_dir``."""
    keys = data_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    issuer_path, agent_path = keys / "demo-issuer.pem", keys / "demo-agent.pem"
    if not issuer_path.exists():
        generate_key_file(issuer_path)
    if not agent_path.exists():
        generate_key_file(agent_path)
    issuer = FileSigner.load(issuer_path)
    policy_path = data_dir / "demo-policy.wpc.json"
    if not policy_path.exists():
        from datetime import UTC, datetime

        payload = json.loads(asset_text("demo-policy.json"))
        payload["issuer_did"] = issuer.did
        envelope = sign_wpc(payload, issuer, issued_at=datetime.now(UTC))
        policy_path.write_text(json.dumps(envelope, indent=2, ensure_ascii=False), encoding="utf-8")
    directory_path = data_dir / "directory.yaml"
    if not directory_path.exists():
        directory_path.write_text(asset_text("demo-directory.yaml"), encoding="utf-8")
    return DemoFiles(data_dir, policy_path, directory_path, issuer_path, agent_path)


def demo_settings(data_dir: Path, **server: Any) -> KeyturnSettings:
    files = prepare(data_dir)
    issuer = FileSigner.load(files.issuer_key)
    return KeyturnSettings(
        data_dir=data_dir,
        policy_file=files.policy,
        directory_file=files.directory,
        trusted_policy_issuers=[issuer.did],
        log={"origin": "keyturn/demo", "checkpoint_every_entries": 50},
        server=server or {},
    )


DEMO_EXECUTOR = "entra.role.assign"


async def start(data_dir: Path, **server: Any) -> App:
    """The demo's keyturn, with its break-glass route executed through a local receiver."""
    from bot.demo_receiver import DemoReceiver
    from bot.service.runtime import SystemClock

    clock = SystemClock()
    receiver = DemoReceiver(clock)
    url = await receiver.start()
    settings = demo_settings(data_dir, **server).model_copy(
        update={
            "executors": {
                DEMO_EXECUTOR: ExecutorSettings(
                    kind="webhook", url=f"{url}/execute", rollback_url=f"{url}/rollback"
                )
            },
            "execution": ExecutionSettings(allow_loopback_http=True),
        }
    )
    try:
        app = await build(settings, create_key=True, clock=clock)
    except BaseException:
        await receiver.close()
        raise
    app.on_close.append(receiver.close)
    # The receiver trusts the key keyturn publishes at /.well-known/keyturn.
    receiver.public_key = app.service.rt.signer.public_key
    app.demo_receiver = receiver  # type: ignore[attr-defined]  # the story reads it
    agent = FileSigner.load(settings.data_dir / "keys" / "demo-agent.pem")
    try:
        await app.service.register_agent(agent.did, name=AGENT_NAME, by="keyturn-demo")
    except KeyturnError as e:
        if e.reason_code != "AGENT_EXISTS":
            raise
    return app


DEMO_PEOPLE = (
    ("alice", "Alice Chen"),
    ("bob", "Bob Li"),
    ("carol", "Carol Diaz"),
    ("dan", "Dan Ortiz"),
    ("mallory", "Mallory Outsider"),
)


def console_options(app: App) -> Any:
    """Sign-in list and test-call submitter for the demo console (the demo agent's key)."""
    from bot.server import ConsoleOptions

    agent = FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem").key

    async def submit_test_call(route: str, params: Any) -> Any:
        job = await _start_job(app.service, agent)
        return await app.service.submit(
            cst=job.runner_token, job_id=job.job_id, tool_route=route, params=dict(params)
        )

    return ConsoleOptions(people=DEMO_PEOPLE, submit_test_call=submit_test_call)


def person(object_id: str) -> IdentityRef:
    return IdentityRef(IdentityKind.OBJECT_ID, object_id)


class ScriptFailed(Exception):
    pass


class Story:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.step = 0

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def check(self, ok: bool, text: str) -> None:
        self.step += 1
        self.say(f"  {'✔' if ok else '✘'} {self.step:2d}. {text}")
        if not ok:
            raise ScriptFailed(text)


async def _refused(coro: Any) -> str:
    try:
        await coro
    except KeyturnError as e:
        return e.reason_code
    return "NOT_REFUSED"


async def scripted(app: App, story: Story, *, url: str, out_dir: Path | None = None) -> list[str]:
    """Run the demo story; returns the request ids it sealed.

    The agent talks to the running server at ``url`` through the public API (the
    Python SDK); people decide through the same use case the chat surfaces and the
    web console call.
    """
    kt = app.service
    agent = FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem").key
    policy = await kt.active_policy()
    story.say(f"policy  {policy.name} · {policy.policy_hash_b64u}")
    story.say(f"keyturn {kt.rt.signer.did}\n")

    story.say(f"1. An agent asks, over the public API at {url}, to pay an invoice of $12,500")
    params = {
        "amount_usd": 12_500,
        "to_account": "DE89 3704 0044 0532 0130 00",
        "memo": "Invoice 2026-118",
    }
    async with Gate(url, agent_did=agent.did, agent_key=agent) as gate:
        waiting = asyncio.create_task(gate.require("payments.transfer", params, timeout=60))
        view = await _pending(kt, "payments.transfer", waiting)
        rid = view.request.request_id
        confirm = view.card.payload_hash_short
        story.check(True, f"gated by policy: {view.card.why_gated}")
        story.say(f"     request {rid} · payload hash {view.card.payload_hash}")

        story.say("2. People click (as they would in Slack, Teams or the web console)")
        code = await _refused(
            kt.decide(
                rid, person("mallory"), Verdict.APPROVE, platform="demo", typed_confirmation=confirm
            )
        )
        story.check(
            code == "APPROVER_NOT_IN_GROUP", f"Mallory (no approver group) is refused: {code}"
        )
        d1 = await kt.decide(
            rid, person("bob"), Verdict.APPROVE, platform="demo", typed_confirmation=confirm
        )
        story.check(
            d1.state == "pending",
            f"Bob Li (Finance-Approvers) approves: {d1.approvals} of {d1.needed}",
        )
        code = await _refused(
            kt.decide(
                rid, person("bob"), Verdict.APPROVE, platform="slack", typed_confirmation=confirm
            )
        )
        story.check(code == "ALREADY_DECIDED", f"Bob clicks again on another platform: {code}")
        d2 = await kt.decide(
            rid, person("carol"), Verdict.APPROVE, platform="demo", typed_confirmation=confirm
        )
        story.check(
            d2.state == "approved" and bool(d2.grant_id),
            f"Carol Diaz (Security-Approvers) approves: grant {d2.grant_id}",
        )

        story.say("3. The agent collects its grant and runs the payment through the gate")
        approval = await waiting
        story.check(
            approval.grant is not None and approval.job_token is not None,
            "the long poll hands the agent its grant and a job-scoped token",
        )
        tampered = {**params, "to_account": "GB33 BUKB 2020 1555 5555 55"}
        code = await _refused_client(gate.check(approval, "payments.transfer", tampered))
        story.check(
            code == "PAYLOAD_HASH_MISMATCH", f"a prompt-injected beneficiary is refused: {code}"
        )
        admitted = await gate.check(approval, "payments.transfer", params)
        story.check(
            True,
            f"the exact approved payment passes the gate once (grant {admitted.grant_id}, "
            f"receipt #{admitted.receipt_index})",
        )
        code = await _refused_client(gate.check(approval, "payments.transfer", params))
        story.check(
            code in ("GRANT_ALREADY_USED", "REQUEST_NOT_APPROVED"),
            f"a replay of the same grant is refused: {code}",
        )

    story.say("4. Alice asks for break-glass: Privileged Role Administrator for 30 minutes")
    bg = await request_breakglass(
        kt,
        person("alice"),
        route="entra.role.assign",
        params={
            "tenant_id": "00000000-0000-4000-8000-0000000000aa",
            "principal": "alice@corp.example",
            "role": "Privileged Role Administrator",
        },
        duration_seconds=1800,
        reason="INC-4411 mailbox compromise",
        ticket="INC-4411",
    )
    bid = bg.request_id or ""
    story.check(bg.outcome == "gated", f"break-glass request {bid} needs: {bg.needs[0]}")
    bconfirm = bg.payload_hash_b64u[-4:]
    code = await _refused(
        kt.decide(
            bid, person("alice"), Verdict.APPROVE, platform="demo", typed_confirmation=bconfirm
        )
    )
    story.check(code == "REQUESTER_CANNOT_APPROVE", f"Alice cannot approve her own window: {code}")
    await kt.decide(
        bid, person("bob"), Verdict.APPROVE, platform="demo", typed_confirmation=bconfirm
    )
    opened = await kt.decide(
        bid, person("carol"), Verdict.APPROVE, platform="demo", typed_confirmation=bconfirm
    )
    story.check(opened.state == "approved", "Bob and Carol approve: the window is open")
    receiver = getattr(app, "demo_receiver", None)
    if app.executions is not None and receiver is not None:
        await app.executions.drain(timeout=30)
        executed = await app.executions.status(bid)
        story.check(
            executed.state.value == "verified" and len(receiver.active) == 1,
            "keyturn carries out the role assignment itself: a signed webhook call, verified "
            f"by the receiver offline with keyturn's public key ({executed.state.value})",
        )
    token = await breakglass_token(kt, bid, person("alice"))
    story.check(
        bool(token.token),
        f"only Alice receives the token (window closes {token.window_closes_at:%H:%M} UTC)",
    )
    code = await _refused(breakglass_token(kt, bid, person("bob")))
    story.check(code == "NOT_REQUESTER", f"nobody else can fetch it: {code}")
    await revoke(kt, bid, person("carol"), reason="incident contained")
    view = await kt.view(bid)
    story.check(
        view.request.state.value == "revoked",
        "Carol pulls the kill switch: window closed, tokens revoked",
    )
    if app.executions is not None and receiver is not None:
        undone = await app.executions.status(bid)
        story.check(
            undone.state.value == "rolled_back" and not receiver.active,
            "the declared rollback runs at once: a second signed call, confirmed gone "
            f"({undone.state.value})",
        )
    for number, step in enumerate(view.card.rollback_steps, 1):
        story.say(f"     rollback {number}. {step}")

    story.say("5. Every finished request is sealed into a proof bundle that verifies offline")
    sealed = []
    from core.bundle_verify import verify_bundle

    for request_id in (rid, bid):
        bundle = await kt.bundle(request_id)
        report = verify_bundle(bundle, trusted_keyturn_dids={kt.rt.signer.did})
        story.check(True, f"bundle {request_id}: PASS ({len(report.checks)} checks)")
        sealed.append(request_id)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"bundle-{request_id}.json").write_bytes(bundle_bytes(bundle))
    if out_dir is not None:
        (out_dir / "checkpoint.txt").write_text(await kt.checkpoint())
        (out_dir / "keyturn-did.json").write_text(json.dumps(await kt.well_known(), indent=2))
        story.say(f"     wrote bundles, checkpoint and DID document to {out_dir}")
    return sealed


async def _pending(kt: Any, route: str, waiting: asyncio.Task[Any]) -> Any:
    """The pending request the agent just opened (fails if the agent's call ended)."""
    for _ in range(400):
        if waiting.done():
            waiting.result()  # re-raise what the agent got
            raise ScriptFailed(f"{route} was not gated")
        for view in await kt.list_requests(states=[RequestState.PENDING]):
            if view.request.binding.tool_route == route:
                return view
        await asyncio.sleep(0.05)
    raise ScriptFailed(f"no pending {route} request appeared")


async def _refused_client(coro: Any) -> str:
    try:
        await coro
    except KeyturnClientError as e:
        return e.reason_code
    return "NOT_REFUSED"


async def _start_job(kt: Any, agent: SigningKey) -> Any:
    challenge = await kt.agent_challenge(agent.did)
    signature = agent.sign(("keyturn-job-v1\n" + challenge.challenge).encode("utf-8"))
    return await kt.start_job(
        agent_did=agent.did, challenge=challenge.challenge, signature_b64u=b64u_encode(signature)
    )


def reset(data_dir: Path) -> None:
    if data_dir.exists():
        shutil.rmtree(data_dir)
