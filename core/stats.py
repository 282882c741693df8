"""Statistics of raw latency samples. Medians, not means: GPU timings have a long right tail
(preemption, clock changes), and the median is what a rerun reproduces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


def bootstrap_median_ci(
    samples: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 2:
        v = float(x[0]) if x.size else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    medians = np.median(x[idx], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(medians, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(samples: Sequence[float] | np.ndarray) -> Summary:
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    lo, hi = bootstrap_median_ci(x)
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
