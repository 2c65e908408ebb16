"""keyturn's Python SDK for agents: one import for the client, the decorator and errors.

::

    from adapters.agents.sdk import Gate, gated, ApprovalDenied

See :mod:`adapters.agents.client` (the :class:`Gate`), :mod:`adapters.agents.gated`
(``@gated``) and :mod:`adapters.agents.errors` (what each refusal means).
"""

from adapters.agents.approval import Admission, Approval
from adapters.agents.client import AgentKey, Gate
from adapters.agents.errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalTimeout,
    GateRefused,
    InvalidCall,
    KeyturnClientError,
    PolicyDenied,
    ServiceUnavailable,
    TokenRefused,
)
from adapters.agents.gated import gated
from adapters.agents.params import call_params, json_params
from adapters.agents.transport import Backoff

__all__ = [
    "Admission",
    "AgentKey",
    "Approval",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalTimeout",
    "Backoff",
    "Gate",
    "GateRefused",
    "InvalidCall",
    "KeyturnClientError",
    "PolicyDenied",
    "ServiceUnavailable",
    "TokenRefused",
    "call_params",
    "gated",
    "json_params",
]
