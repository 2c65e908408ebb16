"""A real keyturn (demo settings, SQLite, real keys) with the web console mounted."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web

from adapters.signer import FileSigner
from adapters.web import Console
from bot import demo
from bot.bootstrap import App, build
from bot.server import CONSOLE_KEY, ConsoleOptions, build_web_app
from core.canonical import b64u_encode
from core.outcomes import Submitted

DEMO_PEOPLE = (
    ("alice", "Alice Chen"),
    ("bob", "Bob Li"),
    ("carol", "Carol Diaz"),
    ("dan", "Dan Ortiz"),
    ("mallory", "Mallory Outsider"),
)
SECRET = b"test-console-secret-key-0123456789abcdef"
PAYMENT = {
    "amount_usd": 12_500,
    "to_account": "DE89 3704 0044 0532 0130 00",
    "memo": "Invoice 2026-118",
}
BREAKGLASS_PARAMS = {
    "tenant_id": "00000000-0000-4000-8000-0000000000aa",
    "principal": "alice@corp.example",
    "role": "Privileged Role Administrator",
}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class AgentJob:
    """What the demo agent keeps to collect its grant later (the runner token is a secret)."""

    runner_token: str
    job_id: str
    route: str
    params: Mapping[str, Any]


class AgentSubmitter:
    """``submit_test_call`` as the bot implements it: a new job for the demo agent, then
    submit. Remembers each gated request's job so a test can play the agent at the gate."""

    def __init__(self, app: App) -> None:
        self.kt = app.service
        self.agent = FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem").key
        self.jobs: dict[str, AgentJob] = {}

    async def __call__(self, route: str, params: Mapping[str, Any]) -> Submitted:
        challenge = await self.kt.agent_challenge(self.agent.did)
        signature = self.agent.sign(("keyturn-job-v1\n" + challenge.challenge).encode("utf-8"))
        job = await self.kt.start_job(
            agent_did=self.agent.did,
            challenge=challenge.challenge,
            signature_b64u=b64u_encode(signature),
        )
        submitted = await self.kt.submit(
            cst=job.runner_token, job_id=job.job_id, tool_route=route, params=dict(params)
        )
        if submitted.request_id:
            self.jobs[submitted.request_id] = AgentJob(
                job.runner_token, job.job_id, route, dict(params)
            )
        return submitted


async def start_keyturn(data_dir: Path) -> App:
    app = await build(demo.demo_settings(data_dir), create_key=True)
    agent = FileSigner.load(app.settings.data_dir / "keys" / "demo-agent.pem")
    await app.service.register_agent(agent.did, name=demo.AGENT_NAME, by="test")
    return app


@dataclass
class Running:
    """keyturn + console listening on a real local TCP port."""

    app: App
    console: Console
    url: str
    submit: AgentSubmitter


async def serve_console(app: App, *, demo_people: Any = DEMO_PEOPLE) -> tuple[Running, Any]:
    submit = AgentSubmitter(app)
    options = None
    if demo_people is not None:
        options = ConsoleOptions(people=demo_people, submit_test_call=submit, secret_key=SECRET)
    web_app = build_web_app(app, console=options)
    console = web_app[CONSOLE_KEY]
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Running(app, console, f"http://127.0.0.1:{port}", submit), runner


@pytest_asyncio.fixture
async def keyturn(tmp_path: Path) -> AsyncIterator[Running]:
    app = await start_keyturn(tmp_path / "data")
    running, runner = await serve_console(app)
    try:
        yield running
    finally:
        await runner.cleanup()
        await app.close()


@pytest_asyncio.fixture
async def read_only(tmp_path: Path) -> AsyncIterator[Running]:
    app = await start_keyturn(tmp_path / "data")
    running, runner = await serve_console(app, demo_people=None)
    try:
        yield running
    finally:
        await runner.cleanup()
        await app.close()


class Visitor:
    """One browser's worth of cookies, talking to the console over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.url + path) as response:
            text = await response.text()
            found = _CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return response.status, text

    async def post(
        self, path: str, data: Mapping[str, str], *, csrf: bool = True, follow: bool = True
    ) -> tuple[int, str]:
        form = dict(data)
        if csrf:
            form["csrf"] = self.csrf
        async with self.http.post(self.url + path, data=form, allow_redirects=follow) as response:
            text = await response.text()
            found = _CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return response.status, text

    async def sign_in(self, person: str) -> str:
        await self.get("/")
        status, text = await self.post("/signin", {"person": person})
        assert status == 200, text
        return text

    async def close(self) -> None:
        await self.http.close()


@pytest_asyncio.fixture
async def visitors(keyturn: Running) -> AsyncIterator[Callable[[], Visitor]]:
    made: list[Visitor] = []

    def make() -> Visitor:
        visitor = Visitor(keyturn.url)
        made.append(visitor)
        return visitor

    try:
        yield make
    finally:
        for visitor in made:
            await visitor.close()
