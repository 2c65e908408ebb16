"""``keyturn serve``, ``keyturn demo``, ``keyturn log verify`` and ``keyturn agents add``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from bot.logging_setup import configure_logging
from bot.settings import KeyturnSettings, load_settings
from core.canonical import b64u_encode
from core.errors import KeyturnError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser("serve", help="run keyturn's server (agent API, scheduler)")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    _log_format_arg(serve, "json")
    serve.set_defaults(handler=_serve)

    demo = subparsers.add_parser(
        "demo",
        help="the embedded default: SQLite, generated keys, demo policy and directory",
        description=(
            "Create a data directory with a SQLite store, fresh keys, a signed demo policy, a "
            "static directory and a demo agent; run the two-person-rule story through the "
            "real use cases; then keep serving the agent API on 127.0.0.1."
        ),
    )
    demo.add_argument("--data-dir", type=Path, default=Path("keyturn-data/demo"))
    demo.add_argument("--port", type=int, default=8420)
    demo.add_argument("--scripted", action="store_true", help="run the story, then exit 0/1")
    demo.add_argument("--out", type=Path, help="write bundles, checkpoint and DID document here")
    demo.add_argument("--fresh", action="store_true", help="delete the data directory first")
    _log_format_arg(demo, "kv")
    demo.set_defaults(handler=_demo)

    log = subparsers.add_parser("log", help="the receipt log")
    log_commands = log.add_subparsers(dest="log_command", metavar="COMMAND", required=True)
    verify = log_commands.add_parser(
        "verify",
        help="replay the whole log and check every root and checkpoint signature",
    )
    verify.add_argument("--config", type=Path, help="TOML configuration file")
    verify.add_argument("--data-dir", type=Path, help="data directory (default from settings)")
    verify.set_defaults(handler=_log_verify)

    agents = subparsers.add_parser("agents", help="agents allowed to start jobs")
    agent_commands = agents.add_subparsers(dest="agents_command", metavar="COMMAND", required=True)
    add = agent_commands.add_parser("add", help="register an agent by its did:key")
    add.add_argument("did")
    add.add_argument("--name", required=True)
    add.add_argument("--config", type=Path, help="TOML configuration file")
    add.set_defaults(handler=_agents_add)


def _log_format_arg(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-format",
        choices=("json", "kv"),
        default=default,
        help=f"application log on stderr: JSON lines or key=value (default {default})",
    )


def _serve(args: argparse.Namespace) -> int:
    from bot.bootstrap import running
    from bot.server import run, serve

    configure_logging(fmt=args.log_format)
    settings = load_settings(args.config)

    async def main() -> None:
        async with running(settings) as app:
            await serve(app, ready=lambda url: print(f"keyturn listening on {url}", flush=True))

    run(main())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bot import demo
    from bot.server import run, serve

    configure_logging(fmt=args.log_format, level=logging.WARNING if args.scripted else logging.INFO)
    if args.fresh:
        demo.reset(args.data_dir)

    async def main() -> int:
        app = await demo.start(args.data_dir, host="127.0.0.1", port=args.port)
        story = demo.Story(sys.stdout)
        stop = asyncio.Event()
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            serve(
                app,
                console=demo.console_options(app),
                ready=lambda url: listening.set_result(url),
                stop=stop,
            )
        )
        try:
            url = await asyncio.wait_for(asyncio.shield(listening), timeout=30)
            story.say(f"keyturn demo · data in {args.data_dir.resolve()} · serving {url}\n")
            try:
                await demo.scripted(app, story, url=url, out_dir=args.out)
            except (demo.ScriptFailed, KeyturnError) as e:
                story.say(f"\nFAILED: {e}")
                return 1
            story.say("\nThe two-person rule held at every step.")
            if args.scripted:
                return 0
            _show(story, url, app.settings)
            await server
            return 0
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await server
            await app.close()

    return run(main())


def _show(story: Any, url: str, settings: KeyturnSettings) -> None:
    story.say(
        f"\nOpen the web console: {url}/  (sign in as Alice, Bob, Carol, Dan or Mallory;\n"
        f"submit a test call or a break-glass request, approve it as two other people).\n"
        f"keyturn also serves the agent API there (Ctrl-C to stop). Try:\n"
        f"  curl -s {url}/.well-known/keyturn\n"
        f"  curl -s {url}/v1/log/checkpoint\n"
        f"  curl -s {url}/openapi.json\n"
        f"  keyturn log verify --data-dir {settings.data_dir}\n"
        f"  keyturn verify BUNDLE.json --trust <did from .well-known>   (with --out DIR)"
    )


def _settings_for(args: argparse.Namespace) -> KeyturnSettings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    return load_settings(getattr(args, "config", None), **overrides)


def _log_verify(args: argparse.Namespace) -> int:
    from adapters.signer import FileSigner
    from adapters.store import open_store, verify_log

    settings = _settings_for(args)
    if not (settings.data_dir / "keyturn.db").exists() and settings.database_url is None:
        raise KeyturnError("CONFIG_MISSING", f"no keyturn database in {settings.data_dir}")
    signer = FileSigner.load(settings.resolved_signing_key_file)

    async def main() -> int:
        store = await open_store(settings.resolved_database_url, auto_upgrade=False)
        try:
            origin = _origin(settings, args)
            result = await verify_log(store, origin=origin, public_keys={origin: signer.public_key})
        finally:
            await store.close()
        print(
            f"PASS  log {origin}: {result.size} entries, root {b64u_encode(result.root_hash)}, "
            f"{result.checkpoints} signed checkpoint(s) verified "
            f"(latest at size {result.latest_checkpoint_size})"
        )
        if (
            result.latest_checkpoint_size is not None
            and result.latest_checkpoint_size < result.size
        ):
            waiting = result.size - result.latest_checkpoint_size
            print(f"      {waiting} newest entries await the next checkpoint")
        return 0

    return asyncio.run(main())


def _origin(settings: KeyturnSettings, args: argparse.Namespace) -> str:
    # The demo's log has its own origin; everything else uses the configured one.
    if (
        getattr(args, "config", None) is None
        and (settings.data_dir / "demo-policy.wpc.json").exists()
    ):
        return "keyturn/demo"
    return settings.log.origin


def _agents_add(args: argparse.Namespace) -> int:
    from bot.bootstrap import running

    settings = load_settings(args.config)

    async def main() -> None:
        async with running(settings) as app:
            await app.service.register_agent(args.did, name=args.name, by="cli")

    asyncio.run(main())
    print(f"registered agent {args.name} ({args.did})")
    return 0
