"""The application log: one line per record, the HTTP request id on it, no tokens."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.logging_setup import (
    RedactingFormatter,
    RequestIdFilter,
    configure_logging,
    redact,
    request_id_middleware,
)
from core.keys import SigningKey
from core.tokens import mint_cst

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def a_token() -> str:
    key = SigningKey.generate()
    return mint_cst(
        key,
        sub="did:key:z6Mkagent",
        audience="keyturn",
        scope=["payments.transfer"],
        now=NOW,
        ttl_seconds=300,
        policy_hash_b64u="A" * 43,
        mission_id="j-1",
        kind="job",
    ).compact


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger configured afresh into a buffer, restored afterwards."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    root.handlers = [h for h in saved if h.get_name() != "keyturn"]
    buffer = io.StringIO()
    try:
        assert configure_logging(fmt="json", stream=buffer) is True
        yield buffer
    finally:
        root.handlers, root.level = saved, level


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_tokens_bearer_credentials_and_private_keys_never_reach_the_log() -> None:
    token = a_token()
    text = redact(
        f"presented {token}; header Authorization: Bearer {token[:40]}; "
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----"
    )
    assert token not in text and token[:40] not in text and "MC4CAQ" not in text
    assert "[token redacted]" in text and "[private key redacted]" in text


def test_configuring_twice_adds_no_second_handler(captured: io.StringIO) -> None:
    assert configure_logging(fmt="kv", stream=captured) is False
    logging.getLogger("keyturn.test").warning("once")
    assert [line["msg"] for line in lines(captured)] == ["once"]


def test_records_are_json_lines_without_the_token(captured: io.StringIO) -> None:
    token = a_token()
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        logging.getLogger("keyturn.test").exception("refused %s", token)
    [line] = lines(captured)
    assert (line["level"], line["logger"]) == ("error", "keyturn.test")
    assert token not in captured.getvalue()
    assert "ValueError" in str(line["exc"])


def test_key_value_lines_quote_what_needs_quoting() -> None:
    formatter = RedactingFormatter("kv")
    record = logging.LogRecord("keyturn.x", logging.INFO, __file__, 1, "a b=c", None, None)
    RequestIdFilter().filter(record)
    line = formatter.format(record)
    assert 'msg="a b=c"' in line and "level=info" in line and "request_id" not in line


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        RedactingFormatter("xml")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_lines_written_while_answering_carry_the_requests_id(
    captured: io.StringIO,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        logging.getLogger("keyturn.handler").warning("answering")
        return web.Response(text="ok")

    app = web.Application(middlewares=[request_id_middleware()])
    app.router.add_get("/x", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get("/x", headers={"X-Request-Id": "req-12345678"})
        assert response.status == 200
    finally:
        await client.close()
    logging.getLogger("keyturn.after").warning("outside")
    by_msg = {line["msg"]: line for line in lines(captured)}
    assert by_msg["answering"]["request_id"] == "req-12345678"
    assert "request_id" not in by_msg["outside"]
