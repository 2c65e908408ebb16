"""The fast form decoder gives Bolt exactly the body Bolt's own parser would, and the
signature is still checked over the raw bytes."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl as urllib_parse_qsl
from urllib.parse import quote, quote_plus, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import parse_body as bolt_parse_body

from adapters.slack import blocks as bk
from adapters.slack.request import parse_body, parse_qsl, unquote_plus
from tests.adapters.slack.conftest import Rig, block_action, signed

FORM = "application/x-www-form-urlencoded"
# Text built from the characters that matter to percent-decoding, plus anything.
tricky = st.text(alphabet=st.sampled_from("%+&=\\aF09zé€😀 \x00\x7f")) | st.text()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(tricky)
def test_unquote_plus_is_urllibs(text: str) -> None:
    from urllib.parse import unquote

    assert unquote_plus(text) == unquote(text.replace("+", " "))


@given(tricky)
def test_parse_qsl_is_urllibs_for_any_text(body: str) -> None:
    assert parse_qsl(body) == urllib_parse_qsl(body, keep_blank_values=True)


@given(st.dictionaries(st.text(), st.text(), max_size=6))
def test_slash_command_forms_parse_as_bolt_parses_them(fields: dict[str, str]) -> None:
    body = urlencode(fields)
    assert parse_body(body, FORM) == bolt_parse_body(body, FORM)


@given(json_values)
def test_interactive_payloads_parse_as_bolt_parses_them(value: Any) -> None:
    body = "payload=" + quote(json.dumps({"type": "block_actions", "value": value}))
    assert parse_body(body, FORM) == bolt_parse_body(body, FORM)


@given(tricky)
def test_any_body_parses_as_bolt_parses_it_or_fails_alike(body: str) -> None:
    try:
        expected: Any = bolt_parse_body(body, FORM)
    except ValueError as e:  # Bolt json-decodes a "payload" field
        with pytest.raises(type(e)):
            parse_body(body, FORM)
        return
    assert parse_body(body, FORM) == expected


def test_a_real_click_parses_identically_with_non_ascii_text() -> None:
    body = block_action("UBOB", bk.APPROVE, "r-1", "http://127.0.0.1/webhook/r")
    assert parse_body(body, FORM) == bolt_parse_body(body, FORM)
    name = json.dumps("cörp 😀 \\ +% \u2028")[1:-1]  # JSON-escaped, then form-encoded
    for encode in (quote, quote_plus, lambda t: t.replace(" ", "+")):
        tricky_body = body.replace("corp", encode(name))
        parsed = parse_body(tricky_body, FORM)
        assert parsed == bolt_parse_body(tricky_body, FORM)
        assert parsed["team"]["domain"].startswith("cörp 😀")
    assert parse_body(body, FORM) == AsyncBoltRequest(body=body, headers=signed(body)).body


@pytest.mark.asyncio
async def test_a_body_changed_after_signing_is_refused(rig: Rig) -> None:
    request_id = await rig.agent_request()
    body = block_action("UMALLORY", bk.APPROVE, request_id, rig.webhook_url)
    headers = signed(body)
    forged = body.replace("UMALLORY", "UBOB")  # same length, same parse path
    response = await rig.post(forged, headers=headers)
    assert response.status == 401
    await rig.surface.work.join()
    assert not (await rig.app.service.view(request_id)).decisions


@pytest.mark.asyncio
async def test_keyturn_buttons_run_after_bolts_verification_and_authorization(rig: Rig) -> None:
    from slack_bolt.middleware.authorization.async_single_team_authorization import (
        AsyncSingleTeamAuthorization,
    )
    from slack_bolt.middleware.request_verification.async_request_verification import (
        AsyncRequestVerification,
    )

    from adapters.slack.app import KeyturnButtons

    chain = [type(m) for m in rig.surface.app._async_middleware_list]
    assert chain.index(KeyturnButtons) > chain.index(AsyncRequestVerification)
    assert chain.index(KeyturnButtons) > chain.index(AsyncSingleTeamAuthorization)
    buttons = next(m for m in rig.surface.app._async_middleware_list if type(m) is KeyturnButtons)
    assert buttons.action_ids == {
        bk.APPROVE,
        bk.APPROVE_TYPED,
        bk.DENY,
        bk.SHOW_PAYLOAD,
        bk.REVOKE,
        bk.ROLLBACK_DONE,
    }


@pytest.mark.asyncio
async def test_a_button_that_is_not_keyturns_is_left_to_bolt_and_queues_nothing(rig: Rig) -> None:
    request_id = await rig.agent_request()
    body = block_action("UBOB", "someone_elses_button", request_id, rig.webhook_url)
    response = await rig.post(body)
    assert response.status == 404  # Bolt: no listener for it
    assert rig.surface.work.decisions.idle and rig.surface.work.replies.idle
    assert not (await rig.app.service.view(request_id)).decisions


@pytest.mark.asyncio
async def test_a_click_is_acknowledged_with_an_empty_200_and_decided_from_the_queue(
    rig: Rig,
) -> None:
    request_id = await rig.agent_request()
    response = await rig.click("UBOB", bk.APPROVE, request_id)
    assert response.status == 200 and await response.text() == ""
    await rig.surface.work.join()
    assert len((await rig.app.service.view(request_id)).decisions) == 1


@pytest.mark.asyncio
async def test_every_request_gets_the_apps_client_and_the_context_bolt_would_build(
    rig: Rig,
) -> None:
    from slack_bolt.async_app import AsyncApp

    app = rig.surface.app
    body = block_action("UBOB", bk.APPROVE, "r-1", rig.webhook_url)
    ours = AsyncBoltRequest(body=body, headers=signed(body))
    bolts = AsyncBoltRequest(body=body, headers=signed(body))
    app._init_context(ours)
    AsyncApp._init_context(app, bolts)
    assert set(ours.context) == set(bolts.context)
    for key in ours.context:
        if key != "client":
            assert ours.context[key] == bolts.context[key], key
    shared, fresh = ours.context["client"], bolts.context["client"]
    assert shared is app.client
    assert (shared.token, shared.base_url) == (fresh.token, fresh.base_url)
