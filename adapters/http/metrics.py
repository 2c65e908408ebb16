"""Prometheus metrics for keyturn, in a registry of their own.

One :class:`Metrics` per application (never the process-global registry, so two apps
in one test process do not collide). The agent API records HTTP traffic, submission
outcomes and gate results itself; the application service and the outbox call
:meth:`Metrics.observe_state`, :meth:`Metrics.observe_decision_latency`,
:meth:`Metrics.feed_failure` and :meth:`Metrics.set_outbox_backlog`.

Label values come from small fixed sets (states, outcomes, reason codes, platform
names); anything else is counted as ``other`` so a caller cannot grow the series
without bound.
"""

from __future__ import annotations

import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

_CODE = re.compile(r"\A[A-Z][A-Z0-9_]{0,63}\Z")
_WORD = re.compile(r"\A[a-z][a-z0-9_]{0,31}\Z")
_OUTCOMES = frozenset({"allowed", "gated", "denied"})
_STATES = frozenset(
    {"pending", "approved", "denied", "expired", "cancelled", "consumed", "revoked"}
)
_GATE_RESULTS = frozenset({"pass", "denied"})
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})

# Approvals are people: seconds to an hour and more, not milliseconds.
_DECISION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _code(value: str) -> str:
    return value if _CODE.match(value) else "OTHER"


def _word(value: str, allowed: frozenset[str] | None = None) -> str:
    if allowed is not None:
        return value if value in allowed else "other"
    return value if _WORD.match(value) else "other"


class Metrics:
    """keyturn's counters, gauges and histograms in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._http = Counter(
            "keyturn_http_requests",
            "HTTP requests answered by the agent API, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self._http_seconds = Histogram(
            "keyturn_http_request_duration_seconds",
            "Time to answer an agent API request (long polls included).",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self._submitted = Counter(
            "keyturn_requests_submitted",
            "Tool calls submitted by agents, by policy outcome.",
            ["outcome"],
            registry=r,
        )
        self._states = Counter(
            "keyturn_request_transitions",
            "Approval requests entering a state.",
            ["state"],
            registry=r,
        )
        self._decision = Histogram(
            "keyturn_decision_latency_seconds",
            "Seconds from a gated request to its final decision.",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self._gate = Counter(
            "keyturn_gate_checks",
            "Execution gate checks, by result.",
            ["result"],
            registry=r,
        )
        self._gate_denials = Counter(
            "keyturn_gate_denials",
            "Execution gate denials, by reason code.",
            ["reason"],
            registry=r,
        )
        self._feed_failures = Counter(
            "keyturn_feed_delivery_failures",
            "Failed deliveries of cards and feed messages, by chat platform.",
            ["platform"],
            registry=r,
        )
        self._backlog = Gauge(
            "keyturn_outbox_backlog",
            "Outbox messages waiting to be delivered.",
            registry=r,
        )

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request; ``route`` is the route template, never the raw path."""
        self._http.labels(_word(method, _METHODS), route, str(status)).inc()
        self._http_seconds.labels(route).observe(max(seconds, 0.0))

    def observe_submit(self, outcome: str) -> None:
        """A submission's policy outcome: ``allowed``, ``gated`` or ``denied``."""
        self._submitted.labels(_word(outcome, _OUTCOMES)).inc()

    def observe_state(self, state: str) -> None:
        """A request entered ``state`` (pending, approved, denied, expired, …)."""
        self._states.labels(_word(state, _STATES)).inc()

    def observe_decision_latency(self, seconds: float) -> None:
        """Seconds between a gated request and its final decision."""
        self._decision.observe(max(seconds, 0.0))

    def observe_gate(self, result: str, reason_code: str | None = None) -> None:
        """A gate check: ``pass``, or ``denied`` with its reason code."""
        result = _word(result, _GATE_RESULTS)
        self._gate.labels(result).inc()
        if result != "pass":
            self._gate_denials.labels(_code(reason_code or "UNKNOWN")).inc()

    def feed_failure(self, platform: str) -> None:
        """A card or feed message could not be delivered to ``platform``."""
        self._feed_failures.labels(_word(platform)).inc()

    def set_outbox_backlog(self, count: int) -> None:
        """Messages waiting in the outbox."""
        self._backlog.set(max(count, 0))

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
