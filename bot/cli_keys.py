"""``keyturn keys generate``: create an Ed25519 signing key file."""

from __future__ import annotations

import argparse
import json

from adapters.signer import FileSigner, generate_key_file


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="signing keys")
    commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    generate = commands.add_parser(
        "generate",
        help="create a new Ed25519 key file (mode 0600) and print its did:key",
        description="Create a PKCS#8 PEM Ed25519 key readable by its owner only.",
    )
    generate.add_argument("--out", required=True, metavar="FILE", help="where to write the key")
    generate.add_argument("--force", action="store_true", help="replace an existing key file")
    generate.add_argument("--json", action="store_true", help="print JSON")
    generate.set_defaults(handler=_generate)
    show = commands.add_parser("show", help="print the did:key and kid of a key file")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)


def _print(did: str, kid: str, path: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"did": did, "kid": kid, "path": path}))
    else:
        print(f"{did}\nkid {kid}\nkey {path}")


def _generate(args: argparse.Namespace) -> int:
    key = generate_key_file(args.out, overwrite=args.force)
    _print(key.did, key.kid, args.out, args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    signer = FileSigner.load(args.file)
    _print(signer.did, signer.kid, args.file, args.json)
    return 0
