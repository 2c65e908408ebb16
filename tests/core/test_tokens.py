"""Scoped tokens (CST): minting, the fixed verification order, and the threats they stop.

Stock PyJWT is used here as an independent oracle (it must read keyturn's tokens, and
keyturn must read its EdDSA tokens) and as the attacker's tool for forged headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from core import canonical
from core.errors import TokenError
from core.keys import SigningKey, key_id
from core.times import to_epoch
from core.tokens import (
    IAT_SKEW_SECONDS,
    KNOWN_CLAIMS,
    MAX_TOKEN_CHARS,
    ScopedToken,
    TokenVerifier,
    mint_cst,
    token_hash_hex,
    token_scope_hash,
    verify_cst,
)

NOW = datetime(2026, 11, 23, 10, 41, tzinfo=UTC)
KEY = SigningKey.from_seed(bytes(range(1, 33)))
OTHER = SigningKey.from_seed(bytes(range(100, 132)))
KEYS = {KEY.kid: KEY.public_key}
AUD = "keyturn-gate"
ROUTE = "github/repos/merge"
JOB = "job_01JDX8K2"
POLICY = canonical.sha256_b64u(b"wpc v1")
POLICY_B = canonical.sha256_b64u(b"wpc v2, weakened")
REQUEST = canonical.sha256_b64u(b"request 1")
AGENT = KEY.did
L = 2**252 + 27742317777372353535851937790883648493  # the Ed25519 group order


class SetRevocations:
    """A revocation list backed by a set; records which hashes it was asked about."""

    def __init__(self, *revoked: str) -> None:
        self.revoked = set(revoked)
        self.asked: list[str] = []

    def is_revoked(self, token_hash_hex: str) -> bool:
        self.asked.append(token_hash_hex)
        return token_hash_hex in self.revoked


def _mint(**kw: Any) -> ScopedToken:
    args: dict[str, Any] = {
        "sub": AGENT,
        "audience": AUD,
        "scope": [ROUTE, "github/repos/read"],
        "now": NOW,
        "ttl_seconds": 600,
        "policy_hash_b64u": POLICY,
        "mission_id": JOB,
    }
    args.update(kw)
    signer = args.pop("signer", KEY)
    return mint_cst(signer, **args)


def _claims(token: ScopedToken) -> dict[str, Any]:
    """The token's claims as plain JSON (lists, not tuples), for forging variants."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in token.claims.items()}


def _b64(data: bytes) -> str:
    return canonical.b64u_encode(data)


def _sign_raw(
    claims: Any, *, key: SigningKey = KEY, header: Any = None, payload: bytes | None = None
) -> str:
    """Sign arbitrary header/claims with a real key: a bug or a hostile issuer path."""
    head = header if header is not None else {"alg": "EdDSA", "typ": "JWT", "kid": key.kid}
    body = payload if payload is not None else json.dumps(claims).encode()
    signing_input = _b64(json.dumps(head).encode()) + "." + _b64(body)
    return signing_input + "." + _b64(key.sign(signing_input.encode()))


def _verify(compact: object, **kw: Any) -> ScopedToken:
    args: dict[str, Any] = {"issuer_keys": KEYS, "now": NOW, "audience": AUD}
    args.update(kw)
    return verify_cst(compact, **args)


def _code(compact: object, **kw: Any) -> str:
    with pytest.raises(TokenError) as exc:
        _verify(compact, **kw)
    return exc.value.reason_code


def _segments(compact: str) -> list[str]:
    return compact.split(".")


# --- minting and the format ------------------------------------------------------------


def test_minted_token_verifies_for_its_job_policy_and_route() -> None:
    token = _mint()
    verified = _verify(
        token.compact,
        required_scope=ROUTE,
        expected_policy_hash=POLICY,
        expected_mission_id=JOB,
        expected_scope_hash=token.scope_hash_b64u,
        expected_kind="job",
        revocations=SetRevocations(),
        max_ttl_seconds=600,
    )
    assert verified == token
    assert verified.sub == AGENT and verified.aud == (AUD,) and verified.kind == "job"
    assert verified.scope == ("github/repos/merge", "github/repos/read")
    assert verified.issued_at == NOW and verified.expires_at == NOW + timedelta(seconds=600)
    assert verified.policy_hash_b64u == POLICY and verified.mission_id == JOB


def test_header_is_exactly_eddsa_jwt_and_the_key_id() -> None:
    header = base64.urlsafe_b64decode(_segments(_mint().compact)[0] + "==")
    assert header == b'{"alg":"EdDSA","typ":"JWT","kid":"' + KEY.kid.encode() + b'"}'


def test_kid_is_the_first_16_hex_of_sha256_of_the_public_key() -> None:
    assert key_id(KEY.public_key) == hashlib.sha256(KEY.public_key).hexdigest()[:16]
    header = json.loads(base64.urlsafe_b64decode(_segments(_mint().compact)[0] + "=="))
    assert header["kid"] == hashlib.sha256(KEY.public_key).hexdigest()[:16]


def test_minted_token_always_carries_its_recomputable_scope_hash() -> None:
    token = _mint(scope=["b/route", " a/route", "b/route"])
    assert token.claims["token_scope_hash_b64u"] == token_scope_hash(token.claims)
    assert token.claims["scope"] == ("a/route", "b/route")  # stored normalized
    assert token.scope_hash_b64u == token.claims["token_scope_hash_b64u"]


def test_revocation_key_is_lowercase_hex_sha256_of_the_compact_token() -> None:
    token = _mint()
    assert token.token_hash_hex == hashlib.sha256(token.compact.encode()).hexdigest()
    assert token_hash_hex(token.compact) == token.token_hash_hex
    assert token.token_hash_hex == token.token_hash_hex.lower()


def test_stock_pyjwt_reads_keyturn_tokens() -> None:
    token = _mint()
    decoded = jwt.decode(
        token.compact,
        Ed25519PublicKey.from_public_bytes(KEY.public_key),
        algorithms=["EdDSA"],
        audience=AUD,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded == _claims(token)
    assert jwt.get_unverified_header(token.compact) == {
        "alg": "EdDSA",
        "typ": "JWT",
        "kid": KEY.kid,
    }


def test_keyturn_reads_tokens_minted_by_stock_pyjwt() -> None:
    claims = _claims(_mint())
    private = Ed25519PrivateKey.from_private_bytes(KEY.seed())
    compact = jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": KEY.kid})
    assert _verify(compact, expected_mission_id=JOB).claims["jti"] == claims["jti"]


def test_jti_is_random_unless_given() -> None:
    assert _mint().jti != _mint().jti
    assert _mint(jti="fixed-jti").jti == "fixed-jti"


def test_extra_claims_are_signed_and_none_values_left_out() -> None:
    token = _mint(extra={"request_hash_b64u": REQUEST, "nonce": None, "owner_ref": "acme"})
    assert token.request_hash_b64u == REQUEST and token.claims["owner_ref"] == "acme"
    assert "nonce" not in token.claims
    assert _verify(token.compact, expected_request_hash=REQUEST) == token


@pytest.mark.parametrize(
    "kw",
    [
        {"extra": {"scope": ["*"]}},
        {"extra": {"token_scope_hash_b64u": POLICY}},
        {"extra": {"exp": 99999999999}},
        {"extra": {"role": "admin"}},
        {"extra": {"iss": "someone"}},
        {"extra": {"owner_did": "not a did"}},
        {"ttl_seconds": 0},
        {"ttl_seconds": -5},
        {"ttl_seconds": True},
        {"scope": []},
        {"scope": ROUTE},
        {"scope": ["  ", ""]},
        {"sub": ""},
        {"sub": " did:key:padded"},
        {"mission_id": None},
        {"kind": "admin"},
        {"policy_hash_b64u": "not-a-hash"},
        {"jti": "lone \ud800 surrogate"},
    ],
)
def test_mint_refuses_claims_that_would_not_verify(kw: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as exc:
        _mint(**kw)
    assert exc.value.reason_code == "TOKEN_INVALID_CLAIMS"


def test_mint_refuses_a_naive_clock() -> None:
    with pytest.raises(ValueError, match="naive"):
        _mint(now=datetime(2026, 11, 23, 10, 41))


def test_runner_token_needs_no_job_but_a_job_token_does() -> None:
    runner = _mint(kind="runner", mission_id=None, scope=["keyturn/requests/create"])
    assert runner.kind == "runner" and runner.mission_id is None
    with pytest.raises(TokenError):
        _mint(kind="breakglass", mission_id=None)


# --- threats ---------------------------------------------------------------------------


def test_token_replayed_in_another_job_is_refused() -> None:
    token = _mint(mission_id="job_A")
    assert _code(token.compact, expected_mission_id="job_B") == "TOKEN_JOB_MISMATCH"


def test_runner_token_without_a_job_cannot_stand_in_for_a_job_token() -> None:
    runner = _mint(kind="runner", mission_id=None)
    assert _code(runner.compact, expected_mission_id=JOB) == "TOKEN_JOB_MISMATCH"
    assert _code(runner.compact, expected_kind="job") == "TOKEN_KIND_MISMATCH"


def test_policy_drift_is_refused_by_the_pin() -> None:
    token = _mint(policy_hash_b64u=POLICY)
    assert _code(token.compact, expected_policy_hash=POLICY_B) == "TOKEN_POLICY_MISMATCH"


def test_unpinned_token_is_refused_when_a_pin_is_expected() -> None:
    token = _mint(policy_hash_b64u=None)
    assert _code(token.compact, expected_policy_hash=POLICY) == "TOKEN_POLICY_MISMATCH"


def test_widened_scope_keeping_the_original_scope_hash_is_refused() -> None:
    claims = _claims(_mint())
    claims["scope"] = [*claims["scope"], "aws/iam/attach-admin-policy"]
    assert _code(_sign_raw(claims)) == "TOKEN_SCOPE_HASH_MISMATCH"


def test_reissued_wider_token_does_not_match_the_scope_hash_fixed_at_approval() -> None:
    approved = _mint()
    wider = _mint(scope=[ROUTE, "github/repos/read", "github/repos/delete"])
    assert _code(wider.compact, expected_scope_hash=approved.scope_hash_b64u) == (
        "TOKEN_SCOPE_HASH_MISMATCH"
    )


def test_reissued_token_with_the_same_scope_still_matches_the_approved_scope_hash() -> None:
    approved = _mint()
    later = _mint(now=NOW + timedelta(minutes=5), ttl_seconds=300, jti="second")
    assert later.compact != approved.compact
    assert (
        _verify(
            later.compact,
            now=NOW + timedelta(minutes=6),
            expected_scope_hash=approved.scope_hash_b64u,
        )
        == later
    )


def test_alg_none_is_refused() -> None:
    compact = jwt.encode(_claims(_mint()), "", algorithm="none", headers={"kid": KEY.kid})
    assert _code(compact) == "TOKEN_UNSUPPORTED_ALG"


@pytest.mark.parametrize(
    "secret",
    [KEY.public_key, KEY.did, canonical.b64u_encode(KEY.public_key)],
    ids=["raw-key", "did", "b64u-key"],
)
def test_hs256_with_the_public_key_as_secret_is_refused(secret: bytes | str) -> None:
    claims = _claims(_mint())
    compact = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": KEY.kid})
    assert _code(compact) == "TOKEN_UNSUPPORTED_ALG"


@pytest.mark.parametrize(
    "alg",
    [
        "HS256",
        "HS512",
        "RS256",
        "PS256",
        "ES256",
        "Ed25519",
        "ed25519",
        "eddsa",
        "EdDSA ",
        "none",
        "NONE",
        "",
        None,
        1,
        ["EdDSA"],
    ],
)
def test_every_algorithm_but_eddsa_is_refused_even_with_a_valid_ed25519_signature(
    alg: object,
) -> None:
    # The RFC 9864 name "Ed25519" is refused on purpose (see core.tokens docstring).
    compact = _sign_raw(_claims(_mint()), header={"alg": alg, "typ": "JWT", "kid": KEY.kid})
    assert _code(compact) == "TOKEN_UNSUPPORTED_ALG"


def test_token_from_an_unknown_issuer_is_refused() -> None:
    assert _code(_mint(signer=OTHER).compact) == "TOKEN_UNKNOWN_KID"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "typ": "JWT"},
        {"alg": "EdDSA", "typ": "JWT", "kid": 7},
        {"alg": "EdDSA", "typ": "JWT", "kid": "0000000000000000"},
    ],
    ids=["missing", "not-text", "unknown"],
)
def test_token_without_a_known_kid_is_refused(header: dict[str, Any]) -> None:
    assert _code(_sign_raw(_claims(_mint()), header=header)) == "TOKEN_UNKNOWN_KID"


def test_misconfigured_key_map_refuses_rather_than_trusting_the_wrong_key() -> None:
    token = _mint(signer=OTHER)
    assert _code(token.compact, issuer_keys={KEY.kid: OTHER.public_key}) == "TOKEN_UNKNOWN_KID"
    with pytest.raises(ValueError, match="kid"):
        TokenVerifier({KEY.kid: OTHER.public_key})


def test_attacker_key_under_the_issuers_kid_is_a_bad_signature() -> None:
    forged = _sign_raw(
        _claims(_mint()), key=OTHER, header={"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid}
    )
    assert _code(forged) == "TOKEN_SIGNATURE_INVALID"


def test_token_is_expired_at_exactly_exp() -> None:
    token = _mint(ttl_seconds=600)
    assert _code(token.compact, now=token.expires_at) == "TOKEN_EXPIRED"
    assert _code(token.compact, now=token.expires_at + timedelta(days=1)) == "TOKEN_EXPIRED"
    assert _verify(token.compact, now=token.expires_at - timedelta(seconds=1)) == token
    assert _verify(token.compact, now=token.expires_at - timedelta(microseconds=1)) == token


def test_token_issued_in_the_future_beyond_the_skew_is_refused() -> None:
    token = _mint()
    early = token.issued_at - timedelta(seconds=IAT_SKEW_SECONDS + 1)
    assert _code(token.compact, now=early) == "TOKEN_NOT_YET_VALID"
    assert _verify(token.compact, now=token.issued_at - timedelta(seconds=IAT_SKEW_SECONDS))


def test_token_living_longer_than_the_policy_allows_is_refused() -> None:
    token = _mint(ttl_seconds=3600)
    assert _code(token.compact, max_ttl_seconds=1800) == "TOKEN_TTL_TOO_LONG"
    assert _verify(token.compact, max_ttl_seconds=3600) == token


def test_expired_delegation_expires_the_token() -> None:
    token = _mint(extra={"delegation_expires_at": to_epoch(NOW) + 60})
    assert _verify(token.compact) == token
    assert _code(token.compact, now=NOW + timedelta(seconds=60)) == "TOKEN_EXPIRED"


def test_token_for_another_audience_is_refused() -> None:
    token = _mint(audience="another-service")
    assert _code(token.compact) == "TOKEN_BAD_AUDIENCE"
    assert _code(_mint().compact, audience="") == "TOKEN_BAD_AUDIENCE"


def test_token_may_name_several_audiences() -> None:
    token = _mint(audience=["other", AUD, AUD])
    assert token.aud == (AUD, "other")
    assert _verify(token.compact) == token


def test_route_outside_the_scope_is_refused_without_wildcards() -> None:
    token = _mint(scope=["github/repos/read"])
    assert _code(token.compact, required_scope=ROUTE) == "TOKEN_INSUFFICIENT_SCOPE"
    star = _mint(scope=["*"])
    assert _code(star.compact, required_scope=ROUTE) == "TOKEN_INSUFFICIENT_SCOPE"


def test_token_minted_for_another_request_is_refused() -> None:
    token = _mint(extra={"request_hash_b64u": REQUEST})
    other = canonical.sha256_b64u(b"request 2")
    assert _code(token.compact, expected_request_hash=other) == "TOKEN_REQUEST_MISMATCH"
    assert _code(_mint().compact, expected_request_hash=REQUEST) == "TOKEN_REQUEST_MISMATCH"


def test_revoked_token_is_refused() -> None:
    token = _mint()
    revocations = SetRevocations(token.token_hash_hex)
    assert _code(token.compact, revocations=revocations) == "TOKEN_REVOKED"
    assert revocations.asked == [token.token_hash_hex]


def test_tampered_payload_is_refused() -> None:
    token = _mint()
    head, _, sig = _segments(token.compact)
    claims = _claims(token)
    claims["scope"] = ["aws/iam/attach-admin-policy"]
    forged_payload = _b64(json.dumps(claims).encode())
    assert _code(f"{head}.{forged_payload}.{sig}") == "TOKEN_SIGNATURE_INVALID"


def test_payload_transplanted_from_another_token_is_refused() -> None:
    mine, theirs = _mint(mission_id="job_A"), _mint(mission_id="job_B")
    head, _, sig = _segments(mine.compact)
    assert _code(f"{head}.{_segments(theirs.compact)[1]}.{sig}") == "TOKEN_SIGNATURE_INVALID"


@pytest.mark.parametrize("cut", [1, 10, 63])
def test_tampered_or_truncated_signature_is_refused(cut: int) -> None:
    head, body, sig = _segments(_mint().compact)
    raw = bytearray(canonical.b64u_decode(sig))
    raw[cut] ^= 0x01
    assert _code(f"{head}.{body}.{_b64(bytes(raw))}") == "TOKEN_SIGNATURE_INVALID"
    assert _code(f"{head}.{body}.{_b64(bytes(raw[:cut]))}") == "TOKEN_SIGNATURE_INVALID"


# A revoked token must not come back under another spelling: the revocation key is the
# hash of the exact text, so every alternative spelling of a valid token is refused.


def test_padded_signature_segment_cannot_evade_revocation() -> None:
    token = _mint()
    assert _code(token.compact + "==") == "TOKEN_MALFORMED"


def test_non_canonical_base64_signature_cannot_evade_revocation() -> None:
    head, body, sig = _segments(_mint().compact)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    respelled = sig[:-1] + alphabet[(last & 0b110000) | 0b0001]  # same bytes, junk low bits
    assert canonical.b64u_decode(sig) == base64.urlsafe_b64decode(respelled + "==")
    assert _code(f"{head}.{body}.{respelled}") == "TOKEN_MALFORMED"


def test_malleated_signature_s_plus_l_cannot_evade_revocation() -> None:
    head, body, sig = _segments(_mint().compact)
    raw = canonical.b64u_decode(sig)
    s = int.from_bytes(raw[32:], "little")
    malleated = raw[:32] + (s + L).to_bytes(32, "little")
    assert _code(f"{head}.{body}.{_b64(malleated)}") == "TOKEN_SIGNATURE_INVALID"


_TOKEN_FOR_MUTATION = _mint()


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), char=st.sampled_from("AQgw_-09=.!aZ"))
def test_no_one_character_change_of_a_token_verifies(position: int, char: str) -> None:
    compact = _TOKEN_FOR_MUTATION.compact
    index = position % len(compact)
    mutated = compact[:index] + char + compact[index + 1 :]
    if mutated == compact:
        return
    with pytest.raises(TokenError):
        _verify(mutated)


# --- structure and claims ------------------------------------------------------------


@pytest.mark.parametrize(
    "compact",
    [
        None,
        b"bytes.are.not.text",
        123,
        "",
        "only.two",
        "a.b.c.d",
        "x" * (MAX_TOKEN_CHARS + 1),
        "ëyJ.eyJ.sig",
        ".eyJhIjoxfQ.",
        "eyJhbGciOiJFZERTQSJ9..",
    ],
    ids=[
        "none",
        "bytes",
        "int",
        "empty",
        "two-parts",
        "four-parts",
        "too-long",
        "non-ascii",
        "empty-header",
        "empty-payload",
    ],
)
def test_structurally_broken_tokens_are_malformed(compact: object) -> None:
    assert _code(compact) == "TOKEN_MALFORMED"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid, "jku": "https://evil.example/jwks"},
        {"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid, "jwk": {"kty": "OKP"}},
        {"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid, "crit": ["exp"]},
        {"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid, "b64": False},
        {"alg": "EdDSA", "kid": KEY.kid},
        {"alg": "EdDSA", "typ": "at+jwt", "kid": KEY.kid},
        {"typ": "JWT", "kid": KEY.kid},
        ["EdDSA"],
    ],
    ids=["jku", "jwk", "crit", "b64", "no-typ", "other-typ", "no-alg", "array"],
)
def test_header_with_anything_but_alg_typ_kid_is_malformed(header: Any) -> None:
    assert _code(_sign_raw(_claims(_mint()), header=header)) == "TOKEN_MALFORMED"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"sub":"a","sub":"b"}',
        b'{"spend_cap":NaN}',
        b'{"spend_cap":1e400}',
        b"[1,2]",
        b"\xff\xfe",
        b"\xef\xbb\xbf{}",
        b"not json",
    ],
    ids=["duplicate-keys", "nan", "infinite", "array", "not-utf8", "bom", "text"],
)
def test_signed_but_non_strict_json_payload_is_malformed(payload: bytes) -> None:
    # Signed by the real issuer key: strictness must not depend on the signature.
    assert _code(_sign_raw(None, payload=payload)) == "TOKEN_MALFORMED"


_DROP = object()


def _with(**changes: Any) -> dict[str, Any]:
    claims = _claims(_mint())
    for name, value in changes.items():
        if value is _DROP:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


@pytest.mark.parametrize(
    "changes",
    [
        *(
            {name: _DROP}
            for name in (
                "token_version",
                "sub",
                "aud",
                "scope",
                "iat",
                "exp",
                "token_scope_hash_b64u",
                "kind",
            )
        ),
        {"role": "admin"},
        {"iss": "https://elsewhere"},
        {"token_version": "2"},
        {"token_version": 1},
        {"sub": ""},
        {"sub": " padded"},
        {"sub": 5},
        {"aud": []},
        {"aud": ""},
        {"aud": [1]},
        {"aud": [" a"]},
        {"scope": []},
        {"scope": ROUTE},
        {"scope": [""]},
        {"iat": 1.5},
        {"iat": True},
        {"iat": "1795430460"},
        {"iat": -1},
        {"exp": 2**60},
        {"exp": to_epoch(NOW)},
        {"kind": "admin"},
        {"mission_id": _DROP},
        {"mission_id": ""},
        {"policy_hash_b64u": "abc"},
        {"policy_hash_b64u": "B" * 43},
        {"owner_did": "not-a-did"},
        {"spend_cap": -1},
        {"spend_cap": True},
        {"spend_cap": "5"},
        {"delegation_spend_cap_minor": "12a"},
        {"delegation_expires_at": 0},
        {"delegate_did": OTHER.did},
        {"token_lane": "canonical"},
        {"token_lane": "fast"},
        {"jti": ""},
        {"nonce": 7},
    ],
    ids=lambda c: ",".join(f"{k}={'DROP' if v is _DROP else v!r}" for k, v in c.items()),
)
def test_signed_token_with_invalid_claims_is_refused(changes: dict[str, Any]) -> None:
    assert _code(_sign_raw(_with(**changes))) == "TOKEN_INVALID_CLAIMS"


def test_known_claims_are_the_claw_schema_plus_keyturns_own() -> None:
    claw = {
        "token_version",
        "sub",
        "owner_ref",
        "owner_did",
        "controller_did",
        "agent_did",
        "aud",
        "scope",
        "policy_hash_b64u",
        "control_plane_policy_hash_b64u",
        "token_scope_hash_b64u",
        "payment_account_did",
        "spend_cap",
        "mission_id",
        "delegation_id",
        "delegator_did",
        "delegate_did",
        "delegation_policy_hash_b64u",
        "delegation_spend_cap_minor",
        "delegation_expires_at",
        "token_lane",
        "jti",
        "iat",
        "exp",
        "nonce",
    }
    assert claw | {"kind", "request_hash_b64u"} == KNOWN_CLAIMS


def test_canonical_lane_with_its_control_chain_is_accepted() -> None:
    token = _mint(
        extra={
            "token_lane": "canonical",
            "owner_did": OTHER.did,
            "controller_did": OTHER.did,
            "agent_did": AGENT,
            "delegate_did": AGENT,
        }
    )
    assert _verify(token.compact).claims["token_lane"] == "canonical"


# --- the order of checks ---------------------------------------------------------------


def test_check_order_first_failure_wins() -> None:
    token = _mint(ttl_seconds=3600)
    revocations = SetRevocations(token.token_hash_hex)
    failing: dict[str, Any] = {
        "now": token.expires_at,
        "audience": "elsewhere",
        "expected_scope_hash": POLICY,
        "expected_policy_hash": POLICY_B,
        "expected_mission_id": "job_other",
        "expected_kind": "runner",
        "expected_request_hash": REQUEST,
        "required_scope": "aws/iam/attach",
        "revocations": revocations,
    }
    expected = [
        ("now", "TOKEN_EXPIRED"),
        ("audience", "TOKEN_BAD_AUDIENCE"),
        ("expected_scope_hash", "TOKEN_SCOPE_HASH_MISMATCH"),
        ("expected_policy_hash", "TOKEN_POLICY_MISMATCH"),
        ("expected_mission_id", "TOKEN_JOB_MISMATCH"),
        ("expected_kind", "TOKEN_KIND_MISMATCH"),
        ("expected_request_hash", "TOKEN_REQUEST_MISMATCH"),
        ("required_scope", "TOKEN_INSUFFICIENT_SCOPE"),
        ("revocations", "TOKEN_REVOKED"),
    ]
    for name, code in expected:
        assert _code(token.compact, **failing) == code
        failing.pop(name)
        if name != "revocations":
            assert revocations.asked == []  # revocation is consulted last, only when needed
    assert _verify(token.compact, **failing) == token


def test_time_is_judged_before_audience_and_claims_before_time() -> None:
    claims = _with(kind="admin")
    assert _code(_sign_raw(claims), now=NOW + timedelta(days=9)) == "TOKEN_INVALID_CLAIMS"
    expired = _mint()
    assert _code(expired.compact, now=expired.expires_at, audience="x") == "TOKEN_EXPIRED"


def test_signature_is_judged_before_claims() -> None:
    assert _code(
        _sign_raw(
            _with(kind="admin"), key=OTHER, header={"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid}
        )
    ) == ("TOKEN_SIGNATURE_INVALID")


# --- the scope hash --------------------------------------------------------------------


def test_scope_hash_matches_a_hand_built_jcs_vector() -> None:
    claims = {
        "token_version": "1",
        "sub": "  did:key:z6MkAgent\u3000",
        "aud": "gate",
        "scope": ["b/route", "a/route", "a/route", "  "],
        "mission_id": "job_1",
        "owner_ref": "",
        "iat": 1,
        "exp": 2,
        "jti": "x",
        "nonce": "n",
        "kind": "job",
        "request_hash_b64u": REQUEST,
    }
    jcs = (
        b'{"aud":["gate"],"mission_id":"job_1","scope":["a/route","b/route"],'
        b'"sub":"did:key:z6MkAgent","token_version":"1"}'
    )
    assert token_scope_hash(claims) == canonical.sha256_b64u(jcs)


def test_scope_hash_sorts_like_javascript_by_utf16_code_units() -> None:
    # U+1F600 is the surrogate pair D83D DE00, which sorts before U+E000 in UTF-16.
    claims = {"sub": "s", "aud": "gate", "scope": ["\ue000", "\U0001f600"]}
    jcs = '{"aud":["gate"],"scope":["\U0001f600","\ue000"],"sub":"s","token_version":"1"}'
    assert token_scope_hash(claims) == canonical.sha256_b64u(jcs.encode())


def test_scope_hash_trims_like_javascript() -> None:
    base = {"aud": "gate", "scope": ["r"]}
    plain = token_scope_hash({**base, "sub": "alice"})
    assert token_scope_hash({**base, "sub": "\ufeff\u00a0alice\u2028"}) == plain
    assert token_scope_hash({**base, "sub": "\x1calice"}) != plain  # JS keeps U+001C


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("owner_ref", "owner-attestation"),
        ("owner_did", OTHER.did),
        ("controller_did", OTHER.did),
        ("agent_did", OTHER.did),
        ("policy_hash_b64u", POLICY_B),
        ("control_plane_policy_hash_b64u", POLICY_B),
        ("payment_account_did", OTHER.did),
        ("spend_cap", 0),
        ("mission_id", "job_other"),
        ("delegation_id", "dlg_1"),
        ("delegator_did", OTHER.did),
        ("delegate_did", AGENT),
        ("delegation_policy_hash_b64u", POLICY_B),
        ("delegation_spend_cap_minor", "1000"),
        ("delegation_expires_at", 1795430460),
        ("sub", "did:key:z6MkOther"),
        ("aud", ["gate", "other"]),
        ("scope", ["r", "s"]),
    ],
)
def test_every_authorization_claim_changes_the_scope_hash(name: str, value: Any) -> None:
    base = {"token_version": "1", "sub": AGENT, "aud": "gate", "scope": ["r"]}
    assert token_scope_hash({**base, name: value}) != token_scope_hash(base)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iat", 5),
        ("exp", 6),
        ("jti", "another"),
        ("nonce", "another"),
        ("kind", "runner"),
        ("request_hash_b64u", REQUEST),
        ("token_lane", "legacy"),
        ("token_scope_hash_b64u", POLICY),
        ("owner_ref", ""),
        ("mission_id", "   "),
    ],
)
def test_issue_details_and_empty_claims_leave_the_scope_hash_alone(name: str, value: Any) -> None:
    base = {"token_version": "1", "sub": AGENT, "aud": "gate", "scope": ["r"]}
    assert token_scope_hash({**base, name: value}) == token_scope_hash(base)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "gate", "scope": ["r"]},
        {"sub": 5, "aud": "gate", "scope": ["r"]},
        {"sub": "s", "scope": ["r"]},
        {"sub": "s", "aud": "gate", "scope": [1]},
        {"sub": "s", "aud": "gate", "scope": ["r"], "owner_did": 5},
        {"sub": "s", "aud": "gate", "scope": ["r"], "spend_cap": -1},
        {"sub": "s", "aud": "gate", "scope": ["r"], "spend_cap": float("nan")},
        {"sub": "s", "aud": "gate", "scope": ["r"], "token_version": "2"},
        {"sub": "\ud800", "aud": "gate", "scope": ["r"]},
    ],
)
def test_scope_hash_refuses_claims_of_the_wrong_type(claims: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as exc:
        token_scope_hash(claims)
    assert exc.value.reason_code == "TOKEN_INVALID_CLAIMS"


_ROUTES = st.lists(
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(routes=_ROUTES, data=st.data())
def test_scope_hash_ignores_order_and_duplicates_of_scope_entries(
    routes: list[str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(routes + routes[: data.draw(st.integers(0, 3))]))
    a = {"sub": AGENT, "aud": ["gate", "x"], "scope": routes}
    b = {"sub": AGENT, "aud": ["x", "gate", "gate"], "scope": shuffled}
    assert token_scope_hash(a) == token_scope_hash(b)


@settings(max_examples=50, deadline=None)
@given(
    offset=st.integers(min_value=0, max_value=10**6),
    ttl=st.integers(min_value=1, max_value=86_400),
    jti=st.text(alphabet="abcdefghijklmnop0123456789_-", min_size=1, max_size=22),
    nonce=st.one_of(st.none(), st.text(alphabet="xyz123", min_size=1, max_size=8)),
)
def test_scope_hash_is_stable_across_reissue(offset: int, ttl: int, jti: str, nonce: str) -> None:
    approved = _mint()
    later = _mint(
        now=NOW + timedelta(seconds=offset), ttl_seconds=ttl, jti=jti, extra={"nonce": nonce}
    )
    assert later.scope_hash_b64u == approved.scope_hash_b64u
    assert (
        _verify(later.compact, now=later.issued_at, expected_scope_hash=approved.scope_hash_b64u)
        == later
    )


# --- secrets stay secret ---------------------------------------------------------------


def test_repr_never_shows_the_compact_token() -> None:
    token = _mint()
    _, body, sig = _segments(token.compact)
    for text in (repr(token), str(token), f"{token!r}", f"{token}"):
        assert token.compact not in text and sig not in text and body not in text
    assert token.token_hash_hex in repr(token)


def test_refusals_never_echo_the_token() -> None:
    token = _mint()
    sig = _segments(token.compact)[2]
    cases: list[dict[str, Any]] = [
        {"audience": "x"},
        {"now": token.expires_at},
        {"issuer_keys": {}},
    ]
    for kw in cases:
        with pytest.raises(TokenError) as exc:
            _verify(token.compact, **kw)
        assert sig not in str(exc.value) and sig not in exc.value.message


# --- the caching verifier ------------------------------------------------------------


def test_cached_token_that_is_then_revoked_is_refused() -> None:
    verifier = TokenVerifier(KEYS)
    token = _mint()
    revocations = SetRevocations()
    assert verifier.verify(token.compact, now=NOW, audience=AUD, revocations=revocations) == token
    revocations.revoked.add(token.token_hash_hex)
    with pytest.raises(TokenError) as exc:
        verifier.verify(token.compact, now=NOW, audience=AUD, revocations=revocations)
    assert exc.value.reason_code == "TOKEN_REVOKED"
    assert verifier.cache_info().hits == 1  # refused although it came from the cache


def test_cached_token_is_refused_once_expired_and_dropped() -> None:
    verifier = TokenVerifier(KEYS)
    token = _mint()
    verifier.verify(token.compact, now=NOW, audience=AUD)
    assert verifier.cache_info().size == 1
    with pytest.raises(TokenError) as exc:
        verifier.verify(token.compact, now=token.expires_at, audience=AUD)
    assert exc.value.reason_code == "TOKEN_EXPIRED"
    assert verifier.cache_info().size == 0


_SCENARIOS: list[tuple[dict[str, Any], str]] = [
    ({"audience": "elsewhere"}, "TOKEN_BAD_AUDIENCE"),
    ({"expected_mission_id": "job_other"}, "TOKEN_JOB_MISMATCH"),
    ({"expected_policy_hash": POLICY_B}, "TOKEN_POLICY_MISMATCH"),
    ({"expected_scope_hash": POLICY_B}, "TOKEN_SCOPE_HASH_MISMATCH"),
    ({"required_scope": "aws/iam/attach"}, "TOKEN_INSUFFICIENT_SCOPE"),
    ({"expected_kind": "breakglass"}, "TOKEN_KIND_MISMATCH"),
    ({"max_ttl_seconds": 60}, "TOKEN_TTL_TOO_LONG"),
    ({"now": NOW - timedelta(hours=1)}, "TOKEN_NOT_YET_VALID"),
]


@pytest.mark.parametrize(("kw", "code"), _SCENARIOS)
def test_cached_token_is_still_checked_for_each_use(kw: dict[str, Any], code: str) -> None:
    verifier = TokenVerifier(KEYS)
    token = _mint()
    verifier.verify(token.compact, now=NOW, audience=AUD)
    args: dict[str, Any] = {"now": NOW, "audience": AUD, **kw}
    with pytest.raises(TokenError) as exc:
        verifier.verify(token.compact, **args)
    assert exc.value.reason_code == code == _code(token.compact, **kw)
    assert verifier.cache_info().hits == 1


def test_failed_verification_is_not_cached() -> None:
    verifier = TokenVerifier(KEYS)
    head, _, sig = _segments(_mint().compact)
    claims = _with(scope=["widened"])
    for bad in (f"{head}.{_b64(json.dumps(claims).encode())}.{sig}", _sign_raw(claims)):
        with pytest.raises(TokenError):
            verifier.verify(bad, now=NOW, audience=AUD)
    info = verifier.cache_info()
    assert info.size == 0 and info.misses == 2 and info.hits == 0


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    verifier = TokenVerifier(KEYS, max_entries=2)
    first, second, third = (_mint(jti=f"t{i}") for i in range(3))
    for token in (first, second, first, third):
        verifier.verify(token.compact, now=NOW, audience=AUD)
    assert verifier.cache_info().size == 2
    verifier.verify(first.compact, now=NOW, audience=AUD)  # recently used: still cached
    verifier.verify(second.compact, now=NOW, audience=AUD)  # evicted: verified again
    assert verifier.cache_info() == (2, 4, 2, 2)


def test_verifier_refuses_to_start_without_a_usable_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TokenVerifier({})
    with pytest.raises(ValueError, match="32-byte"):
        TokenVerifier({KEY.kid: KEY.public_key[:31]})
    with pytest.raises(ValueError, match="max_entries"):
        TokenVerifier(KEYS, max_entries=0)


def test_verifier_only_trusts_its_own_keys() -> None:
    verifier = TokenVerifier(KEYS)
    with pytest.raises(TokenError) as exc:
        verifier.verify(_mint(signer=OTHER).compact, now=NOW, audience=AUD)
    assert exc.value.reason_code == "TOKEN_UNKNOWN_KID"


def test_concurrent_verification_counts_every_call() -> None:
    verifier = TokenVerifier(KEYS, max_entries=4)
    tokens = [_mint(jti=f"c{i}") for i in range(6)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                for token in tokens:
                    assert verifier.verify(token.compact, now=NOW, audience=AUD) == token
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    info = verifier.cache_info()
    assert errors == [] and info.hits + info.misses == 4 * 50 * 6 and info.size <= 4


def test_hmac_forgery_with_the_verifiers_key_bytes_is_refused_by_the_cache_too() -> None:
    verifier = TokenVerifier(KEYS)
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KEY.kid}).encode())
    body = _b64(json.dumps(_claims(_mint())).encode())
    mac = hmac.new(KEY.public_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError) as exc:
        verifier.verify(f"{head}.{body}.{_b64(mac)}", now=NOW, audience=AUD)
    assert exc.value.reason_code == "TOKEN_UNSUPPORTED_ALG"
