"""Socket Mode: the settings it needs, one processing per envelope across replicas."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from slack_sdk.socket_mode.request import SocketModeRequest

from adapters.slack import SlackSettings
from adapters.slack import blocks as bk
from adapters.slack.socket import ClaimingSocketModeHandler
from adapters.store import open_store, sqlite_url
from adapters.store.slack_claims import SlackEnvelopeClaims
from core.errors import ConfigError
from tests.adapters.slack.conftest import APPROVERS, Rig, eventually
from tests.adapters.slack.standin import TEAM

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[3]


def _settings(**kw: Any) -> SlackSettings:
    return SlackSettings(
        bot_token=SecretStr("xoxb-test"),
        signing_secret=SecretStr("s"),
        approvers_channel="C1",
        security_channel="C2",
        workspace_id="T1",
        **kw,
    )


async def test_socket_mode_without_an_app_token_does_not_start() -> None:
    with pytest.raises(ValidationError, match="app_token"):
        _settings(socket_mode=True)
    with pytest.raises(ValidationError, match="app_token"):
        _settings(socket_mode=True, app_token=SecretStr("xoxb-not-an-app-token"))
    ok = _settings(socket_mode=True, app_token=SecretStr("xapp-1-A-1-abc"))
    assert "xapp-1-A-1-abc" not in repr(ok)


class FakeSocketClient:
    """What Bolt's handler calls back on: the acknowledgement of an envelope."""

    def __init__(self) -> None:
        import logging

        self.logger = logging.getLogger("fake-socket")
        self.acks: list[str] = []

    async def send_socket_mode_response(self, response: Any) -> None:
        self.acks.append(response.envelope_id)


def _click(user: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "team_id": TEAM},
        "team": {"id": TEAM},
        "api_app_id": "AKEYTURN",
        "trigger_id": "1.2.3",
        "channel": {"id": APPROVERS},
        "container": {"type": "message", "message_ts": "1.1", "channel_id": APPROVERS},
        "message": {"ts": "1.1", "text": f"Approval needed: x ({request_id})"},
        "actions": [
            {"action_id": bk.APPROVE, "block_id": "d", "value": request_id, "type": "button"}
        ],
    }


async def test_an_envelope_delivered_to_two_replicas_is_processed_once(rig: Rig) -> None:
    request_id = await rig.agent_request()
    claims = SlackEnvelopeClaims(rig.app.store)
    replicas = [
        ClaimingSocketModeHandler(
            rig.surface.app, "xapp-1-test", claims=claims, clock=rig.app.service.rt.clock
        )
        for _ in range(2)
    ]
    sockets = [FakeSocketClient(), FakeSocketClient()]
    envelope = SocketModeRequest(
        type="interactive", envelope_id="env-1", payload=_click("UBOB", request_id)
    )
    await asyncio.gather(*(r.handle(s, envelope) for r, s in zip(replicas, sockets, strict=True)))
    assert sorted(len(s.acks) for s in sockets) == [0, 1]  # one replica acknowledged
    await eventually(lambda: _decisions(rig, request_id, 1))
    await asyncio.sleep(0.1)
    view = await rig.app.service.view(request_id)
    assert len(view.decisions) == 1
    assert not rig.slack.of("chat.postEphemeral")  # nobody saw an "already approved"
    assert len(rig.slack.of("users.info")) == 1
    for replica in replicas:  # never connected; frees the client's aiohttp session
        await replica.close_async()  # type: ignore[no-untyped-call]


async def _decisions(rig: Rig, request_id: str, n: int) -> bool:
    return len((await rig.app.service.view(request_id)).decisions) >= n


async def test_an_app_token_of_the_wrong_kind_is_refused(rig: Rig) -> None:
    with pytest.raises(ConfigError):
        ClaimingSocketModeHandler(
            rig.surface.app,
            "xoxb-test",
            claims=SlackEnvelopeClaims(rig.app.store),
            clock=rig.app.service.rt.clock,
        )


async def test_old_claims_are_pruned_and_recent_ones_kept(tmp_path: Path) -> None:
    store = await open_store(sqlite_url(tmp_path), auto_upgrade=True)
    try:
        claims = SlackEnvelopeClaims(store)
        now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        assert await claims.claim("old", at=now - timedelta(hours=2))
        assert await claims.claim("new", at=now)
        assert await claims.prune(before=now - timedelta(hours=1)) == 1
        assert not await claims.claim("new", at=now)
        assert await claims.claim("old", at=now)  # forgotten, so claimable again
    finally:
        await store.close()


CLAIMER = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import UTC, datetime
    from adapters.store import open_store
    from adapters.store.slack_claims import SlackEnvelopeClaims

    async def main(url, ids):
        store = await open_store(url, auto_upgrade=False)
        claims = SlackEnvelopeClaims(store)
        sys.stdin.readline()  # both processes start claiming together
        async def one(i):
            return i if await claims.claim(i, at=datetime.now(UTC)) else None
        won = [i for i in await asyncio.gather(*(one(i) for i in ids)) if i]
        await store.close()
        print(json.dumps(won))

    asyncio.run(main(sys.argv[1], [f"env-{n}" for n in range(int(sys.argv[2]))]))
    """
)


async def test_two_processes_claiming_the_same_envelopes_each_win_disjoint_halves(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    await (await open_store(url, auto_upgrade=True)).close()  # create the schema once
    count = 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, url, str(count)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = await asyncio.to_thread(lambda: [p.communicate("go\n", timeout=120) for p in procs])
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    won = [set(json.loads(out)) for out, _ in outs]
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == {f"env-{n}" for n in range(count)}


async def test_a_first_delivery_marked_retry_attempt_0_is_not_taken_for_a_retry(
    rig: Rig,
) -> None:
    # Socket Mode copies an envelope's retry_attempt into X-Slack-Retry-Num, and a
    # first delivery says 0. Taken for a retry, a second click by an approver who
    # already decided would be swallowed instead of told why (issue #7).
    request_id = await rig.agent_request()
    handler = ClaimingSocketModeHandler(
        rig.surface.app,
        "xapp-1-test",
        claims=SlackEnvelopeClaims(rig.app.store),
        clock=rig.app.service.rt.clock,
    )
    socket = FakeSocketClient()
    try:
        for n in (1, 2):
            envelope = SocketModeRequest(
                type="interactive",
                envelope_id=f"env-{n}",
                payload=_click("UBOB", request_id),
                retry_attempt=0,
            )
            await handler.handle(socket, envelope)  # type: ignore[arg-type]
            await rig.surface.work.join()
        assert socket.acks == ["env-1", "env-2"]
        (refusal,) = rig.slack.of("chat.postEphemeral")
        assert refusal["user"] == "UBOB" and "already" in refusal["text"].lower()
        assert len((await rig.app.service.view(request_id)).decisions) == 1
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
