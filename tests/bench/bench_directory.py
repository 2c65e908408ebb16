"""Eligibility checks per second: warm cache versus cold (Graph stand-in on loopback).

Cold = ``cache_seconds=0``: every check acquires the token from msal's cache (one
worker-thread hop) and makes two HTTP calls to the local stand-in (the user and
``checkMemberGroups``), concurrently. Warm = the same question within the TTL, answered
from the eligibility cache. The static YAML directory is measured alongside. Ratios
are against the cold Entra check measured in the same run; the stand-in is on
127.0.0.1, so real Graph latency (tens of ms) makes the cold path slower still.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from adapters.directory import StaticDirectory
from adapters.entra import EntraDirectory
from tests.adapters.graph_standin import (
    ALICE,
    APPROVERS,
    CLIENT,
    NOW,
    SECRET,
    TENANT,
    GraphStandIn,
    populate,
    settings,
)
from tests.bench.timing import row

STATIC_DOC = """
people:
  - {object_id: alice, display_name: Alice, emails: [alice@example.com]}
  - {object_id: bob, display_name: Bob}
groups:
  - {id: approvers, display_name: Approvers, members: [alice], member_groups: [leads]}
  - {id: leads, display_name: Leads, members: [bob]}
"""


async def per_op_async(
    fn: Callable[[], Awaitable[object]], *, min_seconds: float = 0.3, repeats: int = 5
) -> float:
    """Median seconds per awaited call of ``fn`` (same method as ``timing.per_op``)."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            await fn()
        if time.perf_counter() - start >= min_seconds / 4 or loops >= 1 << 16:
            break
        loops *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            await fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples)


async def measure() -> list[str]:
    async with GraphStandIn(tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET) as standin:
        populate(standin)
        client = standin.http_client()
        async with (
            EntraDirectory(settings(standin, cache_seconds=0), http_client=client) as cold_dir,
            EntraDirectory(settings(standin, cache_seconds=60), http_client=client) as warm_dir,
        ):

            async def cold() -> object:
                return await cold_dir.eligibility(ALICE, [APPROVERS], now=NOW)

            async def warm() -> object:
                return await warm_dir.eligibility(ALICE, [APPROVERS], now=NOW)

            async def cold_pim() -> object:
                return await cold_dir.eligibility(ALICE, [APPROVERS], now=NOW, check_pim=True)

            await cold()  # tenant discovery + first token, outside the measurement
            await warm()
            cold_s = await per_op_async(cold)
            cold_pim_s = await per_op_async(cold_pim)
            warm_s = await per_op_async(warm)
    static = StaticDirectory.from_text(STATIC_DOC)

    async def static_check() -> object:
        return await static.eligibility("bob", ["approvers"], now=NOW)

    static_s = await per_op_async(static_check)
    return [
        row("entra eligibility, cold (token + 2 Graph calls)", cold_s, cold_s, "cold"),
        row("entra eligibility + PIM, cold (token + 3 Graph calls)", cold_pim_s, cold_s, "cold"),
        row("entra eligibility, warm cache", warm_s, cold_s, "cold"),
        row("static YAML eligibility (nested group)", static_s, cold_s, "cold"),
        f"warm cache answers {cold_s / warm_s:,.0f}× faster than a cold check",
    ]


def main() -> None:
    for line in asyncio.run(measure()):
        print(line, flush=True)


if __name__ == "__main__":
    main()
