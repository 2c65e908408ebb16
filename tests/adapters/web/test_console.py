"""The web console against a real keyturn: sessions, CSRF, who gets buttons, refusals,
escaping, the feed, break-glass windows and proof bundles."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable

import aiohttp
import pytest

from core.bundle_verify import verify_bundle
from core.identity import IdentityKind, IdentityRef
from core.requests import RequestState
from tests.adapters.web.conftest import BREAKGLASS_PARAMS, PAYMENT, Running, Visitor

pytestmark = pytest.mark.asyncio
APPROVE_BUTTON = '<button type="submit" name="verdict" value="approve">Approve</button>'
DENY_BUTTON = '<button type="submit" name="verdict" value="deny">Deny</button>'


async def gated_payment(keyturn: Running, params: dict[str, object] | None = None) -> str:
    submitted = await keyturn.submit("payments.transfer", params or PAYMENT)
    assert submitted.outcome == "gated" and submitted.request_id
    return submitted.request_id


async def decisions_of(keyturn: Running, request_id: str) -> int:
    return len((await keyturn.app.service.view(request_id)).decisions)


def last4(page: str) -> str:
    found = re.search(r'<code class="last4">([^<]+)</code>', page)
    assert found
    return html.unescape(found.group(1))


async def test_sign_in_sets_a_signed_httponly_samesite_strict_cookie(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    alice = visitors()
    await alice.get("/")
    async with alice.http.post(
        keyturn.url + "/signin", data={"person": "alice", "csrf": alice.csrf}, allow_redirects=False
    ) as response:
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    status, page = await alice.get("/")
    assert status == 200
    assert "Signed in as <strong>Alice Chen</strong>" in page
    _, page = await alice.post("/signout", {})
    assert "Signed in as" not in page and "Sign in as (demo)" in page


async def test_only_directory_people_can_sign_in(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    eve = visitors()
    await eve.get("/")
    status, page = await eve.post("/signin", {"person": "eve"})
    assert status == 400
    assert "Signed in as" not in page


async def test_forged_session_cookie_is_treated_as_no_session(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    bob = visitors()
    await bob.sign_in("bob")
    cookie = next(c for c in bob.http.cookie_jar if c.key == "keyturn_console")
    body, mac = cookie.value.split(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    mallory = aiohttp.ClientSession(cookies={"keyturn_console": forged})
    try:
        async with mallory.get(keyturn.url + "/") as response:
            page = await response.text()
    finally:
        await mallory.close()
    assert "Signed in as" not in page


async def test_post_without_csrf_token_is_refused_403_and_nothing_recorded(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    rid = await gated_payment(keyturn)
    bob = visitors()
    await bob.sign_in("bob")
    _, page = await bob.get(f"/requests/{rid}")
    status, refused = await bob.post(
        f"/requests/{rid}/decide", {"verdict": "approve", "confirmation": last4(page)}, csrf=False
    )
    assert status == 403
    assert "did not come from this console" in refused
    status, _ = await bob.post(
        f"/requests/{rid}/decide",
        {"verdict": "approve", "confirmation": last4(page), "csrf": "x" * 32},
        csrf=False,
    )
    assert status == 403
    anonymous = visitors()
    status, _ = await anonymous.post("/signin", {"person": "bob"}, csrf=False)
    assert status == 403
    assert await decisions_of(keyturn, rid) == 0


async def test_cross_origin_post_is_refused_even_with_the_token(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    rid = await gated_payment(keyturn)
    bob = visitors()
    await bob.sign_in("bob")
    _, page = await bob.get(f"/requests/{rid}")
    async with bob.http.post(
        f"{keyturn.url}/requests/{rid}/decide",
        data={"verdict": "approve", "confirmation": last4(page), "csrf": bob.csrf},
        headers={"Origin": "https://evil.example"},
    ) as response:
        assert response.status == 403
    assert await decisions_of(keyturn, rid) == 0


async def test_requester_sees_no_approve_button_on_her_own_breakglass_request(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    alice = visitors()
    await alice.sign_in("alice")
    status, page = await alice.post(
        "/breakglass",
        {
            "route": "entra.role.assign",
            "params": json.dumps(BREAKGLASS_PARAMS),
            "minutes": "30",
            "reason": "INC-4411 mailbox compromise",
            "ticket": "INC-4411",
            "rollback": "Remove the role assignment\nRe-run the verification reads",
        },
    )
    assert status == 200
    assert "BREAK-GLASS" in page and "Break-glass requested" in page
    assert (
        "<ol><li>Remove the role assignment</li><li>Re-run the verification reads</li></ol>" in page
    )
    assert "INC-4411 mailbox compromise · ticket INC-4411" in page
    assert "30 minutes from approval" in page
    assert APPROVE_BUTTON not in page and DENY_BUTTON not in page
    assert "You requested this, so you can't approve it." in page
    rid = re.search(r"<h1>Request (r-[0-9a-f]+)</h1>", page)
    assert rid
    bob = visitors()
    await bob.sign_in("bob")
    _, seen_by_bob = await bob.get(f"/requests/{rid.group(1)}")
    assert APPROVE_BUTTON in seen_by_bob and DENY_BUTTON in seen_by_bob


async def test_outsider_is_shown_the_service_refusal_and_nothing_is_recorded(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    rid = await gated_payment(keyturn)
    mallory = visitors()
    await mallory.sign_in("mallory")
    _, page = await mallory.get(f"/requests/{rid}")
    status, refused = await mallory.post(
        f"/requests/{rid}/decide", {"verdict": "approve", "confirmation": last4(page)}
    )
    assert status == 409
    assert "You&#x27;re not in Finance-Approvers or Security-Approvers" in refused
    assert "APPROVER_NOT_IN_GROUP" in refused
    assert await decisions_of(keyturn, rid) == 0


async def test_critical_approval_needs_the_typed_last_four(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    rid = await gated_payment(keyturn)
    bob = visitors()
    await bob.sign_in("bob")
    _, page = await bob.get(f"/requests/{rid}")
    assert "Type the last 4 characters of the payload hash" in page
    wrong = "zzzz" if last4(page) != "zzzz" else "yyyy"
    status, refused = await bob.post(
        f"/requests/{rid}/decide", {"verdict": "approve", "confirmation": wrong}
    )
    assert status == 409 and "CONFIRMATION_MISMATCH" in refused
    assert await decisions_of(keyturn, rid) == 0
    status, done = await bob.post(
        f"/requests/{rid}/decide", {"verdict": "approve", "confirmation": last4(page)}
    )
    assert status == 200 and "Your approval was recorded." in done
    assert "1 of 2 approvals" in done


async def test_deny_needs_a_reason_and_then_shows_it(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    rid = await gated_payment(keyturn)
    carol = visitors()
    await carol.sign_in("carol")
    status, page = await carol.post(f"/requests/{rid}/decide", {"verdict": "deny", "reason": " "})
    assert status == 400
    assert "Say why you deny this request" in page
    assert await decisions_of(keyturn, rid) == 0
    status, page = await carol.post(
        f"/requests/{rid}/decide", {"verdict": "deny", "reason": "wrong beneficiary"}
    )
    assert status == 200
    assert "❌ Denied by Carol Diaz: &quot;wrong beneficiary&quot;" in page
    assert (await keyturn.app.service.view(rid)).request.state is RequestState.DENIED
    # A denied request is final: its bundle is sealed, downloadable and verifies here.
    assert '<strong class="verdict">PASS</strong>' in page
    async with carol.http.get(f"{keyturn.url}/requests/{rid}/bundle.json") as response:
        assert response.status == 200
        assert f'filename="bundle-{rid}.json"' in response.headers["Content-Disposition"]
        data = await response.read()
    report = verify_bundle(data, trusted_keyturn_dids={keyturn.app.service.rt.signer.did})
    assert report.outcome == "denied"


async def test_hostile_parameters_are_escaped_everywhere(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    hostile = '<script>alert("x")</script>'
    rid = await gated_payment(keyturn, {**PAYMENT, "memo": hostile, hostile: "<img src=x>"})
    bob = visitors()
    await bob.sign_in("bob")
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    for path in ("/", f"/requests/{rid}", "/feed"):
        _, page = await bob.get(path)
        assert "<script>alert" not in page
        assert "<img src=x>" not in page
        if path != "/feed":  # the feed shows no parameters at all
            assert escaped in page
    # A hostile route typed into the test-call form comes back escaped, too.
    _, page = await bob.post("/test-call", {"route": hostile, "params": "{}"})
    assert escaped in page
    assert "<script>alert" not in page


async def test_bad_json_parameters_are_explained_and_kept_in_the_form(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    alice = visitors()
    await alice.sign_in("alice")
    status, page = await alice.post(
        "/test-call", {"route": "payments.transfer", "params": '{"amount_usd": '}
    )
    assert status == 400
    assert "not valid JSON" in page
    assert "{&quot;amount_usd&quot;: </textarea>" in page


async def test_test_call_form_submits_through_the_demo_agent(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    alice = visitors()
    await alice.sign_in("alice")
    status, page = await alice.post(
        "/test-call", {"route": "payments.transfer", "params": json.dumps(PAYMENT)}
    )
    assert status == 200
    assert "The policy gated this call" in page
    assert "🔐 Approval needed · payments.transfer" in page
    assert "•••• (sha256" in page  # to_account is sensitive in the demo policy
    status, page = await alice.post(
        "/test-call",
        {"route": "payments.transfer", "params": json.dumps({**PAYMENT, "amount_usd": 20})},
    )
    assert status == 200 and "Allowed:" in page


async def test_feed_json_lists_verified_receipts_with_links_and_a_signed_checkpoint(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    rid = await gated_payment(keyturn)
    bob = visitors()
    await bob.sign_in("bob")
    _, page = await bob.get(f"/requests/{rid}")
    await bob.post(f"/requests/{rid}/decide", {"verdict": "approve", "confirmation": last4(page)})
    async with bob.http.get(keyturn.url + "/feed.json") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        data = await response.json()
    mine = [line for line in data["lines"] if line["request_id"] == rid]
    assert [line["text"].split()[1] for line in mine] == ["request", "approve"]
    assert all(line["url"] == f"/requests/{rid}" for line in mine)
    assert "Bob Li" in mine[1]["text"]
    checkpoint = data["checkpoint"]
    assert checkpoint["line"].startswith("checkpoint  keyturn/demo  size ")
    assert checkpoint["size"] > max(line["index"] for line in mine)


async def test_breakglass_token_is_shown_once_to_its_requester_only_then_revoked(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    kt = keyturn.app.service
    bg = await kt.request_breakglass(
        IdentityRef(IdentityKind.OBJECT_ID, "alice"),
        route="entra.role.assign",
        params=BREAKGLASS_PARAMS,
        duration_seconds=1800,
        reason="INC-4411",
    )
    rid = bg.request_id
    assert rid
    people = {}
    for name in ("alice", "bob", "carol"):
        people[name] = visitors()
        await people[name].sign_in(name)
    for name in ("bob", "carol"):
        await people[name].post(
            f"/requests/{rid}/decide",
            {"verdict": "approve", "confirmation": bg.payload_hash_b64u[-4:]},
        )
    _, seen_by_bob = await people["bob"].get(f"/requests/{rid}")
    assert "Get my token" not in seen_by_bob and ">Revoke</button>" in seen_by_bob
    status, refused = await people["bob"].post(f"/requests/{rid}/token", {})
    assert status == 409 and "NOT_REQUESTER" in refused
    assert 'id="secret-token"' not in refused
    _, seen_by_alice = await people["alice"].get(f"/requests/{rid}")
    assert "Get my token (shown once)" in seen_by_alice
    assert 'id="secret-token"' not in seen_by_alice
    status, with_token = await people["alice"].post(f"/requests/{rid}/token", {})
    assert status == 200
    token = re.search(
        r'<textarea id="secret-token" readonly rows="4">([^<]+)</textarea>', with_token
    )
    assert token and token.group(1).count(".") == 2
    _, again = await people["alice"].get(f"/requests/{rid}")
    assert token.group(1) not in again
    status, page = await people["carol"].post(f"/requests/{rid}/revoke", {"reason": "contained"})
    assert status == 200 and "The window was closed" in page
    assert (await kt.view(rid)).request.state is RequestState.REVOKED
    assert '<strong class="verdict">PASS</strong>' in page
    assert token.group(1) not in page


async def test_read_only_console_has_no_sign_in_no_buttons_and_refuses_posts(
    read_only: Running,
) -> None:
    rid = await gated_payment(read_only)
    visitor = Visitor(read_only.url)
    try:
        _, inbox = await visitor.get("/")
        assert "This console is read-only" in inbox
        assert "put it behind your organization&#x27;s SSO proxy" in inbox
        assert "Sign in" not in inbox and "<button" not in inbox
        _, page = await visitor.get(f"/requests/{rid}")
        assert "🔐 Approval needed · payments.transfer" in page and "<button" not in page
        status, _ = await visitor.post("/signin", {"person": "bob"})
        assert status == 403
        status, _ = await visitor.post(
            f"/requests/{rid}/decide", {"verdict": "approve", "confirmation": last4(page)}
        )
        assert status == 403
    finally:
        await visitor.close()
    assert await decisions_of(read_only, rid) == 0


async def test_pages_forbid_framing_and_foreign_scripts(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    visitor = visitors()
    async with visitor.http.get(keyturn.url + "/") as response:
        csp = response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "http://" not in page.replace(keyturn.url, "") and "https://" not in page
    async with visitor.http.get(keyturn.url + "/console/static/console.js") as response:
        assert response.status == 200
        assert "innerHTML" not in (await response.text()).replace("never innerHTML", "")


async def test_unknown_request_is_a_404_page(
    keyturn: Running, visitors: Callable[[], Visitor]
) -> None:
    status, page = await visitors().get("/requests/r-000000000000")
    assert status == 404 and "There is no request r-000000000000." in page
