"""``keyturn verify`` and ``keyturn bundle export --claw``: clear verdicts, exit 0/1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import bot.cli as cli
from core.bundle import bundle_bytes
from core.claw_verify import verify_claw_bundle
from core.keys import SigningKey
from tests.core.test_bundle_flow import AGENT, ISSUER, KEYTURN, consumed
from tests.core.test_claw import LATER, gateway_receipt

SEALED = consumed().seal()


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook line the lead adds to bot/cli.py: COMMAND_MODULES gains bot.cli_verify."""
    if "bot.cli_verify" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "bot.cli_verify"])


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "b-1042.json"
    path.write_bytes(bundle_bytes(SEALED) + b"\n")
    return path


def _key_file(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "agent.pem"
    pem = Ed25519PrivateKey.from_private_bytes(key.seed()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    os.chmod(path, 0o600)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_genuine_bundle_passes_with_what_was_checked(
    capsys: pytest.CaptureFixture[str], bundle: Path
) -> None:
    code, out, _ = _run(capsys, "verify", str(bundle), "--trust", KEYTURN.did)
    assert code == 0
    assert out.startswith("PASS  proof bundle b-1042 · payments.transfer · consumed")
    assert "approvals Bob Li, Carol Diaz · quorum met" in out
    assert "✓ receipts: 6 signatures verified, 6 inclusion proofs" in out
    assert "✓ schema: valid against manifests/schemas/keyturn-proof-bundle.schema.json" in out
    assert "Final state: consumed" in out


def test_a_tampered_bundle_fails_with_its_reason_code(
    capsys: pytest.CaptureFixture[str], bundle: Path
) -> None:
    bundle.write_bytes(bundle.read_bytes().replace(b'"amount_usd":12500', b'"amount_usd":12501'))
    code, out, _ = _run(capsys, "verify", str(bundle), "--trust", KEYTURN.did)
    assert code == 1
    assert out.startswith("FAIL  BUNDLE_PAYLOAD_HASH_MISMATCH")


def test_json_verdicts_for_pass_and_fail(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    code, out, _ = _run(capsys, "verify", str(bundle), "--trust", KEYTURN.did, "--json")
    document = json.loads(out)
    assert code == 0 and document["verdict"] == "PASS" and document["outcome"] == "consumed"
    assert document["summary"]["outcome"] == "consumed"
    code, out, _ = _run(capsys, "verify", str(bundle), "--trust", ISSUER.did, "--json")
    assert code == 1
    assert json.loads(out) == {
        "verdict": "FAIL",
        "reason_code": "BUNDLE_UNTRUSTED_SIGNER",
        "message": f"the bundle is signed by {KEYTURN.did}, not a trusted key",
    }


def test_without_trust_the_verdict_is_fail_and_names_the_signer(
    capsys: pytest.CaptureFixture[str], bundle: Path
) -> None:
    code, out, _ = _run(capsys, "verify", str(bundle))
    assert code == 1
    assert "BUNDLE_NO_TRUST_ANCHOR" in out and KEYTURN.did in out


def test_policy_issuers_can_be_pinned(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    args = ("verify", str(bundle), "--trust", KEYTURN.did, "--trust-policy-issuer")
    code, out, _ = _run(capsys, *args, ISSUER.did)
    assert code == 0 and "(pinned)" in out
    code, out, _ = _run(capsys, *args, AGENT.did)
    assert code == 1 and "BUNDLE_POLICY_UNTRUSTED" in out


def test_an_unreadable_file_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _run(capsys, "verify", str(tmp_path / "missing.json"), "--trust", KEYTURN.did)
    assert code == 1 and out == ""
    assert err.startswith("keyturn: error: cannot read bundle") and err.count("\n") == 1


def test_export_writes_a_claw_bundle_signed_by_the_agent(
    capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path
) -> None:
    receipts = tmp_path / "gateway.jsonl"
    receipts.write_text(json.dumps(gateway_receipt()) + "\n", encoding="utf-8")
    out_file = tmp_path / "claw.json"
    code, out, err = _run(
        capsys,
        "bundle",
        "export",
        "--claw",
        "--agent-key",
        str(_key_file(tmp_path, AGENT)),
        "--gateway-receipts",
        str(receipts),
        "--trust",
        KEYTURN.did,
        "--out",
        str(out_file),
        str(bundle),
    )
    assert code == 0, err
    assert "wrote Claw proof_bundle b-1042-claw" in out
    exported = json.loads(out_file.read_text(encoding="utf-8"))
    assert exported["signer_did"] == AGENT.did
    report = verify_claw_bundle(exported, now=LATER)
    assert report.human_approvals == 2


def test_export_refuses_another_agents_key(
    capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path
) -> None:
    code, _, err = _run(
        capsys,
        "bundle",
        "export",
        "--claw",
        "--agent-key",
        str(_key_file(tmp_path, SigningKey.generate())),
        "--trust",
        KEYTURN.did,
        str(bundle),
    )
    assert code == 1 and "CLAW_EXPORT_AGENT_MISMATCH" in err


def test_export_refuses_without_the_span_and_without_a_format(
    capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path
) -> None:
    key = str(_key_file(tmp_path, AGENT))
    code, _, err = _run(
        capsys,
        "bundle",
        "export",
        "--claw",
        "--agent-key",
        key,
        "--trust",
        KEYTURN.did,
        str(bundle),
    )
    assert code == 1 and "CLAW_EXPORT_SPAN_NOT_FOUND" in err
    code, _, err = _run(
        capsys, "bundle", "export", "--agent-key", key, "--trust", KEYTURN.did, str(bundle)
    )
    assert code == 1 and "--claw" in err
