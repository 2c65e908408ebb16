"""``keyturn verify``, ``keyturn bundle export --claw`` and ``keyturn bundle get``.

* ``keyturn verify BUNDLE [--trust DID]… [--trust-policy-issuer DID]… [--json]`` checks a
  sealed proof bundle with nothing but the file and the keys you trust, prints PASS or
  FAIL with the reason code and everything that was checked, and exits 0 (PASS) or 1.
* ``keyturn bundle export --claw --agent-key FILE [--gateway-receipts FILE] BUNDLE
  --trust DID [--out FILE]`` verifies the bundle, then writes it as a Claw
  ``proof_bundle`` envelope signed with the agent's key (a ``keyturn keys generate``
  PEM file), anchoring the approvals to the agent's gateway receipts.
* ``keyturn bundle get REQUEST_ID [--config FILE | --data-dir DIR] [--out FILE]`` reads a
  finished request's bundle from the installation's store (sealing it if needed).

``--trust`` names keyturn's signing key (``keyturn keys show`` prints it). It is
required: a bundle that vouches for itself proves nothing, so without it the verdict
is FAIL ``BUNDLE_NO_TRUST_ANCHOR`` (and the message shows the bundle's signer, for
you to compare with the key you expect). When the repository's
``manifests/schemas/keyturn-proof-bundle.schema.json`` and the ``jsonschema`` package
are present, ``keyturn verify`` also validates the bundle against that documented
schema (``BUNDLE_SCHEMA_INVALID``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.signer import FileSigner
from bot.cli import EXIT_ERROR, EXIT_OK, CliError
from bot.cli_app import add_installation_args, with_app
from core.bundle import BundleReport, bundle_bytes, parse_bundle, verify_bundle
from core.claw import export_claw_bundle
from core.errors import BundleError

if TYPE_CHECKING:
    from bot.bootstrap import App

SCHEMA = Path(__file__).resolve().parents[1] / "manifests" / "schemas"
BUNDLE_SCHEMA_ID = "urn:keyturn:proof-bundle:1"

VERIFY_EPILOG = """exit codes:
  0  PASS: every check passed
  1  FAIL (the reason code says which check), or unreadable input

example:
  keyturn verify b-1042.json --trust did:key:z6Mk…hxy3m"""


def register(subparsers: Any) -> None:
    """Add ``verify``, ``bundle export`` and ``bundle get``."""
    verify = subparsers.add_parser(
        "verify",
        help="verify a sealed proof bundle offline (PASS/FAIL, reason code, what was checked)",
        description="Verify a keyturn proof bundle with nothing but the file and trusted keys.",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("bundle", metavar="BUNDLE", help="the bundle file (- for stdin)")
    _trust_args(verify)
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(handler=run_verify)

    bundle = subparsers.add_parser("bundle", help="work with sealed proof bundles")
    commands = bundle.add_subparsers(dest="bundle_command", metavar="COMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="export a bundle for another ecosystem (--claw: a Claw proof_bundle)",
        description=(
            "Verify BUNDLE, then write it as a Claw proof_bundle v1 envelope signed with "
            "the agent's key, its approvals anchored to the agent's gateway receipts."
        ),
    )
    export.add_argument("bundle", metavar="BUNDLE", help="the keyturn bundle file (- for stdin)")
    export.add_argument("--claw", action="store_true", help="export as a Claw proof_bundle v1")
    export.add_argument(
        "--agent-key", required=True, metavar="FILE", help="the agent's Ed25519 PEM key file"
    )
    export.add_argument(
        "--gateway-receipts",
        metavar="FILE",
        help="the job's gateway receipt envelopes: a JSON array, or one envelope per line",
    )
    export.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    _trust_args(export)
    export.set_defaults(handler=run_export)

    get = commands.add_parser(
        "get",
        help="write a finished request's sealed bundle from this installation's store",
        description=(
            "Read (sealing it first if needed) the proof bundle of REQUEST_ID from the "
            "installation's store: how auditors and people with access to the server get "
            "bundles (the HTTP API hands a bundle only to the agent that made the request)."
        ),
    )
    get.add_argument("request_id", metavar="REQUEST_ID", help="the request id (r-…)")
    get.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    add_installation_args(get)
    get.set_defaults(handler=run_get)


def _trust_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="DID",
        help="keyturn's signing key (did:key) to trust; repeatable; required",
    )
    parser.add_argument(
        "--trust-policy-issuer",
        action="append",
        default=None,
        metavar="DID",
        help="accept only WPCs signed by this issuer (repeatable); default: report unpinned",
    )


def _read(source: str, what: str) -> bytes:
    try:
        if source == "-":
            return sys.stdin.buffer.read()
        return Path(source).read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {what} {source}: {e.strerror or e}") from e


def _no_trust_anchor(data: bytes) -> BundleError:
    signer = "an unknown key"
    with contextlib.suppress(BundleError):
        signer = str(parse_bundle(data).get("signer_did", signer))
    return BundleError(
        "BUNDLE_NO_TRUST_ANCHOR",
        f"pass --trust with keyturn's did:key; this bundle says it was signed by {signer}",
    )


def check_schema(envelope: dict[str, Any]) -> str | None:
    """Validate against the documented JSON Schema when it and jsonschema are available.

    Returns:
        a line for the report, or ``None`` when the check could not run.

    Raises:
        BundleError: ``BUNDLE_SCHEMA_INVALID``.
    """
    try:
        from jsonschema import Draft202012Validator, FormatChecker
        from referencing import Registry, Resource
    except ImportError:
        return None
    if not SCHEMA.is_dir():
        return None
    resources = []
    for path in sorted(SCHEMA.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry: Registry[Any] = Registry().with_resources(resources)
    validator = Draft202012Validator(
        registry.contents(BUNDLE_SCHEMA_ID), registry=registry, format_checker=FormatChecker()
    )
    error = next(iter(validator.iter_errors(envelope)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise BundleError("BUNDLE_SCHEMA_INVALID", f"{where}: {error.message}")
    return "schema: valid against manifests/schemas/keyturn-proof-bundle.schema.json"


def verify_file(data: bytes, trust: Sequence[str], issuers: Sequence[str] | None) -> BundleReport:
    """Verify bundle bytes as ``keyturn verify`` does (core checks, then the schema).

    Raises:
        BundleError: the first failure.
    """
    if not trust:
        raise _no_trust_anchor(data)
    report = verify_bundle(
        data, trusted_keyturn_dids=trust, trusted_policy_issuers=issuers, now=datetime.now(UTC)
    )
    line = check_schema(parse_bundle(data))
    if line is not None:
        report = BundleReport(**{**_fields(report), "checks": (*report.checks, line)})
    return report


def _fields(report: BundleReport) -> dict[str, Any]:
    return {name: getattr(report, name) for name in BundleReport.__slots__}


def run_verify(args: argparse.Namespace) -> int:
    data = _read(args.bundle, "bundle")
    try:
        report = verify_file(data, args.trust, args.trust_policy_issuer)
    except BundleError as e:
        if args.json:
            verdict = {"verdict": "FAIL", "reason_code": e.reason_code, "message": e.message}
            print(json.dumps(verdict, indent=2, ensure_ascii=False))
        else:
            print(f"FAIL  {e.reason_code}\n  {e.message}")
        return EXIT_ERROR
    if args.json:
        document = report.to_json()
        document["summary"] = parse_bundle(data)["payload"]["summary"]
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render(report, parse_bundle(data)["payload"]["summary"]["lines"]))
    return EXIT_OK


def render(report: BundleReport, summary: Sequence[str]) -> str:
    """The PASS verdict as a person reads it."""
    e = report.evidence
    b = e.request.binding
    names = ", ".join(d.approver_name for d in e.approvals) or "nobody"
    quorum = "quorum met" if e.quorum_met else "quorum not met"
    lines = [
        f"PASS  proof bundle {report.bundle_id} · {b.tool_route} · {report.outcome}",
        f"  request   {b.request_id} · job {b.job_id} · request hash {b.request_hash_b64u}",
        f"  signed by {report.signer_did} (trusted)",
        f"  policy    {e.policy.name} · {e.policy.policy_hash_b64u} · issuer "
        f"{report.policy_issuer_did} ({'pinned' if report.policy_issuer_pinned else 'not pinned'})",
        f"  approvals {names} · {quorum}",
    ]
    if e.grant is not None:
        uses = len(e.gate_passes)
        lines.append(f"  grant     {e.grant.grant_id} · gate passed {uses} time{'s' * (uses != 1)}")
    lines.append(
        f"  log       {len(e.receipts)} receipts in {e.checkpoint.origin} "
        f"checkpoint of size {e.checkpoint.size}"
    )
    lines.append("checked:")
    lines += [f"  ✓ {check}" for check in report.checks]
    lines.append("summary:")
    lines += [f"  {line}" for line in summary]
    return "\n".join(lines)


def _gateway_receipts(source: str | None) -> list[dict[str, Any]]:
    if source is None:
        return []
    text = _read(source, "gateway receipts").decode("utf-8", errors="strict").strip()
    try:
        if text.startswith("["):
            receipts = json.loads(text)
        else:
            receipts = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise CliError(f"--gateway-receipts is not JSON or JSON Lines: {e}") from e
    if not isinstance(receipts, list) or not all(isinstance(r, dict) for r in receipts):
        raise CliError("--gateway-receipts holds gateway receipt envelopes (JSON objects)")
    return receipts


def run_get(args: argparse.Namespace) -> int:
    async def fetch(app: App) -> Mapping[str, Any]:
        return await app.service.bundle(args.request_id)

    bundle = with_app(args, fetch)
    _emit(bundle, args.out, f"wrote the bundle of {args.request_id} to {args.out}")
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    if not args.claw:
        raise CliError("name the export format: --claw (the only one so far)")
    data = _read(args.bundle, "bundle")
    if not args.trust:
        raise _no_trust_anchor(data)
    agent = FileSigner.load(args.agent_key)
    exported = export_claw_bundle(
        data,
        agent=agent,
        trusted_keyturn_dids=args.trust,
        trusted_policy_issuers=args.trust_policy_issuer,
        gateway_receipts=_gateway_receipts(args.gateway_receipts),
        now=datetime.now(UTC),
    )
    _emit(
        exported,
        args.out,
        f"wrote Claw proof_bundle {exported['payload']['bundle_id']} to {args.out}",
    )
    return EXIT_OK


def _emit(bundle: Mapping[str, Any], out: str | None, written: str) -> None:
    """The bundle's bytes to ``out`` (then ``written`` is printed), or to stdout."""
    text = bundle_bytes(bundle).decode("utf-8") + "\n"
    if not out:
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or e}") from e
    print(written)
