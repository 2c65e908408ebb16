"""``keyturn teams package``: the Teams app package to upload or sideload.

::

    keyturn teams package --app-id <teams app GUID> --bot-id <Azure Bot app id> \
        --domain keyturn.example.com --out keyturn-teams.zip

The package is ``manifest.json`` (from ``manifests/teams/manifest.json``, filled) and
its two icons; upload it in the Teams admin center (Teams apps → Manage apps →
Upload) or sideload it (Apps → Manage your apps → Upload an app).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.teams.package import build_package

#: The manifest template and icons shipped with keyturn.
MANIFEST_DIR = Path(__file__).resolve().parents[1] / "manifests" / "teams"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    teams = subparsers.add_parser("teams", help="Microsoft Teams app")
    commands = teams.add_subparsers(dest="teams_command", metavar="COMMAND", required=True)
    package = commands.add_parser(
        "package",
        help="build the Teams app package (manifest.json + icons, zipped)",
        description="Fill the Teams manifest template and zip it with its icons.",
    )
    package.add_argument(
        "--app-id", required=True, metavar="GUID", help="the Teams app id (a new GUID, kept)"
    )
    package.add_argument(
        "--bot-id",
        required=True,
        metavar="GUID",
        help="the Azure Bot's Microsoft app id (Entra app registration client id)",
    )
    package.add_argument(
        "--domain", required=True, help="keyturn's public host name (no scheme, no path)"
    )
    package.add_argument("--out", required=True, type=Path, metavar="FILE", help="the .zip")
    package.add_argument(
        "--manifest-dir",
        type=Path,
        default=MANIFEST_DIR,
        metavar="DIR",
        help="a customised manifest template directory (manifest.json, color.png, outline.png)",
    )
    package.set_defaults(handler=_package)


def _package(args: argparse.Namespace) -> int:
    out = build_package(
        args.manifest_dir,
        args.out,
        teams_app_id=args.app_id,
        bot_app_id=args.bot_id,
        domain=args.domain,
    )
    print(f"wrote {out} (upload it in the Teams admin center or sideload it)")
    return 0
