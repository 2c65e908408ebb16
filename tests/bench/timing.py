"""Small timing helpers shared by the benchmarks (never used by tests)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_op(fn: Callable[[], object], *, min_seconds: float = 0.3, repeats: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` rounds of at least ``min_seconds``."""
    loops = 1
    while True:  # calibrate the loop count
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds / 4:
            break
        loops *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples)


def row(label: str, seconds: float, reference: float | None = None, ref_name: str = "REF") -> str:
    """One printed line: ops/s, µs/op and the ratio to a reference measured in the same run."""
    text = f"{label:<58} {1 / seconds:>12,.0f} ops/s {seconds * 1e6:>10.1f} µs"
    if reference is not None:
        text += f"   {seconds / reference:6.2f}× {ref_name}"
    return text
