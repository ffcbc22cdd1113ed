"""Latency summaries shared by the benchmark scripts (imported from the bench directory)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

Summary = dict[str, Any]
"""One scenario's figures, as printed and written to ``bench/results``."""

KEEP_SAMPLES = False
"""Set by ``bench/run.py``: every summary also carries its samples (``samples_ms``, in
the order given), for the plots of the latency distributions."""


def summarise(name: str, samples_ms: Sequence[float], *, count_key: str) -> Summary:
    """p50/p90/p99/max/mean of ``samples_ms``; given in sending order, also the p50 of
    the first and last 10 % (does the latency grow over the run?). ``count_key`` names
    the sample count (``orders``, ``messages``)."""
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    tenth = max(len(samples_ms) // 10, 1)
    summary: Summary = {
        "scenario": name,
        count_key: len(ordered),
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "first_10pct_p50_ms": round(statistics.median(samples_ms[:tenth]), 3),
        "last_10pct_p50_ms": round(statistics.median(samples_ms[-tenth:]), 3),
    }
    if KEEP_SAMPLES:
        summary["samples_ms"] = [round(x, 3) for x in samples_ms]
    return summary
