"""Session cookies: forged, altered, old or malformed cookies are no session at all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.web.sessions import MAX_AGE_SECONDS, SessionCodec, csrf_matches

KEY = b"k" * 32
NOW = 1_800_000_000


def test_a_short_secret_key_is_refused() -> None:
    with pytest.raises(ValueError):
        SessionCodec(b"too-short")


def test_round_trip_keeps_subject_and_csrf() -> None:
    codec = SessionCodec(KEY)
    session = codec.new(now=NOW, subject="bob")
    decoded = codec.decode(codec.encode(session), now=NOW + 10)
    assert decoded == session
    assert "bob" in repr(decoded) and session.csrf not in repr(decoded)


def test_cookie_signed_with_another_key_is_refused() -> None:
    session = SessionCodec(b"x" * 32).new(now=NOW, subject="carol")
    assert SessionCodec(KEY).decode(SessionCodec(b"x" * 32).encode(session), now=NOW) is None


def test_changed_subject_breaks_the_signature() -> None:
    codec = SessionCodec(KEY)
    _, mac = codec.encode(codec.new(now=NOW, subject="mallory")).split(".")
    other_body, _ = codec.encode(codec.new(now=NOW, subject="carol")).split(".")
    assert codec.decode(f"{other_body}.{mac}", now=NOW) is None


def test_old_and_future_sessions_are_refused() -> None:
    codec = SessionCodec(KEY)
    cookie = codec.encode(codec.new(now=NOW, subject="bob"))
    assert codec.decode(cookie, now=NOW + MAX_AGE_SECONDS + 1) is None
    assert codec.decode(cookie, now=NOW - 60) is None


@given(st.text(max_size=300))
def test_arbitrary_cookie_text_never_decodes_to_a_session(text: str) -> None:
    assert SessionCodec(KEY).decode(text, now=NOW) is None


def test_csrf_must_match_exactly() -> None:
    codec = SessionCodec(KEY)
    session = codec.new(now=NOW)
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, session.csrf[:-1])
    assert not csrf_matches(session, "")
    assert not csrf_matches(None, session.csrf)
    assert not csrf_matches(session, None)
    assert codec.new(now=NOW).csrf != session.csrf
