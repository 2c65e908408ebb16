"""Executors: adapters that carry out an approved call (see :mod:`core.executor`).

:func:`build_executors` turns the configured :class:`~core.executor.ExecutorRegistry`
into running executors, keyed by binding name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.entra.settings import EntraSettings
from adapters.executors.entra_group import EntraGroupAddExecutor
from adapters.executors.entra_pim import EntraRoleAssignExecutor
from adapters.executors.webhook import WebhookExecutor
from core.errors import ConfigError
from core.executor import Executor, ExecutorRegistry
from core.ports import Clock, Signer

__all__ = [
    "EntraGroupAddExecutor",
    "EntraRoleAssignExecutor",
    "WebhookExecutor",
    "build_executors",
]


def build_executors(
    registry: ExecutorRegistry,
    *,
    signer: Signer,
    clock: Clock,
    entra: EntraSettings | None = None,
    entra_http_client: Any = None,
    allow_loopback_http: bool = False,
) -> Mapping[str, Executor]:
    """One executor per binding.

    Raises:
        ConfigError: an unknown kind, an Entra executor without Entra settings, or a
            binding whose options its adapter refuses.
    """
    built: dict[str, Executor] = {}
    for name, binding in registry.bindings.items():
        options = dict(binding.options)
        if binding.kind == "webhook":
            if allow_loopback_http:
                options.setdefault("allow_loopback_http", True)
            built[name] = WebhookExecutor.from_options(options, signer=signer, clock=clock)
        elif binding.kind in ("entra.role.assign", "entra.group.add"):
            if entra is None:
                raise ConfigError("CONFIG_MISSING", f"executor {name} needs the Entra settings")
            option = "roles" if binding.kind == "entra.role.assign" else "groups"
            targets = options.get(option)
            if not isinstance(targets, Mapping):
                raise ConfigError("CONFIG_INVALID", f"executors.{name}.{option} must be a mapping")
            principals = options.get("principals")
            if principals is not None and not isinstance(principals, list | tuple):
                raise ConfigError("CONFIG_INVALID", f"executors.{name}.principals must be a list")
            if binding.kind == "entra.role.assign":
                built[name] = EntraRoleAssignExecutor(
                    entra,
                    roles=targets,
                    clock=clock,
                    directory_scope_id=str(options.get("directory_scope_id", "/")),
                    principals=principals,
                    http_client=entra_http_client,
                )
            else:
                built[name] = EntraGroupAddExecutor(
                    entra,
                    groups=targets,
                    clock=clock,
                    principals=principals,
                    http_client=entra_http_client,
                )
        else:
            raise ConfigError("CONFIG_INVALID", f"executors.{name}: unknown kind {binding.kind!r}")
    return built
