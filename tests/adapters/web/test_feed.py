"""The console feed shows only receipts and checkpoints signed by keyturn's own key."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from adapters.signer import FileSigner
from adapters.web.feed import Feed
from tests.adapters.web.conftest import PAYMENT, Running

pytestmark = pytest.mark.asyncio


async def _receipt_and_note(keyturn: Running) -> tuple[dict[str, Any], str]:
    submitted = await keyturn.submit("payments.transfer", PAYMENT)
    lines = keyturn.console.feed.lines(submitted.request_id)
    assert lines, "the console saw the request receipt"
    seen: list[dict[str, Any]] = []

    async def capture(event: Any) -> None:
        if event.kind == "receipt":
            seen.append(dict(event.data))

    keyturn.app.service.rt.hub.subscribe(capture)
    await keyturn.submit("payments.transfer", PAYMENT)
    return seen[0], await keyturn.app.service.checkpoint()


async def test_tampered_receipt_is_not_shown(keyturn: Running) -> None:
    data, _ = await _receipt_and_note(keyturn)
    feed = Feed(keyturn.app.service.rt.signer.did)
    tampered = copy.deepcopy(data)
    tampered["envelope"]["payload"]["actor_name"] = "Bob Li"
    assert feed.add_receipt(tampered) is None
    assert feed.lines() == []
    entry = feed.add_receipt(data)
    assert entry is not None and entry.text.startswith(f"#{data['index']} request")
    assert feed.add_receipt(data) is None  # one line per log index


async def test_receipts_and_checkpoints_from_another_key_are_not_shown(keyturn: Running) -> None:
    data, note = await _receipt_and_note(keyturn)
    other = FileSigner.load(keyturn.app.settings.data_dir / "keys" / "demo-agent.pem").did
    feed = Feed(other)
    assert feed.add_receipt(data) is None
    assert feed.remember_checkpoint(note) is None
    trusted = Feed(keyturn.app.service.rt.signer.did)
    shown = trusted.remember_checkpoint(note)
    assert shown is not None and shown.line.startswith("checkpoint  keyturn/demo")
    assert trusted.remember_checkpoint(note.replace("keyturn/demo", "keyturn/evil", 1)) is None
