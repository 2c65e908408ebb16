"""``keyturn entra check``: validate the Entra ID configuration against the tenant.

Hook-up (in ``bot/cli.py``): call ``register(subparsers)`` with the top-level
``add_subparsers()`` object; the ``check`` parser sets ``handler=handle_check``, which
takes the parsed ``argparse.Namespace`` and returns the exit status.

Settings come from flags, else from the environment. Secrets are read from the
environment only (a command line is visible to every user of the machine):

==================================  ==================================================
``--tenant-id``                     ``KEYTURN_ENTRA_TENANT_ID``
``--client-id``                     ``KEYTURN_ENTRA_CLIENT_ID``
(secret)                            ``KEYTURN_ENTRA_CLIENT_SECRET``
``--certificate PATH``              ``KEYTURN_ENTRA_CERTIFICATE_PATH``
(certificate passphrase)            ``KEYTURN_ENTRA_CERTIFICATE_PASSPHRASE``
``--certificate-thumbprint``        ``KEYTURN_ENTRA_CERTIFICATE_THUMBPRINT``
``--authority-base``                ``KEYTURN_ENTRA_AUTHORITY_BASE``
``--graph-base``                    ``KEYTURN_ENTRA_GRAPH_BASE``
``--group ID`` (repeatable)         ``KEYTURN_ENTRA_GROUPS`` (comma-separated)
``--pim``                           ``KEYTURN_ENTRA_REQUIRE_PIM=1``
``--executors role,group``          ``KEYTURN_ENTRA_EXECUTORS`` (comma-separated)
==================================  ==================================================

``--executors`` names the Entra executors keyturn is configured to run (``role`` =
``entra.role.assign``, ``group`` = ``entra.group.add``; the full kinds work too), so
their PIM write permissions are checked as well.

Exit status: 0 when everything is in place, 1 when something is missing or refused
(each problem is printed), 2 when the settings themselves are invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from pydantic import ValidationError

from adapters.entra import EntraDirectory, EntraSettings, check_configuration

_ENV = "KEYTURN_ENTRA_"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``entra`` (with its ``check`` subcommand) to keyturn's command line."""
    entra = subparsers.add_parser("entra", help="Entra ID directory tools")
    commands = entra.add_subparsers(dest="entra_command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="check the Entra configuration against the tenant",
        description=(
            "Acquire an app-only token, compare its application permissions with what "
            "keyturn needs, and check that the given groups exist. Prints what is missing."
        ),
    )
    check.add_argument("--tenant-id", help=f"tenant GUID or domain ({_ENV}TENANT_ID)")
    check.add_argument("--client-id", help=f"application (client) id ({_ENV}CLIENT_ID)")
    check.add_argument(
        "--certificate", metavar="PATH", help=f"PEM or PFX file ({_ENV}CERTIFICATE_PATH)"
    )
    check.add_argument(
        "--certificate-thumbprint", help=f"legacy SHA-1 thumbprint ({_ENV}CERTIFICATE_THUMBPRINT)"
    )
    check.add_argument("--authority-base", help=f"login host ({_ENV}AUTHORITY_BASE)")
    check.add_argument("--graph-base", help=f"Graph root with version ({_ENV}GRAPH_BASE)")
    check.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="ID",
        help=f"an approver group's object id; repeat for several ({_ENV}GROUPS)",
    )
    check.add_argument(
        "--pim",
        action="store_true",
        help=f"policies require PIM: also check the PIM permission ({_ENV}REQUIRE_PIM=1)",
    )
    check.add_argument(
        "--executors",
        metavar="KINDS",
        help=(
            "configured Entra executors, comma-separated: role (entra.role.assign), "
            f"group (entra.group.add); also checks their permissions ({_ENV}EXECUTORS)"
        ),
    )
    check.set_defaults(handler=handle_check)


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> EntraSettings:
    """Build ``EntraSettings`` from flags, falling back to ``KEYTURN_ENTRA_*`` variables.

    Raises:
        ValidationError: a value is missing or invalid.
    """

    def pick(flag: str | None, name: str) -> str | None:
        if flag:
            return flag
        value = environ.get(_ENV + name, "").strip()
        return value or None

    values: dict[str, Any] = {
        "tenant_id": pick(args.tenant_id, "TENANT_ID"),
        "client_id": pick(args.client_id, "CLIENT_ID"),
        "client_secret": pick(None, "CLIENT_SECRET"),
        "client_certificate_path": pick(args.certificate, "CERTIFICATE_PATH"),
        "client_certificate_passphrase": pick(None, "CERTIFICATE_PASSPHRASE"),
        "client_certificate_thumbprint": pick(
            args.certificate_thumbprint, "CERTIFICATE_THUMBPRINT"
        ),
        "authority_base": pick(args.authority_base, "AUTHORITY_BASE"),
        "graph_base": pick(args.graph_base, "GRAPH_BASE"),
    }
    return EntraSettings(**{k: v for k, v in values.items() if v is not None})


def groups_from(args: argparse.Namespace, environ: Mapping[str, str]) -> list[str]:
    if args.group:
        return [g.strip() for g in args.group if g.strip()]
    return [g.strip() for g in environ.get(_ENV + "GROUPS", "").split(",") if g.strip()]


EXECUTOR_ALIASES = {
    "role": "entra.role.assign",
    "entra.role.assign": "entra.role.assign",
    "group": "entra.group.add",
    "entra.group.add": "entra.group.add",
}


def executors_from(args: argparse.Namespace, environ: Mapping[str, str]) -> list[str]:
    """The executor kinds from ``--executors`` (else ``KEYTURN_ENTRA_EXECUTORS``).

    Raises:
        ValueError: a name that is not an Entra executor.
    """
    raw = getattr(args, "executors", None) or environ.get(_ENV + "EXECUTORS", "")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXECUTOR_ALIASES]
    if unknown:
        raise ValueError(
            f"unknown executor {', '.join(unknown)}: use role (entra.role.assign) "
            "or group (entra.group.add)"
        )
    return sorted({EXECUTOR_ALIASES[n] for n in names})


def pim_from(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    flag = environ.get(_ENV + "REQUIRE_PIM", "").strip().lower()
    return bool(args.pim) or flag in ("1", "true", "yes")


async def run_check(
    settings: EntraSettings,
    group_ids: Sequence[str],
    *,
    require_pim: bool,
    out: TextIO,
    http_client: Any = None,
    executors: Sequence[str] = (),
) -> int:
    """Run the checks, print the report to ``out``, return the exit status (0 or 1)."""
    async with EntraDirectory(settings, http_client=http_client) as directory:
        report = await check_configuration(
            directory, group_ids, require_pim=require_pim, executors=executors
        )
    print(report.render(), file=out)
    return 0 if report.ok else 1


def handle_check(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """The ``keyturn entra check`` handler: returns the process exit status."""
    environ = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    try:
        settings = settings_from(args, environ)
    except ValidationError as e:
        print("Entra settings are invalid:", file=out)
        for error in e.errors():
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"  {where}: {error['msg']}", file=out)
        return 2
    try:
        executors = executors_from(args, environ)
    except ValueError as e:
        print(f"Entra settings are invalid:\n  executors: {e}", file=out)
        return 2
    return asyncio.run(
        run_check(
            settings,
            groups_from(args, environ),
            require_pim=pim_from(args, environ),
            out=out,
            executors=executors,
        )
    )
