"""Signed webhook calls: what keyturn's webhook executor sends and how a receiver checks it.

The body is JSON (UTF-8)::

    {"call_id": "<unique per attempt>", "step": "execute" | "rollback",
     "route": "<tool route>", "params": {...}, "grant": {<keyturn_grant envelope>}}

and three headers carry the signature::

    X-Keyturn-Key-Id      keyturn's key id (``kid`` in /.well-known/keyturn)
    X-Keyturn-Timestamp   Unix seconds when the call was signed
    X-Keyturn-Signature   base64url Ed25519 signature of
                          b"keyturn-webhook/1\\n" + timestamp + b"\\n" + <the exact body bytes>

The timestamp is inside the signed bytes, so a captured call cannot be re-dated; the
``call_id`` is inside the body, so a receiver that remembers the ids it accepted (for
at least :data:`MAX_SKEW_SECONDS` × 2) refuses a replay. :func:`verify_webhook_call`
also checks the grant inside the body: signed by the same keyturn key, for this route,
and bound (payload hash) to exactly these params — a receiver needs nothing but
keyturn's published public key.

Receiver recipe (any language): read the raw body before parsing it; refuse unless the
key id is keyturn's, the timestamp is within five minutes of your clock, the signature
verifies over the bytes above, the ``call_id`` is new to you, and the grant verifies and
binds ``route`` and ``params``; then act idempotently keyed on
``(grant.payload.grant_id, step)`` (keyturn retries a transient failure with a fresh
``call_id``) and answer 2xx with ``{"call_id": …, "done": true}``. Answer 4xx for "no":
keyturn never retries it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableSet
from datetime import datetime
from typing import Any

from core import canonical
from core.errors import CanonicalizationError, GateDeniedError, KeyturnError
from core.grants import Grant, verify_grant
from core.keys import did_from_public_key, key_id, verify_signature
from core.ports import Signer
from core.requests import payload_hash
from core.times import from_epoch, parse_iso, require_aware, to_epoch

DOMAIN = b"keyturn-webhook/1\n"
HEADER_KEY_ID = "X-Keyturn-Key-Id"
HEADER_TIMESTAMP = "X-Keyturn-Timestamp"
HEADER_SIGNATURE = "X-Keyturn-Signature"
MAX_SKEW_SECONDS = 300
WEBHOOK_STEPS = ("execute", "rollback")


def signing_input(timestamp: str, body: bytes) -> bytes:
    """The exact bytes signed: domain, timestamp, newline, body."""
    return DOMAIN + timestamp.encode("ascii") + b"\n" + body


def call_body(
    *, call_id: str, step: str, route: str, params: Mapping[str, Any], grant: Mapping[str, Any]
) -> bytes:
    """The body keyturn sends, in emission order (the grant envelope's payload hash is over
    its emission, so its keys keep their order; the signature covers the exact bytes).

    Raises:
        ValueError: an unknown step or an empty call id.
    """
    if step not in WEBHOOK_STEPS:
        raise ValueError(f"unknown webhook step {step!r}")
    if not call_id:
        raise ValueError("a webhook call needs a call id")
    return canonical.emission(
        {"call_id": call_id, "step": step, "route": route, "params": dict(params), "grant": grant}
    )


def sign_call(body: bytes, signer: Signer, *, now: datetime) -> dict[str, str]:
    """The three signature headers for ``body`` signed at ``now``."""
    timestamp = str(int(to_epoch(require_aware(now))))
    signature = signer.sign(signing_input(timestamp, body))
    return {
        HEADER_KEY_ID: signer.kid,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: canonical.b64u_encode(signature),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    # HTTP header names are case-insensitive; a plain dict from a framework may not be.
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    raise GateDeniedError("WEBHOOK_UNSIGNED", f"the call has no {name} header")


def verify_webhook_call(
    body: bytes,
    headers: Mapping[str, str],
    public_key: bytes,
    now: datetime,
    seen_nonces: MutableSet[str],
) -> Mapping[str, Any]:
    """Verify one webhook call offline; returns the parsed body (with a verified ``grant``).

    ``seen_nonces`` is the receiver's memory of accepted call ids; the call's id is
    added to it only when every check passed.

    Raises:
        GateDeniedError: ``WEBHOOK_UNSIGNED`` (a header is missing), ``WEBHOOK_KEY_UNKNOWN``,
            ``WEBHOOK_STALE`` (timestamp outside ±5 minutes), ``WEBHOOK_SIGNATURE_INVALID``
            (any change to the body or timestamp), ``WEBHOOK_MALFORMED``,
            ``WEBHOOK_REPLAYED`` (a call id seen before), ``ROUTE_MISMATCH``,
            ``PAYLOAD_HASH_MISMATCH``, or the grant's ``GRANT_INVALID`` / ``GRANT_EXPIRED``.
    """
    now = require_aware(now)
    kid = _header(headers, HEADER_KEY_ID)
    timestamp = _header(headers, HEADER_TIMESTAMP)
    signature_text = _header(headers, HEADER_SIGNATURE)
    if kid != key_id(public_key):
        raise GateDeniedError("WEBHOOK_KEY_UNKNOWN", "the call is signed with a key we do not know")
    # ASCII digits only (str.isdigit() also accepts "²" and other scripts' digits), and
    # at most 11 of them (a 12-digit time is past datetime's year 9999).
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 11:
        raise GateDeniedError("WEBHOOK_STALE", "the call's timestamp is not Unix seconds")
    signed_at = from_epoch(int(timestamp))
    if abs((now - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
        raise GateDeniedError("WEBHOOK_STALE", "the call was signed too long ago (or ahead)")
    try:
        signature = canonical.b64u_decode(signature_text)
    except CanonicalizationError:
        signature = b""
    if not verify_signature(public_key, signing_input(timestamp, body), signature):
        raise GateDeniedError(
            "WEBHOOK_SIGNATURE_INVALID", "the signature does not match this body and timestamp"
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise GateDeniedError("WEBHOOK_MALFORMED", "the body is not JSON") from e
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), t)
        for k, t in (("call_id", str), ("step", str), ("route", str), ("params", dict))
    ):
        raise GateDeniedError("WEBHOOK_MALFORMED", "the body lacks call_id, step, route or params")
    if data["step"] not in WEBHOOK_STEPS:
        raise GateDeniedError("WEBHOOK_MALFORMED", f"unknown step {data['step']!r}")
    if data["call_id"] in seen_nonces:
        raise GateDeniedError("WEBHOOK_REPLAYED", "this call was already received")
    grant = _verify_grant(data.get("grant"), public_key, now, rollback=data["step"] == "rollback")
    if grant.tool_route != data["route"]:
        raise GateDeniedError("ROUTE_MISMATCH", f"the grant is for {grant.tool_route}")
    if not canonical.digests_equal(payload_hash(data["params"]), grant.payload_hash_b64u):
        raise GateDeniedError(
            "PAYLOAD_HASH_MISMATCH", "the params differ from the ones that were approved"
        )
    seen_nonces.add(data["call_id"])
    return {**data, "grant": grant}


def _verify_grant(envelope: object, public_key: bytes, now: datetime, *, rollback: bool) -> Grant:
    trusted = {did_from_public_key(public_key)}
    if rollback and isinstance(envelope, Mapping):
        # A rollback runs when the window ends, i.e. when the grant has just expired. Its
        # signature and binding still hold; its freshness comes from the call's own
        # signed timestamp, so the grant is checked at the moment it was issued.
        payload = envelope.get("payload")
        issued = payload.get("issued_at") if isinstance(payload, Mapping) else None
        try:
            at = parse_iso(issued)
        except KeyturnError:
            at = now
        return verify_grant(envelope, trusted_signers=trusted, now=min(at, now))
    return verify_grant(envelope, trusted_signers=trusted, now=now)
