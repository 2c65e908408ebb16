"""The composition root: the one place that knows every concrete class.

:func:`build` turns settings into a running :class:`~bot.service.Keyturn`: the store
(migrated to the current schema), keyturn's signing key, the directory, the token
verifier, the receipt log rebuilt from the store, the first policy when none is
active, and the configured executors (``[executors]``): installed so an approved
break-glass request bound to one is executed at once and rolled back when its window
closes. Nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.directory import StaticDirectory
from adapters.executors import build_executors
from adapters.signer import FileSigner, generate_key_file
from adapters.store import SqlStore, open_store
from bot.service import Keyturn
from bot.service.evidence import Evidence
from bot.service.execution import Executions, install
from bot.service.reconcile import Reconciler
from bot.service.runtime import Runtime, SystemClock
from bot.service.seal_checks import SealChecks
from bot.settings import KeyturnSettings
from core.errors import ConfigError, KeyturnError
from core.executor import Executor, ExecutorRegistry, RetryPolicy
from core.policy import Policy
from core.ports import Clock, Directory, Signer
from core.tokens import TokenVerifier

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: KeyturnSettings
    service: Keyturn
    store: SqlStore
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: The configured executors at work (None: no ``[executors]`` configured).
    executions: Executions | None = None
    #: Reconciliation of what the executors granted (None: no executors, or disabled).
    reconciler: Reconciler | None = None
    #: Run last on close (e.g. the demo's local receiver), newest first.
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.executions is not None:
            await self.executions.aclose()  # finishes or cancels calls, closes HTTP clients
        await self.service.close()
        await self.store.close()
        for close in reversed(self.on_close):
            with contextlib.suppress(Exception):
                await close()


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
            an unreadable policy file, or an executor its adapter refuses (the message
            names the ``executors.NAME`` setting); store and policy errors as raised.
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
        service = Keyturn(
            runtime,
            evidence,
            trusted_issuers=settings.trusted_policy_issuers,
            seal_checks=SealChecks(processes=settings.sealing.processes),
        )
        if settings.policy_file is not None and not await _has_policy(store):
            # Only the first policy is installed from the file; later ones are proposed
            # and approved, so the file no longer decides once a change went through.
            await service.install_policy(_read_json(settings.policy_file), actor="keyturn-setup")
        executions, executors = await _executions(settings, service, signer=signer, clock=clock)
        reconciler = None
        if executions is not None and settings.reconcile.enabled:
            try:
                reconciler = Reconciler.build(service, executions, executors, settings.reconcile)
            except ConfigError as e:
                await executions.aclose()
                raise ConfigError(e.reason_code, f"setting reconcile: {e.message}") from e
    except BaseException:
        await store.close()
        raise
    return App(
        settings=settings,
        service=service,
        store=store,
        executions=executions,
        reconciler=reconciler,
    )


async def _executions(
    settings: KeyturnSettings, service: Keyturn, *, signer: Signer, clock: Clock
) -> tuple[Executions | None, dict[str, Executor]]:
    """Build the configured executors and install them (automatic execution and rollback).

    Raises:
        ConfigError: ``executors.NAME: …`` when an adapter refuses its options.
    """
    if not settings.executors:
        return None, {}
    registry = settings.executor_registry
    built: dict[str, Executor] = {}
    try:
        for name, binding in registry.bindings.items():
            # One binding at a time, so the error names the executor it is about.
            try:
                one = build_executors(
                    ExecutorRegistry({name: binding}),
                    signer=signer,
                    clock=clock,
                    entra=settings.entra,
                    allow_loopback_http=settings.execution.allow_loopback_http,
                )
            except ConfigError as e:
                raise ConfigError(e.reason_code, f"setting executors.{name}: {e.message}") from e
            except (TypeError, ValueError) as e:
                raise ConfigError("CONFIG_INVALID", f"setting executors.{name}: {e}") from e
            built.update(one)
        retry = settings.execution
        executions = Executions(
            service,
            registry,
            built,
            retry=RetryPolicy(
                max_attempts=retry.max_attempts,
                first_delay_seconds=retry.first_delay_seconds,
                max_delay_seconds=retry.max_delay_seconds,
            ),
        )
    except BaseException:
        for executor in built.values():
            close = getattr(executor, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        raise
    if await _has_policy(service.rt.store):
        _warn_unbound(await service.active_policy(), registry)
    install(service, executions, automatic=True)
    return executions, built


def _warn_unbound(policy: Policy, registry: ExecutorRegistry) -> None:
    """Say at start-up where the policy and the ``[executors]`` section disagree.

    A break-glass route whose executor is not configured is not executed by keyturn
    (its requester gets the token and acts by hand); that is legal but likely a mistake.
    """
    named: dict[str, set[str]] = {}
    for rule in policy.payload.get("rules", []):
        terms = rule.get("breakglass") if isinstance(rule, dict) else None
        executor = terms.get("executor") if isinstance(terms, dict) else None
        if isinstance(executor, str):
            named.setdefault(executor, set()).update(rule.get("routes") or [])
    for executor, routes in sorted(named.items()):
        binding = registry.bindings.get(executor)
        if binding is None:
            log.warning(
                "the policy names executor %s for %s, but [executors] does not configure it: "
                "keyturn will not execute those break-glass windows",
                executor,
                ", ".join(sorted(routes)),
            )
        elif not set(routes) <= binding.routes:
            log.warning(
                "executor %s is not bound to %s, which the policy says it runs",
                executor,
                ", ".join(sorted(set(routes) - binding.routes)),
            )
    for name in sorted(set(registry.bindings) - set(named)):
        log.warning("executor %s is configured; no break-glass rule of the policy names it", name)


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

    Every replica may run it: each change is a conditional update in the store. With
    executors installed it also starts approved break-glass executions that no approval
    event reached in this process (after a restart, or approved elsewhere); closing a
    window rolls back through ``close_window``.
    """
    while True:
        try:
            await service.run_due()
            executions: Executions | None = getattr(service, "executions", None)
            if executions is not None:
                await executions.sweep()
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
