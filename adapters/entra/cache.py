"""A short-lived cache of eligibility answers, keyed by who and what was asked.

Decision-time checks must be fresh (PIM activations end, people leave groups), so the
cache is short (60 s by default), bounded, and judged against the ``now`` the caller
passes, never a clock of its own. An entry is dropped when it is older than the TTL,
when ``now`` is before the moment it was checked (a clock that went back), or when an
active PIM assignment it records has ended since. Only confirmed answers are stored:
an error is never cached, so a refusal caused by an outage ends with the outage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from datetime import datetime

from core.identity import Eligibility


class EligibilityCache:
    """Least-recently-used map from a request key to an ``Eligibility``, with a TTL.

    A TTL of 0 disables it: nothing is stored and every lookup misses.
    """

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        if ttl_seconds < 0 or max_entries < 1:
            raise ValueError("cache TTL must be >= 0 and size >= 1")
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[Hashable, Eligibility] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, *, now: datetime) -> Eligibility | None:
        """The stored answer for ``key`` if it is still fresh at ``now``, else ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = (now - entry.checked_at).total_seconds()
        pim_ended = any(end is not None and end <= now for end in entry.pim_active_until.values())
        if age < 0 or age >= self._ttl or pim_ended:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, value: Eligibility) -> None:
        """Store a confirmed answer (no-op when the cache is disabled)."""
        if self._ttl <= 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
