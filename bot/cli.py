"""keyturn's command line: ``keyturn <group> <command> …``.

Each command group lives in its own module ``bot/cli_<group>.py`` with one function,
``register(subparsers)``, that adds its parser and sets ``handler`` (a function from
the parsed arguments to an exit code) on each command. To add a group, write the
module and add its name to :data:`COMMAND_MODULES`; nothing else changes.

Exit codes are shared by every command: 0 success (for ``policy check``: allowed),
1 error (usage, unreadable input, anything refused), 2 gated (needs approval),
3 denied. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from core.errors import KeyturnError

log = logging.getLogger(__name__)

#: Command-group modules, in the order ``keyturn --help`` lists them.
COMMAND_MODULES: list[str] = [
    "bot.cli_policy",
    "bot.cli_keys",
    "bot.cli_entra",
    "bot.cli_verify",
    "bot.cli_db",
    "bot.cli_serve",
    "bot.cli_breakglass",
    "bot.cli_executions",
    "bot.cli_gate",
    "bot.cli_mcp",
    "bot.cli_teams",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_GATED = 2
EXIT_DENIED = 3

EXIT_CODES_HELP = """exit codes:
  0  success (policy check: the call is allowed)
  1  error: bad usage, unreadable or invalid input, refused document
  2  the call is gated: it needs approval
  3  the call is denied"""


class CliError(Exception):
    """A problem with the command's input, reported as one line (exit code 1)."""


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with 1 (2 means "gated" here)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> CliParser:
    """The full parser: the top level plus every registered command group."""
    parser = CliParser(
        prog="keyturn",
        description="keyturn: two-person approval for high-risk agent actions.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help exits 0, usage errors exit 1
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(handler(args))
    except KeyturnError as e:
        _fail(f"{e.reason_code}: {e.message}")
    except CliError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the promise is one line, never a traceback
        log.debug("unexpected error", exc_info=True)
        _fail(f"internal error ({type(e).__name__}): {e}")
    return EXIT_ERROR


def _fail(message: str) -> None:
    print(f"keyturn: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy, so that command modules
    # and this entry point share one CliError class.
    from bot.cli import main as _main

    raise SystemExit(_main())
