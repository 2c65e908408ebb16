"""``keyturn policy hash|check``: clear answers, documented exit codes, no tracebacks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.cli import COMMAND_MODULES, EXIT_DENIED, EXIT_ERROR, EXIT_GATED, EXIT_OK, main
from core import canonical
from core.keys import SigningKey
from core.policy import sign_wpc

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "policies"
ENTERPRISE = MANIFESTS / "enterprise-two-person.json"
BREAKGLASS = MANIFESTS / "breakglass-timeboxed.json"
ISSUER = SigningKey.from_seed(bytes(range(1, 33)))
OTHER = SigningKey.from_seed(bytes(range(100, 132)))
NOW = datetime(2026, 11, 23, 10, 41, tzinfo=UTC)


def payload() -> dict[str, Any]:
    return json.loads(ENTERPRISE.read_text(encoding="utf-8"))


def check(
    capsys: pytest.CaptureFixture[str], file: Path, call: dict[str, Any], *extra: str
) -> tuple[int, str, str]:
    code = main(["policy", "check", str(file), "--call", json.dumps(call), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def payment(amount: object) -> dict[str, Any]:
    return {
        "tool_route": "payments.transfer",
        "params": {"amount_usd": amount, "to_account": "DE89 3704"},
        "requester": "did:key:z6Mkagent",
        "on_behalf_of": "alice@corp.example",
    }


def test_policy_group_is_registered_through_the_module_list() -> None:
    assert "bot.cli_policy" in COMMAND_MODULES


def test_hash_prints_the_jcs_policy_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "hash", str(ENTERPRISE)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.strip() == canonical.jcs_sha256_b64u(payload())
    assert err == ""


def test_hash_of_a_signed_envelope_is_the_payload_hash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    envelope = tmp_path / "wpc.json"
    envelope.write_text(json.dumps(sign_wpc(payload(), ISSUER, issued_at=NOW)))
    assert main(["policy", "hash", str(envelope), "--trust", ISSUER.did]) == EXIT_OK
    assert capsys.readouterr().out.strip() == canonical.jcs_sha256_b64u(payload())


def test_tampered_envelope_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    signed = sign_wpc(payload(), ISSUER, issued_at=NOW)
    signed["payload"]["rules"][3]["when"]["gte"] = 1_000_000
    path = tmp_path / "wpc.json"
    path.write_text(json.dumps(signed))
    assert main(["policy", "hash", str(path)]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "HASH_MISMATCH" in err and "Traceback" not in err


def test_envelope_from_an_untrusted_issuer_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "wpc.json"
    path.write_text(json.dumps(sign_wpc(payload(), ISSUER, issued_at=NOW)))
    assert main(["policy", "hash", str(path), "--trust", OTHER.did]) == EXIT_ERROR
    assert "POLICY_UNTRUSTED_ISSUER" in capsys.readouterr().err


def test_bare_payload_is_refused_when_a_trust_list_is_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["policy", "hash", str(ENTERPRISE), "--trust", ISSUER.did]) == EXIT_ERROR
    assert "POLICY_UNSIGNED" in capsys.readouterr().err


def test_allowed_call_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, ENTERPRISE, payment(499))
    assert code == EXIT_OK
    assert out.startswith("ALLOWED · payments.transfer")
    assert "payments-small" in out


def test_gated_call_exits_2_and_says_which_rule_needs_whom(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = check(capsys, ENTERPRISE, payment(12500))
    assert code == EXIT_GATED
    assert out.startswith("GATED · payments.transfer")
    assert "payments-500: payments of $500 or more (amount_usd ≥ 500)" in out
    assert "2 approvers: one from Finance-Approvers, one from Security-Approvers" in out
    assert "masked   to_account" in out


def test_denied_call_exits_3_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    call = {"tool_route": "shell.exec", "params": {"cmd": "id"}, "requester": "u-1"}
    code, out, _ = check(capsys, BREAKGLASS, call)
    assert code == EXIT_DENIED
    assert "DENIED · shell.exec  (DENIED_BY_RULE)" in out
    assert "shell and elevated host execution are never allowed" in out


def test_breakglass_check_shows_window_and_rollback(capsys: pytest.CaptureFixture[str]) -> None:
    call = {
        "tool_route": "entra.role.assign",
        "params": {
            "tenant_id": "00000000-0000-4000-8000-0000000000aa",
            "principal": "alice@corp.example",
            "role": "Privileged Role Administrator",
        },
        "requester": "u-1",
        "breakglass": True,
    }
    code, out, _ = check(capsys, BREAKGLASS, call)
    assert code == EXIT_GATED
    assert "at most 30 min, token 30 min" in out
    assert "1. Remove the role assignment" in out


def test_json_output_is_the_decision(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, ENTERPRISE, payment(500), "--json")
    assert code == EXIT_GATED
    document = json.loads(out)
    assert document["decision"]["outcome"] == "gated"
    assert document["decision"]["rules"][0]["rule_id"] == "payments-500"
    assert document["policy_hash_b64u"] == canonical.jcs_sha256_b64u(payload())
    assert document["requirement_texts"][0].startswith("2 approvers")


def test_call_read_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "call.json"
    path.write_text(json.dumps(payment(10)))
    assert main(["policy", "check", str(ENTERPRISE), "--call", f"@{path}"]) == EXIT_OK
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["policy", "hash", "/nonexistent/policy.json"], "cannot read policy file"),
        (["policy", "check", str(ENTERPRISE), "--call", "{not json"], "--call is not JSON"),
        (["policy", "check", str(ENTERPRISE), "--call", '{"tool_route": "a.b"}'], "requester"),
        (
            [
                "policy",
                "check",
                str(ENTERPRISE),
                "--call",
                '{"tool_route": "a.b", "requester": "r", "x": 1}',
            ],
            "x: unknown field",
        ),
        (
            [
                "policy",
                "check",
                str(ENTERPRISE),
                "--call",
                '{"tool_route": "a b", "requester": "r"}',
            ],
            "INVALID_CALL",
        ),
        (["policy", "frobnicate"], "invalid choice"),
        (["policy", "check", str(ENTERPRISE)], "--call"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_1(
    capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert main(args) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_invalid_policy_file_names_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = payload()
    bad["rules"][0]["regex"] = ".*"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["policy", "hash", str(path)]) == EXIT_ERROR
    assert "POLICY_INVALID: rules[0].regex: unknown field" in capsys.readouterr().err


def test_duplicate_keys_in_a_policy_file_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "dup.json"
    path.write_text(
        ENTERPRISE.read_text(encoding="utf-8").replace(
            '"policy_version": "1",', '"policy_version": "1", "policy_version": "1",', 1
        )
    )
    assert main(["policy", "hash", str(path)]) == EXIT_ERROR
    assert "duplicate key" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2  the call is gated" in out and "3  the call is denied" in out


def test_no_command_prints_help_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_ERROR
    assert "COMMAND" in capsys.readouterr().err
