"""The Kolmogorov-Smirnov test the jitter checkers rely on: right numbers, real power."""

from __future__ import annotations

import random

import pytest

from sitq.teaching.jitter import ALPHA, SAMPLES
from sitq.teaching.stats import kolmogorov_survival, ks_uniform


@pytest.mark.parametrize(
    ("t", "p"),  # Kolmogorov's distribution: the textbook critical values
    [(1.2238, 0.10), (1.3581, 0.05), (1.6276, 0.01), (1.9495, 0.001)],
)
def test_survival_function_matches_the_critical_values(t: float, p: float) -> None:
    assert kolmogorov_survival(t) == pytest.approx(p, rel=1e-3)


def test_statistic_is_the_largest_gap_between_the_cdfs() -> None:
    assert ks_uniform([0.5], 1.0).statistic == pytest.approx(0.5)
    assert ks_uniform([0.0, 0.0, 1.0, 1.0], 1.0).statistic == pytest.approx(0.5)
    assert ks_uniform([0.125, 0.375, 0.625, 0.875], 1.0).statistic == pytest.approx(0.125)
    assert ks_uniform([2.0, 6.0], 8.0, low=0.0).statistic == pytest.approx(0.25)


def test_uniform_draws_are_rejected_about_as_often_as_the_level_says() -> None:
    """Calibration: at the 5% level, about 5% of truly uniform samples are rejected."""
    rejected = 0
    for seed in range(400):
        rng = random.Random(seed)
        rejected += ks_uniform([rng.uniform(0, 3) for _ in range(100)], 3.0).p_value < 0.05
    assert 8 <= rejected <= 32  # 20 expected; a binomial(400, 0.05) stays in here


@pytest.mark.parametrize("n", [100, SAMPLES])  # the jitter policy's and the delay's samples
def test_right_draws_pass_and_tempting_wrong_ones_fail_far_from_the_threshold(n: int) -> None:
    for seed in range(20):
        rng = random.Random(seed)
        assert ks_uniform([rng.uniform(0, 8) for _ in range(n)], 8.0).p_value > ALPHA / 10
        wrong = {
            "only 0 or the ceiling": [rng.choice([0.0, 8.0]) for _ in range(n)],
            "uniform(0.45c, c)": [rng.uniform(3.6, 8) for _ in range(n)],
            "equal jitter": [4 + rng.uniform(0, 4) for _ in range(n)],
            "0-0.9 s with no growth": [rng.uniform(0, 0.9) for _ in range(n)],
            "base 0.1 instead of 1": [rng.uniform(0, 0.8) for _ in range(n)],
        }
        for draws in wrong.values():
            assert ks_uniform(draws, 8.0).p_value < 1e-15


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ks_uniform([], 1.0)
    with pytest.raises(ValueError, match="empty"):
        ks_uniform([1.0], 0.0)
