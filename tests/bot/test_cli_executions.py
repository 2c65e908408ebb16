"""``keyturn executions list|show|resolve`` and ``keyturn gate verify`` against a real
installation (a TOML file with a webhook executor) and the calls a real receiver got."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from adapters.signer import FileSigner, generate_key_file
from bot import cli as cli_module
from bot.cli import CliError
from bot.cli_gate import load_public_key, parse_headers
from core.canonical import b64u_encode
from core.executor import ExecutionState
from core.times import to_iso
from tests.bot.test_executors_wiring import Receiver, approve, settled, start, write_config
from tests.bot.test_service_e2e import MovableClock, person

MODULES = ("bot.cli_executions", "bot.cli_gate")


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [m for m in MODULES if m not in cli_module.COMMAND_MODULES]
    monkeypatch.setattr(cli_module, "COMMAND_MODULES", [*cli_module.COMMAND_MODULES, *missing])


@dataclass
class Installation:
    config: Path
    request_id: str
    #: The execute call exactly as the receiver got it (raw body, headers).
    call: tuple[bytes, dict[str, str]]
    signed_at: datetime
    well_known: dict[str, Any]


@pytest.fixture
def installed(tmp_path: Path) -> Installation:
    """keyturn executed a window through the receiver; the receiver refused the rollback."""

    async def main() -> Installation:
        receiver = Receiver(MovableClock(datetime.now(UTC).replace(microsecond=0)))
        app_ = web.Application()
        app_.router.add_post("/grant", receiver.handle)
        app_.router.add_post("/revoke", receiver.handle)
        runner = web.AppRunner(app_, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        receiver.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
        config = write_config(tmp_path / "data", receiver)
        app = await start(config, receiver)
        try:
            request_id = await approve(app)
            await settled(app)
            receiver.script["rollback"] = [403]
            await app.service.revoke_breakglass(request_id, person("carol"))
            known = dict(await app.service.well_known())
        finally:
            await app.close()
            await runner.cleanup()
        return Installation(config, request_id, receiver.raw[0], receiver.clock.now(), known)

    return asyncio.run(main())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_module.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_failed_rollback_is_listed_shown_and_resolved_by_an_approver_only(
    installed: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(installed.config)
    rid = installed.request_id
    code, out, _ = run(capsys, "executions", "list", "--config", config, "--json")
    assert code == 0
    [row] = json.loads(out)
    assert (row["request_id"], row["state"], row["needs_person"]) == (
        rid,
        ExecutionState.ROLLBACK_FAILED.value,
        True,
    )
    code, out, _ = run(capsys, "executions", "list", "--config", config)
    assert code == 0 and "rollback_failed!" in out and "needs a person" in out

    code, out, _ = run(capsys, "executions", "show", rid, "--config", config)
    assert code == 0
    for step in ("execute", "verify", "rollback"):
        assert f" {step} " in out
    assert "NEEDS A PERSON" in out and "the receiver answered 403" in out
    code, out, _ = run(capsys, "executions", "show", rid, "--config", config, "--json")
    shown = json.loads(out)
    assert [s["step"] for s in shown["steps"]] == ["execute", "verify", "rollback"]
    assert [s["outcome"] for s in shown["steps"]] == ["ok", "ok", "failed"]

    code, _, err = run(
        capsys, "executions", "resolve", rid, "--by", "alice@corp.example", "--note", "done",
        "--config", config,
    )  # fmt: skip
    assert code == 1 and "NOT_ALLOWED_TO_RESOLVE" in err
    code, _, err = run(
        capsys, "executions", "resolve", rid, "--by", "carol@corp.example", "--note", " ",
        "--config", config,
    )  # fmt: skip
    assert code == 1 and "NOTE_REQUIRED" in err
    code, out, _ = run(
        capsys, "executions", "resolve", rid, "--by", "carol@corp.example",
        "--note", "revoked by hand in the automation console", "--config", config, "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["state"] == "resolved"

    code, out, _ = run(capsys, "executions", "list", "--config", config)
    assert code == 0 and "no executions under way" in out
    code, out, _ = run(capsys, "executions", "list", "--config", config, "--all", "--json")
    assert [r["state"] for r in json.loads(out)] == ["resolved"]
    code, out, _ = run(capsys, "executions", "show", rid, "--config", config)
    assert "resolve" in out and "Carol Diaz" in out and "revoked by hand" in out
    code, _, err = run(
        capsys, "executions", "resolve", rid, "--by", "carol@corp.example", "--note", "again",
        "--config", config,
    )  # fmt: skip
    assert code == 1 and "NOTHING_TO_RESOLVE" in err


def test_executions_on_an_installation_without_executors_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot import demo

    data = tmp_path / "demo"
    demo.prepare(data)
    generate_key_file(data / "keys" / "keyturn.pem")
    code, _, err = run(capsys, "executions", "list", "--data-dir", str(data))
    assert code == 1 and "configures no executors" in err
    code, out, _ = run(capsys, "executions", "resolve", "--help")
    assert code == 0 and "--note" in out and "--by" in out


# ---------------------------------------------------------------------- gate verify


def write_call(tmp_path: Path, installed: Installation) -> tuple[Path, Path, Path]:
    body, headers = installed.call
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    headers_file = tmp_path / "headers.json"
    headers_file.write_text(json.dumps(headers), encoding="utf-8")
    key_file = tmp_path / "keyturn.json"
    key_file.write_text(json.dumps(installed.well_known), encoding="utf-8")
    return body_file, headers_file, key_file


def test_gate_verify_passes_the_call_keyturn_sent_once_and_refuses_its_replay(
    tmp_path: Path, installed: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    body, headers, key = write_call(tmp_path, installed)
    seen = tmp_path / "seen.txt"
    args = ["gate", "verify", "--body", str(body), "--headers", str(headers), "--key", str(key)]
    at = ["--now", to_iso(installed.signed_at), "--seen", str(seen)]
    code, out, _ = run(capsys, *args, *at)
    assert code == 0 and out.startswith("PASS  execute call ") and installed.request_id in out
    call_id = json.loads(installed.call[0])["call_id"]
    assert seen.read_text().split() == [call_id]
    code, out, _ = run(capsys, *args, *at, "--json")
    assert code == 3 and json.loads(out)["reason_code"] == "WEBHOOK_REPLAYED"


def test_gate_verify_refuses_tampering_staleness_and_a_foreign_key(
    tmp_path: Path, installed: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    body, headers, key = write_call(tmp_path, installed)
    now = ["--now", to_iso(installed.signed_at)]

    def verdict(*extra: str, body_file: Path = body, key_file: Path = key) -> tuple[int, str]:
        code, out, _ = run(
            capsys, "gate", "verify", "--body", str(body_file), "--headers", str(headers),
            "--key", str(key_file), *extra,
        )  # fmt: skip
        return code, out

    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(body.read_bytes().replace(b"alice@corp.example", b"mallory@corp.exampl"))
    assert verdict(*now, body_file=tampered) == (
        3,
        "REFUSED  WEBHOOK_SIGNATURE_INVALID: the signature does not match this body and "
        "timestamp\n",
    )
    code, out = verdict("--now", "2099-01-01T00:00:00Z")
    assert code == 3 and "WEBHOOK_STALE" in out
    other = tmp_path / "other.pem"
    generate_key_file(other)
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(FileSigner.load(other).did + "\n", encoding="utf-8")
    code, out = verdict(*now, key_file=stranger)
    assert code == 3 and "WEBHOOK_KEY_UNKNOWN" in out
    # A private key is never accepted as "the public key".
    code, out = verdict(*now, key_file=other)
    assert code == 1 and out == ""
    code, out = verdict(*now, body_file=tmp_path / "missing.json")
    assert code == 1


def test_gate_verify_reads_headers_as_curl_saves_them_and_keys_in_every_published_form(
    tmp_path: Path, installed: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    body, _, _ = write_call(tmp_path, installed)
    raw_headers = tmp_path / "headers.txt"
    raw_headers.write_text(
        "POST /grant HTTP/1.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in installed.call[1].items())
        + "\r\n",
        encoding="utf-8",
    )
    public = FileSigner.load(installed.config.parent / "keys" / "keyturn.pem")
    assert public.did == installed.well_known["did"]
    pem = tmp_path / "keyturn.pub.pem"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pem.write_bytes(
        Ed25519PublicKey.from_public_bytes(public.public_key).public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
    )
    did = tmp_path / "keyturn.did"
    did.write_text(public.did, encoding="utf-8")
    for key in (pem, did):
        code, out, _ = run(
            capsys, "gate", "verify", "--body", str(body), "--headers", str(raw_headers),
            "--key", str(key), "--now", to_iso(installed.signed_at),
        )  # fmt: skip
        assert code == 0 and out.startswith("PASS"), out


def test_key_documents_whose_did_and_key_disagree_are_refused(tmp_path: Path) -> None:
    one, two = tmp_path / "one.pem", tmp_path / "two.pem"
    generate_key_file(one)
    generate_key_file(two)
    a, b = FileSigner.load(one), FileSigner.load(two)
    agreeing = {"public_key_b64u": b64u_encode(a.public_key), "did": a.did}
    assert load_public_key(json.dumps(agreeing).encode()) == a.public_key
    with pytest.raises(CliError, match="different keys"):
        load_public_key(json.dumps({**agreeing, "did": b.did}).encode())
    with pytest.raises(CliError):
        load_public_key(b"not a key")
    assert parse_headers('{"X-Keyturn-Key-Id": "k"}') == {"X-Keyturn-Key-Id": "k"}
    with pytest.raises(CliError):
        parse_headers("no colon here")
