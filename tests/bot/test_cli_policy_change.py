"""``keyturn policy sign`` and ``keyturn policy propose``: a policy change is signed by
its issuer and activated only after approval, never by the proposer alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.signer import FileSigner
from bot import demo
from bot.bootstrap import build
from bot.cli import main as cli
from core.errors import ApprovalRefusedError
from core.quorum import Verdict


@pytest.fixture
def data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    data = tmp_path / "demo"
    assert cli(["demo", "--scripted", "--port", "0", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tightened_payload(data: Path, tmp_path: Path) -> Path:
    payload = json.loads(demo.asset_text("demo-policy.json"))
    payload["issuer_did"] = FileSigner.load(data / "keys" / "demo-issuer.pem").did
    payload["description"] = "tightened after review"
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def signed(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> Path:
    out = tmp_path / "policy.wpc.json"
    code, _, err = run(
        capsys,
        "policy",
        "sign",
        str(tightened_payload(data, tmp_path)),
        "--key",
        str(data / "keys" / "demo-issuer.pem"),
        "--out",
        str(out),
    )
    assert (code, err) == (0, "")
    return out


def active_hash(data: Path) -> str:
    async def main() -> str:
        app = await build(demo.demo_settings(data))
        try:
            return (await app.service.active_policy()).policy_hash_b64u
        finally:
            await app.close()

    return asyncio.run(main())


def test_a_signed_policy_verifies_against_its_issuer(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = signed(capsys, data_dir, tmp_path)
    issuer = FileSigner.load(data_dir / "keys" / "demo-issuer.pem").did
    code, out, _ = run(capsys, "policy", "hash", str(envelope), "--trust", issuer)
    assert code == 0
    assert out.strip() == json.loads(envelope.read_text())["payload_hash_b64u"]


def test_a_key_that_is_not_the_named_issuer_cannot_sign(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "forged.wpc.json"
    code, printed, err = run(
        capsys,
        "policy",
        "sign",
        str(tightened_payload(data_dir, tmp_path)),
        "--key",
        str(data_dir / "keys" / "demo-agent.pem"),
        "--out",
        str(out),
    )
    assert (code, printed) == (1, "")
    assert "POLICY_UNTRUSTED_ISSUER" in err
    assert not out.exists()


def test_signing_refuses_to_overwrite_or_to_sign_an_envelope(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = signed(capsys, data_dir, tmp_path)
    before = envelope.read_bytes()
    key = str(data_dir / "keys" / "demo-issuer.pem")
    payload = str(tmp_path / "policy.json")
    code, _, err = run(capsys, "policy", "sign", payload, "--key", key, "--out", str(envelope))
    assert code == 1 and "--force" in err
    assert envelope.read_bytes() == before
    code, _, err = run(capsys, "policy", "sign", str(envelope), "--key", key)
    assert code == 1 and "already a signed envelope" in err


def test_a_proposal_waits_for_approvers_and_the_proposer_cannot_approve_it(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = signed(capsys, data_dir, tmp_path)
    before = active_hash(data_dir)
    code, out, err = run(
        capsys,
        "policy",
        "propose",
        str(envelope),
        "--as",
        "alice",
        "--json",
        "--data-dir",
        str(data_dir),
    )
    assert (code, err) == (0, "")
    proposal = json.loads(out)
    assert proposal["outcome"] == "gated" and proposal["tool_route"] == "keyturn.policy.activate"
    assert proposal["old_policy_hash"] == before
    assert proposal["new_policy_hash"] == json.loads(envelope.read_text())["payload_hash_b64u"]
    assert "~ description changed" in proposal["diff"]
    assert active_hash(data_dir) == before  # proposing changed nothing yet

    async def clicks() -> tuple[str, str]:
        app = await build(demo.demo_settings(data_dir))
        kt = app.service
        rid, confirm = proposal["request_id"], proposal["confirmation"]
        try:

            async def click(who: str) -> Any:
                return await kt.decide(
                    rid, demo.person(who), Verdict.APPROVE, platform="t", typed_confirmation=confirm
                )

            with pytest.raises(ApprovalRefusedError) as own:
                await click("alice")
            await click("carol")
            await click("dan")
            return own.value.reason_code, (await kt.active_policy()).policy_hash_b64u
        finally:
            await app.close()

    refused, after = asyncio.run(clicks())
    assert refused in {"REQUESTER_CANNOT_APPROVE", "APPROVER_NOT_IN_GROUP"}
    assert after == proposal["new_policy_hash"]


def test_a_proposal_is_printed_for_people_with_its_diff(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = signed(capsys, data_dir, tmp_path)
    code, out, _ = run(
        capsys, "policy", "propose", str(envelope), "--as", "alice", "--data-dir", str(data_dir)
    )
    assert code == 0
    assert out.startswith("policy change r-") and "changes:\n  ~ description changed" in out


def test_proposing_the_active_policy_or_as_a_stranger_is_refused(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = data_dir / "demo-policy.wpc.json"
    code, _, err = run(
        capsys, "policy", "propose", str(current), "--as", "alice", "--data-dir", str(data_dir)
    )
    assert code == 1 and "POLICY_UNCHANGED" in err
    envelope = signed(capsys, data_dir, tmp_path)
    code, out, err = run(
        capsys, "policy", "propose", str(envelope), "--as", "nobody", "--data-dir", str(data_dir)
    )
    assert (code, out) == (1, "") and err.startswith("keyturn: error: ")
