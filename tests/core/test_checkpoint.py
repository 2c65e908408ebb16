"""Checkpoints are C2SP signed notes that only the log's key can make, for one log only."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    checkpoint_text,
    note_key_id,
    parse_verifier_key,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
    verify_note,
)
from core.errors import LogError
from core.keys import SigningKey
from core.merkle import MerkleTree, empty_root, leaf_hash, verify_inclusion

ORIGIN = "approvals.example/log"
LOG_KEY = SigningKey.from_seed(bytes(range(32)))
OTHER_KEY = SigningKey.from_seed(bytes(range(100, 132)))
TRUSTED = {ORIGIN: LOG_KEY.public_key}
ROOT = hashlib.sha256(b"some root").digest()


def _refused(code: str) -> pytest.RaisesExc[LogError]:
    return pytest.raises(LogError, match=f"^{code}:")


def _signature_line(name: str, key: SigningKey, text: str) -> str:
    """A signature line made without core.checkpoint, straight from the spec."""
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + key.public_key).digest()[:4]
    blob = base64.b64encode(key_id + key.sign(text.encode())).decode()
    return f"— {name} {blob}"


def _note(text: str, *lines: str) -> str:
    return text + "\n" + "".join(line + "\n" for line in lines)


def _signed(text: str, key: SigningKey = LOG_KEY, name: str = ORIGIN) -> str:
    return _note(text, _signature_line(name, key, text))


def _verify(note: str | bytes, origin: str = ORIGIN) -> Checkpoint:
    return verify_checkpoint(note, origin=origin, public_keys=TRUSTED)


# --- format --------------------------------------------------------------------------


def test_a_signed_checkpoint_round_trips() -> None:
    checkpoint = sign_checkpoint(ORIGIN, 5, ROOT, LOG_KEY)
    verified = _verify(checkpoint.signed_note)
    assert verified == checkpoint
    assert (verified.origin, verified.size, verified.root_hash) == (ORIGIN, 5, ROOT)
    assert _verify(checkpoint.signed_note.encode()) == checkpoint


def test_the_note_is_the_c2sp_checkpoint_text_and_signature_line() -> None:
    checkpoint = sign_checkpoint(ORIGIN, 1234, ROOT, LOG_KEY)
    text = f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n"
    assert checkpoint.note_text == text
    # Ed25519 is deterministic, so the line built from the spec is byte-identical.
    assert checkpoint.signed_note == _signed(text)
    assert re.fullmatch(
        r"approvals\.example/log\n1234\n[A-Za-z0-9+/]{43}=\n\n— approvals\.example/log "
        r"[A-Za-z0-9+/]{91}=\n",
        checkpoint.signed_note,
    )


def test_the_key_id_is_the_first_four_bytes_of_the_spec_hash() -> None:
    expected = hashlib.sha256(ORIGIN.encode() + b"\x0a\x01" + LOG_KEY.public_key).digest()[:4]
    assert note_key_id(ORIGIN, LOG_KEY.public_key) == expected


# The example key and note of the Go reference implementation (golang.org/x/mod/sumdb/note,
# note_test.go), which other signed-note implementations check themselves against.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)


def test_the_go_reference_note_verifies_and_is_reproduced_byte_for_byte() -> None:
    name, public_key = parse_verifier_key(GO_VKEY)
    assert name == "PeterNeumann"
    assert verifier_key(name, public_key) == GO_VKEY
    opened = verify_note(_note(GO_TEXT, GO_SIGNATURE), public_keys={name: public_key})
    assert (opened.text, opened.signed_by) == (GO_TEXT, ("PeterNeumann",))

    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]  # 0x01 ‖ 32-byte seed
    key = SigningKey.from_seed(seed)
    assert key.public_key == public_key
    assert _signature_line(name, key, GO_TEXT) == GO_SIGNATURE
    with _refused("CHECKPOINT_SIGNATURE_INVALID"):
        verify_note(
            _note(GO_TEXT.replace("problem", "Problem"), GO_SIGNATURE),
            public_keys={name: public_key},
        )


def test_our_verifier_key_is_read_back_by_the_go_text_form() -> None:
    vkey = verifier_key(ORIGIN, LOG_KEY.public_key)
    name, key_id_hex, encoded = vkey.split("+", 2)
    assert (name, bytes.fromhex(key_id_hex)) == (ORIGIN, note_key_id(ORIGIN, LOG_KEY.public_key))
    assert base64.b64decode(encoded) == b"\x01" + LOG_KEY.public_key
    assert parse_verifier_key(vkey) == (ORIGIN, LOG_KEY.public_key)


def test_every_mangled_verifier_key_is_refused() -> None:
    for cut_start in range(len(GO_VKEY)):
        for cut_end in range(cut_start + 1, len(GO_VKEY) + 1):
            if (cut_start, cut_end) != (0, len(GO_VKEY)):
                with _refused("CHECKPOINT_KEY_INVALID"):
                    parse_verifier_key(GO_VKEY[cut_start:cut_end])
    for at in range(len(GO_VKEY)):
        mangled = GO_VKEY[:at] + chr(ord(GO_VKEY[at]) + 1) + GO_VKEY[at + 1 :]
        with _refused("CHECKPOINT_KEY_INVALID"):
            parse_verifier_key(mangled)
    with _refused("CHECKPOINT_KEY_INVALID"):  # right ID, other signature type byte
        parse_verifier_key(GO_VKEY.replace("+ARpc", "+Ahpc"))


def test_the_empty_tree_checkpoint_carries_the_empty_root() -> None:
    checkpoint = sign_checkpoint(ORIGIN, 0, empty_root(), LOG_KEY)
    assert _verify(checkpoint.signed_note).size == 0
    with _refused("CHECKPOINT_MALFORMED"):
        sign_checkpoint(ORIGIN, 0, ROOT, LOG_KEY)
    with _refused("CHECKPOINT_MALFORMED"):
        _verify(_signed(checkpoint_text(ORIGIN, 0, ROOT)))


def test_a_checkpoint_of_a_real_tree_proves_inclusion() -> None:
    tree = MerkleTree()
    tree.extend(leaf_hash(b"receipt-%d" % i) for i in range(300))
    published = sign_checkpoint(ORIGIN, tree.size, tree.root(), LOG_KEY).signed_note
    checkpoint = _verify(published)
    proof = tree.inclusion_proof(123, checkpoint.size)
    verify_inclusion(leaf_hash(b"receipt-123"), 123, checkpoint.size, proof, checkpoint.root_hash)


# --- tampering -----------------------------------------------------------------------


def test_a_tampered_size_root_or_origin_line_breaks_the_signature() -> None:
    note = sign_checkpoint(ORIGIN, 5, ROOT, LOG_KEY).signed_note
    other_root = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    for tampered in (
        note.replace("\n5\n", "\n6\n", 1),
        note.replace(base64.b64encode(ROOT).decode(), other_root, 1),
        note.replace(ORIGIN + "\n", "approvals.example/lag\n", 1),
    ):
        assert tampered != note
        with _refused("CHECKPOINT_SIGNATURE_INVALID"):
            _verify(tampered)


def test_a_checkpoint_of_another_log_is_refused_even_when_validly_signed() -> None:
    note = sign_checkpoint("staging.example/log", 5, ROOT, LOG_KEY, key_name=ORIGIN).signed_note
    assert verify_checkpoint(note, origin="staging.example/log", public_keys=TRUSTED).size == 5
    with _refused("CHECKPOINT_ORIGIN_MISMATCH"):
        _verify(note)


@given(st.integers(0, 68 * 8 - 1))
def test_a_flipped_bit_in_the_signature_line_is_refused(bit: int) -> None:
    checkpoint = sign_checkpoint(ORIGIN, 5, ROOT, LOG_KEY)
    prefix, encoded = checkpoint.signature_lines[0].rsplit(" ", 1)
    blob = bytearray(base64.b64decode(encoded))
    blob[bit // 8] ^= 1 << (bit % 8)
    note = _note(checkpoint.note_text, f"{prefix} {base64.b64encode(bytes(blob)).decode()}")
    # In the key ID the line no longer names the trusted key; in the signature it fails.
    with _refused("CHECKPOINT_UNKNOWN_KEY" if bit < 32 else "CHECKPOINT_SIGNATURE_INVALID"):
        _verify(note)


def test_a_note_signed_only_by_other_keys_is_refused() -> None:
    text = checkpoint_text(ORIGIN, 5, ROOT)
    with _refused("CHECKPOINT_UNKNOWN_KEY"):
        _verify(_signed(text, key=OTHER_KEY, name="witness.example/w1"))
    # Same name as the log, other key (so another key ID): still not the log's key.
    with _refused("CHECKPOINT_UNKNOWN_KEY"):
        _verify(_signed(text, key=OTHER_KEY))


def test_unknown_signature_lines_are_ignored_and_kept() -> None:
    text = checkpoint_text(ORIGIN, 5, ROOT)
    garbage = "— witness.example/w2 " + base64.b64encode(b"\x04" * 76).decode()
    lines = (
        _signature_line("witness.example/w1", OTHER_KEY, text),
        _signature_line(ORIGIN, OTHER_KEY, text),  # same name, other key ID: unknown
        garbage,
        _signature_line(ORIGIN, LOG_KEY, text),
    )
    note = _note(text, *lines)
    checkpoint = _verify(note)
    assert checkpoint.signature_lines == lines
    assert checkpoint.signed_note == note
    assert verify_note(note, public_keys=TRUSTED).signed_by == (ORIGIN,)


def test_sixteen_signatures_are_accepted_and_too_many_refused() -> None:
    text = checkpoint_text(ORIGIN, 5, ROOT)
    witnesses = [_signature_line(f"w{i}.example", OTHER_KEY, text) for i in range(15)]
    mine = _signature_line(ORIGIN, LOG_KEY, text)
    assert _verify(_note(text, *witnesses, mine)).size == 5
    assert _verify(_note(text, mine, *witnesses)).size == 5
    crowd = [_signature_line(f"w{i}.example", OTHER_KEY, text) for i in range(MAX_SIGNATURES)]
    with _refused("CHECKPOINT_MALFORMED"):
        _verify(_note(text, mine, *crowd))
    with _refused("CHECKPOINT_MALFORMED"):
        verify_note(_note(text, mine, *crowd), public_keys=TRUSTED)


def test_a_failing_signature_by_a_trusted_key_refuses_the_whole_note() -> None:
    text = checkpoint_text(ORIGIN, 5, ROOT)
    good = _signature_line(ORIGIN, LOG_KEY, text)
    bad = _signature_line(ORIGIN, LOG_KEY, text.replace("5", "6"))
    with _refused("CHECKPOINT_SIGNATURE_INVALID"):
        _verify(_note(text, good, bad))
    witness = "witness.example/w1"
    both = {ORIGIN: LOG_KEY.public_key, witness: OTHER_KEY.public_key}
    forged_witness = _signature_line(witness, OTHER_KEY, "something else\n")
    with _refused("CHECKPOINT_SIGNATURE_INVALID"):
        verify_checkpoint(_note(text, good, forged_witness), origin=ORIGIN, public_keys=both)
    cosigned = _note(text, good, _signature_line(witness, OTHER_KEY, text))
    assert verify_note(cosigned, public_keys=both).signed_by == (ORIGIN, witness)


# --- malformed input -----------------------------------------------------------------

GOOD_TEXT = checkpoint_text(ORIGIN, 5, ROOT)
GOOD_LINE = _signature_line(ORIGIN, LOG_KEY, GOOD_TEXT)
ROOT_B64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFF] * 32)).decode()


@pytest.mark.parametrize(
    "note",
    [
        GOOD_TEXT + GOOD_LINE + "\n",  # no blank line before the signatures
        GOOD_TEXT + "\n" + GOOD_LINE,  # no final newline
        GOOD_TEXT + "\n",  # no signature at all
        GOOD_TEXT + "\n" + GOOD_LINE + "\n\n",  # a blank line after the signatures
        GOOD_TEXT + "\n" + GOOD_LINE.replace("—", "-", 1) + "\n",  # hyphen, not em dash
        GOOD_TEXT + "\n" + GOOD_LINE.replace(" ", "  ", 1) + "\n",
        GOOD_TEXT + "\n" + GOOD_LINE + "=\n",  # not base64
        GOOD_TEXT + "\n" + GOOD_LINE.rstrip("=") + "\n",  # padding dropped
        GOOD_TEXT + "\n" + "— " + ORIGIN + " AAAA\n",  # a key ID without a signature
        GOOD_TEXT + "\n" + "— bad+name " + GOOD_LINE.rsplit(" ", 1)[1] + "\n",
        GOOD_TEXT + "\n" + GOOD_LINE + "\r\n",  # control characters
        GOOD_TEXT.replace("\n5\n", "\n5\t\n") + "\n" + GOOD_LINE + "\n",
        "\ud800" + GOOD_TEXT + "\n" + GOOD_LINE + "\n",  # not UTF-8 encodable
        (GOOD_TEXT + "\n" + GOOD_LINE + "\n").encode() + b"\xff",  # not UTF-8
        GOOD_TEXT + "x" * (1 << 20) + "\n\n" + GOOD_LINE + "\n",  # oversized
        42,
    ],
)
def test_malformed_notes_are_refused(note: str | bytes) -> None:
    with _refused("CHECKPOINT_MALFORMED"):
        _verify(note)


def test_non_canonical_base64_in_a_signature_is_refused() -> None:
    encoded = GOOD_LINE.rsplit(" ", 1)[1]  # 68 bytes → "…X=": 2 unused bits in X
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = encoded[-2]
    spelled = encoded[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    assert base64.b64decode(spelled) == base64.b64decode(encoded)
    with _refused("CHECKPOINT_MALFORMED"):
        _verify(_note(GOOD_TEXT, f"— {ORIGIN} {spelled}"))


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n5\n",  # no root line
        f"{ORIGIN}\n05\n{ROOT_B64}\n",  # leading zero
        f"{ORIGIN}\n+5\n{ROOT_B64}\n",
        f"{ORIGIN}\n5 \n{ROOT_B64}\n",
        f"{ORIGIN}\n1_000\n{ROOT_B64}\n",
        f"{ORIGIN}\n٥\n{ROOT_B64}\n",  # an Arabic-Indic digit five
        f"{ORIGIN}\n{2**64}\n{ROOT_B64}\n",
        f"{ORIGIN}\n{'9' * 5000}\n{ROOT_B64}\n",  # beyond what int() will parse
        f"{ORIGIN}\n-1\n{ROOT_B64}\n",
        f"{ORIGIN}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"{ORIGIN}\n5\n{URLSAFE_ROOT}\n",  # base64url, not base64
        f"{ORIGIN}\n5\n{ROOT_B64.rstrip('=')}\n",
        f"{ORIGIN}\n5\n{ROOT_B64}\n\nextension\n",  # an empty extension line
        f"\n5\n{ROOT_B64}\n",  # empty origin
    ],
)
def test_signed_text_that_is_not_a_checkpoint_is_refused(text: str) -> None:
    with _refused("CHECKPOINT_MALFORMED"):
        _verify(_signed(text))


def test_extension_lines_are_kept_when_signed() -> None:
    text = f"{ORIGIN}\n5\n{ROOT_B64}\nextra line one\nextra line two\n"
    checkpoint = _verify(_signed(text))
    assert checkpoint.extensions == ("extra line one", "extra line two")
    assert checkpoint.note_text == text


@pytest.mark.parametrize(
    "public_keys",
    [
        {},
        {ORIGIN: LOG_KEY.public_key[:31]},
        {ORIGIN: LOG_KEY.did},
        {"": LOG_KEY.public_key},
        {"approvals example": LOG_KEY.public_key},
        {"approvals+log": LOG_KEY.public_key},
        {"approvals\u2003log": LOG_KEY.public_key},  # an em space is a Unicode space
        [(ORIGIN, LOG_KEY.public_key)],
    ],
)
def test_unusable_trusted_keys_are_refused(public_keys: object) -> None:
    note = sign_checkpoint(ORIGIN, 5, ROOT, LOG_KEY).signed_note
    with _refused("CHECKPOINT_KEY_INVALID"):
        verify_checkpoint(note, origin=ORIGIN, public_keys=public_keys)  # type: ignore[arg-type]


class ShortSigner:
    """A broken signer: its signatures are one byte short."""

    did = LOG_KEY.did
    kid = LOG_KEY.kid
    public_key = LOG_KEY.public_key

    def sign(self, message: bytes) -> bytes:
        return LOG_KEY.sign(message)[:63]


class CountingSigner:
    """Counts how often it is asked to sign."""

    did = LOG_KEY.did
    kid = LOG_KEY.kid
    public_key = LOG_KEY.public_key

    def __init__(self) -> None:
        self.calls = 0

    def sign(self, message: bytes) -> bytes:
        self.calls += 1
        return LOG_KEY.sign(message)


def test_signing_refuses_bad_fields_before_spending_a_signature() -> None:
    signer = CountingSigner()
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: sign_checkpoint(ORIGIN, -1, ROOT, signer), "CHECKPOINT_MALFORMED"),
        (lambda: sign_checkpoint(ORIGIN, True, ROOT, signer), "CHECKPOINT_MALFORMED"),
        (lambda: sign_checkpoint(ORIGIN, 2**64, ROOT, signer), "CHECKPOINT_MALFORMED"),
        (lambda: sign_checkpoint(ORIGIN, 5, ROOT[:31], signer), "CHECKPOINT_MALFORMED"),
        (lambda: sign_checkpoint("a\nb", 5, ROOT, signer, key_name="a"), "CHECKPOINT_MALFORMED"),
        (lambda: sign_checkpoint("", 5, ROOT, signer, key_name="a"), "CHECKPOINT_MALFORMED"),
        (lambda: sign_checkpoint("my log", 5, ROOT, signer), "CHECKPOINT_KEY_INVALID"),
        (
            lambda: sign_checkpoint(ORIGIN, 5, ROOT, signer, key_name="a+b"),
            "CHECKPOINT_KEY_INVALID",
        ),
    ]
    for call, code in cases:
        with _refused(code):
            call()
    assert signer.calls == 0
    with _refused("CHECKPOINT_KEY_INVALID"):
        sign_checkpoint(ORIGIN, 5, ROOT, ShortSigner())


def test_a_checkpoint_value_must_agree_with_its_note_text() -> None:
    good = sign_checkpoint(ORIGIN, 5, ROOT, LOG_KEY)
    with _refused("CHECKPOINT_MALFORMED"):
        Checkpoint(ORIGIN, 6, ROOT, good.note_text, good.signature_lines)
    with _refused("CHECKPOINT_MALFORMED"):
        Checkpoint(ORIGIN, 5, ROOT, good.note_text, ())
    with _refused("CHECKPOINT_MALFORMED"):
        Checkpoint(ORIGIN, 5, ROOT, good.note_text, ("- not a signature line",))
