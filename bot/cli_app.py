"""What the commands that act on a keyturn installation share.

Commands such as ``keyturn breakglass …`` and ``keyturn policy propose`` run the real
use cases against the installation's store (not through its HTTP API): they build
the service from the same settings ``keyturn serve`` uses, run one use case and exit.
Every receipt they cause lands in the same log. (The chat cards the server posts are
driven by events in the server's own process, which a separate command does not
reach; the outbox, once present, delivers them from the store.)

Settings come from ``--config FILE`` (plus ``KEYTURN_*`` variables); ``--data-dir D``
alone pointing at a ``keyturn demo`` data directory uses the demo's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from bot.bootstrap import App, running
from bot.settings import KeyturnSettings, load_settings
from core.identity import IdentityKind, IdentityRef

T = TypeVar("T")

DEMO_MARKER = "demo-policy.wpc.json"


def add_installation_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--data-dir``: which keyturn installation to act on."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="data directory (a keyturn demo directory works on its own)",
    )


def settings_for(args: argparse.Namespace) -> KeyturnSettings:
    """The installation's settings, as :func:`add_installation_args` describes.

    Raises:
        ConfigError: as :func:`bot.settings.load_settings`.
    """
    config: Path | None = getattr(args, "config", None)
    data_dir: Path | None = getattr(args, "data_dir", None)
    if config is None and data_dir is not None and (data_dir / DEMO_MARKER).is_file():
        from bot.demo import demo_settings

        return demo_settings(data_dir)
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
    return load_settings(config, **overrides)


def with_app(args: argparse.Namespace, use: Callable[[App], Awaitable[T]]) -> T:
    """Build the service from the installation's settings, run ``use`` on it, close it."""
    settings = settings_for(args)

    async def main() -> T:
        async with running(settings) as app:
            return await use(app)

    return asyncio.run(main())


def person_arg(value: str) -> IdentityRef:
    """``--as``: a person's directory object id, or their email when it has an ``@``."""
    kind = IdentityKind.EMAIL if "@" in value else IdentityKind.OBJECT_ID
    return IdentityRef(kind, value)


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def duration_text(left: timedelta | float) -> str:
    """``1h05m``, ``4m30s``, ``0s``: a time left (or seconds), for people."""
    seconds = max(0, int(left.total_seconds() if isinstance(left, timedelta) else left))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
