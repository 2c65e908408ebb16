"""Scoped tokens (CST): short-lived Ed25519 JWTs that bind an agent to a job and a policy.

Format (CLAW_FORMATS.md, "CST"): JWS compact serialization with the header exactly
``{"alg":"EdDSA","typ":"JWT","kid":…}`` (``kid`` = first 16 hex characters of SHA-256 of
the issuer's 32-byte public key), signed over ``b64u(header) "." b64u(payload)``.

Claims (Claw ``scoped_token_claims.v1`` unless marked *keyturn*):

* required: ``token_version`` "1"; ``sub`` (agent DID, or person id for break-glass);
  ``aud`` (string or list); ``scope`` (list ≥ 1 of tool routes, matched exactly, no
  wildcards); ``iat`` and ``exp`` (integer epoch seconds, ``exp > iat``);
  ``token_scope_hash_b64u`` (optional in Claw, *required by keyturn*); ``kind``
  (*keyturn*: ``runner`` | ``job`` | ``breakglass``; the last two must carry
  ``mission_id``).
* optional: ``mission_id`` (the keyturn job id: job-scoped CST binding),
  ``policy_hash_b64u`` (WPC pin), ``request_hash_b64u`` (*keyturn*: the approval request
  the token serves), ``jti``, ``nonce``, ``owner_ref``, ``owner_did``,
  ``controller_did``, ``agent_did``, ``control_plane_policy_hash_b64u``,
  ``payment_account_did``, ``spend_cap``, ``delegation_id``, ``delegator_did``,
  ``delegate_did`` (must equal ``sub``), ``delegation_policy_hash_b64u``,
  ``delegation_spend_cap_minor``, ``delegation_expires_at`` (enforced like ``exp``),
  ``token_lane`` ("canonical" needs owner, controller and agent DIDs).
* every text claim and list entry is non-empty without surrounding white space; DIDs
  and SHA-256 values are format-checked.

Any other claim is refused, as the Claw schema (``additionalProperties: false``) does.
keyturn's ``kind`` and ``request_hash_b64u`` are signed but left out of the scope hash,
so a Claw verifier recomputes the same ``token_scope_hash_b64u`` for a keyturn token.

Verification order (first failure wins; every failure is a :class:`TokenError`):

1. structure  → TOKEN_MALFORMED: text ≤ 8 KiB, ASCII, three segments of canonical
   unpadded base64url, header and payload strict JSON objects (no duplicate keys, no
   NaN), header parameters only ``alg``/``typ``/``kid``, ``typ`` "JWT"
2. algorithm  → TOKEN_UNSUPPORTED_ALG: ``alg`` must be exactly "EdDSA"
3. key        → TOKEN_UNKNOWN_KID: ``kid`` names a configured issuer key
4. signature  → TOKEN_SIGNATURE_INVALID (libsodium, canonical signatures only)
5. claims     → TOKEN_INVALID_CLAIMS (the list above)
6. time       → TOKEN_NOT_YET_VALID (``iat`` > now + 60 s), TOKEN_EXPIRED (``exp`` ≤ now,
   or ``delegation_expires_at`` ≤ now), TOKEN_TTL_TOO_LONG (``exp − iat`` > max TTL)
7. audience   → TOKEN_BAD_AUDIENCE
8. scope hash → TOKEN_SCOPE_HASH_MISMATCH: recomputed ≠ claimed, or ≠ the job's
   expected hash (fixed when the job was approved)
9. pins       → TOKEN_POLICY_MISMATCH, TOKEN_JOB_MISMATCH, TOKEN_KIND_MISMATCH,
   TOKEN_REQUEST_MISMATCH (a pin that is expected but absent is a mismatch)
10. scope     → TOKEN_INSUFFICIENT_SCOPE
11. revocation → TOKEN_REVOKED: last, because it may cost a store round trip

Stages 1–5 depend only on the token and the issuer keys, so :class:`TokenVerifier`
caches their result; stages 6–11 run on every call.

Choices, and why:

* **Only "EdDSA".** The RFC 9864 name "Ed25519" (joserfc's default) is refused with
  TOKEN_UNSUPPORTED_ALG: the Claw reference verifier refuses it too, and one spelling of
  the signed header leaves nothing to interpret. joserfc users must pin "EdDSA".
* **One spelling per token.** The revocation key is the SHA-256 of the compact text,
  so a verifier that accepted a second spelling of the same signed token (``=`` padding,
  non-zero trailing bits in the signature segment, a malleated ``S + L`` signature)
  would let a revoked token back in. The parser here is strict and libsodium refuses
  non-canonical signatures. PyJWT 2.15 accepts padded segments, which is one reason
  this module does not call PyJWT; the others are cost (its segment decoder alone takes
  about 0.7× one libsodium verify, see ``tests/bench/bench_tokens.py``) and the
  ``Signer`` port, which only signs bytes. The tests use stock PyJWT as an
  interoperability oracle in both directions and as the attacker's tool.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, cast

from core import canonical
from core.errors import CanonicalizationError, TokenError
from core.keys import key_id, verify_signature
from core.ports import RevocationList, Signer
from core.times import from_epoch, require_aware, to_epoch

ALGORITHM = "EdDSA"
CST_VERSION = "1"
TokenKind = Literal["runner", "job", "breakglass"]
KINDS: frozenset[str] = frozenset({"runner", "job", "breakglass"})
#: Kinds bound to one job: they must carry ``mission_id``.
JOB_BOUND_KINDS: frozenset[str] = frozenset({"job", "breakglass"})
#: How far in the future ``iat`` may be (clock skew between replicas).
IAT_SKEW_SECONDS = 60
MAX_TOKEN_CHARS = 8192

_MAX_SAFE_INTEGER = 2**53 - 1
_HEADER_PARAMS = frozenset({"alg", "typ", "kid"})
_DID_RE = re.compile(r"\Adid:[a-z0-9]+:[A-Za-z0-9._%-]+\Z")
_DIGITS_RE = re.compile(r"\A[0-9]+\Z")
# ECMAScript WhiteSpace + LineTerminator: what String.prototype.trim removes. Python's
# str.strip differs (it strips U+001C–U+001F and U+0085, keeps U+FEFF), and the scope
# hash must match a JavaScript issuer's bit for bit.
_JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)

_REQUIRED = ("token_version", "sub", "aud", "scope", "iat", "exp", "token_scope_hash_b64u", "kind")
_TEXT_CLAIMS = ("owner_ref", "mission_id", "delegation_id", "jti", "nonce")
_DID_CLAIMS = (
    "owner_did",
    "controller_did",
    "agent_did",
    "payment_account_did",
    "delegator_did",
    "delegate_did",
)
_HASH_CLAIMS = (
    "policy_hash_b64u",
    "control_plane_policy_hash_b64u",
    "token_scope_hash_b64u",
    "delegation_policy_hash_b64u",
    "request_hash_b64u",
)
_OTHER_CLAIMS = ("spend_cap", "delegation_spend_cap_minor", "delegation_expires_at", "token_lane")
KNOWN_CLAIMS: frozenset[str] = frozenset(
    (*_REQUIRED, *_TEXT_CLAIMS, *_DID_CLAIMS, *_HASH_CLAIMS, *_OTHER_CLAIMS)
)
#: Optional text claims that enter the scope hash (trimmed) when non-empty.
_SCOPE_HASH_TEXT_CLAIMS = (
    "owner_ref",
    "owner_did",
    "controller_did",
    "agent_did",
    "policy_hash_b64u",
    "control_plane_policy_hash_b64u",
    "payment_account_did",
    "mission_id",
    "delegation_id",
    "delegator_did",
    "delegate_did",
    "delegation_policy_hash_b64u",
)
#: Claims :func:`mint_cst` sets from its own arguments; ``extra`` may not set them.
_MINT_RESERVED = frozenset(
    {"token_version", "sub", "aud", "scope", "iat", "exp", "jti", "kind"}
    | {"policy_hash_b64u", "mission_id", "token_scope_hash_b64u"}
)


def _invalid(message: str) -> TokenError:
    return TokenError("TOKEN_INVALID_CLAIMS", message)


def _malformed(message: str) -> TokenError:
    return TokenError("TOKEN_MALFORMED", message)


def _js_trim(text: str) -> str:
    return text.strip(_JS_WHITESPACE)


def _utf16_order(text: str) -> bytes:
    # JavaScript's Array.prototype.sort compares UTF-16 code units; big-endian UTF-16
    # bytes compare the same way (a code-point sort would misplace U+E000–U+FFFF).
    return text.encode("utf-16-be", "surrogatepass")


def _normalized(value: object, name: str) -> list[str]:
    """String → [string]; trim, drop empty, de-duplicate, sort (as the Claw issuer does)."""
    items: object = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise _invalid(f"{name} must be a string or a list of strings")
    trimmed = {_js_trim(v) for v in cast("Sequence[str]", items)}
    trimmed.discard("")
    return sorted(trimmed, key=_utf16_order)


def token_scope_hash(claims: Mapping[str, Any]) -> str:
    """``token_scope_hash_b64u`` = b64u(SHA-256(JCS(obj))), Claw's definition.

    ``obj`` has ``token_version`` "1", ``sub`` (trimmed), ``aud`` and ``scope`` (string →
    list, trimmed, empty entries dropped, de-duplicated, sorted by UTF-16 code units),
    plus each authorization claim only when non-empty: owner_ref, owner_did,
    controller_did, agent_did, policy_hash_b64u, control_plane_policy_hash_b64u,
    payment_account_did, spend_cap, mission_id, delegation_id, delegator_did,
    delegate_did, delegation_policy_hash_b64u, delegation_spend_cap_minor,
    delegation_expires_at. ``iat``, ``exp``, ``jti``, ``nonce`` and keyturn's ``kind`` and
    ``request_hash_b64u`` are left out, so the hash is stable across re-issue.

    Where the reference silently drops a claim of the wrong type, this raises.

    Raises:
        TokenError: ``TOKEN_INVALID_CLAIMS`` for a missing ``sub``/``aud``/``scope``, a
            claim of the wrong type, or a value with no canonical JSON form.
    """
    if claims.get("token_version", CST_VERSION) != CST_VERSION:
        raise _invalid('token_version must be "1"')
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise _invalid("sub must be a string")
    obj: dict[str, Any] = {
        "token_version": CST_VERSION,
        "sub": _js_trim(sub),
        "aud": _normalized(claims.get("aud"), "aud"),
        "scope": _normalized(claims.get("scope"), "scope"),
    }
    for name in _SCOPE_HASH_TEXT_CLAIMS:
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _invalid(f"{name} must be a string")
        if _js_trim(value):
            obj[name] = _js_trim(value)
    cap = claims.get("spend_cap")
    if cap is not None:
        if not _is_number(cap) or cap < 0:
            raise _invalid("spend_cap must be a finite number ≥ 0")
        obj["spend_cap"] = cap
    minor = claims.get("delegation_spend_cap_minor")
    if minor is not None:
        digits = _js_trim(minor) if isinstance(minor, str) else None
        if digits is None or (digits and not _DIGITS_RE.match(digits)):
            raise _invalid("delegation_spend_cap_minor must be a string of digits")
        if digits:
            obj["delegation_spend_cap_minor"] = digits
    until = claims.get("delegation_expires_at")
    if until is not None:
        if not _is_number(until) or until <= 0:
            raise _invalid("delegation_expires_at must be a positive number")
        obj["delegation_expires_at"] = math.floor(until)
    try:
        return canonical.jcs_sha256_b64u(obj)
    except CanonicalizationError as e:
        raise _invalid("scope-hash input has no canonical JSON form") from e


def token_hash_hex(compact: str) -> str:
    """Lowercase hex SHA-256 of the whole compact token: the revocation key."""
    return hashlib.sha256(compact.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopedToken:
    """A CST whose signature and claims were checked. Built only by :func:`mint_cst`,
    :func:`verify_cst` and :class:`TokenVerifier`.

    ``compact`` is a bearer secret: it is left out of ``repr`` (and so of ``str``, logs and
    tracebacks); log ``token_hash_hex`` instead. ``claims`` is a read-only view in which
    JSON arrays are tuples. ``aud`` and ``scope`` are normalized (sorted, de-duplicated).
    ``scope_hash_b64u`` is the hash recomputed from the claims.
    """

    compact: str = field(repr=False)
    claims: Mapping[str, Any] = field(repr=False, compare=False)
    token_hash_hex: str
    sub: str
    aud: tuple[str, ...]
    scope: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    kind: TokenKind
    scope_hash_b64u: str
    jti: str | None = None
    policy_hash_b64u: str | None = None
    mission_id: str | None = None
    request_hash_b64u: str | None = None

    def __post_init__(self) -> None:
        if not self.compact or not self.sub or not self.aud or not self.scope:
            raise ValueError("a scoped token needs its text, subject, audience and scope")
        if require_aware(self.issued_at) >= require_aware(self.expires_at):
            raise ValueError("a scoped token must expire after it was issued")
        if self.kind not in KINDS or (self.kind in JOB_BOUND_KINDS and not self.mission_id):
            raise ValueError("a job or break-glass token must name its job")
        if len(self.token_hash_hex) != 64 or not canonical.is_sha256_b64u(self.scope_hash_b64u):
            raise ValueError("token hash and scope hash must be SHA-256 values")


@dataclass(frozen=True, slots=True)
class _Signed:
    """Result of stages 1–5 (what :class:`TokenVerifier` caches)."""

    token: ScopedToken
    claimed_scope_hash: str
    iat: int
    exp: int
    delegation_expires_at: int | None


@functools.lru_cache(maxsize=64)
def _header_segment(kid: str) -> str:
    return canonical.b64u_encode(canonical.emission({"alg": ALGORITHM, "typ": "JWT", "kid": kid}))


# --- minting -------------------------------------------------------------------------


def mint_cst(
    signer: Signer,
    *,
    sub: str,
    audience: str | Sequence[str],
    scope: Sequence[str],
    now: datetime,
    ttl_seconds: int,
    policy_hash_b64u: str | None = None,
    mission_id: str | None = None,
    jti: str | None = None,
    kind: TokenKind = "job",
    extra: Mapping[str, Any] | None = None,
) -> ScopedToken:
    """Mint a CST signed by ``signer``; it always carries ``token_scope_hash_b64u``.

    Args:
        sub: the agent DID (or person id for break-glass), without surrounding spaces.
        audience: one audience, or several (stored normalized).
        scope: the tool routes the token allows (stored normalized).
        now: issue instant; ``iat`` is its whole second, ``exp`` = ``iat + ttl_seconds``.
        policy_hash_b64u: the WPC pin.
        mission_id: the job id; required for "job" and "breakglass" tokens.
        jti: the token id; random 128 bits when not given.
        kind: "runner" (may only ask for approval), "job" or "breakglass".
        extra: further optional claims from the list in the module docstring
            (``request_hash_b64u``, ``nonce``, owner/agent DIDs, …); ``None`` values are
            left out.

    Raises:
        TokenError: ``TOKEN_INVALID_CLAIMS`` when the claims would not verify (unknown or
            reserved ``extra`` keys, bad formats, empty scope, TTL ≤ 0, job without id).
        ValueError: ``now`` is naive.
    """
    now = require_aware(now)
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise _invalid("ttl_seconds must be a positive integer")
    if isinstance(scope, str):
        raise _invalid("scope must be a list of routes, not one string")
    iat = to_epoch(now)
    claims: dict[str, Any] = {
        "token_version": CST_VERSION,
        "sub": sub,
        "aud": audience if isinstance(audience, str) else _normalized(audience, "aud"),
        "scope": _normalized(scope, "scope"),
        "iat": iat,
        "exp": iat + ttl_seconds,
        "jti": jti if jti is not None else canonical.b64u_encode(secrets.token_bytes(16)),
        "kind": kind,
    }
    if mission_id is not None:
        claims["mission_id"] = mission_id
    if policy_hash_b64u is not None:
        claims["policy_hash_b64u"] = policy_hash_b64u
    for name, value in sorted((extra or {}).items()):
        if name in _MINT_RESERVED:
            raise _invalid(f"{name} is set by mint_cst's own arguments, not by extra")
        if value is not None:
            claims[name] = value
    scope_hash = token_scope_hash(claims)
    claims["token_scope_hash_b64u"] = scope_hash
    _validate_claims(claims)
    try:
        # The payload is signed exactly as shipped and nobody re-canonicalizes it, so any
        # JSON encoding will do; validated claims hold only text, safe integers and finite
        # numbers, and the C encoder is about 9x faster than canonical.emission here.
        payload = json.dumps(
            claims, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as e:  # UnicodeEncodeError: a lone surrogate
        raise _invalid("claims have no JSON form") from e
    signing_input = (
        _header_segment(key_id(signer.public_key)) + "." + canonical.b64u_encode(payload)
    )
    signature = signer.sign(signing_input.encode("ascii"))
    if len(signature) != 64:
        raise TokenError("TOKEN_SIGNATURE_INVALID", "the signer returned no Ed25519 signature")
    compact = signing_input + "." + canonical.b64u_encode(signature)
    return _signed(compact, claims, scope_hash=scope_hash).token


# --- verification, stages 1–5 ---------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _refuse_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_float=_finite_float,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _malformed(f"token {part} is not strict JSON") from e
    if not isinstance(value, dict):
        raise _malformed(f"token {part} is not a JSON object")
    return value


def _checked_text(compact: object) -> str:
    if not isinstance(compact, str) or not compact or len(compact) > MAX_TOKEN_CHARS:
        raise _malformed("a token is non-empty text of at most 8 KiB")
    if not compact.isascii():
        raise _malformed("a token is ASCII text")
    return compact


def _verify_signed(compact: object, issuer_keys: Mapping[str, bytes]) -> _Signed:
    text = _checked_text(compact)
    # 1. structure
    parts = text.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _malformed("a token is header.payload.signature")
    try:
        header_bytes, payload_bytes, signature = (canonical.b64u_decode(p) for p in parts)
    except CanonicalizationError as e:
        raise _malformed("token segments must be canonical unpadded base64url") from e
    header = _json_object(header_bytes, "header")
    if not set(header) <= _HEADER_PARAMS or "alg" not in header or header.get("typ") != "JWT":
        raise _malformed('the token header may only carry alg, typ "JWT" and kid')
    claims = _json_object(payload_bytes, "payload")
    # 2. algorithm
    if header["alg"] != ALGORITHM:
        raise TokenError("TOKEN_UNSUPPORTED_ALG", 'only alg "EdDSA" (Ed25519) is accepted')
    # 3. key
    kid = header.get("kid")
    key = issuer_keys.get(kid) if isinstance(kid, str) else None
    if not isinstance(key, bytes) or len(key) != 32 or key_id(key) != kid:
        raise TokenError("TOKEN_UNKNOWN_KID", "the token names no trusted issuer key")
    # 4. signature
    signing_input = text[: len(parts[0]) + 1 + len(parts[1])].encode("ascii")
    if not verify_signature(key, signing_input, signature):
        raise TokenError("TOKEN_SIGNATURE_INVALID", "the token signature does not verify")
    # 5. claims
    _validate_claims(claims)
    return _signed(text, claims)


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= _MAX_SAFE_INTEGER
    return isinstance(value, float) and math.isfinite(value)


def _epoch_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SAFE_INTEGER:
        raise _invalid(f"{name} must be integer epoch seconds")
    return value


def _text_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str) or not value or _js_trim(value) != value:
        raise _invalid(f"{name} must be non-empty text without surrounding spaces")
    return value


def _list_claim(value: object, name: str, *, allow_string: bool) -> None:
    items = [value] if allow_string and isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _invalid(f"{name} must be a non-empty list of strings")
    for item in items:
        if not isinstance(item, str) or not item or _js_trim(item) != item:
            raise _invalid(f"every {name} entry must be non-empty text without surrounding spaces")


def _validate_claims(claims: Mapping[str, Any]) -> None:
    """Stage 5: the claim set keyturn accepts (module docstring).

    Raises:
        TokenError: ``TOKEN_INVALID_CLAIMS``.
    """
    unknown = set(claims) - KNOWN_CLAIMS
    if unknown:
        raise _invalid(f"unknown claims: {', '.join(sorted(unknown))}")
    missing = [name for name in _REQUIRED if name not in claims]
    if missing:
        raise _invalid(f"missing claims: {', '.join(missing)}")
    if claims["token_version"] != CST_VERSION:
        raise _invalid('token_version must be "1"')
    sub = _text_claim(claims, "sub")
    _list_claim(claims["aud"], "aud", allow_string=True)
    _list_claim(claims["scope"], "scope", allow_string=False)
    if _epoch_claim(claims, "exp") <= _epoch_claim(claims, "iat"):
        raise _invalid("exp must be after iat")
    if claims["kind"] not in KINDS:
        raise _invalid("kind must be runner, job or breakglass")
    for name in _TEXT_CLAIMS:
        if name in claims:
            _text_claim(claims, name)
    for name in _DID_CLAIMS:
        if name in claims and not _DID_RE.match(_text_claim(claims, name)):
            raise _invalid(f"{name} must be a DID")
    for name in _HASH_CLAIMS:
        if name in claims and not canonical.is_sha256_b64u(claims[name]):
            raise _invalid(f"{name} must be an unpadded base64url SHA-256")
    if "spend_cap" in claims and (not _is_number(claims["spend_cap"]) or claims["spend_cap"] < 0):
        raise _invalid("spend_cap must be a finite number ≥ 0")
    minor = claims.get("delegation_spend_cap_minor")
    if minor is not None and not (isinstance(minor, str) and _DIGITS_RE.match(minor)):
        raise _invalid("delegation_spend_cap_minor must be a string of digits")
    if "delegation_expires_at" in claims and _epoch_claim(claims, "delegation_expires_at") <= 0:
        raise _invalid("delegation_expires_at must be a positive epoch second")
    if "delegate_did" in claims and claims["delegate_did"] != sub:
        raise _invalid("delegate_did must be the token subject")
    lane = claims.get("token_lane")
    if lane is not None and lane not in ("legacy", "canonical"):
        raise _invalid("token_lane must be legacy or canonical")
    chain = ("owner_did", "controller_did", "agent_did")
    if lane == "canonical" and not all(name in claims for name in chain):
        raise _invalid("a canonical-lane token needs owner_did, controller_did and agent_did")
    if claims["kind"] in JOB_BOUND_KINDS and "mission_id" not in claims:
        raise _invalid("a job or break-glass token must carry mission_id (its job id)")


def _signed(compact: str, claims: Mapping[str, Any], *, scope_hash: str | None = None) -> _Signed:
    """Build the verified value from claims that passed :func:`_validate_claims`."""
    frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in claims.items()}
    token = ScopedToken(
        compact=compact,
        claims=MappingProxyType(frozen),
        token_hash_hex=token_hash_hex(compact),
        sub=claims["sub"],
        aud=tuple(_normalized(claims["aud"], "aud")),
        scope=tuple(_normalized(claims["scope"], "scope")),
        issued_at=from_epoch(claims["iat"]),
        expires_at=from_epoch(claims["exp"]),
        kind=claims["kind"],
        scope_hash_b64u=scope_hash if scope_hash is not None else token_scope_hash(claims),
        jti=claims.get("jti"),
        policy_hash_b64u=claims.get("policy_hash_b64u"),
        mission_id=claims.get("mission_id"),
        request_hash_b64u=claims.get("request_hash_b64u"),
    )
    return _Signed(
        token=token,
        claimed_scope_hash=claims["token_scope_hash_b64u"],
        iat=claims["iat"],
        exp=claims["exp"],
        delegation_expires_at=claims.get("delegation_expires_at"),
    )


# --- verification, stages 6–11 --------------------------------------------------------


def _check_use(
    signed: _Signed,
    *,
    now: datetime,
    audience: str,
    required_scope: str | None,
    expected_policy_hash: str | None,
    expected_mission_id: str | None,
    expected_scope_hash: str | None,
    expected_kind: str | None,
    expected_request_hash: str | None,
    revocations: RevocationList | None,
    max_ttl_seconds: int | None,
) -> ScopedToken:
    token = signed.token
    now_s = to_epoch(now)
    # 6. time
    if signed.iat > now_s + IAT_SKEW_SECONDS:
        raise TokenError("TOKEN_NOT_YET_VALID", "the token was issued in the future")
    if signed.exp <= now_s:
        raise TokenError("TOKEN_EXPIRED", "the token has expired")
    if signed.delegation_expires_at is not None and signed.delegation_expires_at <= now_s:
        raise TokenError("TOKEN_EXPIRED", "the delegation behind the token has expired")
    if max_ttl_seconds is not None and signed.exp - signed.iat > max_ttl_seconds:
        raise TokenError("TOKEN_TTL_TOO_LONG", "the token lives longer than the policy allows")
    # 7. audience
    if not isinstance(audience, str) or audience not in token.aud:
        raise TokenError("TOKEN_BAD_AUDIENCE", "the token is not meant for this service")
    # 8. scope hash
    if not canonical.digests_equal(signed.claimed_scope_hash, token.scope_hash_b64u):
        raise TokenError("TOKEN_SCOPE_HASH_MISMATCH", "the scope hash does not match the claims")
    if expected_scope_hash is not None and not canonical.digests_equal(
        token.scope_hash_b64u, expected_scope_hash
    ):
        raise TokenError(
            "TOKEN_SCOPE_HASH_MISMATCH", "the scope is not the one approved for the job"
        )
    # 9. pins
    if expected_policy_hash is not None and (
        token.policy_hash_b64u is None
        or not canonical.digests_equal(token.policy_hash_b64u, expected_policy_hash)
    ):
        raise TokenError("TOKEN_POLICY_MISMATCH", "the token is not pinned to the active policy")
    if expected_mission_id is not None and token.mission_id != expected_mission_id:
        raise TokenError("TOKEN_JOB_MISMATCH", "the token belongs to another job")
    if expected_kind is not None and token.kind != expected_kind:
        raise TokenError("TOKEN_KIND_MISMATCH", f"a {token.kind} token cannot be used here")
    if expected_request_hash is not None and (
        token.request_hash_b64u is None
        or not canonical.digests_equal(token.request_hash_b64u, expected_request_hash)
    ):
        raise TokenError("TOKEN_REQUEST_MISMATCH", "the token was minted for another request")
    # 10. scope
    if required_scope is not None and required_scope not in token.scope:
        raise TokenError("TOKEN_INSUFFICIENT_SCOPE", "the token does not allow this route")
    # 11. revocation
    if revocations is not None and revocations.is_revoked(token.token_hash_hex):
        raise TokenError("TOKEN_REVOKED", "the token has been revoked")
    return token


def verify_cst(
    compact: object,
    *,
    issuer_keys: Mapping[str, bytes],
    now: datetime,
    audience: str,
    required_scope: str | None = None,
    expected_policy_hash: str | None = None,
    expected_mission_id: str | None = None,
    expected_scope_hash: str | None = None,
    expected_kind: str | None = None,
    expected_request_hash: str | None = None,
    revocations: RevocationList | None = None,
    max_ttl_seconds: int | None = None,
) -> ScopedToken:
    """Verify an untrusted compact token for one use, every stage, no cache.

    Args:
        compact: the token as presented (unverified).
        issuer_keys: ``kid`` → 32-byte Ed25519 public key of each trusted issuer.
        now: the instant at which time claims are judged.
        audience: this service's audience; the token's ``aud`` must contain it.
        required_scope: the route about to run; must be one of the token's scopes.
        expected_policy_hash: the active WPC hash; the token's pin must equal it.
        expected_mission_id: the job id; the token's ``mission_id`` must equal it.
        expected_scope_hash: the scope hash fixed when the job was approved.
        expected_kind: ``runner``, ``job`` or ``breakglass``.
        expected_request_hash: the approval request the token must have been minted for.
        revocations: consulted last, on every call.
        max_ttl_seconds: the longest ``exp − iat`` the policy allows.

    Raises:
        TokenError: with the reason code of the first failing stage (module docstring).
        ValueError: ``now`` is naive.
    """
    now = require_aware(now)
    return _check_use(
        _verify_signed(compact, issuer_keys),
        now=now,
        audience=audience,
        required_scope=required_scope,
        expected_policy_hash=expected_policy_hash,
        expected_mission_id=expected_mission_id,
        expected_scope_hash=expected_scope_hash,
        expected_kind=expected_kind,
        expected_request_hash=expected_request_hash,
        revocations=revocations,
        max_ttl_seconds=max_ttl_seconds,
    )


class CacheInfo(NamedTuple):
    """Counters of a :class:`TokenVerifier`: calls served from the cache (``hits``),
    calls that ran stages 1–5 (``misses``, failures included), entries held, bound."""

    hits: int
    misses: int
    size: int
    max_entries: int


class TokenVerifier:
    """Verifies CSTs for the gate, paying for the signature once per token.

    Stages 1–5 (structure, algorithm, key, signature, claims) depend only on the token
    text and the issuer keys, which are fixed at construction; their result is cached by
    token hash in a bounded LRU until the token expires. Stages 6–11 (time, audience,
    scope hash, pins, scope, revocation) run on every call: a revoked or expired token is
    refused even when cached. A token that fails stages 1–5, or whose scope hash does not
    match its claims, is never cached. Thread-safe. To rotate issuer keys, build a new
    verifier.
    """

    def __init__(self, issuer_keys: Mapping[str, bytes], *, max_entries: int = 10_000) -> None:
        """Hold the issuer keys (``kid`` → 32-byte public key) and an empty cache.

        Raises:
            ValueError: no keys, a key that is not 32 bytes, or a kid that is not the key's
                :func:`core.keys.key_id` (a misconfiguration must not start), or
                ``max_entries`` < 1.
        """
        keys: dict[str, bytes] = {}
        for kid, key in issuer_keys.items():
            if not isinstance(key, bytes) or len(key) != 32 or key_id(key) != kid:
                raise ValueError(f"issuer key {kid!r} is not a 32-byte Ed25519 key with that kid")
            keys[kid] = key
        if not keys:
            raise ValueError("a token verifier needs at least one issuer key")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._keys: Mapping[str, bytes] = MappingProxyType(keys)
        self._max_entries = max_entries
        self._cache: OrderedDict[str, _Signed] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def issuer_keys(self) -> Mapping[str, bytes]:
        return self._keys

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self._max_entries)

    def verify(
        self,
        compact: object,
        *,
        now: datetime,
        audience: str,
        required_scope: str | None = None,
        expected_policy_hash: str | None = None,
        expected_mission_id: str | None = None,
        expected_scope_hash: str | None = None,
        expected_kind: str | None = None,
        expected_request_hash: str | None = None,
        revocations: RevocationList | None = None,
        max_ttl_seconds: int | None = None,
    ) -> ScopedToken:
        """Same contract and order as :func:`verify_cst`.

        Raises:
            TokenError: with the reason code of the first failing stage.
            ValueError: ``now`` is naive.
        """
        now = require_aware(now)
        text = _checked_text(compact)
        digest = token_hash_hex(text)
        with self._lock:
            signed = self._cache.get(digest)
            if signed is not None and signed.token.compact == text:
                self._cache.move_to_end(digest)
                self._hits += 1
            else:
                signed = None
        if signed is None:
            with self._lock:
                self._misses += 1
            signed = _verify_signed(text, self._keys)  # the costly part, outside the lock
            # Admit only tokens that can still pass: a scope-hash mismatch never heals.
            if signed.exp > to_epoch(now) and canonical.digests_equal(
                signed.claimed_scope_hash, signed.token.scope_hash_b64u
            ):
                with self._lock:
                    self._cache[digest] = signed
                    while len(self._cache) > self._max_entries:
                        self._cache.popitem(last=False)
        elif signed.exp <= to_epoch(now):
            with self._lock:
                self._cache.pop(digest, None)  # expired: stop holding it
        return _check_use(
            signed,
            now=now,
            audience=audience,
            required_scope=required_scope,
            expected_policy_hash=expected_policy_hash,
            expected_mission_id=expected_mission_id,
            expected_scope_hash=expected_scope_hash,
            expected_kind=expected_kind,
            expected_request_hash=expected_request_hash,
            revocations=revocations,
            max_ttl_seconds=max_ttl_seconds,
        )
