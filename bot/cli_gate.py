"""``keyturn gate verify``: check a signed webhook call from keyturn, offline, in a script.

A receiver that is a shell script (or anything that can run a command) saves the raw
body and the headers it received, then::

    keyturn gate verify --body body.json --headers headers.txt --key keyturn.json \\
        --seen seen-call-ids.txt && ./do-the-thing

``--key`` is keyturn's public key: the saved output of ``GET /.well-known/keyturn``, the
JSON of ``keyturn keys show --json``, a ``did:key:…`` line, or a PEM public key. The
checks are :func:`core.webhook_call.verify_webhook_call`'s: key id, timestamp within five
minutes, Ed25519 signature over the exact body, a call id not seen before (``--seen``
keeps them in a file; a passing call's id is appended), and the grant inside the body
(signed by the same key, for this route, bound to exactly these params).
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.cli import EXIT_DENIED, EXIT_OK, CliError
from core import canonical
from core.errors import CanonicalizationError, GateDeniedError, KeyturnError
from core.keys import did_from_public_key, public_key_from_did
from core.times import parse_iso
from core.webhook_call import verify_webhook_call

VERIFY_EPILOG = """exit codes:
  0  PASS: the call is keyturn's, fresh, new, and its grant binds exactly these params
  1  unreadable input (body, headers, key file)
  3  REFUSED: the reason code says which check failed; do not act on the call

example:
  curl -s https://keyturn.corp.example/.well-known/keyturn > keyturn.json
  keyturn gate verify --body body.json --headers headers.txt --key keyturn.json \\
      --seen seen-call-ids.txt"""


def register(subparsers: Any) -> None:
    """Add the ``gate`` command group (``gate verify``)."""
    gate = subparsers.add_parser("gate", help="check keyturn's signed calls (for receivers)")
    commands = gate.add_subparsers(dest="gate_command", metavar="COMMAND", required=True)
    verify = commands.add_parser(
        "verify",
        help="verify a signed webhook call from keyturn offline (exit 0 PASS, 3 REFUSED)",
        description=(
            "Verify one webhook call as a receiver got it: the raw body, its X-Keyturn-* "
            "headers, and keyturn's public key. Needs no network."
        ),
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "--body", required=True, metavar="FILE", help="the raw request body (- for stdin)"
    )
    verify.add_argument(
        "--headers",
        metavar="FILE",
        help="the request headers: a JSON object, or 'Name: value' lines (curl -D, raw HTTP)",
    )
    verify.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="one header (repeatable; wins over --headers)",
    )
    verify.add_argument(
        "--key",
        required=True,
        metavar="FILE",
        help="keyturn's public key: /.well-known/keyturn JSON, did:key, or PEM public key",
    )
    verify.add_argument(
        "--seen",
        metavar="FILE",
        help="call ids already accepted, one per line; a passing call's id is appended",
    )
    verify.add_argument(
        "--now",
        metavar="TIME",
        help="check freshness at this RFC 3339 time instead of the clock (investigations)",
    )
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(handler=run_verify)


def _read(source: str, what: str) -> bytes:
    try:
        if source == "-":
            return sys.stdin.buffer.read()
        return Path(source).read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {what} {source}: {e.strerror or e}") from e


def parse_headers(text: str) -> dict[str, str]:
    """Headers from a JSON object or from ``Name: value`` lines (a status line is skipped).

    Raises:
        CliError: neither form.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as e:
            raise CliError(f"--headers is not a JSON object: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise CliError("--headers JSON must map header names to strings")
        return {str(k): v for k, v in data.items()}
    headers: dict[str, str] = {}
    for line in stripped.splitlines():
        if not line.strip() or line.startswith(("HTTP/", "POST ", "PUT ")):
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--headers: {line[:60]!r} is not a 'Name: value' line")
        headers[name.strip()] = value.strip()
    return headers


def load_public_key(data: bytes) -> bytes:
    """keyturn's Ed25519 public key from a saved ``/.well-known/keyturn``, a did:key, or PEM.

    Raises:
        CliError: none of these, or a document whose ``did`` and key disagree.
    """
    text = data.decode("utf-8", errors="replace").strip()
    try:
        if text.startswith("{"):
            return _from_json(json.loads(text))
        if text.startswith("did:key:"):
            return public_key_from_did(text.split()[0])
        if "-----BEGIN PUBLIC KEY-----" in text:
            return _from_pem(data)
    except (ValueError, KeyturnError) as e:
        message = e.message if isinstance(e, KeyturnError) else str(e)
        raise CliError(f"--key: {message}") from e
    if "PRIVATE KEY" in text:
        raise CliError("--key: give keyturn's public key, never a private key file")
    raise CliError("--key: expected /.well-known/keyturn JSON, a did:key or a PEM public key")


def _from_json(document: object) -> bytes:
    if not isinstance(document, Mapping):
        raise ValueError("the JSON is not an object")
    key: bytes | None = None
    raw = document.get("public_key_b64u")
    if isinstance(raw, str):
        try:
            key = canonical.b64u_decode(raw)
        except CanonicalizationError as e:
            raise ValueError("public_key_b64u is not base64url") from e
    did = document.get("did")
    if isinstance(did, str):
        from_did = public_key_from_did(did)
        if key is not None and key != from_did:
            raise ValueError("the document's did and public_key_b64u name different keys")
        key = from_did
    if key is None:
        raise ValueError("the JSON has neither public_key_b64u nor did")
    return key


def _from_pem(data: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    key = load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the PEM key is not an Ed25519 key")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _seen(path: str | None) -> set[str]:
    if path is None:
        return set()
    try:
        return {line.strip() for line in Path(path).read_text("utf-8").splitlines() if line}
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise CliError(f"cannot read --seen {path}: {e.strerror or e}") from e


def run_verify(args: argparse.Namespace) -> int:
    body = _read(args.body, "body")
    headers = parse_headers(_read(args.headers, "headers").decode("utf-8")) if args.headers else {}
    for item in args.header:
        headers.update(parse_headers(item))
    public_key = load_public_key(_read(args.key, "key file"))
    try:
        now = parse_iso(args.now) if args.now else datetime.now(UTC)
    except KeyturnError as e:
        raise CliError(f"--now {args.now!r} is not an RFC 3339 time") from e
    seen = _seen(args.seen)
    try:
        data = verify_webhook_call(body, headers, public_key, now, seen)
    except GateDeniedError as e:
        return _refused(args, e.reason_code, e.message)
    except (UnicodeDecodeError, binascii.Error, ValueError) as e:  # malformed input
        return _refused(args, "WEBHOOK_MALFORMED", str(e)[:200])
    if args.seen is not None:
        try:
            with Path(args.seen).open("a", encoding="utf-8") as out:
                out.write(data["call_id"] + "\n")
        except OSError as e:
            raise CliError(f"cannot record the call id in {args.seen}: {e.strerror or e}") from e
    grant = data["grant"]
    verdict = {
        "verdict": "PASS",
        "call_id": data["call_id"],
        "step": data["step"],
        "route": data["route"],
        "params": data["params"],
        "grant_id": grant.grant_id,
        "request_id": grant.request_id,
        "payload_hash_b64u": grant.payload_hash_b64u,
        "signer_did": did_from_public_key(public_key),
    }
    if args.json:
        print(json.dumps(verdict, indent=2, ensure_ascii=False))
    else:
        print(
            f"PASS  {data['step']} call {data['call_id']} for {data['route']}: signed by "
            f"{verdict['signer_did']}, grant {grant.grant_id} (request {grant.request_id}) "
            f"binds these params"
        )
    return EXIT_OK


def _refused(args: argparse.Namespace, code: str, message: str) -> int:
    if args.json:
        print(json.dumps({"verdict": "REFUSED", "reason_code": code, "message": message}))
    else:
        print(f"REFUSED  {code}: {message}")
    return EXIT_DENIED
