"""``keyturn policy …``: look at a Work Policy Contract from the command line.

* ``keyturn policy hash FILE`` prints the policy's ``policy_hash_b64u``.
* ``keyturn policy check FILE --call JSON [--json]`` says what the policy decides
  for one exact call, and why.
* ``keyturn policy sign`` and ``keyturn policy propose`` change the policy
  (:mod:`bot.cli_policy_change`).

FILE is a bare policy payload or a signed WPC envelope (``-`` reads stdin). An
envelope is always verified; without ``--trust`` its signer must be the payload's
issuer, with ``--trust DID`` (repeatable) the signer must also be one of those DIDs,
and a bare payload is then refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.cli import (
    EXIT_CODES_HELP,
    EXIT_DENIED,
    EXIT_GATED,
    EXIT_OK,
    CliError,
)
from core.policy import Decision, Outcome, Policy, ToolCall, load_policy_document
from core.policy.schema import describe
from core.policy.wpc import parse_policy_json

CALL_HELP = """the call as JSON (or @FILE):
  {"tool_route": "payments.transfer", "params": {"amount_usd": 500},
   "requester": "did:key:…", "on_behalf_of": "alice@corp.example",
   "context": {"sandbox": true}}
optional: "resource", "prior_routes" (list), "plan_hash", "breakglass" (bool)"""


def register(subparsers: Any) -> None:
    """Add the ``policy`` command group."""
    policy = subparsers.add_parser(
        "policy",
        help="hash, check, sign or propose a Work Policy Contract",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)

    hash_cmd = commands.add_parser(
        "hash",
        help="print the policy hash (b64u SHA-256 of the JCS payload)",
        description="Print policy_hash_b64u = base64url(sha256(JCS(payload))) of FILE.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _document_args(hash_cmd)
    hash_cmd.set_defaults(handler=run_hash)

    check = commands.add_parser(
        "check",
        help="decide one call: allowed, gated (by which rule, needing whom) or denied (why)",
        description="Decide one exact call under the policy in FILE.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    _document_args(check)
    check.add_argument("--call", required=True, metavar="JSON", help=CALL_HELP)
    check.add_argument("--json", action="store_true", help="print the decision as JSON")
    check.set_defaults(handler=run_check)

    from bot.cli_policy_change import add_commands

    add_commands(commands)


def _document_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="policy payload or signed WPC envelope (- for stdin)"
    )
    parser.add_argument(
        "--trust",
        action="append",
        metavar="DID",
        help="accept only envelopes signed by this issuer (repeatable); refuses bare payloads",
    )


def _read(source: str, what: str) -> str:
    try:
        if source == "-":
            return sys.stdin.read()
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CliError(f"cannot read {what} {source}: {reason}") from e


def load(args: argparse.Namespace) -> Policy:
    """The policy named on the command line, verified as the options say."""
    document = parse_policy_json(_read(args.file, "policy file"))
    trusted = set(args.trust) if args.trust else None
    return load_policy_document(document, trusted_issuers=trusted, now=datetime.now(UTC))


def run_hash(args: argparse.Namespace) -> int:
    print(load(args).policy_hash_b64u)
    return EXIT_OK


class CallModel(BaseModel):
    """The ``--call`` JSON (an edge format: unknown fields are refused)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tool_route: str = Field(min_length=1)
    params: dict[str, Any] = {}
    requester: str = Field(min_length=1)
    on_behalf_of: str | None = None
    context: dict[str, Any] = {}
    resource: str | None = None
    prior_routes: list[str] = []
    plan_hash: str | None = None
    breakglass: bool = False


def parse_call(text: str) -> ToolCall:
    """Build the :class:`ToolCall` from ``--call``'s JSON text (or ``@FILE``).

    Raises:
        CliError: the JSON is unreadable, malformed or has unknown fields.
        PolicyError: ``INVALID_CALL`` for a malformed route or field.
    """
    if text.startswith("@"):
        text = _read(text[1:], "call file")
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise CliError(f"--call is not JSON: {e}") from e
    try:
        call = CallModel.model_validate(raw)
    except ValidationError as e:
        raise CliError(f"--call: {describe(e)}") from e
    return ToolCall(
        route=call.tool_route,
        params=call.params,
        requester=call.requester,
        on_behalf_of=call.on_behalf_of,
        context=call.context,
        resource=call.resource,
        prior_routes=frozenset(call.prior_routes),
        plan_hash=call.plan_hash,
        breakglass=call.breakglass,
    )


EXIT_FOR = {Outcome.ALLOWED: EXIT_OK, Outcome.GATED: EXIT_GATED, Outcome.DENIED: EXIT_DENIED}


def run_check(args: argparse.Namespace) -> int:
    policy = load(args)
    call = parse_call(args.call)
    decision = policy.evaluate(call)
    if args.json:
        document = {
            "policy_id": policy.policy_id,
            "policy_hash_b64u": policy.policy_hash_b64u,
            "tool_route": call.route,
            "decision": decision.to_json(),
            "requirement_texts": [policy.requirement_text(r) for r in decision.requirements],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render(policy, call, decision))
    return EXIT_FOR[decision.outcome]


def render(policy: Policy, call: ToolCall, decision: Decision) -> str:
    """The decision as a person reads it."""
    head = f"{decision.outcome.value.upper()} · {call.route}"
    if decision.outcome is Outcome.DENIED:
        head += f"  ({decision.reason_code})"
    lines = [head]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<9}{text}")

    if decision.outcome is not Outcome.GATED:
        row("why", decision.message)
    for ref in decision.rules:
        row("rule", f"{ref.rule_id}: {ref.description} ({ref.condition_text})")
    for req in decision.requirements:
        row("needs", f"{policy.requirement_text(req)} [{req.name}]")
        row("expires", f"{req.timeout_seconds // 60} min after the request if not approved")
    terms = decision.breakglass
    if terms is not None:
        row(
            "window",
            f"at most {terms.max_duration_seconds // 60} min, "
            f"token {terms.token_ttl_seconds // 60} min, no renewal without new approvals",
        )
        for n, step in enumerate(terms.rollback_steps, 1):
            row("rollback" if n == 1 else "", f"{n}. {step}")
        row(
            "kill",
            ", ".join(terms.kill_switch_triggers) + " → " + ", ".join(terms.kill_switch_actions),
        )
    if decision.requires_plan_fingerprint:
        row("plan", "execution must present the approved plan fingerprint")
    if decision.sensitive_params:
        row("masked", ", ".join(sorted(decision.sensitive_params)))
    row("policy", f"{policy.name} · {policy.policy_hash_b64u}")
    return "\n".join(lines)
