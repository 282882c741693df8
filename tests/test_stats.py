"""Statistics of raw samples: median, spread and the bootstrap CI's coverage."""

from __future__ import annotations

import numpy as np
import pytest

from core.stats import bootstrap_median_ci, summarize


def test_summary_of_known_samples() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.n == 5 and s.median == 3.0 and s.mean == 22.0
    assert s.p10 == pytest.approx(1.4) and s.p90 == pytest.approx(61.6)
    assert s.ci_low <= s.median <= s.ci_high


def test_cv_is_std_over_mean() -> None:
    x = np.array([9.0, 10.0, 11.0])
    assert summarize(x).cv == pytest.approx(1.0 / 10.0)


def test_bootstrap_ci_covers_the_true_median_about_95_percent() -> None:
    rng = np.random.default_rng(42)
    hits = 0
    trials = 200
    for i in range(trials):
        x = rng.normal(100.0, 1.0, size=30)
        lo, hi = bootstrap_median_ci(x, seed=i)
        hits += lo <= 100.0 <= hi
    assert 0.88 <= hits / trials <= 0.995


def test_empty_samples_are_an_error() -> None:
    with pytest.raises(ValueError):
        summarize([])
