"""Ed25519 keys and their ``did:key`` names.

A DID for a key is ``did:key:z`` + base58btc(0xed 0x01 ‖ 32-byte public key). Parsing
checks the multicodec prefix and that exactly 32 key bytes remain.

:class:`SigningKey` is an in-memory signer (it satisfies ``core.ports.Signer``); key
files and HSMs live in adapters. Verification uses libsodium through PyNaCl, which
verifies about twice as fast as OpenSSL here (LIMITS.md §2.1) and is strict about
non-canonical signatures.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import base58
import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import InvalidDidError

_ED25519_MULTICODEC = b"\xed\x01"
_DID_PREFIX = "did:key:z"


def did_from_public_key(public_key: bytes) -> str:
    """``did:key:z6Mk…`` for a 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise InvalidDidError(message="an Ed25519 public key is 32 bytes")
    return _DID_PREFIX + base58.b58encode(_ED25519_MULTICODEC + public_key).decode("ascii")


def public_key_from_did(did: object) -> bytes:
    """The 32-byte public key named by an Ed25519 ``did:key``.

    Raises:
        InvalidDidError: wrong prefix, bad base58, wrong multicodec, or wrong length.
    """
    if not isinstance(did, str) or not did.startswith(_DID_PREFIX):
        raise InvalidDidError(message=f"{did!r} is not a did:key (z-base58btc) identifier")
    try:
        raw = base58.b58decode(did[len(_DID_PREFIX) :])
    except ValueError as e:
        raise InvalidDidError(message="did:key is not valid base58btc") from e
    if raw[:2] != _ED25519_MULTICODEC or len(raw) != 34:
        raise InvalidDidError(message="did:key does not name a 32-byte Ed25519 key")
    return raw[2:]


def key_id(public_key: bytes) -> str:
    """JWT ``kid``: the first 16 hex characters of SHA-256 of the public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only when ``signature`` is a valid Ed25519 signature of ``message``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """An Ed25519 private key held in memory. ``repr`` never shows the seed."""

    _private: Ed25519PrivateKey = field(compare=False)
    public_key: bytes
    did: str
    kid: str

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private, public, did_from_public_key(public), key_id(public))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_seed(os.urandom(32))

    def seed(self) -> bytes:
        """The 32-byte seed, for writing a key file. Handle with care."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey(did={self.did!r})"
