from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.signer import FileSigner, generate_key_file
from core.errors import ConfigError
from core.keys import verify_signature


def test_generated_key_round_trips_and_signs(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyturn.pem"
    key = generate_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    signer = FileSigner.load(path)
    assert signer.did == key.did and signer.kid == key.kid
    assert verify_signature(signer.public_key, b"m", signer.sign(b"m"))
    assert "PRIVATE" not in repr(signer) and str(path) in repr(signer)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as exc:
        FileSigner.load(path)
    assert exc.value.reason_code == "KEY_FILE_PERMISSIONS"
    assert "chmod 600" in exc.value.message


def test_existing_key_is_never_overwritten_by_accident(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = generate_key_file(path)
    with pytest.raises(ConfigError) as exc:
        generate_key_file(path)
    assert exc.value.reason_code == "KEY_FILE_EXISTS"
    assert FileSigner.load(path).did == first.did


def test_missing_or_garbage_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        FileSigner.load(tmp_path / "nope.pem")
    assert exc.value.reason_code == "KEY_FILE_MISSING"
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError) as exc:
        FileSigner.load(bad)
    assert exc.value.reason_code == "KEY_FILE_INVALID"
