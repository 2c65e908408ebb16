"""Ed25519 signing keys in PKCS#8 PEM files, readable by their owner only.

A key file is refused when group or others may read it (as ssh does), so a
mis-deployed key fails loudly instead of signing grants for whoever copied it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import ConfigError
from core.keys import SigningKey


@dataclass(frozen=True, slots=True, repr=False)
class FileSigner:
    """A :class:`core.ports.Signer` backed by a key file."""

    path: Path
    key: SigningKey

    @classmethod
    def load(cls, path: str | Path) -> FileSigner:
        """Load a key file.

        Raises:
            ConfigError: ``KEY_FILE_MISSING``, ``KEY_FILE_PERMISSIONS`` (readable by
                group or others), ``KEY_FILE_INVALID`` (not an Ed25519 PKCS#8 key).
        """
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as e:
            raise ConfigError("KEY_FILE_MISSING", f"signing key file {path} does not exist") from e
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                "KEY_FILE_PERMISSIONS",
                f"signing key file {path} is readable by others; run: chmod 600 {path}",
            )
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as e:
            raise ConfigError("KEY_FILE_INVALID", f"{path} is not a PEM private key") from e
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError("KEY_FILE_INVALID", f"{path} is not an Ed25519 key")
        seed = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(path, SigningKey.from_seed(seed))

    @property
    def did(self) -> str:
        return self.key.did

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    @property
    def kid(self) -> str:
        return self.key.kid

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def __repr__(self) -> str:
        return f"FileSigner(path={str(self.path)!r}, did={self.did!r})"


def generate_key_file(path: str | Path, *, overwrite: bool = False) -> SigningKey:
    """Create a new Ed25519 key file with mode 0600 and return the key.

    Raises:
        ConfigError: ``KEY_FILE_EXISTS`` unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError("KEY_FILE_EXISTS", f"{path} exists; refusing to overwrite a key")
    key = SigningKey.generate()
    pem = Ed25519PrivateKey.from_private_bytes(key.seed()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
