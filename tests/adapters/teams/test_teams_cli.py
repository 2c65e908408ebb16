"""``keyturn teams package`` through the real CLI entry point (bot.cli.main)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from bot import cli

APP = "11111111-2222-4333-8444-555555555555"
BOT = "66666666-7777-4888-8999-aaaaaaaaaaaa"


@pytest.fixture(autouse=True)
def teams_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    if "bot.cli_teams" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "bot.cli_teams"])


def test_teams_package_writes_a_filled_manifest_with_both_icons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pkg" / "keyturn-teams.zip"
    code = cli.main(
        ["teams", "package", "--app-id", APP, "--bot-id", BOT,
         "--domain", "keyturn.example.com", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert str(out) in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["id"] == APP
    assert manifest["bots"][0]["botId"] == BOT
    assert manifest["validDomains"] == ["keyturn.example.com"]
    assert "{{" not in json.dumps(manifest)


@pytest.mark.parametrize(
    ("flag", "bad"),
    [("--bot-id", "not-a-guid"), ("--domain", "https://keyturn.example.com/")],
)
def test_teams_package_refuses_bad_input_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, bad: str
) -> None:
    args = {"--app-id": APP, "--bot-id": BOT, "--domain": "keyturn.example.com"}
    args[flag] = bad
    out = tmp_path / "keyturn-teams.zip"
    argv = ["teams", "package", *[x for kv in args.items() for x in kv], "--out", str(out)]
    assert cli.main(argv) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_teams_package_needs_its_ids(tmp_path: Path) -> None:
    assert cli.main(["teams", "package", "--out", str(tmp_path / "x.zip")]) == cli.EXIT_ERROR
