"""The Slack surface under a click storm, on loopback, against the real app.

A real keyturn app (SQLite in a temporary directory, real keys, the demo policy and
directory) with the real Bolt app mounted on an aiohttp server on a loopback port; the
Slack Web API is a local stand-in that enforces Slack's documented limits
(``chat.update`` Tier 3: at most 50 in any 60 s, app-wide; ``chat.postMessage``: at
most 1 per second per channel) and answers 429 with ``Retry-After`` beyond them.

A second process (so the load generator does not share the server's event loop) sends
200 concurrent, correctly signed Approve clicks (100 gated requests × Bob and Carol),
and, in the same run, 200 concurrent requests to an empty endpoint on the same server.
Reported: p50/p99 time to ack (HTTP 200 from Bolt) next to the empty endpoint's p99;
whether each decision was recorded exactly once; how many 429s keyturn received while
its outbox drained for a fixed time (the backlog left is the rate limits at work).

Run: ``python -m tests.bench slack`` (about 40 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REQUESTS = 100
APPROVERS_USERS = ("UBOB", "UCAROL")
DRAIN_SECONDS = 20.0


@dataclass
class LimitedStandIn:
    """The stand-in of tests/adapters/slack, with Slack's limits enforced."""

    inner: Any
    updates: deque[float] = field(default_factory=deque)
    last_post: dict[str, float] = field(default_factory=dict)
    refused: int = 0

    def app(self) -> Any:
        from aiohttp import web

        inner = self.inner.app()

        @web.middleware
        async def limits(request: web.Request, handler: Any) -> web.StreamResponse:
            method = request.match_info.get("method", "")
            now = time.monotonic()
            if method == "chat.update":
                while self.updates and now - self.updates[0] >= 60.0:
                    self.updates.popleft()
                if len(self.updates) >= 50:
                    return self._limited(60.0 - (now - self.updates[0]))
                self.updates.append(now)
            elif method == "chat.postMessage":
                form: Any = {}
                if request.content_type == "application/json":
                    form = await request.json()
                elif request.can_read_body:
                    form = await request.post()
                channel = str(form.get("channel") or request.query.get("channel") or "")
                previous = self.last_post.get(channel)
                if previous is not None and now - previous < 1.0:
                    return self._limited(1.0 - (now - previous))
                self.last_post[channel] = now
            return await handler(request)

        inner.middlewares.append(limits)
        return inner

    def _limited(self, retry_after: float) -> Any:
        from aiohttp import web

        self.refused += 1
        return web.json_response(
            {"ok": False, "error": "ratelimited"},
            status=429,
            headers={"Retry-After": str(max(1, int(retry_after + 0.999)))},
        )


def _client(
    url: str, bodies: list[tuple[str, dict[str, str]]], empty: int, out: Connection
) -> None:
    """The load generator (its own process): empty endpoint first, then the clicks."""
    import aiohttp

    async def fire(session: aiohttp.ClientSession, method: str, target: str, **kw: Any) -> float:
        start = time.perf_counter()
        async with session.request(method, target, **kw) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{target}: HTTP {response.status}")
        return time.perf_counter() - start

    async def main() -> tuple[list[float], list[float]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(3):  # warm the connections and the app
                await fire(session, "GET", f"{url}/bench/empty")
            empties = await asyncio.gather(
                *(fire(session, "GET", f"{url}/bench/empty") for _ in range(empty))
            )
            clicks = await asyncio.gather(
                *(
                    fire(session, "POST", f"{url}/slack/events", data=body.encode(), headers=h)
                    for body, h in bodies
                )
            )
        return list(empties), list(clicks)

    out.send(asyncio.run(main()))
    out.close()


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run() -> list[str]:
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from pydantic import SecretStr
    from slack_sdk.web.async_client import AsyncWebClient

    from adapters.outbox import OutboxWorker
    from adapters.signer import FileSigner
    from adapters.slack import SlackSettings, mount_slack
    from adapters.slack import blocks as bk
    from bot import demo
    from bot.bootstrap import build
    from tests.adapters.slack.conftest import APPROVERS, SECRET, SECURITY, block_action, signed
    from tests.adapters.slack.standin import TEAM, SlackStandIn

    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = demo.demo_settings(Path(tmp) / "data")
        application = await build(settings, create_key=True)
        agent = FileSigner.load(settings.data_dir / "keys" / "demo-agent.pem")
        await application.service.register_agent(agent.did, name="invoke-bot", by="bench")
        standin = LimitedStandIn(SlackStandIn())
        slack_server = TestServer(standin.app())
        await slack_server.start_server()
        client = AsyncWebClient(token="xoxb-test", base_url=str(slack_server.make_url("/api/")))
        worker = OutboxWorker(application.store, clock=application.service.rt.clock)
        web_app = web.Application()

        async def empty(_: web.Request) -> web.Response:
            return web.Response(text="")

        web_app.router.add_get("/bench/empty", empty)
        mount_slack(
            web_app,
            application.service,
            settings=SlackSettings(
                bot_token=SecretStr("xoxb-test"),
                signing_secret=SecretStr(SECRET),
                approvers_channel=APPROVERS,
                security_channel=SECURITY,
                workspace_id=TEAM,
            ),
            client=client,
            outbox=worker,
        )
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        try:
            key = agent.key
            ids = []
            for _ in range(REQUESTS):
                job = await demo._start_job(application.service, key)
                submitted = await application.service.submit(
                    cst=job.runner_token,
                    job_id=job.job_id,
                    tool_route="storage.export",
                    params={"dataset": "customer_pii", "destination": "s3://exports/q3"},
                )
                ids.append(str(submitted.request_id))
            webhook = str(slack_server.make_url("/webhook/r"))
            bodies = []
            for request_id in ids:
                for user in APPROVERS_USERS:
                    body = block_action(user, bk.APPROVE, request_id, webhook)
                    bodies.append((body, signed(body)))
            receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
            proc = multiprocessing.get_context("spawn").Process(
                target=_client, args=(url, bodies, len(bodies), send)
            )
            proc.start()
            empties, clicks = await asyncio.to_thread(receive.recv)
            await asyncio.to_thread(proc.join)

            async def all_decided() -> bool:
                views = [await application.service.view(i) for i in ids]
                return all(len(v.decisions) >= 2 for v in views)

            for _ in range(1500):
                if await all_decided():
                    break
                await asyncio.sleep(0.02)
            views = [await application.service.view(i) for i in ids]
            once = all(
                len(v.decisions) == 2
                and len({d.approver_id for d in v.decisions}) == 2
                and v.request.state.value == "approved"
                for v in views
            )
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            await asyncio.sleep(DRAIN_SECONDS)
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            backlog = await worker.backlog()
            received_429 = len([c for c in standin.inner.calls if c.method.endswith("#429")])
            received_429 += standin.refused
            p50, p99 = _pct(clicks, 0.50), _pct(clicks, 0.99)
            e99 = _pct(empties, 0.99)
            lines += [
                f"slack: {len(clicks)} concurrent signed Approve clicks "
                f"({REQUESTS} requests × {len(APPROVERS_USERS)} approvers), loopback",
                f"  time to ack   p50 {p50 * 1e3:7.1f} ms   p99 {p99 * 1e3:7.1f} ms   "
                f"(mean {statistics.fmean(clicks) * 1e3:.1f} ms)",
                f"  empty endpoint p99 {e99 * 1e3:7.1f} ms at the same concurrency "
                f"→ ack p99 = {p99 / e99:.2f}× empty",
                f"  decisions recorded exactly once: {'yes' if once else 'NO'}",
                f"  429 responses received by keyturn while draining {DRAIN_SECONDS:.0f} s: "
                f"{received_429}   (outbox backlog left: {backlog}; posts ≤ 1/s per "
                "channel, updates ≤ 50/min)",
            ]
            met = p99 <= 3 * e99 and p99 < 0.100 and once and received_429 == 0
            lines.append(
                "  goal (ack p99 ≤ 3× empty and < 100 ms, exactly once, zero 429): "
                + ("met" if met else "NOT met")
            )
        finally:
            await runner.cleanup()
            await slack_server.close()
            await application.close()
    return lines


def main() -> None:
    for line in asyncio.run(_run()):
        print(line)


if __name__ == "__main__":
    main()
