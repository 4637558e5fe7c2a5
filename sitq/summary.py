"""Summary statistics of a list of numbers (waits, durations, delays): count, mean,
median, spread and percentiles, as one plain dataclass a notebook can print."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    """A five-number summary; every value but count is NaN when there are no values."""

    count: int
    mean: float
    p50: float
    p95: float
    max: float


def summary_stats(values: Iterable[float]) -> Stats:
    """Count, mean, median, 95th percentile and max: enough to compare two runs.

    Percentiles interpolate linearly between sorted values (numpy's default), so
    p50 of [1, 2] is 1.5.
    """
    data = sorted(values)
    if not data:
        nan = math.nan
        return Stats(count=0, mean=nan, p50=nan, p95=nan, max=nan)
    return Stats(
        count=len(data),
        mean=statistics.fmean(data),
        p50=_percentile(data, 50),
        p95=_percentile(data, 95),
        max=data[-1],
    )


def _percentile(data: Sequence[float], q: float) -> float:
    position = (len(data) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(data) - 1)
    return data[lower] + (data[upper] - data[lower]) * (position - lower)


# --- circuit breaker ----------------------------------------------------------------
