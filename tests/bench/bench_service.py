"""The whole service under load, on loopback: how much time keyturn itself adds.

A real keyturn app (SQLite in a temporary directory, real keys, the demo policy, uvloop
as ``keyturn serve`` runs it) serves the agent API on a loopback port. A second process
runs 200 concurrent agents (aiohttp clients): each starts a job, then, round after
round, submits a gated payment, long-polls until it sees its grant, and presents it at
``POST /v1/gate/check``. Two approvers decide every request through ``service.decide``
(as every chat surface does) in the server's process.

Two runs:

* **people**: each approver takes 2–8 s to click (uniformly drawn), and the agents' first
  calls are spread over 10 s. About 200 requests are pending at any moment: the load the
  goal names ("200 concurrent requests"), with people deciding at human speed.
* **capacity**: every agent fires at once and approvers click the moment a card exists:
  the service saturated, which shows its throughput (and the queueing a burst of 200
  simultaneous calls meets).

People are not part of keyturn's overhead, so the time measured per request is
``submit latency + (agent sees the grant − the 2nd approval returned)``; both processes
read the same system-wide monotonic clock. It is reported next to the p99 of an empty
endpoint (``GET /healthz``) hit by all agents at once in the same run. The goal verdict
is on the people run.

Run: ``python -m tests.bench service`` (about a minute and a half).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import resource
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

AGENTS = 200
ROUNDS = 3
HEALTHZ_ROUNDS = 5
GOAL_P99_SECONDS = 0.050
DEADLINE_SECONDS = 120.0
#: How long each approver takes to look at a card and click (uniform, seconds). People
#: are not part of keyturn's overhead; they are why 200 requests are pending at once.
PEOPLE_THINK_SECONDS = (2.0, 8.0)
#: With people approving, agents start their first call at a uniformly random moment
#: within this many seconds (not all in the same millisecond).
RAMP_SECONDS = 10.0
ROUTE = "payments.transfer"
APPROVERS = ("bob", "carol")  # Finance-Approvers and Security-Approvers in the demo


# --- the agents' process -------------------------------------------------------------------


@dataclass
class AgentResults:
    submit_seconds: dict[str, float] = field(default_factory=dict)  # request id → latency
    seen_at: dict[str, float] = field(default_factory=dict)  # request id → monotonic time
    gate_seconds: list[float] = field(default_factory=list)
    gate_window: tuple[float, float] = (0.0, 0.0)
    healthz_seconds: list[float] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0
    errors: list[str] = field(default_factory=list)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _agents(url: str, key_path: str, agents: int, rounds: int, ramp: float) -> AgentResults:
    import aiohttp

    from adapters.signer import FileSigner
    from core.canonical import b64u_encode

    key = FileSigner.load(key_path)
    results = AgentResults()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http:

        async def healthz() -> None:
            for _ in range(HEALTHZ_ROUNDS):
                start = time.monotonic()
                async with http.get("/healthz") as response:
                    await response.read()
                    assert response.status == 200
                results.healthz_seconds.append(time.monotonic() - start)

        await asyncio.gather(*(healthz() for _ in range(agents)))

        async def start_job() -> tuple[str, str]:
            async with http.post("/v1/agents/challenge", json={"agent_did": key.did}) as r:
                challenge = (await r.json())["challenge"]
            signature = key.sign(("keyturn-job-v1\n" + challenge).encode("utf-8"))
            body = {
                "agent_did": key.did,
                "challenge": challenge,
                "signature_b64u": b64u_encode(signature),
            }
            async with http.post("/v1/jobs", json=body) as r:
                job = await r.json()
                assert r.status == 201, job
            return job["job_id"], job["runner_token"]

        jobs = await asyncio.gather(*(start_job() for _ in range(agents)))
        gate_times: list[float] = []

        async def one_call(job_id: str, runner: str, n: int) -> None:
            params = {"amount_usd": 12_500, "to_account": "DE89370400440532013000", "memo": n}
            auth = {"Authorization": f"Bearer {runner}"}
            body = {"job_id": job_id, "tool_route": ROUTE, "params": params}
            start = time.monotonic()
            async with http.post("/v1/requests", json=body, headers=auth) as r:
                submitted = await r.json()
            if r.status != 202:
                results.errors.append(f"submit {r.status} {submitted}")
                return
            rid = submitted["request_id"]
            results.submit_seconds[rid] = time.monotonic() - start
            while True:
                async with http.get(f"/v1/requests/{rid}?wait=25", headers=auth) as r:
                    status = await r.json()
                if status.get("grant") is not None:
                    results.seen_at[rid] = time.monotonic()
                    break
                if status.get("state") != "pending":
                    results.errors.append(f"status {status.get('state')}")
                    return
            check = {"grant": status["grant"], "tool_route": ROUTE, "params": params}
            job_auth = {"Authorization": f"Bearer {status['job_token']}"}
            start = time.monotonic()
            async with http.post("/v1/gate/check", json=check, headers=job_auth) as r:
                await r.read()
            done = time.monotonic()
            if r.status != 200:
                results.errors.append(f"gate {r.status}")
                return
            results.gate_seconds.append(done - start)
            gate_times.append(start)
            gate_times.append(done)

        spread = random.Random(11)

        async def agent(index: int) -> None:
            job_id, runner = jobs[index]
            await asyncio.sleep(spread.uniform(0.0, ramp))
            for round_ in range(rounds):
                await one_call(job_id, runner, index * rounds + round_)

        results.started_at = time.monotonic()
        await asyncio.gather(*(agent(i) for i in range(agents)))
        results.finished_at = time.monotonic()
        if gate_times:
            results.gate_window = (min(gate_times), max(gate_times))
    return results


def _agents_process(
    conn: Connection, url: str, key_path: str, agents: int, rounds: int, ramp: float
) -> None:
    try:
        conn.send(asyncio.run(_agents(url, key_path, agents, rounds, ramp)))
    except BaseException as e:  # report, never hang the parent
        conn.send(AgentResults(errors=[f"{type(e).__name__}: {e}"]))
    finally:
        conn.close()


# --- the server's process ------------------------------------------------------------------


async def _run(
    data_dir: Path, agents: int, rounds: int, think: tuple[float, float] | None
) -> tuple[AgentResults, dict[str, float], float]:
    """One load run. ``think``: each approver's delay before clicking, drawn uniformly
    from that range (seconds), with the agents' first calls spread over ``RAMP_SECONDS``;
    ``None``: every agent fires at once and approvers click at once (the capacity).
    Returns the agents' results, when each request's second approval returned, and the
    peak RSS of the sealing helpers (MiB, summed)."""
    ramp = 0.0 if think is None else RAMP_SECONDS
    from aiohttp import web

    from adapters.http import Metrics
    from adapters.signer import FileSigner
    from bot import demo
    from bot.bootstrap import build
    from bot.server import build_web_app, settle_heap
    from bot.service.runtime import Event
    from core.quorum import Verdict

    settings = demo.demo_settings(data_dir)
    app = await build(settings, create_key=True)
    kt = app.service
    key_path = settings.data_dir / "keys" / "demo-agent.pem"
    await kt.register_agent(FileSigner.load(key_path).did, name="bench", by="bench")
    metrics = Metrics()
    kt.rt.metrics = metrics
    approved_at: dict[str, float] = {}
    created: asyncio.Queue[str] = asyncio.Queue()
    pending: set[asyncio.Task[None]] = set()
    rng = random.Random(7)

    async def on_event(event: Event) -> None:
        if event.kind == "request" and event.data.get("created") and event.request_id:
            created.put_nowait(event.request_id)

    kt.rt.hub.subscribe(on_event)

    async def approve(rid: str) -> None:
        view = await kt.view(rid)
        confirm = view.request.binding.payload_hash_b64u[-4:]
        for who in APPROVERS:
            if think is not None:
                await asyncio.sleep(rng.uniform(*think))
            await kt.decide(
                rid, demo.person(who), Verdict.APPROVE, platform="bench", typed_confirmation=confirm
            )
        approved_at[rid] = time.monotonic()

    async def approver() -> None:
        while True:
            rid = await created.get()
            if think is None:
                await approve(rid)
            else:  # people: every request is looked at by its own pair of approvers
                pending.add(asyncio.create_task(approve(rid)))
                pending.difference_update({t for t in pending if t.done()})

    runner = web.AppRunner(build_web_app(app, metrics=metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    settle_heap()  # as keyturn serve does
    host, port = runner.addresses[0][:2]
    workers = [asyncio.create_task(approver()) for _ in range(16)]
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_agents_process,
        args=(send, f"http://{host}:{port}", str(key_path), agents, rounds, ramp),
        daemon=True,
    )
    try:
        process.start()
        send.close()
        loop = asyncio.get_running_loop()
        results: AgentResults = await asyncio.wait_for(
            loop.run_in_executor(None, receive.recv), timeout=DEADLINE_SECONDS
        )
    finally:
        for task in [*workers, *pending]:
            task.cancel()
        for task in [*workers, *pending]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if process.pid is not None:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        helpers_mib = sum(_peak_rss_mib(pid) for pid in app.service.seal_checks.pids)
        await runner.cleanup()
        await app.close()
    return results, approved_at, helpers_mib


def _peak_rss_mib(pid: int) -> float:
    """A live process's peak resident set (Linux ``VmHWM``), 0 where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _report(title: str, results: AgentResults, approved_at: dict[str, float]) -> float:
    """Print one run; return the p99 of keyturn's submit→grant overhead (seconds)."""
    if results.errors:
        print(f"{len(results.errors)} errors, first: {results.errors[0]}")
    overheads: list[float] = []
    combined: list[float] = []
    early = 0
    for rid, seen in results.seen_at.items():
        if rid not in approved_at:
            continue
        wait = seen - approved_at[rid]
        # The agent's long poll is woken inside decide(), so it may see its grant a hair
        # before decide() returns to the approver: that counts as no wait.
        early += wait < 0
        overheads.append(max(wait, 0.0))
        combined.append(results.submit_seconds[rid] + max(wait, 0.0))
    submit = list(results.submit_seconds.values())
    done = len(results.gate_seconds)
    wall = results.finished_at - results.started_at
    gate_span = results.gate_window[1] - results.gate_window[0]
    p50, p99 = _percentile(combined, 0.50), _percentile(combined, 0.99)
    ms = 1000.0
    print(f"-- {title}")
    print(f"{'completed requests (submit → approved → gate pass)':<58} {done:>8}")
    print(f"{'requests/s end to end (approvals included)':<58} {done / wall:>8.1f}")
    print(
        f"{'submit latency p50 / p99':<58} "
        f"{_percentile(submit, 0.5) * ms:>8.1f} / {_percentile(submit, 0.99) * ms:.1f} ms"
    )
    print(
        f"{'2nd approval → agent sees grant p50 / p99':<58} "
        f"{_percentile(overheads, 0.5) * ms:>8.1f} / {_percentile(overheads, 0.99) * ms:.1f} ms"
        f"  ({early} seen before decide() returned)"
    )
    print(f"{'keyturn overhead submit→grant p50 / p99':<58} {p50 * ms:>8.1f} / {p99 * ms:.1f} ms")
    print(
        f"{'gate checks/s (over the gate-check span)':<58} "
        f"{done / gate_span if gate_span > 0 else float('nan'):>8.1f}"
        f"   latency p50 {_percentile(results.gate_seconds, 0.5) * ms:.1f} ms"
        f" p99 {_percentile(results.gate_seconds, 0.99) * ms:.1f} ms"
    )
    health_p50 = _percentile(results.healthz_seconds, 0.50)
    health_p99 = _percentile(results.healthz_seconds, 0.99)
    print(
        f"{'GET /healthz p50 / p99 at the same concurrency':<58} "
        f"{health_p50 * ms:>8.1f} / {health_p99 * ms:.1f} ms"
        f"   (overhead p99 = {p99 / health_p99:.1f}× healthz p99)"
    )
    return p99 if done == AGENTS * ROUNDS and not results.errors else float("inf")


def main() -> None:
    from bot.server import run

    cores = os.cpu_count() or 0
    print(f"{AGENTS} concurrent agents × {ROUNDS} rounds, SQLite, loopback, {cores} cores")
    runs = {}
    helpers_mib = 0.0
    for name, think in (("people", PEOPLE_THINK_SECONDS), ("capacity", None)):
        with tempfile.TemporaryDirectory(prefix="keyturn-bench-") as tmp:
            results, approved, helpers = run(_run(Path(tmp) / "data", AGENTS, ROUNDS, think))
            runs[name] = (results, approved)  # run as keyturn serve runs
            helpers_mib = max(helpers_mib, helpers)
    p99 = _report(
        f"approvers take {PEOPLE_THINK_SECONDS[0]:.0f}–{PEOPLE_THINK_SECONDS[1]:.0f} s each "
        f"to click: {AGENTS} requests pending at once",
        *runs["people"],
    )
    _report("capacity: approvers click at once (the service saturated)", *runs["capacity"])
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'server process max RSS':<58} {rss_mib:>8.1f} MiB")
    print(f"{'sealing helper process max RSS':<58} {helpers_mib:>8.1f} MiB")
    ms = 1000.0
    print(
        f"GOAL p99 submit→grant overhead < {GOAL_P99_SECONDS * ms:.0f} ms at {AGENTS} concurrent "
        f"requests on 2 cores: {'MET' if p99 < GOAL_P99_SECONDS else 'NOT MET'} "
        f"(p99 {p99 * ms:.1f} ms with {AGENTS} requests pending; {cores} cores here)"
    )


if __name__ == "__main__":
    main()
