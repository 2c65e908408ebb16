"""``keyturn db upgrade [--url URL]``: bring the database schema up to this version.

Hooked into the main CLI by ``bot.cli``::

    from bot import cli_db
    cli_db.register(subparsers, default_url=lambda: settings.database_url)

Each sub-command stores its handler as ``handler`` (``args.handler(args)`` returns the exit
code). The URL comes from ``--url``, else ``KEYTURN_DATABASE_URL``, else the
``default_url`` the main CLI supplies (the embedded SQLite file under the data
directory). Exit codes: 0 upgraded (or already current), 1 the database failed, 2 the
URL or configuration is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.store import head_revision, upgrade_database
from core.errors import ConfigError, StoreError

URL_ENV = "KEYTURN_DATABASE_URL"


def register(
    subparsers: argparse._SubParsersAction[Any],
    *,
    default_url: Callable[[], str] | None = None,
) -> None:
    """Add ``db`` (with ``upgrade``) to the main parser's sub-commands."""
    db = subparsers.add_parser("db", help="manage keyturn's database")
    commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = commands.add_parser(
        "upgrade",
        help="upgrade the database schema to this keyturn's version",
        description="Apply every schema migration the database lacks, in one transaction.",
    )
    upgrade.add_argument(
        "--url",
        help=f"database URL: sqlite:///path/keyturn.db or postgresql://user@host/db "
        f"(default: ${URL_ENV}, else the embedded SQLite file)",
    )
    upgrade.add_argument("--config", type=Path, help="keyturn TOML configuration file")
    upgrade.set_defaults(
        handler=lambda args: run_upgrade(args, default_url=default_url or _settings_url(args))
    )


def _settings_url(args: argparse.Namespace) -> Callable[[], str]:
    def url() -> str:
        from bot.settings import load_settings

        settings = load_settings(getattr(args, "config", None))
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return settings.resolved_database_url

    return url


def run_upgrade(args: argparse.Namespace, *, default_url: Callable[[], str] | None = None) -> int:
    """Handle ``keyturn db upgrade``; returns the process exit code."""
    url = args.url or os.environ.get(URL_ENV) or (default_url() if default_url else None)
    if not url:
        print(f"keyturn db upgrade: no database URL (use --url or set {URL_ENV})", file=sys.stderr)
        return 2
    try:
        before, after = asyncio.run(upgrade_database(url))
    except ConfigError as e:
        print(f"keyturn db upgrade: {e.message}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"keyturn db upgrade: {e.reason_code}: {e.message}", file=sys.stderr)
        return 1
    if before == after:
        print(f"database schema already at revision {after} (newest: {head_revision()})")
    else:
        print(f"database schema upgraded from {before or 'empty'} to {after}")
    return 0
