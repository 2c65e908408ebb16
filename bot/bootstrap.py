"""The composition root: the one place that knows every concrete class.

:func:`build` turns settings into a running :class:`~bot.service.Keyturn`: the store
(migrated to the current schema), keyturn's signing key, the directory, the token
verifier, the receipt log rebuilt from the store, and the first policy when none is
active. Nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.directory import StaticDirectory
from adapters.signer import FileSigner, generate_key_file
from adapters.store import SqlStore, open_store
from bot.service import Keyturn
from bot.service.evidence import Evidence
from bot.service.runtime import Runtime, SystemClock
from bot.settings import KeyturnSettings
from core.errors import ConfigError, KeyturnError
from core.ports import Directory
from core.tokens import TokenVerifier

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: KeyturnSettings
    service: Keyturn
    store: SqlStore
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.service.close()
        await self.store.close()


def _directory(settings: KeyturnSettings) -> Directory:
    if settings.directory_file is None:
        raise ConfigError(
            "CONFIG_MISSING",
            "no directory configured: set directory_file (static YAML) (KEYTURN_DIRECTORY_FILE)",
        )
    return StaticDirectory(settings.directory_file)


async def build(
    settings: KeyturnSettings,
    *,
    create_key: bool = False,
    directory: Directory | None = None,
    clock: Any = None,
) -> App:
    """Build the service from settings.

    Raises:
        ConfigError: a missing key file (unless ``create_key``), a missing directory,
            or an unreadable policy file; store and policy errors as raised.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key_file = settings.resolved_signing_key_file
    if create_key and not key_file.exists():
        generate_key_file(key_file)
        log.info("generated keyturn's signing key at %s", key_file)
    signer = FileSigner.load(key_file)
    store = await open_store(settings.resolved_database_url, auto_upgrade=True)
    try:
        clock = clock or SystemClock()
        runtime = Runtime(
            store=store,
            signer=signer,
            directory=directory or _directory(settings),
            clock=clock,
            tokens=TokenVerifier({signer.kid: signer.public_key}),
            audience=settings.tokens.audience,
            public_url=settings.public_url,
            runner_ttl_seconds=settings.tokens.runner_ttl_seconds,
            challenge_ttl_seconds=settings.tokens.challenge_ttl_seconds,
        )
        evidence = Evidence(
            store,
            signer,
            runtime.hub,
            origin=settings.log.origin,
            checkpoint_every=settings.log.checkpoint_every_entries,
            checkpoint_interval=timedelta(seconds=settings.log.checkpoint_every_seconds),
        )
        await evidence.start(clock.now())
        service = Keyturn(runtime, evidence, trusted_issuers=settings.trusted_policy_issuers)
        if settings.policy_file is not None and not await _has_policy(store):
            # Only the first policy is installed from the file; later ones are proposed
            # and approved, so the file no longer decides once a change went through.
            await service.install_policy(_read_json(settings.policy_file), actor="keyturn-setup")
    except BaseException:
        await store.close()
        raise
    return App(settings=settings, service=service, store=store)


async def _has_policy(store: SqlStore) -> bool:
    async with store.unit_of_work(read_only=True) as uow:
        return await uow.policies.active() is not None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError("CONFIG_MISSING", f"policy file {path} not found") from e
    except json.JSONDecodeError as e:
        raise ConfigError("CONFIG_INVALID", f"policy file {path} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError("CONFIG_INVALID", f"policy file {path} is not a JSON object")
    return data


async def scheduler(service: Keyturn, *, every_seconds: float = 1.0) -> None:
    """Expire requests, close break-glass windows and checkpoint the log, forever.

    Every replica may run it: each change is a conditional update in the store.
    """
    while True:
        try:
            await service.run_due()
        except KeyturnError as e:
            log.warning("scheduled run refused: %s", e)
        except Exception:
            log.exception("scheduled run failed")
        await asyncio.sleep(every_seconds)


@contextlib.asynccontextmanager
async def running(settings: KeyturnSettings, **kw: Any) -> AsyncIterator[App]:
    app = await build(settings, **kw)
    try:
        yield app
    finally:
        await app.close()
