"""Dependencies point down only: bot → adapters → core, and core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Libraries that mean I/O (network, database, chat platforms); core must not import them.
IO_LIBRARIES = {
    "adapters",
    "bot",
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "psycopg",
    "sqlite3",
    "slack_bolt",
    "slack_sdk",
    "botbuilder",
    "botframework",
    "msal",
    "aiohttp",
    "requests",
    "httpx",
    "urllib",
    "socket",
    "http",
    "subprocess",
    "asyncio",
    "mcp",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_adapter_bot_or_io_library(path: Path) -> None:
    bad = _imports(path) & IO_LIBRARIES
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("adapters"), ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_never_import_bot(path: Path) -> None:
    assert "bot" not in _imports(path), f"{path.relative_to(ROOT)} imports bot"


def test_core_does_not_open_files_or_read_the_clock() -> None:
    offenders = []
    for path in _modules("core"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in {"open", "now", "utcnow", "time", "today"}:
                    owner = (
                        func.value.id
                        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                        else ""
                    )
                    if name in {"now", "time"} and owner not in {"datetime", "time", ""}:
                        continue  # e.g. clock.now() through a port is fine
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {owner}.{name}()")
    assert not offenders, offenders


def test_the_architecture_test_sees_the_packages() -> None:
    assert len(_modules("core")) >= 5
    assert _imports(ROOT / "core" / "envelope.py") >= {"core"}
