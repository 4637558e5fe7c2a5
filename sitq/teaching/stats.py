"""A goodness-of-fit test for the jitter checkers: are these waits uniform on [0, ceiling]?

Looking at the smallest and largest draw is not enough: draws of only 0 or the ceiling
span the whole range, and so do draws bunched near one end. The one-sample
Kolmogorov-Smirnov test compares the whole empirical distribution with the target one:
its statistic D is the largest gap between the two cumulative distribution functions,
and the p-value says how often a gap that large would appear by chance if the draws
really were uniform. A few lines of arithmetic, so the course needs no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class KSResult:
    """The outcome of a Kolmogorov-Smirnov test: the largest CDF gap and its p-value."""

    statistic: float
    p_value: float


def ks_uniform(samples: Sequence[float], high: float, low: float = 0.0) -> KSResult:
    """Test whether `samples` look drawn from uniform(low, high).

    D is measured on both sides of every step of the empirical CDF, because the step
    jumps from i/n to (i+1)/n at each sample.
    """
    if not samples:
        raise ValueError("the test needs at least one sample")
    if not high > low:
        raise ValueError(f"the interval is empty: low={low!r}, high={high!r}")
    xs = sorted(samples)
    n = len(xs)

    def cdf(x: float) -> float:  # the target distribution's CDF
        return min(max((x - low) / (high - low), 0.0), 1.0)

    d = max(max((i + 1) / n - cdf(x), cdf(x) - i / n) for i, x in enumerate(xs))
    return KSResult(d, kolmogorov_p_value(d, n))


def kolmogorov_p_value(d: float, n: int) -> float:
    """P(D >= d) for n samples, by Kolmogorov's asymptotic distribution.

    Stephens' factor (sqrt(n) + 0.12 + 0.11/sqrt(n)) makes the asymptotic formula
    accurate from n of about 5 (Numerical Recipes, 3rd ed., section 14.3.3).
    """
    t = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    return kolmogorov_survival(t)


def kolmogorov_survival(t: float) -> float:
    """Q(t) = 2 * sum over j >= 1 of (-1)^(j-1) * exp(-2 j^2 t^2): P(K > t)."""
    if t < 0.2:  # the series converges slowly here, and Q(t) is 1 to 9 decimals
        return 1.0
    total: float = sum((-1) ** (j - 1) * math.exp(-2 * j * j * t * t) for j in range(1, 101))
    return min(max(2 * total, 0.0), 1.0)
