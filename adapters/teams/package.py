"""``keyturn teams package``: the Teams app package (manifest.json + two icons, zipped).

The manifest template (``manifests/teams/manifest.json``) holds placeholders
``{{TEAMS_APP_ID}}``, ``{{BOT_APP_ID}}`` and ``{{PUBLIC_DOMAIN}}``; the package refuses
to build with any left unfilled. Icons are PNGs next to the template: ``color.png``
(192×192) and ``outline.png`` (32×32, white on transparent); :func:`write_icons`
draws them (run once; they are committed).
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from core.errors import ConfigError

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(
    r"^(?=.{3,253}$)[A-Za-z0-9*](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
FILES = ("manifest.json", "color.png", "outline.png")


def render_manifest(
    template: str, *, teams_app_id: str, bot_app_id: str, domain: str
) -> dict[str, Any]:
    """Fill the template.

    Raises:
        ConfigError: ``CONFIG_INVALID`` for a non-GUID id, a bad domain, or a
            placeholder left unfilled.
    """
    for name, value in (("teams app id", teams_app_id), ("bot app id", bot_app_id)):
        if not _GUID.match(value):
            raise ConfigError("CONFIG_INVALID", f"the {name} must be a GUID, not {value!r}")
    if not _DOMAIN.match(domain):
        raise ConfigError("CONFIG_INVALID", f"{domain!r} is not a domain name (no scheme, no path)")
    text = (
        template.replace("{{TEAMS_APP_ID}}", teams_app_id)
        .replace("{{BOT_APP_ID}}", bot_app_id)
        .replace("{{PUBLIC_DOMAIN}}", domain)
    )
    if "{{" in text:
        raise ConfigError(
            "CONFIG_INVALID", "the Teams manifest template has an unfilled placeholder"
        )
    manifest: dict[str, Any] = json.loads(text)
    return manifest


def build_package(
    manifest_dir: Path, out: Path, *, teams_app_id: str, bot_app_id: str, domain: str
) -> Path:
    """Write the app package zip to ``out`` and return it.

    Raises:
        ConfigError: ``CONFIG_MISSING`` when a file is missing; see :func:`render_manifest`.
    """
    missing = [name for name in FILES if not (manifest_dir / name).is_file()]
    if missing:
        raise ConfigError("CONFIG_MISSING", f"{manifest_dir} lacks {', '.join(missing)}")
    manifest = render_manifest(
        (manifest_dir / "manifest.json").read_text(encoding="utf-8"),
        teams_app_id=teams_app_id,
        bot_app_id=bot_app_id,
        domain=domain,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        for name in FILES[1:]:
            zf.write(manifest_dir / name, arcname=name)
    return out


def png(width: int, height: int, pixel: Any) -> bytes:
    """A minimal RGBA PNG; ``pixel(x, y)`` returns (r, g, b, a)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _key_shape(x: float, y: float) -> bool:
    """A key: a ring (the bow) and a shaft with two teeth, in unit coordinates."""
    ring = (x - 0.32) ** 2 + (y - 0.5) ** 2
    if 0.018 <= ring <= 0.045:
        return True
    if 0.5 <= x <= 0.86 and 0.46 <= y <= 0.54:
        return True
    return (0.7 <= x <= 0.75 or 0.8 <= x <= 0.86) and 0.54 <= y <= 0.66


def write_icons(directory: Path) -> None:
    """Draw ``color.png`` (192×192, white key on the accent colour) and ``outline.png``
    (32×32, white key on transparent)."""

    def color(x: int, y: int) -> tuple[int, int, int, int]:
        return (255, 255, 255, 255) if _key_shape(x / 192, y / 192) else (0xB4, 0x23, 0x2A, 255)

    def outline(x: int, y: int) -> tuple[int, int, int, int]:
        return (255, 255, 255, 255) if _key_shape((x + 0.5) / 32, (y + 0.5) / 32) else (0, 0, 0, 0)

    (directory / "color.png").write_bytes(png(192, 192, color))
    (directory / "outline.png").write_bytes(png(32, 32, outline))
