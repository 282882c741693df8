"""Statistics of raw samples: median, spread and the bootstrap CI's coverage."""

from __future__ import annotations

import numpy as np
import pytest

from kernelwatch.core.stats import (
    bootstrap_median_ci,
    few_repeats_quantile,
    interval,
    repeat_labels,
    resampled_medians,
    summarize,
)


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


def test_repeat_labels_follow_repeat_sizes() -> None:
    assert repeat_labels([2, 3]) == [0, 0, 1, 1, 1]


def _drifting_repeats(
    rng: np.random.Generator, repeats: int, n: int
) -> tuple[np.ndarray, list[int]]:
    """Samples whose repeats sit at different levels (GPU state), tight within a repeat."""
    levels = 100.0 + rng.normal(0.0, 1.0, size=repeats)
    x = np.concatenate([rng.normal(lv, 0.05, size=n) for lv in levels])
    return x, repeat_labels([n] * repeats)


def test_repeats_widen_the_ci_to_the_between_repeat_spread() -> None:
    rng = np.random.default_rng(3)
    x, labels = _drifting_repeats(rng, 3, 10)
    iid = bootstrap_median_ci(x)
    two_stage = bootstrap_median_ci(x, repeats=labels)
    assert (two_stage[1] - two_stage[0]) > 1.5 * (iid[1] - iid[0])
    s = summarize(x, repeats=labels)
    assert (s.ci_low, s.ci_high) == two_stage


def test_two_runs_with_state_drift_agree_within_two_stage_cis() -> None:
    """Two runs of the same code on a GPU whose state drifts: measured in one repeat each, the
    i.i.d. CIs call them different most of the time; measured in repeats, the two-stage CIs
    overlap in nearly every trial."""
    rng = np.random.default_rng(11)
    iid_overlap = two_stage_overlap = 0
    trials = 60
    for _ in range(trials):
        a, b = _drifting_repeats(rng, 1, 30)[0], _drifting_repeats(rng, 1, 30)[0]
        ia, ib = bootstrap_median_ci(a), bootstrap_median_ci(b)
        (a, la), (b, lb) = _drifting_repeats(rng, 5, 6), _drifting_repeats(rng, 5, 6)
        ta, tb = bootstrap_median_ci(a, repeats=la), bootstrap_median_ci(b, repeats=lb)
        iid_overlap += ia[0] <= ib[1] and ib[0] <= ia[1]
        two_stage_overlap += ta[0] <= tb[1] and tb[0] <= ta[1]
    assert iid_overlap / trials < 0.5
    assert two_stage_overlap / trials >= 0.85


def test_ci_of_three_repeats_covers_the_true_median_95_percent() -> None:
    """The harness's default: 3 repeats of 10 whose levels drift (GPU state). The percentile
    interval of the two-stage bootstrap covers the true median about 3 times in 4; the
    t-scaled interval at least 95 times in 100."""
    rng = np.random.default_rng(7)
    trials, hits, percentile_hits = 200, 0, 0
    for i in range(trials):
        x, labels = _drifting_repeats(rng, 3, 10)
        lo, hi = bootstrap_median_ci(x, repeats=labels, resamples=500, seed=i)
        hits += lo <= 100.0 <= hi
        medians = resampled_medians(x, np.asarray(labels), 500, np.random.default_rng(i))
        plo, phi = np.quantile(medians, [0.025, 0.975])
        percentile_hits += plo <= 100.0 <= phi
    assert hits / trials >= 0.95
    assert percentile_hits / trials < 0.85


def test_few_repeats_quantile_is_student_t_with_the_lost_variance() -> None:
    assert few_repeats_quantile(3) == pytest.approx(4.3027 * 1.5**0.5, rel=1e-4)
    assert few_repeats_quantile(5) == pytest.approx(2.7764 * 1.25**0.5, rel=1e-4)
    assert few_repeats_quantile(10_000) == pytest.approx(1.96, rel=1e-3)
    with pytest.raises(ValueError, match=">= 2 repeats"):
        few_repeats_quantile(1)


def test_unequal_repeats_use_the_general_resampler() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(100, 0.1, 12), rng.normal(103, 0.1, 9)])
    labels = repeat_labels([12, 9])
    lo, hi = bootstrap_median_ci(x, repeats=labels, resamples=400)
    assert lo < 100.5 and hi > 102.5


def test_repeat_labels_must_match_the_samples() -> None:
    with pytest.raises(ValueError, match="repeat labels"):
        bootstrap_median_ci([1.0, 2.0, 3.0], repeats=[0, 1])


def test_repeat_labels_of_a_message_must_add_up() -> None:
    assert repeat_labels(None, 3) == [0, 0, 0]
    with pytest.raises(ValueError, match="do not add up"):
        repeat_labels([2, 2], 5)


def test_the_interval_never_goes_below_zero_on_skewed_or_tiny_samples() -> None:
    """A CPU point whose three repeats differ tenfold: a symmetric interval around the median
    went far below zero; the log-scale one stays positive, brackets the median and is
    asymmetric (wider above, where the slow repeat lies)."""
    rng = np.random.default_rng(4)
    samples = np.concatenate([rng.normal(200, 5, 10), rng.normal(1040, 30, 10),
                              rng.normal(3000, 400, 10)])
    repeats = np.repeat([0, 1, 2], 10)
    s = summarize(samples, repeats)
    assert 0 < s.ci_low < s.median < s.ci_high
    assert s.ci_high - s.median > s.median - s.ci_low
    # Tiny: two repeats of two samples, and a single sample.
    lo, hi = bootstrap_median_ci([5.0, 90.0, 6.0, 400.0], repeats=[0, 0, 1, 1])
    assert 0 < lo <= hi
    assert bootstrap_median_ci([7.0]) == (7.0, 7.0)
    # Heavy right tail in one repeat.
    lo, hi = bootstrap_median_ci(np.r_[np.full(9, 10.0), 1e4, np.full(10, 11.0)],
                                 repeats=np.repeat([0, 1], 10))
    assert 0 < lo < hi


def test_one_interval_method_for_medians_and_ratios() -> None:
    """``interval`` is symmetric on the log scale: a ratio r and its inverse 1/r get mirror
    intervals, and a point's CI is the same method over its bootstrap medians."""
    rng = np.random.default_rng(1)
    draws = np.exp(rng.normal(np.log(1.05), 0.01, 2000))
    lo, hi = interval(1.05, draws, repeats=3)
    ilo, ihi = interval(1 / 1.05, 1 / draws, repeats=3)
    assert ilo == pytest.approx(1 / hi) and ihi == pytest.approx(1 / lo)
    assert lo * hi == pytest.approx(1.05**2)
    # One repeat: the percentile interval.
    plo, phi = interval(1.05, draws, repeats=1)
    assert (plo, phi) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])))
    # Not positive (no real latency is): percentile, floored at zero.
    assert interval(0.0, np.array([-1.0, 0.0, 1.0]), repeats=3)[0] == 0.0
