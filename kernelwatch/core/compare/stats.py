"""Comparing a contender with a baseline, point by point, from the raw samples.

Per point the figure is the ratio of medians contender / baseline (> 1: the contender is
slower). Its 95% confidence interval comes from a bootstrap: both sides are resampled
independently with replacement (in two stages, repeats then samples, where the points were
measured in repeats), the ratio of the resampled medians is taken ``resamples`` times,
vectorised in numpy and seeded so a comparison is reproducible. The interval is built from
those replicates by the same method as a point's CI (``core.stats.interval``: on the log
scale, scaled for few repeats or blocks), so a ratio's CI and a median's mean the same.

A verdict needs BOTH a statistically significant change (the CI excludes 1) AND a change
beyond the threshold (default 3%): significance alone flags 0.3% shifts that a quiet GPU
resolves but nobody acts on; the threshold alone flags noise on a jittery point.

    regression   ratio > 1 + threshold  and  ci_low  > 1
    improvement  ratio < 1 - threshold  and  ci_high < 1
    unchanged    otherwise

Per kernel and backend the ratios are summarised by their geometric mean, whose CI reuses the
same bootstrap replicates (replicate b of every point is combined), plus the worst point.
Points present on one side only, and points whose status is not ``ok`` on either side, are
listed with their statuses rather than dropped: "this shape stopped working" matters as much
as "this shape got slower".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernelwatch.core.stats import (
    bootstrap_medians,
    interval,
    percentile_interval,
    resampled_medians,
)

DEFAULT_THRESHOLD = 0.03
CONFIDENCE = 0.95
RESAMPLES = 2000


class Verdict(enum.StrEnum):
    """The verdict of a point."""

    regression = "regression"
    improvement = "improvement"
    unchanged = "unchanged"
    baseline_only = "baseline_only"
    contender_only = "contender_only"
    not_comparable = "not_comparable"  # matched, but not ok on at least one side


REGRESSION = Verdict.regression
IMPROVEMENT = Verdict.improvement
UNCHANGED = Verdict.unchanged
BASELINE_ONLY = Verdict.baseline_only
CONTENDER_ONLY = Verdict.contender_only
NOT_COMPARABLE = Verdict.not_comparable
VERDICTS = tuple(Verdict)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float
    ci_low: float
    ci_high: float
    verdict: Verdict
    baseline_median: float
    contender_median: float
    n_baseline: int
    n_contender: int


def verdict_for(ratio: float, ci_low: float, ci_high: float, threshold: float) -> Verdict:
    if ratio > 1.0 + threshold and ci_low > 1.0:
        return Verdict.regression
    if ratio < 1.0 - threshold and ci_high < 1.0:
        return Verdict.improvement
    return Verdict.unchanged


def bootstrap_ratio_replicates(
    baseline: np.ndarray,
    contender: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    baseline_groups: np.ndarray | None = None,
    contender_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap replicates of median(contender) / median(baseline). Works on one point
    (1-D arrays) or a batch (shape (k, n) and (k, m)), returning (..., resamples). With
    ``*_groups`` (one point: the repeat each sample came from) a side's median is
    bootstrapped in two stages, repeats then samples, as the point CIs are (core.stats): a
    point whose repeats landed in different GPU states is not called changed on the
    strength of its samples' count."""
    rng = np.random.default_rng(seed)
    if baseline_groups is None and contender_groups is None:
        b = bootstrap_medians(np.asarray(baseline, dtype=np.float64), resamples, rng)
        c = bootstrap_medians(np.asarray(contender, dtype=np.float64), resamples, rng)
    else:
        b = resampled_medians(np.asarray(baseline, dtype=np.float64), baseline_groups,
                              resamples, rng)
        c = resampled_medians(np.asarray(contender, dtype=np.float64), contender_groups,
                              resamples, rng)
    return np.asarray(c / b)


def compare_samples(
    baseline: Sequence[float] | np.ndarray,
    contender: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    baseline_groups: Sequence[int] | np.ndarray | None = None,
    contender_groups: Sequence[int] | np.ndarray | None = None,
) -> RatioEstimate:
    """The statistics of one point from its raw samples (no database); ``*_groups`` label
    each sample's repeat (see ``bootstrap_ratio_replicates``)."""
    est, _ = compare_with_replicates(
        baseline, contender, threshold, resamples, seed, confidence,
        baseline_groups, contender_groups,
    )
    return est


def compare_paired(
    blocks: Sequence[tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> RatioEstimate:
    """Baseline and contender measured in matched blocks, each block's two sides back to back
    (the confirmation: round k, repeat r of each version). The ratio is the median over blocks
    of median(contender) / median(baseline); its CI resamples blocks, then each chosen block's
    samples on both sides.

    Pairing cancels what a block's two sides share. A point whose harness repeats sit at
    different levels, the same for both versions in every round, makes a pooled median jump
    between those levels under resampling: a real change seen in every block then gets a CI
    that includes 1 and reads "not reproduced" (docs/regressions.md)."""
    pairs = [(np.asarray(b, dtype=np.float64), np.asarray(c, dtype=np.float64))
             for b, c in blocks]
    if len(pairs) < 2 or any(b.size < 2 or c.size < 2 for b, c in pairs):
        raise ValueError("paired comparison needs >= 2 blocks of >= 2 samples a side")
    if any(np.any(b <= 0) or np.any(c <= 0) for b, c in pairs):
        raise ValueError("latencies must be positive")
    rng = np.random.default_rng(seed)
    # (blocks, resamples): each block's ratio of bootstrapped medians
    per_block = np.stack([
        bootstrap_medians(c, resamples, rng) / bootstrap_medians(b, resamples, rng)
        for b, c in pairs
    ])
    k = len(pairs)
    pick = rng.integers(0, k, size=(resamples, k))
    replicates = np.median(per_block[pick, np.arange(resamples)[:, None]], axis=1)
    ratio = float(np.median([np.median(c) / np.median(b) for b, c in pairs]))
    lo, hi = interval(ratio, replicates, k, confidence)
    base = np.concatenate([b for b, _ in pairs])
    cont = np.concatenate([c for _, c in pairs])
    return RatioEstimate(
        ratio=ratio, ci_low=float(lo), ci_high=float(hi),
        verdict=verdict_for(ratio, float(lo), float(hi), threshold),
        baseline_median=float(np.median(base)), contender_median=float(np.median(cont)),
        n_baseline=int(base.size), n_contender=int(cont.size),
    )


def compare_with_replicates(
    baseline: Sequence[float] | np.ndarray,
    contender: Sequence[float] | np.ndarray,
    threshold: float,
    resamples: int,
    seed: int,
    confidence: float,
    baseline_groups: Sequence[int] | np.ndarray | None = None,
    contender_groups: Sequence[int] | np.ndarray | None = None,
) -> tuple[RatioEstimate, np.ndarray]:
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(contender, dtype=np.float64)
    if b.size < 2 or c.size < 2:
        raise ValueError("each side needs at least 2 samples")
    if np.any(b <= 0) or np.any(c <= 0):
        raise ValueError("latencies must be positive")
    bg = None if baseline_groups is None else np.asarray(baseline_groups)
    cg = None if contender_groups is None else np.asarray(contender_groups)
    for name, x, g in (("baseline", b, bg), ("contender", c, cg)):
        if g is not None and g.shape != x.shape:
            raise ValueError(f"{name}: {g.size} repeat labels for {x.size} samples")
    reps = bootstrap_ratio_replicates(b, c, resamples, seed, bg, cg)
    bm, cm = float(np.median(b)), float(np.median(c))
    ratio = cm / bm
    # The fewer repeats of the two sides is how many the replicates could resample.
    k = min(1 if g is None else int(np.unique(g).size) for g in (bg, cg))
    lo, hi = interval(ratio, reps, k, confidence)
    est = RatioEstimate(
        ratio=ratio,
        ci_low=float(lo),
        ci_high=float(hi),
        verdict=verdict_for(ratio, float(lo), float(hi), threshold),
        baseline_median=bm,
        contender_median=cm,
        n_baseline=int(b.size),
        n_contender=int(c.size),
    )
    return est, reps


def verdicts_batch(
    baseline: np.ndarray,
    contender: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ratios, CIs and verdict strings for k independent points at once (shapes (k, n) and
    (k, m)); the same rule as ``compare_samples``, for benchmarks over thousands of trials."""
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(contender, dtype=np.float64)
    reps = bootstrap_ratio_replicates(b, c, resamples, seed)
    lo, hi = percentile_interval(reps, confidence)
    ratio = np.median(c, axis=-1) / np.median(b, axis=-1)
    verdict = np.full(ratio.shape, Verdict.unchanged, dtype=object)
    verdict[(ratio > 1.0 + threshold) & (lo > 1.0)] = Verdict.regression
    verdict[(ratio < 1.0 - threshold) & (hi < 1.0)] = Verdict.improvement
    return ratio, lo, hi, verdict


# --------------------------------------------------------------------------- samples of a series


PointSamples = dict[int, list[tuple[float, int]]]
"""Per point id, its samples as (latency_us, repeat) in iteration order."""


def pool_samples(point_ids: Sequence[int], samples: PointSamples) -> tuple[np.ndarray, np.ndarray]:
    """One side of a series: the samples of its points (several runs pool theirs) and a
    group label per sample, one group per (point, repeat): what the bootstrap resamples."""
    values: list[float] = []
    groups: list[int] = []
    labels: dict[tuple[int, int], int] = {}
    for pid in point_ids:
        for v, rep in samples.get(pid, []):
            values.append(v)
            groups.append(labels.setdefault((pid, rep), len(labels)))
    return np.asarray(values, dtype=np.float64), np.asarray(groups, dtype=np.int64)
