"""The one place where JSON becomes bytes for hashing and signing.

Two canonical forms are in use (see CLAW_FORMATS.md):

* **JCS** (RFC 8785): keys sorted by UTF-16 code units, ECMAScript number formatting.
  Used for identities: the WPC hash, the CST scope hash, payload hashes of tool
  parameters and request hashes.
* **Emission order**: what JavaScript's ``JSON.stringify`` produces — keys in the order
  they were inserted (or received), no whitespace, non-ASCII kept, ECMAScript numbers.
  Used for signed-envelope ``payload_hash_b64u`` and Claw event hashes. A producer
  hashes exactly the bytes it ships; a verifier hashes what it received, in that order.

Every hash in keyturn goes through :func:`jcs_sha256_b64u` or
:func:`emission_sha256_b64u`; base64url is unpadded on output and strict on input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import rfc8785

from core.errors import CanonicalizationError

# Integers outside ±(2^53 − 1) lose precision in every JavaScript verifier.
_MAX_SAFE_INTEGER = 2**53 - 1
_B64U_RE = re.compile(r"\A[A-Za-z0-9_-]*\Z")

JSONValue = Any
"""A JSON value: dict with str keys, list, str, int, float, bool or None."""


def jcs(value: JSONValue) -> bytes:
    """Serialize ``value`` per RFC 8785.

    Values that the C ``json`` encoder provably serializes exactly as RFC 8785 does
    (see :func:`_fast_path_safe`) take that path, about 5x faster; everything else goes
    through ``rfc8785``. A property test holds the two paths equal.

    Raises:
        CanonicalizationError: NaN/Infinity, integers beyond 2^53, lone surrogates,
            non-string keys or non-JSON types.
    """
    if _fast_path_safe(value):
        try:
            return json.dumps(
                value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 refuse it with its own message
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise CanonicalizationError(message=f"value has no canonical JSON form: {e}") from e


def _fast_path_safe(value: JSONValue) -> bool:
    """True when ``json.dumps`` gives RFC 8785's bytes for ``value``.

    Where the two differ (LIMITS.md §2.1): integral floats (``1.0``), floats Python
    writes in exponent form (below 1e-4 or from 1e16), integers beyond ±2^53, and key
    order between characters above U+D7FF (UTF-16 versus code-point order). Strings
    are escaped identically (``"``, ``\\``, control characters; nothing else).
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER)
    if kind is float:
        magnitude = abs(value)
        return 1e-4 <= magnitude < 1e16 and not value.is_integer()
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and max(key) > "\ud7ff"):
                return False
            if not _fast_path_safe(item):
                return False
        return True
    if kind is list:
        return all(_fast_path_safe(item) for item in value)
    return False


def emission(value: JSONValue) -> bytes:
    """Serialize ``value`` as ``JSON.stringify`` would, keeping key order.

    Raises:
        CanonicalizationError: for the same inputs :func:`jcs` refuses.
    """
    if _fast_path_safe(value):
        try:
            return json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        except UnicodeEncodeError:
            pass
    out: list[bytes] = []
    _emit(value, out)
    return b"".join(out)


def _emit(value: JSONValue, out: list[bytes]) -> None:
    if isinstance(value, Mapping):
        out.append(b"{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalizationError(message=f"object key {key!r} is not a string")
            if not first:
                out.append(b",")
            first = False
            out.append(_scalar(key))
            out.append(b":")
            _emit(item, out)
        out.append(b"}")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        out.append(b"[")
        for index, item in enumerate(value):
            if index:
                out.append(b",")
            _emit(item, out)
        out.append(b"]")
    else:
        out.append(_scalar(value))


def _scalar(value: JSONValue) -> bytes:
    # rfc8785 formats strings exactly as JSON.stringify does and numbers per
    # ECMA-262 Number::toString, which is also what JSON.stringify uses.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_SAFE_INTEGER:
        raise CanonicalizationError(message=f"integer {value} is beyond ±2^53 and not portable")
    if value is not None and not isinstance(value, str | int | float | bool):
        raise CanonicalizationError(message=f"{type(value).__name__} is not a JSON value")
    return jcs(value)


def b64u_encode(data: bytes) -> str:
    """base64url (RFC 4648 §5) without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Strict base64url decoding: only the URL-safe alphabet, no padding, no junk.

    Raises:
        CanonicalizationError: the text is not canonical unpadded base64url.
    """
    if not isinstance(text, str) or not _B64U_RE.match(text) or len(text) % 4 == 1:
        raise CanonicalizationError("MALFORMED_BASE64URL", "not unpadded base64url text")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise CanonicalizationError("MALFORMED_BASE64URL", "not base64url text") from e
    if b64u_encode(data) != text:  # non-zero trailing bits: a second spelling of the same bytes
        raise CanonicalizationError("MALFORMED_BASE64URL", "non-canonical base64url text")
    return data


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_b64u(data: bytes) -> str:
    """b64u(SHA-256(data)): 43 characters."""
    return b64u_encode(hashlib.sha256(data).digest())


def jcs_sha256_b64u(value: JSONValue) -> str:
    """b64u(SHA-256(JCS(value))): policy hashes, scope hashes, payload hashes."""
    return sha256_b64u(jcs(value))


def emission_sha256_b64u(value: JSONValue) -> str:
    """b64u(SHA-256(emission-order JSON)): envelope payload hashes and event hashes."""
    return sha256_b64u(emission(value))


def digests_equal(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two digests (text or bytes)."""
    a_bytes = a.encode("ascii", "replace") if isinstance(a, str) else a
    b_bytes = b.encode("ascii", "replace") if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)


def is_sha256_b64u(text: object) -> bool:
    """True when ``text`` looks like an unpadded base64url SHA-256 (43 chars)."""
    if not isinstance(text, str) or len(text) != 43:
        return False
    try:
        return len(b64u_decode(text)) == 32
    except CanonicalizationError:
        return False
