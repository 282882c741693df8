"""Statistics of raw latency samples. Medians, not means: GPU timings have a long right tail
(preemption, clock changes), and the median is what a rerun reproduces.

Samples may come in repeats: the harness measures a point several times, interleaved with the
other points of its sweep and with its inputs rebuilt, because consecutive samples of one
repeat share the GPU's state of that moment (clocks under the power cap, temperature, where the
inputs landed in memory). Such state moves a point's median by more between runs than the
samples of one run spread, so an i.i.d. bootstrap of one run's samples calls two runs of the
same code different. With repeats, the CI comes from a two-stage
bootstrap (repeats resampled, then samples within each chosen repeat), so the between-repeat
variance is part of it.

A percentile interval of that bootstrap is too narrow for the harness's three repeats: the
between-repeat variance is estimated from three numbers, so the resampled medians understate it
(by (k-1)/k) and their spread is itself uncertain. The difference of two runs' medians, in
units of its bootstrap standard error, has the heavy tails of a statistic studentized by few
degrees of freedom, and two runs' percentile CIs often fail to overlap (docs/measurement.md,
"The CI with few repeats"). With repeats the CI is therefore the bootstrap
standard error scaled by Student's t with k-1 degrees of freedom and by sqrt(k/(k-1)): the
small-sample interval for k clusters, which reads as the percentile interval when there are
many repeats. It is built on the log scale (``interval``), so it never reaches zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sstats

BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    p10: float
    p90: float
    cv: float  # std / mean
    ci_low: float  # bootstrap 95% CI of the median
    ci_high: float


def repeat_labels(repeat_sizes: Sequence[int] | None, n_samples: int | None = None) -> list[int]:
    """Per-sample repeat numbers for samples stored repeat after repeat (a harness message's
    ``repeat_sizes``); no sizes means one repeat of ``n_samples``."""
    if not repeat_sizes:
        return [0] * (n_samples or 0)
    labels = [r for r, n in enumerate(repeat_sizes) for _ in range(int(n))]
    if n_samples is not None and len(labels) != n_samples:
        raise ValueError(f"repeat_sizes {list(repeat_sizes)} do not add up to {n_samples} samples")
    return labels


def bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``resamples`` i.i.d. resamples of the last axis of ``x`` (shape (..., n)) ->
    shape (..., resamples); vectorised over leading axes (the compare engine's batches)."""
    n = x.shape[-1]
    idx = rng.integers(0, n, size=(*x.shape[:-1], resamples, n))
    picked = np.take_along_axis(x[..., None, :], idx, axis=-1)
    return np.asarray(np.median(picked, axis=-1))


def resampled_medians(
    x: np.ndarray, repeats: np.ndarray | None, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap medians of the samples ``x``: two-stage when ``repeats`` (a label per
    sample) names more than one repeat, i.i.d. otherwise (exactly ``bootstrap_medians``)."""
    groups = [x] if repeats is None else [x[repeats == g] for g in np.unique(repeats)]
    if len(groups) < 2:
        return bootstrap_medians(x, resamples, rng)
    sizes = {g.size for g in groups}
    if len(sizes) == 1:  # the harness's repeats are equal: one vectorised draw
        table = np.stack(groups)  # (repeats, n)
        k, n = table.shape
        pick = rng.integers(0, k, size=(resamples, k))
        within = rng.integers(0, n, size=(resamples, k, n))
        drawn = table[pick[..., None], within]
        return np.asarray(np.median(drawn.reshape(resamples, k * n), axis=1))
    out = np.empty(resamples)
    for b in range(resamples):
        chosen = [groups[i] for i in rng.integers(0, len(groups), size=len(groups))]
        out[b] = np.median(np.concatenate([g[rng.integers(0, g.size, g.size)] for g in chosen]))
    return out


def bootstrap_median_ci(
    samples: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    repeats: Sequence[int] | np.ndarray | None = None,
) -> tuple[float, float]:
    """Bootstrap CI of the median. One repeat: the percentile interval of i.i.d. resamples.
    Several (``repeats``, a repeat number per sample): the two-stage bootstrap's standard
    error times ``few_repeats_quantile`` around the median (see the module's docstring)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 2:
        v = float(x[0]) if x.size else float("nan")
        return v, v
    labels = None
    if repeats is not None:
        labels = np.asarray(repeats)
        if labels.shape != x.shape:
            raise ValueError(f"{labels.size} repeat labels for {x.size} samples")
    medians = resampled_medians(x, labels, resamples, np.random.default_rng(seed))
    k = 1 if labels is None else int(np.unique(labels).size)
    return interval(float(np.median(x)), medians, k, confidence)


def interval(
    center: float, draws: np.ndarray, repeats: int, confidence: float = 0.95
) -> tuple[float, float]:
    """The one interval method for a point's median and a comparison's ratio alike, from the
    bootstrap ``draws`` of that statistic (last axis) and the number of repeats they resampled.

    It is built on the log scale: latencies and their ratios are positive and their errors
    multiplicative (a slow repeat is slower by a factor), so the interval is
    ``center * exp(+-half)`` and can never reach zero or below, however wide (a symmetric
    interval around a CPU point's median of 1040 us once read -869..2950 us). Several
    repeats: ``half`` is the standard error of the log draws times ``few_repeats_quantile``;
    one repeat: the percentile interval (the same on either scale). Draws or a center that are
    not positive (no real latency is) fall back to the percentile interval, floored at 0."""
    draws = np.asarray(draws, dtype=np.float64)
    if center <= 0 or not np.all(draws > 0):
        alpha = (1.0 - confidence) / 2.0
        lo, hi = np.quantile(draws, [alpha, 1.0 - alpha], axis=-1)
        return max(float(lo), 0.0), max(float(hi), 0.0)
    if repeats >= 2:
        half = few_repeats_quantile(repeats, confidence) * float(np.log(draws).std(ddof=1))
        return center * float(np.exp(-half)), center * float(np.exp(half))
    lo, hi = percentile_interval(draws, confidence)
    return float(lo), float(hi)


def percentile_interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[Any, Any]:
    """``interval``'s one-repeat case, vectorised over leading axes (the comparison engine's
    batches): percentiles of the positive draws on the log scale."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.exp(np.quantile(np.log(draws), [alpha, 1.0 - alpha], axis=-1))
    return lo, hi


def few_repeats_quantile(repeats: int, confidence: float = 0.95) -> float:
    """How many bootstrap standard errors the CI spans each side with ``repeats`` repeats:
    Student's t quantile with repeats-1 degrees of freedom, times sqrt(k/(k-1)) for the
    variance the resampling of k repeats loses. 3 repeats: 5.27 (a z interval: 1.96)."""
    k = int(repeats)
    if k < 2:
        raise ValueError(f"few_repeats_quantile needs >= 2 repeats, got {k}")
    return float(sstats.t.ppf(0.5 + confidence / 2.0, k - 1)) * (k / (k - 1)) ** 0.5


def summarize(
    samples: Sequence[float] | np.ndarray, repeats: Sequence[int] | np.ndarray | None = None
) -> Summary:
    """Median, spread and CI of the pooled samples; ``repeats`` labels each sample's repeat."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    lo, hi = bootstrap_median_ci(x, repeats=repeats)
    p10, med, p90 = (float(v) for v in np.quantile(x, [0.1, 0.5, 0.9]))
    return Summary(
        n=int(x.size),
        median=med,
        mean=mean,
        p10=p10,
        p90=p90,
        cv=std / mean if mean else 0.0,
        ci_low=lo,
        ci_high=hi,
    )
