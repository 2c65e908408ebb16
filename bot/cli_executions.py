"""``keyturn executions …``: what keyturn's executors did, and resolving their failures.

* ``keyturn executions list [--all]`` shows break-glass requests keyturn executes itself:
  by default the ones under way (window open) and the ones that need a person
  (``execute_failed``, ``verify_failed``, ``rollback_failed``).
* ``keyturn executions show ID`` prints one execution: its state and every step receipt.
* ``keyturn executions resolve ID --by PERSON --note "…"``: an eligible approver (never
  the requester) says what they did about a failed execution; the note is receipted and
  the alert clears.

They act on the installation's store like ``keyturn breakglass`` (``--config`` /
``--data-dir``); the executors come from its ``[executors]`` settings.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.bootstrap import App
from bot.cli import EXIT_CODES_HELP, EXIT_OK, CliError
from bot.cli_app import add_installation_args, person_arg, print_json, with_app
from bot.service.execution import Executions
from core.executor import ExecutionState, ExecutionStatus
from core.requests import ApprovalRequest

RESOLVE_HINT = 'keyturn executions resolve {rid} --by EMAIL --note "what you did"'


def register(subparsers: Any) -> None:
    """Add the ``executions`` command group."""
    group = subparsers.add_parser(
        "executions",
        help="break-glass actions keyturn executes itself: state, steps, resolving failures",
        description=(
            "Inspect the executions of break-glass requests bound to an executor, and "
            "resolve a failed one (rollback_failed, verify_failed, execute_failed)."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(dest="executions_command", metavar="COMMAND", required=True)

    listing = commands.add_parser(
        "list",
        help="executions under way and the ones that need a person",
        description=(
            "List executions under way (window open) and failed ones awaiting a person; "
            "--all adds rolled back, resolved and never-run ones."
        ),
    )
    listing.add_argument("--all", action="store_true", help="include settled executions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_installation_args(listing)
    listing.set_defaults(handler=run_list)

    show = commands.add_parser(
        "show",
        help="one execution: state and every step receipt",
        description="Show one request's execution: its state and each executor_step receipt.",
    )
    show.add_argument("request_id", metavar="ID", help="the break-glass request id")
    show.add_argument("--json", action="store_true", help="print JSON")
    add_installation_args(show)
    show.set_defaults(handler=run_show)

    resolve = commands.add_parser(
        "resolve",
        help="clear a failed execution, saying what was done (receipted)",
        description=(
            "Resolve a failed execution (rollback_failed, verify_failed, execute_failed) "
            "after checking and fixing the target by hand. Allowed for an eligible approver "
            "of the request, never its requester; the note goes into the signed receipt."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    resolve.add_argument("request_id", metavar="ID", help="the break-glass request id")
    resolve.add_argument(
        "--by",
        dest="person",
        required=True,
        metavar="PERSON",
        help="who resolves it: directory object id (or email)",
    )
    resolve.add_argument(
        "--note", required=True, help="what was checked and done (goes into the receipt)"
    )
    resolve.add_argument("--json", action="store_true", help="print JSON")
    add_installation_args(resolve)
    resolve.set_defaults(handler=run_resolve)


def _executions(app: App) -> Executions:
    if app.executions is None:
        raise CliError(
            "this installation configures no executors ([executors] in the settings), "
            "so keyturn executes nothing itself"
        )
    return app.executions


def _row(request: ApprovalRequest, status: ExecutionStatus) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "route": request.binding.tool_route,
        "requester": request.binding.requester,
        "request_state": str(request.state),
        "executor": status.executor,
        "state": str(status.state),
        "needs_person": status.alerting,
        "detail": status.last_detail,
    }


def run_list(args: argparse.Namespace) -> int:
    async def use(app: App) -> list[dict[str, Any]]:
        found = await _executions(app).overview(include_settled=args.all)
        return [_row(request, status) for request, status in found]

    rows = with_app(args, use)
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no executions under way and none waiting for a person")
        return EXIT_OK
    print(f"{'REQUEST':<16} {'STATE':<16} {'WINDOW':<9} {'ROUTE':<22} DETAIL")
    for row in rows:
        mark = "!" if row["needs_person"] else " "
        print(
            f"{row['request_id']:<16} {row['state']:<15}{mark} {row['request_state']:<9} "
            f"{row['route']:<22} {row['detail']}"
        )
    if any(r["needs_person"] for r in rows):
        print("! needs a person: " + RESOLVE_HINT.format(rid="ID"))
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    async def use(app: App) -> dict[str, Any]:
        executions = _executions(app)
        view = await app.service.view(args.request_id)
        status = await executions.status(args.request_id)
        steps = await executions.history(args.request_id)
        return {
            **_row(view.request, status),
            "bound": executions.bound(view.request),
            "steps": [s.to_json() for s in steps],
        }

    shown = with_app(args, use)
    if args.json:
        print_json(shown)
        return EXIT_OK
    rid = shown["request_id"]
    if not shown["bound"]:
        print(f"{rid} ({shown['route']}) is not executed by keyturn: no executor is bound")
        return EXIT_OK
    print(f"execution of {rid}  ({shown['route']}, executor {shown['executor'] or '—'})")
    print(f"  state     {shown['state']}  (request {shown['request_state']})")
    for step in shown["steps"]:
        who = step["actor_name"] or step["actor"]
        print(
            f"  #{step['receipt_index']:<5} {step['at']}  {step['step']:<16} "
            f"{step['outcome']:<7} ×{step['attempts']}  {who}: {step['detail']}"
        )
    if shown["state"] == ExecutionState.NOT_STARTED:
        print("  nothing executed yet")
    if shown["needs_person"]:
        print(f"  NEEDS A PERSON: check the target by hand, then {RESOLVE_HINT.format(rid=rid)}")
    return EXIT_OK


def run_resolve(args: argparse.Namespace) -> int:
    by = person_arg(args.person)

    async def use(app: App) -> ExecutionStatus:
        return await _executions(app).resolve(args.request_id, by, note=args.note)

    status = with_app(args, use)
    if args.json:
        print_json(
            {"request_id": args.request_id, "state": str(status.state), "note": args.note.strip()}
        )
        return EXIT_OK
    print(f"execution of {args.request_id} resolved ({status.state}); the note is receipted")
    return EXIT_OK
