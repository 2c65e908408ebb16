"""Signed checkpoints: C2SP tlog-checkpoint text in a C2SP signed note, signed with Ed25519.

A checkpoint is the log's signed statement "my tree of ``size`` leaves has this root".
Its note text (c2sp.org/tlog-checkpoint)::

    <origin>\\n                      the log's identity, e.g. approvals.example/log
    <size>\\n                        decimal, no leading zeros ("0" for the empty tree)
    <base64 of the 32-byte root>\\n  standard, padded base64 (RFC 4648 §4)
    [<extension line>\\n …]          accepted and kept when verifying, never written

and the signed note (c2sp.org/signed-note) adds a blank line and one line per signature::

    — <key name> base64(4-byte key ID ‖ Ed25519 signature of the note text)\\n

with key ID = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]. The log's key
name is its origin unless told otherwise. :func:`verifier_key` writes a public key in
the Go ``note`` text form ``<name>+<key ID hex>+base64(0x01 ‖ public key)``, so any
tool of that ecosystem (golang.org/x/mod/sumdb/note, transparency-dev) can check
keyturn's checkpoints.

Verification raises :class:`~core.errors.LogError`; the first failure wins, in this
order (signatures before content: the text means nothing until a trusted key vouches
for it):

    CHECKPOINT_KEY_INVALID        the trusted keys are empty or unusable, or a key name or
                                  verifier-key string is not well formed (also when signing)
    CHECKPOINT_MALFORMED          not a signed note, or its text is not a checkpoint
    CHECKPOINT_SIGNATURE_INVALID  a signature by a trusted key (name and key ID match)
                                  does not verify; the whole note is refused
    CHECKPOINT_UNKNOWN_KEY        no signature line is by a trusted key (lines by other
                                  keys, such as witnesses, are ignored as the spec says)
    CHECKPOINT_ORIGIN_MISMATCH    validly signed, but for another log
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import LogError
from core.keys import verify_signature
from core.merkle import HASH_SIZE, MAX_TREE_SIZE, empty_root
from core.ports import Signer

#: Signed-note signature type of Ed25519 (c2sp.org/signed-note).
ED25519_TYPE = 0x01
#: Verifiers must accept at least 16 signatures; the bound keeps hostile notes cheap.
MAX_SIGNATURES = 100
#: About 100 post-quantum signature lines; an Ed25519 checkpoint is a few hundred bytes.
MAX_NOTE_BYTES = 1 << 20

_SIGNATURE_PREFIX = "— "  # em dash U+2014, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls other than newline
# Unicode spaces (\s matches what str.isspace does), '+', and ASCII controls.
_NOT_IN_KEY_NAME = re.compile(r"[\s+\x00-\x1f]")
_SIZE = re.compile(r"\A(?:0|[1-9][0-9]*)\Z")
_KEY_ID_HEX = re.compile(r"\A[0-9a-f]{8}\Z")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint and the signature lines of its note.

    Built by :func:`sign_checkpoint` or returned by :func:`verify_checkpoint`; only the
    latter means the signatures were checked against trusted keys.

    Attributes:
        origin: the log's identity, the first line.
        size: number of leaves.
        root_hash: the 32-byte RFC 9162 root at ``size``.
        note_text: the signed text, exactly as signed (ends in a newline).
        signature_lines: the note's signature lines, without their newlines, in order.
        extensions: extension lines after the root line, if the signer wrote any.
    """

    origin: str
    size: int
    root_hash: bytes
    note_text: str
    signature_lines: tuple[str, ...]
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Raises:
        LogError: ``CHECKPOINT_MALFORMED`` when the fields do not make a signed checkpoint.
        """
        _require_fields(self.origin, self.size, self.root_hash, self.extensions)
        if self.note_text != checkpoint_text(
            self.origin, self.size, self.root_hash, self.extensions
        ):
            raise LogError("CHECKPOINT_MALFORMED", "the note text does not match the fields")
        if not self.signature_lines or len(self.signature_lines) > MAX_SIGNATURES:
            raise LogError(
                "CHECKPOINT_MALFORMED", f"a signed note has 1 to {MAX_SIGNATURES} signatures"
            )
        for line in self.signature_lines:
            _parse_signature_line(line)

    @property
    def signed_note(self) -> str:
        """The whole signed note, as published and as :func:`verify_checkpoint` reads it."""
        return self.note_text + "\n" + "".join(line + "\n" for line in self.signature_lines)


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A signed note whose text at least one trusted key signed.

    Attributes:
        text: the note text (ends in a newline).
        signature_lines: every signature line of the note, trusted or not, in order.
        signed_by: names of the trusted keys whose signatures verified, in order.
    """

    text: str
    signature_lines: tuple[str, ...]
    signed_by: tuple[str, ...]


def checkpoint_text(
    origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...] = ()
) -> str:
    """The tlog-checkpoint note text for a tree head (no validation; see :class:`Checkpoint`)."""
    root_line = base64.b64encode(root_hash).decode("ascii")
    return "".join(f"{line}\n" for line in (origin, str(size), root_line, *extensions))


def note_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte signed-note key ID of an Ed25519 key: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4].

    Raises:
        LogError: ``CHECKPOINT_KEY_INVALID`` for a bad key name or a key that is not 32 bytes.
    """
    _require_key(name, public_key)
    return hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + public_key
    ).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The Go ``note`` verifier-key string: ``<name>+<key ID hex>+base64(0x01 ‖ key)``.

    Raises:
        LogError: ``CHECKPOINT_KEY_INVALID`` for a bad key name or a key that is not 32 bytes.
    """
    key_id = note_key_id(name, public_key)
    encoded = base64.b64encode(bytes([ED25519_TYPE]) + public_key).decode("ascii")
    return f"{name}+{key_id.hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """The key name and Ed25519 public key of a Go ``note`` verifier-key string.

    Raises:
        LogError: ``CHECKPOINT_KEY_INVALID`` unless the string is well formed, names an
            Ed25519 key, and its key ID matches the name and key.
    """
    if not isinstance(vkey, str):
        raise LogError("CHECKPOINT_KEY_INVALID", "a verifier key is text")
    # The name holds no '+'; the base64 key may, so split from the left only.
    name, _, rest = vkey.partition("+")
    key_id_hex, _, encoded = rest.partition("+")
    if not _KEY_ID_HEX.match(key_id_hex):
        raise LogError("CHECKPOINT_KEY_INVALID", "the verifier key's ID is not 8 hex digits")
    raw = _strict_b64decode(encoded)
    if raw is None or len(raw) != 33 or raw[0] != ED25519_TYPE:
        raise LogError("CHECKPOINT_KEY_INVALID", "the verifier key is not an Ed25519 key")
    public_key = raw[1:]
    if note_key_id(name, public_key).hex() != key_id_hex:
        raise LogError("CHECKPOINT_KEY_INVALID", "the verifier key's ID does not match its key")
    return name, public_key


def sign_checkpoint(
    origin: str,
    size: int,
    root_hash: bytes,
    signer: Signer,
    *,
    key_name: str | None = None,
) -> Checkpoint:
    """Sign the checkpoint for a tree head; the key name is the origin unless given.

    Raises:
        LogError: ``CHECKPOINT_MALFORMED`` for a bad origin, size or root;
            ``CHECKPOINT_KEY_INVALID`` for a bad key name, or a signer whose key or
            signature has the wrong length.
    """
    name = origin if key_name is None else key_name
    key_id = note_key_id(name, signer.public_key)
    _require_fields(origin, size, root_hash, ())  # before spending a signature on them
    text = checkpoint_text(origin, size, root_hash)
    signature = signer.sign(text.encode("utf-8"))
    if len(signature) != 64:
        raise LogError("CHECKPOINT_KEY_INVALID", "the signer did not return an Ed25519 signature")
    return Checkpoint(origin, size, root_hash, text, (_signature_line(name, key_id, signature),))


def verify_note(unverified_note: str | bytes, *, public_keys: Mapping[str, bytes]) -> VerifiedNote:
    """Open a C2SP signed note signed by at least one of ``public_keys`` (name → key).

    Signatures by keys not in ``public_keys`` (another name, or the same name with
    another key ID) are ignored; every signature by a trusted key must verify.

    Raises:
        LogError: ``CHECKPOINT_KEY_INVALID``, ``CHECKPOINT_MALFORMED``,
            ``CHECKPOINT_SIGNATURE_INVALID`` or ``CHECKPOINT_UNKNOWN_KEY``.
    """
    trusted = _trusted_key_ids(public_keys)
    note = _decode_note(unverified_note)
    # The text runs to the last blank line; the signature block follows it.
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise LogError("CHECKPOINT_MALFORMED", "not a signed note (no signature block)")
    text, block = note[: split + 1], note[split + 2 :]
    lines = tuple(block[:-1].split("\n")) if block else ()
    if not lines or len(lines) > MAX_SIGNATURES:
        raise LogError(
            "CHECKPOINT_MALFORMED", f"a signed note has 1 to {MAX_SIGNATURES} signatures"
        )
    message = text.encode("utf-8")
    signed_by: list[str] = []
    for line in lines:
        name, key_id, signature = _parse_signature_line(line)
        public_key = trusted.get((name, key_id))
        if public_key is None:
            continue  # a key we were not told to trust: ignored, never an error
        if not verify_signature(public_key, message, signature):
            raise LogError(
                "CHECKPOINT_SIGNATURE_INVALID", f"the signature by {name!r} does not verify"
            )
        signed_by.append(name)
    if not signed_by:
        raise LogError("CHECKPOINT_UNKNOWN_KEY", "no signature on the note is by a trusted key")
    return VerifiedNote(text, lines, tuple(signed_by))


def verify_checkpoint(
    unverified_note: str | bytes, *, origin: str, public_keys: Mapping[str, bytes]
) -> Checkpoint:
    """Verify a signed checkpoint of the log ``origin`` and return its contents.

    Raises:
        LogError: ``CHECKPOINT_KEY_INVALID``, ``CHECKPOINT_MALFORMED``,
            ``CHECKPOINT_SIGNATURE_INVALID``, ``CHECKPOINT_UNKNOWN_KEY`` or
            ``CHECKPOINT_ORIGIN_MISMATCH`` (see the module docstring).
    """
    note = verify_note(unverified_note, public_keys=public_keys)
    lines = note.text[:-1].split("\n")
    if len(lines) < 3:
        raise LogError("CHECKPOINT_MALFORMED", "a checkpoint has an origin, a size and a root")
    note_origin, size_line, root_line, *extensions = lines
    # 20 digits hold any uint64, and int() refuses (ValueError) beyond 4,300 digits.
    if len(size_line) > 20 or not _SIZE.match(size_line) or int(size_line) > MAX_TREE_SIZE:
        raise LogError("CHECKPOINT_MALFORMED", "the tree size is not a canonical decimal")
    root_hash = _strict_b64decode(root_line)
    if root_hash is None or len(root_hash) != HASH_SIZE:
        raise LogError("CHECKPOINT_MALFORMED", "the root is not base64 of 32 bytes")
    checkpoint = Checkpoint(
        note_origin, int(size_line), root_hash, note.text, note.signature_lines, tuple(extensions)
    )
    if note_origin != origin:
        raise LogError(
            "CHECKPOINT_ORIGIN_MISMATCH",
            f"the checkpoint is for {note_origin!r}, not {origin!r}",
        )
    return checkpoint


# --- helpers -------------------------------------------------------------------------


def _require_fields(
    origin: object, size: object, root_hash: object, extensions: tuple[object, ...]
) -> None:
    if type(size) is not int or not 0 <= size <= MAX_TREE_SIZE:
        raise LogError("CHECKPOINT_MALFORMED", "the tree size is not an integer in [0, 2**64)")
    if type(root_hash) is not bytes or len(root_hash) != HASH_SIZE:
        raise LogError("CHECKPOINT_MALFORMED", "the root hash is not 32 bytes")
    if size == 0 and root_hash != empty_root():
        raise LogError("CHECKPOINT_MALFORMED", "an empty tree's root is SHA-256 of nothing")
    for line in (origin, *extensions):
        if not isinstance(line, str) or not line or "\n" in line or _CONTROL.search(line):
            raise LogError("CHECKPOINT_MALFORMED", "checkpoint lines are non-empty text")


def _require_key(name: object, public_key: object) -> None:
    if not isinstance(name, str) or not name or _NOT_IN_KEY_NAME.search(name):
        raise LogError(
            "CHECKPOINT_KEY_INVALID", f"{name!r} is not a key name (non-empty, no spaces or '+')"
        )
    if type(public_key) is not bytes or len(public_key) != 32:
        raise LogError("CHECKPOINT_KEY_INVALID", "an Ed25519 public key is 32 bytes")


def _trusted_key_ids(public_keys: Mapping[str, bytes]) -> dict[tuple[str, bytes], bytes]:
    if not isinstance(public_keys, Mapping) or not public_keys:
        raise LogError("CHECKPOINT_KEY_INVALID", "no trusted keys given: nothing can verify")
    return {(name, note_key_id(name, key)): key for name, key in public_keys.items()}


def _decode_note(unverified_note: str | bytes) -> str:
    try:
        if isinstance(unverified_note, bytes):
            raw = unverified_note
            note = raw.decode("utf-8")
        elif isinstance(unverified_note, str):
            note = unverified_note
            raw = note.encode("utf-8")  # refuses lone surrogates: not valid UTF-8
        else:
            raise LogError("CHECKPOINT_MALFORMED", "a signed note is text")
    except UnicodeError as e:
        raise LogError("CHECKPOINT_MALFORMED", "a signed note is valid UTF-8") from e
    if len(raw) > MAX_NOTE_BYTES:
        raise LogError("CHECKPOINT_MALFORMED", "the note is too large")
    if _CONTROL.search(note):
        raise LogError("CHECKPOINT_MALFORMED", "a signed note has no control characters")
    return note


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """``(key name, key ID, signature)`` of ``— <name> <base64>``; format only, no trust.

    Raises:
        LogError: ``CHECKPOINT_MALFORMED``.
    """
    if not isinstance(line, str) or not line.startswith(_SIGNATURE_PREFIX):
        raise LogError("CHECKPOINT_MALFORMED", "a signature line starts with '— '")
    parts = line[len(_SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise LogError("CHECKPOINT_MALFORMED", "a signature line is '— <key name> <signature>'")
    name, encoded = parts
    try:
        _require_key(name, bytes(32))
    except LogError as e:
        raise LogError("CHECKPOINT_MALFORMED", e.message) from e
    raw = _strict_b64decode(encoded)
    if raw is None or len(raw) < 5:
        raise LogError("CHECKPOINT_MALFORMED", "a signature is base64 of a key ID and signature")
    return name, raw[:4], raw[4:]


def _signature_line(name: str, key_id: bytes, signature: bytes) -> str:
    return f"{_SIGNATURE_PREFIX}{name} {base64.b64encode(key_id + signature).decode('ascii')}"


def _strict_b64decode(text: str) -> bytes | None:
    """Standard padded base64 in its one canonical spelling, else ``None``."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        return None
    # Non-zero padding bits would give a second spelling of the same bytes.
    return raw if base64.b64encode(raw).decode("ascii") == text else None
