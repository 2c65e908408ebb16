"""keyturn's local web console (server-rendered HTML; see :mod:`adapters.web.console`)."""

from adapters.web.console import Console, mount_console
from adapters.web.ports import ConsoleService

__all__ = ["Console", "ConsoleService", "mount_console"]
