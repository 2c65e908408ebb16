"""``keyturn policy sign`` and ``keyturn policy propose``: changing the policy.

* ``keyturn policy sign FILE --key KEYFILE [--out FILE]`` signs a policy payload into a
  WPC envelope. The payload's ``issuer_did`` must be the key's DID, and keyturn never
  signs a payload it would refuse to load.
* ``keyturn policy propose FILE --as PERSON`` asks for the signed policy in FILE to
  replace the active one. Changing the policy is itself gated: the proposal is an
  approval request on ``keyturn.policy.activate`` under the current policy, and the new
  policy is active only once its approvers (never the proposer) approve.

:func:`add_commands` adds both to the ``policy`` group of :mod:`bot.cli_policy`.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.bootstrap import App
from bot.cli import EXIT_CODES_HELP, EXIT_OK, CliError
from bot.cli_app import add_installation_args, person_arg, print_json, with_app
from core.policy.wpc import parse_policy_json, sign_wpc


def add_commands(commands: Any) -> None:
    """Add ``sign`` and ``propose`` to the ``policy`` command group's subparsers."""
    sign = commands.add_parser(
        "sign",
        help="sign a policy payload into a WPC envelope",
        description=(
            "Sign the policy payload in FILE (- for stdin) with an Ed25519 key file. The "
            "payload's issuer_did must be the key's did:key (keyturn keys show KEYFILE). "
            "Writes the envelope to --out, or prints it."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("file", metavar="FILE", help="policy payload (JSON; - for stdin)")
    sign.add_argument("--key", required=True, metavar="KEYFILE", help="issuer's PEM key (0600)")
    sign.add_argument("--out", type=Path, metavar="FILE", help="write the envelope here")
    sign.add_argument("--force", action="store_true", help="replace an existing --out file")
    sign.add_argument("--json", action="store_true", help="with --out: print a JSON summary")
    sign.set_defaults(handler=run_sign)

    propose = commands.add_parser(
        "propose",
        help="ask approvers to activate a new signed policy (the change is itself gated)",
        description=(
            "Propose the signed policy in FILE as keyturn's new policy. It becomes active "
            "once the current policy's approvers for keyturn.policy.activate approve; you "
            "cannot approve your own proposal. Prints the request id and a readable diff."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    propose.add_argument("file", metavar="FILE", help="signed WPC envelope (- for stdin)")
    propose.add_argument(
        "--as",
        dest="person",
        required=True,
        metavar="PERSON",
        help="who proposes: directory object id (or email)",
    )
    propose.add_argument("--json", action="store_true", help="print the request as JSON")
    add_installation_args(propose)
    propose.set_defaults(handler=run_propose)


def _read_document(source: str) -> dict[str, Any]:
    from bot.cli_policy import _read

    return parse_policy_json(_read(source, "policy file"))


def run_sign(args: argparse.Namespace) -> int:
    from adapters.signer import FileSigner

    payload = _read_document(args.file)
    if "envelope_type" in payload and "payload" in payload:
        raise CliError(f"{args.file} is already a signed envelope; sign the payload inside it")
    signer = FileSigner.load(args.key)
    envelope = sign_wpc(payload, signer, issued_at=datetime.now(UTC))
    text = json.dumps(envelope, indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        print(text, end="")
        return EXIT_OK
    _write_new(args.out, text, force=args.force)
    summary = {
        "out": str(args.out),
        "policy_hash_b64u": envelope["payload_hash_b64u"],
        "issuer_did": signer.did,
    }
    if args.json:
        print_json(summary)
    else:
        print(f"signed {args.out}\npolicy {summary['policy_hash_b64u']}\nissuer {signer.did}")
    return EXIT_OK


def _write_new(path: Path, text: str, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError as e:
        raise CliError(f"{path} exists; pass --force to replace it") from e
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from e
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def run_propose(args: argparse.Namespace) -> int:
    document = _read_document(args.file)
    who = person_arg(args.person)

    async def use(app: App) -> tuple[Any, dict[str, Any]]:
        kt = app.service
        # The proposer is a person of the directory (the requester can never approve).
        person = (await kt.resolve(who)).person
        submitted = await kt.propose_policy(document, proposer=person.object_id)
        # What approvers see on the card: the new policy's hash, name and rule diff.
        view = await kt.view(submitted.request_id or "")
        return submitted, dict(view.request.params)

    submitted, change = with_app(args, use)
    confirm = submitted.payload_hash_b64u[-4:]
    diff = [str(line) for line in change.get("diff", [])]
    if args.json:
        print_json(
            {
                **submitted.to_json(),
                "confirmation": confirm,
                "new_policy_hash": change.get("new_policy_hash"),
                "old_policy_hash": change.get("old_policy_hash"),
                "new_policy_name": change.get("new_policy_name"),
                "diff": diff,
            }
        )
        return EXIT_OK
    print(f"policy change {submitted.request_id} is waiting for approval")
    print(f"  new       {change.get('new_policy_name')} · {change.get('new_policy_hash')}")
    print(f"  replaces  {change.get('old_policy_hash')}")
    for need in submitted.needs:
        print(f"  needs     {need}")
    print(f"  confirm   approvers type {confirm} (payload hash {submitted.payload_hash_b64u})")
    if submitted.card_url:
        print(f"  card      {submitted.card_url}")
    print("changes:")
    for line in diff:
        print(f"  {line}")
    return EXIT_OK
