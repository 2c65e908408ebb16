"""``keyturn breakglass …``: ask for, list and revoke time-boxed break-glass windows.

* ``keyturn breakglass request ROUTE key=value … --for 30m --reason "…" --as PERSON``
  opens a request that two approvers (never the requester) must approve; the window
  opens on approval and closes by itself when its time is up.
* ``keyturn breakglass list`` shows pending requests and open windows, with time left.
* ``keyturn breakglass revoke ID --as PERSON`` is the kill switch: the requester or an
  eligible approver closes the window now and every token of it is revoked.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from bot.bootstrap import App
from bot.cli import EXIT_CODES_HELP, EXIT_OK, CliError
from bot.cli_app import (
    add_installation_args,
    duration_text,
    person_arg,
    print_json,
    with_app,
)
from core.requests import RequestState
from core.times import to_iso

_DURATION = re.compile(r"\A(?:(\d{1,3})h)?(?:(\d{1,4})m)?(?:(\d{1,6})s)?\Z")
_KEY = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")

PARAMS_HELP = """the exact target, as key=value (a string) or key:=JSON (a number, list, …):
  tenant_id=00000000-… principal=alice@corp.example role="Privileged Role Administrator"
  amount_usd:=12500"""


def register(subparsers: Any) -> None:
    """Add the ``breakglass`` command group."""
    group = subparsers.add_parser(
        "breakglass",
        help="time-boxed emergency privileges, approved by two people",
        description="Ask for, list and revoke time-boxed break-glass windows.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(dest="breakglass_command", metavar="COMMAND", required=True)

    request = commands.add_parser(
        "request",
        help="ask for a break-glass window on ROUTE for one exact target",
        description=(
            "Open a break-glass request. The route must be a break-glass route of the active "
            "policy; two eligible approvers (never you) must approve it; the window then "
            "opens for --for and closes by itself. Prints the request id and the 4 characters "
            "approvers type to confirm."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    request.add_argument("route", metavar="ROUTE", help="e.g. entra.role.assign")
    request.add_argument("params", nargs="*", metavar="key=value", help=PARAMS_HELP)
    request.add_argument(
        "--for",
        dest="duration",
        required=True,
        metavar="DURATION",
        help="how long the window stays open: 30m, 1h, 1h30m (at most the policy's maximum)",
    )
    request.add_argument("--reason", required=True, help="why: shown on the approval card")
    request.add_argument("--ticket", help="incident or change ticket")
    request.add_argument(
        "--rollback",
        action="append",
        default=[],
        metavar="STEP",
        help="a rollback step, in order (repeatable; default: the policy's steps)",
    )
    request.add_argument(
        "--as",
        dest="person",
        required=True,
        metavar="PERSON",
        help="who is asking: directory object id (or email)",
    )
    request.add_argument("--json", action="store_true", help="print the request as JSON")
    add_installation_args(request)
    request.set_defaults(handler=run_request)

    listing = commands.add_parser(
        "list",
        help="pending break-glass requests and open windows, with time left",
        description="List pending break-glass requests and open windows, with time left.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_installation_args(listing)
    listing.set_defaults(handler=run_list)

    revoke = commands.add_parser(
        "revoke",
        help="the kill switch: close an open window now and revoke its tokens",
        description=(
            "Close an open break-glass window now. Allowed for the requester and for any "
            "eligible approver; every token of the window is revoked and the rollback "
            "checklist is printed."
        ),
    )
    revoke.add_argument("request_id", metavar="ID", help="the break-glass request id")
    revoke.add_argument(
        "--as",
        dest="person",
        required=True,
        metavar="PERSON",
        help="who pulls the switch: directory object id (or email)",
    )
    revoke.add_argument("--reason", default="kill switch", help="recorded in the receipt")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    add_installation_args(revoke)
    revoke.set_defaults(handler=run_revoke)


def parse_duration(text: str) -> int:
    """``30m`` → 1800 seconds.

    Raises:
        CliError: not of the form ``1h``, ``30m``, ``1h30m``, ``90s``.
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise CliError(f"--for {text!r}: say how long, like 30m, 1h or 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` (string) and ``key:=JSON`` pairs → the exact params object.

    Raises:
        CliError: a pair without ``=``, a bad key, a key given twice, or bad JSON.
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"{item!r}: write target values as key=value or key:=JSON")
        as_json = key.endswith(":")
        key = key.removesuffix(":")
        if not _KEY.match(key):
            raise CliError(f"{item!r}: {key!r} is not a parameter name")
        if key in params:
            raise CliError(f"{key} is given twice")
        if as_json:
            try:
                params[key] = json.loads(value, parse_constant=_no_constant)
            except ValueError as e:
                raise CliError(f"{key}:= is not JSON: {e}") from e
        else:
            params[key] = value
    return params


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def run_request(args: argparse.Namespace) -> int:
    duration = parse_duration(args.duration)
    params = parse_params(args.params)
    requester = person_arg(args.person)

    async def use(app: App) -> Any:
        return await app.service.request_breakglass(
            requester,
            route=args.route,
            params=params,
            duration_seconds=duration,
            reason=args.reason,
            ticket=args.ticket,
            rollback_steps=args.rollback,
        )

    submitted = with_app(args, use)
    confirm = submitted.payload_hash_b64u[-4:]
    if args.json:
        print_json({**submitted.to_json(), "window_seconds": duration, "confirmation": confirm})
        return EXIT_OK
    print(f"break-glass request {submitted.request_id} is waiting for approval")
    print(f"  route     {submitted.tool_route}")
    for need in submitted.needs:
        print(f"  needs     {need}")
    print(f"  window    {duration_text(duration)} from approval, then closed")
    print(f"  confirm   approvers type {confirm} (payload hash {submitted.payload_hash_b64u})")
    if submitted.expires_at is not None:
        print(f"  expires   {submitted.expires_at:%Y-%m-%d %H:%M} UTC if not approved")
    if submitted.card_url:
        print(f"  card      {submitted.card_url}")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    async def use(app: App) -> list[dict[str, Any]]:
        kt = app.service
        now = kt.rt.clock.now()
        views = await kt.list_requests(
            states=[RequestState.PENDING, RequestState.APPROVED], limit=500
        )
        rows: list[dict[str, Any]] = []
        for view in views:
            request = view.request
            if request.breakglass is None:
                continue
            if request.state is RequestState.APPROVED:
                if view.grant is None or view.grant.expires_at <= now:
                    continue  # lapsed: the scheduler closes it on its next run
                status, until = "open", view.grant.expires_at
            else:
                status, until = "pending", request.binding.expires_at
            rows.append(
                {
                    "request_id": request.request_id,
                    "status": status,
                    "route": request.binding.tool_route,
                    "requester": request.binding.requester,
                    "until": to_iso(until),
                    "seconds_left": max(0, int((until - now).total_seconds())),
                    "window_seconds": request.binding.breakglass_window_seconds,
                    "reason": request.justification,
                }
            )
        return rows

    rows = with_app(args, use)
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no pending break-glass requests and no open windows")
        return EXIT_OK
    print(f"{'REQUEST':<16} {'STATUS':<8} {'LEFT':>7}  {'REQUESTER':<14} {'ROUTE':<22} REASON")
    for row in rows:
        left = duration_text(row["seconds_left"])
        if row["status"] == "pending":
            left += "*"
        print(
            f"{row['request_id']:<16} {row['status']:<8} {left:>7}  {row['requester']:<14} "
            f"{row['route']:<22} {row['reason'] or ''}"
        )
    if any(r["status"] == "pending" for r in rows):
        print("* time left to approve before the request expires")
    return EXIT_OK


def run_revoke(args: argparse.Namespace) -> int:
    by = person_arg(args.person)

    async def use(app: App) -> tuple[str, list[str]]:
        kt = app.service
        await kt.revoke_breakglass(args.request_id, by, reason=args.reason)
        view = await kt.view(args.request_id)
        return str(view.request.state), list(view.card.rollback_steps)

    state, steps = with_app(args, use)
    if args.json:
        print_json({"request_id": args.request_id, "state": state, "rollback_steps": steps})
        return EXIT_OK
    print(f"break-glass window {args.request_id} closed ({state}); its tokens are revoked")
    for number, step in enumerate(steps, 1):
        print(f"  rollback {number}. {step}")
    return EXIT_OK
