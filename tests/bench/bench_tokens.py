"""Scoped tokens: mint, cold verify and cached verify, next to REF measured in the same run.

REF (LIMITS.md §0) = RFC 8785 JCS of a ~1 KiB payload + SHA-256 + one Ed25519 sign,
built from the ``rfc8785`` package (not keyturn's fast path), ``hashlib`` and
``core.keys.SigningKey``. The
context rows show the floor under a cold verify (one libsodium verify) and what stock
PyJWT costs for the same token, which is why ``core.tokens`` does not decode through it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.api_jws import PyJWS
from jwt.types import Options

from core import canonical
from core.keys import SigningKey, verify_signature
from core.tokens import ScopedToken, TokenVerifier, mint_cst, verify_cst
from tests.bench.timing import per_op, row

NOW = datetime(2026, 11, 23, 10, 41, tzinfo=UTC)
AUD = "keyturn-gate"
ROUTE = "github/repos/merge"
JOB = "job_01JDX8K2QF7M3ZP4"


class _NoRevocations:
    """A revocation list held in memory, as a warm adapter cache would be."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()

    def is_revoked(self, token_hash_hex: str) -> bool:
        return token_hash_hex in self.revoked


def _ref_payload() -> dict[str, object]:
    """A nested ~1 KiB tool call, the shape LIMITS.md's REF was measured on."""
    return {
        "tool_route": "aws/iam/attach-role-policy",
        "job_id": JOB,
        "params": {
            "role_name": "payments-api-prod-deployer",
            "policy_arn": "arn:aws:iam::123456789012:policy/PaymentsDeployFullAccess",
            "account": "123456789012",
            "region": "eu-west-1",
            "tags": [{"key": f"k{i}", "value": f"value-{i}-é"} for i in range(8)],
            "conditions": {"mfa": True, "max_session_seconds": 3600, "ratio": 0.25},
        },
        "requester": "did:key:z6MkneMkZqwqRiU5mJzSG3kDwzt9P8C59N4NGTfBLfSGE7c7",
        "justification": "Rotate the deploy role after INC-4821; rollback: detach policy. " * 3,
        "policy_hash_b64u": canonical.sha256_b64u(b"wpc"),
        "expires_at": "2026-11-23T10:51:00.000Z",
    }


def main() -> None:
    key = SigningKey.from_seed(bytes(range(1, 33)))
    payload = _ref_payload()
    print(f"REF payload: {len(canonical.jcs(payload))} bytes of JCS")

    def ref() -> None:
        key.sign(hashlib.sha256(rfc8785.dumps(payload)).digest())

    policy = canonical.sha256_b64u(b"wpc v1")
    request = canonical.sha256_b64u(b"request")

    def mint() -> ScopedToken:
        return mint_cst(
            key,
            sub=key.did,
            audience=AUD,
            scope=[ROUTE, "github/repos/read", "github/pulls/comment"],
            now=NOW,
            ttl_seconds=900,
            policy_hash_b64u=policy,
            mission_id=JOB,
            extra={"request_hash_b64u": request},
        )

    token = mint()
    compact = token.compact
    print(f"token: {len(compact)} characters")
    keys = {key.kid: key.public_key}
    revocations = _NoRevocations()
    use: dict[str, Any] = {
        "now": NOW + timedelta(seconds=30),
        "audience": AUD,
        "required_scope": ROUTE,
        "expected_policy_hash": policy,
        "expected_mission_id": JOB,
        "expected_scope_hash": token.scope_hash_b64u,
        "revocations": revocations,
        "max_ttl_seconds": 1800,
    }

    def cold() -> None:
        verify_cst(compact, issuer_keys=keys, **use)

    verifier = TokenVerifier(keys)

    def cached() -> None:
        verifier.verify(compact, **use)

    head, body, sig = compact.split(".")
    signing_input = f"{head}.{body}".encode()
    signature = canonical.b64u_decode(sig)

    def sodium_verify() -> None:
        verify_signature(key.public_key, signing_input, signature)

    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    skip_time: Options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}

    def pyjwt_decode() -> None:
        jwt.decode(compact, public, algorithms=["EdDSA"], audience=AUD, options=skip_time)

    parser = PyJWS(algorithms=["EdDSA"])

    def pyjwt_parse_only() -> None:
        parser.decode_complete(compact, options={"verify_signature": False})

    cached()  # warm the cache
    ref_s = per_op(ref)
    rows = [
        ("REF: JCS ~1 KiB + SHA-256 + Ed25519 sign", ref_s),
        ("mint_cst (JCS scope hash + Ed25519 sign)", per_op(mint)),
        ("verify_cst, cold (all 11 stages)", per_op(cold)),
        ("TokenVerifier.verify, cached (stages 6-11 + revocation)", per_op(cached)),
        ("context: one Ed25519 verify (libsodium)", per_op(sodium_verify)),
        ("context: stock PyJWT decode EdDSA (OpenSSL, no claims)", per_op(pyjwt_decode)),
        ("context: PyJWT JWS parse only, no signature check", per_op(pyjwt_parse_only)),
    ]
    for label, seconds in rows:
        print(row(label, seconds, ref_s))
    by_label = dict(rows)
    cold_s = by_label["verify_cst, cold (all 11 stages)"]
    cached_s = by_label["TokenVerifier.verify, cached (stages 6-11 + revocation)"]
    print(f"cached verify is {cold_s / cached_s:.1f}× cheaper than a cold verify")
    two_verifies = 2 * by_label["context: one Ed25519 verify (libsodium)"]
    print(
        f"cold + cached verify vs two libsodium verifies: {(cold_s + cached_s) / two_verifies:.2f}×"
    )


if __name__ == "__main__":
    main()
