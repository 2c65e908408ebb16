"""A sealing helper process: checks unsealed proof bundles for the server (``python -m
bot.seal_helper``, started by :class:`bot.service.seal_checks.SealChecks`).

It imports nothing but ``core`` and speaks JSON on its standard streams, one check at a
time. Every message is a frame: an 8-byte big-endian length, then that many bytes.
The server sends one frame, ``{"payload": …, "signer_did": …, "trusted": […]|null}``.
The helper answers with one frame, ``{"ok": true}`` followed by a second frame holding
the checked bundle's encoded bytes (:func:`core.bundle.checked_bundle`), or
``{"refused": {"error": class, "reason_code": …, "message": …}}`` or
``{"failed": "description"}``. End of input (the server closed the pipe or exited)
ends the helper.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from core.bundle import checked_bundle
from core.errors import KeyturnError

HEADER_BYTES = 8


def frame(data: bytes) -> bytes:
    """``data`` as one frame."""
    return len(data).to_bytes(HEADER_BYTES, "big") + data


def json_frame(value: Any) -> bytes:
    return frame(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's bytes; None at the end of input."""
    header = _read_exactly(stream, HEADER_BYTES)
    return None if header is None else _read_exactly(stream, int.from_bytes(header, "big"))


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def answer(request: bytes) -> bytes:
    """The frames answering one request frame."""
    try:
        fields = json.loads(request)
        checked = checked_bundle(
            fields["payload"],
            signer_did=fields["signer_did"],
            trusted_policy_issuers=fields["trusted"],
        )
    except KeyturnError as e:
        refused = {"error": type(e).__name__, "reason_code": e.reason_code, "message": e.message}
        return json_frame({"refused": refused})
    except Exception as e:  # a bug: the server logs it, and the bundle is sealed on demand
        return json_frame({"failed": f"{type(e).__name__}: {e}"})
    return json_frame({"ok": True}) + frame(checked)


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer every request on ``requests`` until it ends."""
    while (request := read_frame(requests)) is not None:
        answers.write(answer(request))
        answers.flush()


def main() -> None:
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # standard output is the channel: nothing else may write there
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
