"""Entra ID directory: msal app-only tokens and Microsoft Graph group checks.

See ``directory.py`` for the behaviour and the Graph permissions, ``README.md`` beside
this file for set-up.
"""

from adapters.entra.check import (
    CheckReport,
    Permission,
    check_configuration,
    required_permissions,
)
from adapters.entra.directory import CHECK_MEMBER_GROUPS_LIMIT, EntraDirectory
from adapters.entra.graph import SystemTimer, Timer
from adapters.entra.settings import EntraSettings
from adapters.entra.tokens import MsalTokenSource

__all__ = [
    "CHECK_MEMBER_GROUPS_LIMIT",
    "CheckReport",
    "EntraDirectory",
    "EntraSettings",
    "MsalTokenSource",
    "Permission",
    "SystemTimer",
    "Timer",
    "check_configuration",
    "required_permissions",
]
