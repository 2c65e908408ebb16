"""``keyturn breakglass request|list|revoke`` against a real demo installation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import cli as cli_module
from bot import demo
from bot.bootstrap import build
from bot.cli_breakglass import parse_duration, parse_params
from core.quorum import Verdict

MODULES = ("bot.cli_breakglass", "bot.cli_mcp")
ROLE = [
    "entra.role.assign",
    "tenant_id=00000000-0000-4000-8000-0000000000aa",
    "principal=alice@corp.example",
    "role=Privileged Role Administrator",
]


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command groups are listed in bot.cli.COMMAND_MODULES (added if not yet)."""
    missing = [m for m in MODULES if m not in cli_module.COMMAND_MODULES]
    monkeypatch.setattr(cli_module, "COMMAND_MODULES", [*cli_module.COMMAND_MODULES, *missing])


@pytest.fixture
def data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    data = tmp_path / "demo"
    assert cli_module.main(["demo", "--scripted", "--port", "0", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    yield data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_module.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def approve(data: Path, request_id: str, *people: str) -> None:
    """Approvers click through the same use case every chat surface calls."""

    async def main() -> None:
        app = await build(demo.demo_settings(data))
        try:
            view = await app.service.view(request_id)
            for who in people:
                await app.service.decide(
                    request_id,
                    demo.person(who),
                    Verdict.APPROVE,
                    platform="test",
                    typed_confirmation=view.request.binding.payload_hash_b64u[-4:],
                )
        finally:
            await app.close()

    asyncio.run(main())


def listed(capsys: pytest.CaptureFixture[str], data: Path) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, "breakglass", "list", "--json", "--data-dir", str(data))
    assert code == 0
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


def test_window_requested_listed_approved_and_killed_from_the_cli(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "breakglass",
        "request",
        *ROLE,
        "--for",
        "30m",
        "--reason",
        "INC-4411 mailbox compromise",
        "--ticket",
        "INC-4411",
        "--rollback",
        "remove the role assignment",
        "--as",
        "alice",
        "--json",
        "--data-dir",
        str(data_dir),
    )
    assert (code, err) == (0, "")
    request = json.loads(out)
    rid = request["request_id"]
    assert request["outcome"] == "gated" and request["window_seconds"] == 1800
    assert request["confirmation"] == request["payload_hash_b64u"][-4:]

    [pending] = listed(capsys, data_dir)
    assert (pending["request_id"], pending["status"]) == (rid, "pending")
    assert 0 < pending["seconds_left"] <= 15 * 60  # time left to approve

    approve(data_dir, rid, "bob", "carol")
    [window] = listed(capsys, data_dir)
    assert (window["request_id"], window["status"]) == (rid, "open")
    assert 29 * 60 < window["seconds_left"] <= 30 * 60

    code, _, err = run(
        capsys, "breakglass", "revoke", rid, "--as", "mallory", "--data-dir", str(data_dir)
    )
    assert code == 1 and "NOT_ALLOWED_TO_REVOKE" in err
    assert listed(capsys, data_dir)[0]["status"] == "open"  # the refusal changed nothing

    code, out, _ = run(
        capsys, "breakglass", "revoke", rid, "--as", "carol", "--data-dir", str(data_dir)
    )
    assert code == 0
    assert "closed (revoked)" in out and "rollback 1. remove the role assignment" in out
    assert listed(capsys, data_dir) == []

    code, _, err = run(
        capsys, "breakglass", "revoke", rid, "--as", "alice", "--data-dir", str(data_dir)
    )
    assert code == 1 and "WINDOW_NOT_OPEN" in err


def test_a_window_longer_than_the_policy_allows_is_refused_and_nothing_is_opened(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "breakglass",
        "request",
        *ROLE,
        "--for",
        "2h",
        "--reason",
        "INC-1",
        "--as",
        "alice",
        "--data-dir",
        str(data_dir),
    )
    assert (code, out) == (1, "")
    assert err.startswith("keyturn: error: WINDOW_TOO_LONG") and "Traceback" not in err
    assert listed(capsys, data_dir) == []


def test_a_target_outside_the_policys_constraints_is_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("alice@", "mallory@") for a in ROLE]
    code, _, err = run(
        capsys,
        "breakglass",
        "request",
        *argv,
        "--for",
        "30m",
        "--reason",
        "INC-1",
        "--as",
        "alice",
        "--data-dir",
        str(data_dir),
    )
    assert code == 1 and "CONSTRAINT_VIOLATED" in err
    assert listed(capsys, data_dir) == []


def test_an_unknown_person_cannot_ask_for_a_window(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "breakglass",
        "request",
        *ROLE,
        "--for",
        "30m",
        "--reason",
        "INC-1",
        "--as",
        "nobody",
        "--data-dir",
        str(data_dir),
    )
    assert code == 1 and err.startswith("keyturn: error: ")
    assert listed(capsys, data_dir) == []


def test_the_list_is_readable_by_people(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "breakglass", "list", "--data-dir", str(data_dir))
    assert (code, out.strip()) == (0, "no pending break-glass requests and no open windows")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("90s", 90)]
)
def test_window_durations_are_read_as_people_write_them(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "30x", "-5m", "1.5h", "h30m"])
def test_ambiguous_durations_are_refused(text: str) -> None:
    with pytest.raises(cli_module.CliError):
        parse_duration(text)


def test_target_values_are_strings_unless_given_as_json() -> None:
    params = parse_params(["role=Global Admin", "amount:=12500", "ids:=[1, 2]", "note=a=b"])
    assert params == {"role": "Global Admin", "amount": 12500, "ids": [1, 2], "note": "a=b"}


@pytest.mark.parametrize(
    "items", [["role"], ["=x"], ["a=1", "a=2"], ["a:=NaN"], ["a:={"], ["bad key=1"]]
)
def test_malformed_or_ambiguous_targets_are_refused(items: list[str]) -> None:
    with pytest.raises(cli_module.CliError):
        parse_params(items)


def test_usage_errors_exit_1_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "breakglass", "request", "entra.role.assign", "--as", "alice")
    assert code == 1 and "--for" in err
    code, out, _ = run(capsys, "breakglass", "request", "--help")
    assert code == 0 and "key:=JSON" in out and "--rollback" in out
