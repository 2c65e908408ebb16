"""keyturn's application service: the use cases every surface shares."""

from bot.service.keyturn import POLICY_ROUTE, Keyturn, RequestView

__all__ = ["POLICY_ROUTE", "Keyturn", "RequestView"]
