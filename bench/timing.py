"""The one throughput measure the inference benchmarks share (no torch: it runs on workers)."""

from __future__ import annotations

import statistics
import time


def rate(fn, batch: int, budget_s: float = 1.0, repeats: int = 5) -> float:
    """Items/s of ``fn`` (which handles ``batch`` items per call): median of ``repeats`` passes."""
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < budget_s / repeats:
            fn()
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)
