from __future__ import annotations

import pytest

from core.errors import InvalidDidError
from core.keys import SigningKey, did_from_public_key, key_id, public_key_from_did, verify_signature


def test_did_key_vectors_from_claw() -> None:
    assert (
        SigningKey.from_seed(bytes(range(1, 33))).did
        == "did:key:z6MkneMkZqwqRiU5mJzSG3kDwzt9P8C59N4NGTfBLfSGE7c7"
    )
    assert (
        SigningKey.from_seed(bytes(range(100, 132))).did
        == "did:key:z6MkfF4ykuxdK3Cea9xDqWgLLgMBvxcypy6Tv1K45Eahxy3m"
    )


def test_did_round_trips_to_the_public_key() -> None:
    key = SigningKey.generate()
    assert public_key_from_did(key.did) == key.public_key
    assert did_from_public_key(key.public_key) == key.did
    assert key.kid == key_id(key.public_key) and len(key.kid) == 16


@pytest.mark.parametrize(
    "did",
    [
        "did:web:example.com",
        "did:key:6MkneMkZqwqRiU5mJzSG3kDwzt9P8C59N4NGTfBLfSGE7c7",  # no multibase prefix
        "did:key:z0OIl",  # not base58
        "did:key:z" + "1" * 10,  # wrong multicodec
        "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",  # secp256k1, not Ed25519
        42,
    ],
)
def test_malformed_dids_are_refused(did: object) -> None:
    with pytest.raises(InvalidDidError) as exc:
        public_key_from_did(did)
    assert exc.value.reason_code == "INVALID_DID_FORMAT"


def test_signature_verification_rejects_any_change() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"message")
    assert verify_signature(key.public_key, b"message", sig)
    assert not verify_signature(key.public_key, b"messagE", sig)
    assert not verify_signature(key.public_key, b"message", bytes([sig[0] ^ 1]) + sig[1:])
    assert not verify_signature(SigningKey.generate().public_key, b"message", sig)
    assert not verify_signature(key.public_key, b"message", sig[:-1])


def test_repr_never_shows_the_seed() -> None:
    key = SigningKey.from_seed(bytes(range(1, 33)))
    assert key.seed().hex() not in repr(key)
    assert "did:key" in repr(key)
