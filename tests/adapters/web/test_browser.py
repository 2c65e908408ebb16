"""The two-person rule in a real browser (Playwright driving Debian's chromium).

Alice submits a gated $12,500 payment through the demo agent and asks for break-glass;
Bob and Carol approve the payment by typing the last 4 characters of its payload hash;
Alice finds no Approve button on her own break-glass request and an outsider is refused;
the request page says "approved", the live feed shows the receipts; once the agent has
run the payment through the gate, the proof bundle downloads and verifies.

Outside CI (``CI`` is not "true") the test skips, loudly, when chromium or playwright is
missing; in CI it fails instead. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from core.bundle_verify import verify_bundle
from tests.adapters.web.conftest import Running

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CONFIRM_LABEL = "Type the last 4 characters of the payload hash to approve"


def require_browser() -> Any:
    """The playwright async API, or a loud skip (a failure in CI)."""
    missing = []
    async_api: Any = None
    try:
        from playwright import async_api
    except ImportError:
        missing.append("the playwright Python package (pip install playwright)")
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if missing:
        reason = "BROWSER TESTS NOT RUN: missing " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must run them")
        pytest.skip(reason)
    return async_api


async def sign_in(browser: Any, url: str, person: str) -> Any:
    context = await browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto("/")
    await page.get_by_label("Sign in as (demo)").select_option(person)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("Signed in as").wait_for()
    return page


async def approve(page: Any, request_id: str) -> None:
    await page.goto(f"/requests/{request_id}")
    last4 = await page.locator(".card .last4").inner_text()
    await page.get_by_label(CONFIRM_LABEL).fill(last4)
    await page.get_by_role("button", name="Approve", exact=True).click()


async def test_two_people_approve_a_gated_payment_in_the_browser(keyturn: Running) -> None:
    api = require_browser()
    expect = api.expect
    ARTIFACTS.mkdir(exist_ok=True)
    async with api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await _story(browser, expect, keyturn)
        finally:
            await browser.close()


async def _story(browser: Any, expect: Any, keyturn: Running) -> None:
    kt = keyturn.app.service
    url = keyturn.url

    # A watcher keeps the feed open: it must update by itself (polling).
    watcher = await (await browser.new_context(base_url=url)).new_page()
    await watcher.goto("/feed")

    # 1. Alice submits the gated payment as the demo agent (the form's default call).
    alice = await sign_in(browser, url, "alice")
    await expect(alice.get_by_label("Tool route").first).to_have_value("payments.transfer")
    await alice.get_by_role("button", name="Submit test call").click()
    await alice.wait_for_url(re.compile(r"/requests/r-[0-9a-f]+"))
    payment = alice.url.rsplit("/", 1)[1].split("?")[0]
    await expect(alice.locator("#request-status")).to_contain_text("pending")
    await expect(alice.locator(".card")).to_contain_text("12,500")
    payload_hash = await alice.locator(".card .hash").inner_text()
    assert payload_hash == (await kt.view(payment)).card.payload_hash  # full, never shortened
    await alice.get_by_text("Show exact payload").click()
    await expect(alice.locator(".card .payload")).to_contain_text('"amount_usd": 12500')

    # 2. Alice asks for break-glass; on her own request she finds no Approve button.
    await alice.goto("/")
    await alice.get_by_label("Reason (required; it goes on the card)").fill(
        "INC-4411 mailbox compromise"
    )
    await alice.get_by_label("Ticket (optional)").fill("INC-4411")
    await alice.get_by_role("button", name="Request break-glass").click()
    await alice.wait_for_url(re.compile(r"/requests/r-[0-9a-f]+"))
    await expect(alice.locator(".badge")).to_have_text("BREAK-GLASS")
    await expect(alice.get_by_text("You requested this, so you can't approve it.")).to_be_visible()
    await expect(alice.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(alice.get_by_role("button", name="Deny")).to_have_count(0)
    await alice.goto("/")
    await expect(alice.locator("article.card")).to_have_count(2)
    await alice.screenshot(path=str(ARTIFACTS / "console-inbox.png"), full_page=True)

    # 3. Bob (Finance-Approvers) approves, typing the last 4 characters of the hash.
    bob = await sign_in(browser, url, "bob")
    await approve(bob, payment)
    await expect(bob.get_by_text("Your approval was recorded.")).to_be_visible()
    await expect(bob.locator(".card")).to_contain_text("1 of 2 approvals")
    await expect(bob.locator(".card")).to_contain_text("✅ Bob Li (Finance-Approvers)")

    # 4. An outsider is refused with the service's message; nothing is recorded.
    mallory = await sign_in(browser, url, "mallory")
    await approve(mallory, payment)
    await expect(mallory.get_by_role("alert")).to_contain_text("You're not in")
    assert len((await kt.view(payment)).decisions) == 1

    # 5. Carol (Security-Approvers) approves: quorum, the request is approved.
    carol = await sign_in(browser, url, "carol")
    await approve(carol, payment)
    await expect(carol.locator("#request-status")).to_contain_text("approved")
    await expect(carol.locator("#request-status")).to_contain_text(
        "Approved by Bob Li and Carol Diaz"
    )
    await expect(carol.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(carol.locator(".timeline")).to_contain_text("grant g-")

    # 6. The live feed shows the receipts: request, two approvals, the grant.
    lines = watcher.locator(f'#feed-lines a[href="/requests/{payment}"]')
    await expect(lines).to_have_count(4, timeout=15_000)
    await expect(lines.nth(1)).to_contain_text("approve")
    await expect(lines.nth(3)).to_contain_text("grant")
    await expect(watcher.locator("#feed-checkpoint")).to_contain_text("checkpoint  keyturn/demo")

    # 7. The agent collects its grant and runs the exact payment through the gate
    #    (outside the browser); the request is then final and its bundle sealed.
    job = keyturn.submit.jobs[payment]
    status = await kt.request_status(cst=job.runner_token, request_id=payment)
    assert status.grant is not None and status.job_token is not None
    await kt.gate_check(
        cst=status.job_token, grant=status.grant, tool_route=job.route, params=job.params
    )
    await carol.goto(f"/requests/{payment}")
    await expect(carol.locator("#verify-result .verdict")).to_have_text("PASS")
    await expect(carol.locator("#verify-result")).to_contain_text("consumed")
    async with carol.expect_download() as downloading:
        await carol.get_by_role("link", name=re.compile("Download the proof bundle")).click()
    download = await downloading.value
    data = Path(await download.path()).read_bytes()
    report = verify_bundle(data, trusted_keyturn_dids={kt.rt.signer.did})
    assert report.outcome == "consumed"
    await carol.screenshot(path=str(ARTIFACTS / "console-request.png"), full_page=True)
