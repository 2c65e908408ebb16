"""The README's main-job command: keyturn demo on embedded defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main as cli


def test_keyturn_demo_scripted_and_log_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "demo", tmp_path / "out"
    assert (
        cli(["demo", "--scripted", "--port", "0", "--data-dir", str(data), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "The two-person rule held at every step." in printed and "✘" not in printed
    bundles = sorted(out.glob("bundle-*.json"))
    assert len(bundles) == 2
    did = json.loads((out / "keyturn-did.json").read_text())["did"]
    for bundle in bundles:
        assert cli(["verify", str(bundle), "--trust", did]) == 0
    assert cli(["log", "verify", "--data-dir", str(data)]) == 0
    assert "PASS  log keyturn/demo" in capsys.readouterr().out
    # An auditor with access to the installation gets the same sealed bundle from the store.
    exported = json.loads(bundles[0].read_text())
    request_id = exported["payload"]["request"]["request_id"]
    fetched = tmp_path / "fetched.json"
    assert cli(["bundle", "get", request_id, "--data-dir", str(data), "--out", str(fetched)]) == 0
    assert json.loads(fetched.read_text()) == exported
    assert cli(["verify", str(fetched), "--trust", did]) == 0
