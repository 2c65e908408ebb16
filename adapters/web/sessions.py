"""Console sessions: one HMAC-signed cookie holding who signed in and a CSRF token.

The cookie is ``base64url(JSON) "." base64url(HMAC-SHA256(secret_key, JSON))``. It is
HttpOnly and SameSite=Strict (Secure when served over HTTPS) and holds no secret
beyond the per-session CSRF token, which every form repeats in a hidden field. A
cookie whose signature, shape or age is wrong is treated as no session at all: the
visitor is anonymous (fail closed), never half signed in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from core.canonical import b64u_decode, b64u_encode
from core.errors import CanonicalizationError

COOKIE_NAME = "keyturn_console"
#: A signed-in session lasts a working day; then the person signs in again.
MAX_AGE_SECONDS = 8 * 3600
_MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True, repr=False)
class Session:
    """One browser's session: ``subject`` is a directory object id, or None (anonymous)."""

    csrf: str
    issued_at: int
    subject: str | None = None

    def __post_init__(self) -> None:
        if len(self.csrf) < 16:
            raise ValueError("a CSRF token has at least 16 characters")

    def __repr__(self) -> str:
        return f"Session(subject={self.subject!r})"


class SessionCodec:
    """Signs and reads session cookies with one secret key."""

    def __init__(self, secret_key: bytes) -> None:
        """Raises:
        ValueError: the key is shorter than 32 bytes (no guessable default keys).
        """
        if len(secret_key) < _MIN_KEY_BYTES:
            raise ValueError(f"the console secret key needs at least {_MIN_KEY_BYTES} bytes")
        self._key = hashlib.sha256(b"keyturn-console-session-v1\n" + secret_key).digest()

    def new(self, *, now: int, subject: str | None = None) -> Session:
        """A fresh session (a new CSRF token every time: signing in rotates it)."""
        return Session(csrf=secrets.token_urlsafe(24), issued_at=now, subject=subject)

    def encode(self, session: Session) -> str:
        body = json.dumps(
            {"v": 1, "sub": session.subject, "csrf": session.csrf, "iat": session.issued_at},
            separators=(",", ":"),
            sort_keys=True,
        ).encode("utf-8")
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return f"{b64u_encode(body)}.{b64u_encode(mac)}"

    def decode(self, cookie: str | None, *, now: int) -> Session | None:
        """The session in ``cookie``, or None when it is missing, forged, malformed or old."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        body_text, mac_text = cookie.split(".")
        try:
            body = b64u_decode(body_text)
            mac = b64u_decode(mac_text)
        except (CanonicalizationError, ValueError):
            return None
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("v") != 1:
            return None
        csrf, issued, subject = data.get("csrf"), data.get("iat"), data.get("sub")
        if not isinstance(csrf, str) or len(csrf) < 16:
            return None
        if not isinstance(issued, int) or isinstance(issued, bool):
            return None
        if subject is not None and (not isinstance(subject, str) or not subject):
            return None
        if not 0 <= now - issued <= MAX_AGE_SECONDS:
            return None
        return Session(csrf=csrf, issued_at=issued, subject=subject)


def csrf_matches(session: Session | None, presented: object) -> bool:
    """Whether a form's CSRF field is this session's token (constant-time)."""
    if session is None or not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(session.csrf.encode("utf-8"), presented.encode("utf-8"))
