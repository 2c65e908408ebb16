"""The SQL store implements core's persistence ports exactly (checked by mypy, and here)."""

from __future__ import annotations

import inspect

import pytest

from adapters.store.approvals import (
    SqlDecisionRepository,
    SqlGrantRepository,
    SqlRequestRepository,
    SqlTokenRepository,
)
from adapters.store.ledger import SqlLogRepository
from core import ports

# mypy --strict checks these assignments structurally, method by method.
_REQUESTS: type[ports.RequestRepository] = SqlRequestRepository
_DECISIONS: type[ports.DecisionRepository] = SqlDecisionRepository
_GRANTS: type[ports.GrantRepository] = SqlGrantRepository
_TOKENS: type[ports.TokenRepository] = SqlTokenRepository
_LOG: type[ports.LogRepository] = SqlLogRepository

PAIRS = [
    (ports.RequestRepository, SqlRequestRepository),
    (ports.DecisionRepository, SqlDecisionRepository),
    (ports.GrantRepository, SqlGrantRepository),
    (ports.TokenRepository, SqlTokenRepository),
    (ports.LogRepository, SqlLogRepository),
]


@pytest.mark.parametrize(("port", "implementation"), PAIRS, ids=lambda c: c.__name__)
def test_every_port_method_exists_with_the_same_parameters(
    port: type, implementation: type
) -> None:
    for name, method in inspect.getmembers(port, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = getattr(implementation, name)
        assert inspect.iscoroutinefunction(ours), name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(method).parameters
        ), name
