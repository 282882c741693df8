"""A series across releases, and where it changed.

Per series (``core.series``: kernel + params + backend + GPU SKU + cold/warm L2) the ok points
are grouped by FlashInfer version, ordered by ``packaging.version``, and each version is
summarised by the median of its points' medians (several runs of one version agree on a
median better than on a mean).

Two detectors look at the log of that sequence, because a release can hurt in two ways:

* steps, found by PELT (``ruptures``, least-squares cost) with a penalty scaled to the noise:
  ``penalty = PENALTY_SIGMAS**2 * sigma**2``, where sigma is the larger of the run-to-run
  noise (MAD of successive differences) and the measurement noise of the medians (from their
  bootstrap CIs), floored at ``MIN_NOISE``. A step smaller than the noise does not pay for its
  penalty, so noise is not reported as a change;
* drift, a slow slide release after release whose every step hides in the noise: a Theil-Sen
  slope over the last ``DRIFT_WINDOW`` releases whose 95% CI excludes zero and whose total
  change over the window exceeds the threshold.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ruptures
from packaging.version import InvalidVersion, Version
from scipy import stats as sstats
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.environment import context, environment_changed
from kernelwatch.core.models import Point, PointStatus, Run

MIN_NOISE = 0.003  # relative: below this, run-to-run variation of a GPU kernel is not known
PENALTY_SIGMAS = 4.0
DRIFT_WINDOW = 8
DEFAULT_THRESHOLD = 0.03


@dataclass
class ChangePoint:
    index: int  # position of the first release after the change
    before_version: str | None
    after_version: str | None
    before_median_us: float
    after_median_us: float
    ratio: float  # after / before (segment medians)
    direction: str  # slower | faster
    # Environment fields that changed at the same release (core.environment): the step may be
    # the driver's or torch's, not FlashInfer's.
    environment_changed: list[str] = field(default_factory=list)


@dataclass
class Drift:
    from_version: str
    to_version: str
    releases: int
    slope_per_release: float  # relative change per release (exp(slope) - 1)
    slope_ci_low: float
    slope_ci_high: float
    total_ratio: float  # exp(slope * (releases - 1))
    direction: str


@dataclass
class ReleasePoint:
    version: str
    median_us: float
    points: int
    run_ids: list[int]
    noise: float | None  # relative half-width of the medians' 95% CI / 1.96
    # The 95% CI of the median, end by end the median of its points' CIs (one point: its own
    # bootstrap CI), so a chart can draw the version's value with its uncertainty.
    ci_low_us: float | None = None
    ci_high_us: float | None = None
    # The context of its newest run's environment (core.environment.context).
    environment: dict[str, str | None] = field(default_factory=dict)


@dataclass
class EnvironmentBreak:
    """Between two consecutive releases of a series, its environment changed: numbers on
    either side of the break mean different things beyond FlashInfer's own change."""

    before_version: str
    after_version: str
    fields: list[str]


@dataclass
class SeriesHistory:
    series_key: str
    kernel: str | None
    backend: str | None
    params: dict[str, Any] | None
    gpu_sku: str | None
    releases: list[ReleasePoint] = field(default_factory=list)
    change_points: list[ChangePoint] = field(default_factory=list)
    drift: Drift | None = None
    noise: float | None = None
    environment_breaks: list[EnvironmentBreak] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_key(v: str) -> tuple[int, Version | str]:
    try:
        return (0, Version(v))
    except InvalidVersion:
        return (1, v)


def sort_versions(versions: Sequence[str]) -> list[str]:
    return sorted(versions, key=_version_key)


def estimate_noise(log_values: np.ndarray, measurement_noise: Sequence[float] = ()) -> float:
    """Relative noise of one release's value: robust to steps (a step moves one difference,
    the median absolute deviation ignores it) and to a drift (a constant slope shifts every
    difference alike)."""
    sigma = MIN_NOISE
    if log_values.size >= 3:
        d = np.diff(log_values)
        mad = float(np.median(np.abs(d - np.median(d))))
        sigma = max(sigma, 1.4826 * mad / math.sqrt(2.0))
    meas = [m for m in measurement_noise if m is not None and math.isfinite(m)]
    if meas:
        sigma = max(sigma, float(np.median(meas)))
    return sigma


def detect_steps(
    values: Sequence[float], noise: float | None = None, penalty_sigmas: float = PENALTY_SIGMAS
) -> list[int]:
    """Indices where a new level starts (PELT on the log values)."""
    y = np.log(np.asarray(values, dtype=np.float64))
    if y.size < 2:
        return []
    sigma = noise if noise is not None else estimate_noise(y)
    algo = ruptures.Pelt(model="l2", min_size=1, jump=1).fit(y.reshape(-1, 1))
    bkps = algo.predict(pen=(penalty_sigmas * sigma) ** 2)
    return [int(b) for b in bkps[:-1]]  # the last breakpoint is the end of the series


def detect_drift(
    values: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    window: int = DRIFT_WINDOW,
) -> tuple[float, float, float, int] | None:
    """(slope, ci_low, ci_high, releases) of log values over the last ``window`` releases
    when the slope is significant and its total over the window exceeds the threshold."""
    y = np.log(np.asarray(values, dtype=np.float64))[-window:]
    if y.size < 4:
        return None
    x = np.arange(y.size, dtype=np.float64)
    slope, _, lo, hi = sstats.theilslopes(y, x, alpha=0.95)
    total = abs(math.expm1(slope * (y.size - 1)))
    if (lo > 0 or hi < 0) and total > threshold:
        return float(slope), float(lo), float(hi), int(y.size)
    return None


def analyse(
    versions: Sequence[str],
    medians: Sequence[float],
    measurement_noise: Sequence[float] = (),
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[list[ChangePoint], Drift | None, float]:
    y = np.log(np.asarray(medians, dtype=np.float64))
    sigma = estimate_noise(y, measurement_noise)
    changes: list[ChangePoint] = []
    steps = detect_steps(medians, sigma)
    bounds = [0, *steps, len(medians)]
    for k, idx in enumerate(steps):
        before = float(np.median(medians[bounds[k] : idx]))
        after = float(np.median(medians[idx : bounds[k + 2]]))
        ratio = after / before
        if abs(ratio - 1.0) <= threshold:
            continue  # real but too small to matter, by the same rule as a comparison
        changes.append(
            ChangePoint(
                index=idx,
                before_version=versions[idx - 1],
                after_version=versions[idx],
                before_median_us=before,
                after_median_us=after,
                ratio=ratio,
                direction="slower" if ratio > 1 else "faster",
            )
        )
    drift = None
    found = detect_drift(medians, threshold)
    if found:
        slope, lo, hi, n = found
        drift = Drift(
            from_version=versions[-n],
            to_version=versions[-1],
            releases=n,
            slope_per_release=math.expm1(slope),
            slope_ci_low=math.expm1(lo),
            slope_ci_high=math.expm1(hi),
            total_ratio=math.exp(slope * (n - 1)),
            direction="slower" if slope > 0 else "faster",
        )
    return changes, drift, sigma


def _median_of(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def series_history(
    session: Session, series_key: str, threshold: float = DEFAULT_THRESHOLD
) -> SeriesHistory | None:
    """None when no point carries this series key."""
    pts = session.scalars(
        select(Point).where(Point.series_key == series_key).order_by(Point.id)
    ).all()
    if not pts:
        return None
    ref = pts[0]
    hist = SeriesHistory(
        series_key=series_key,
        kernel=ref.kernel,
        backend=ref.backend,
        params=dict(ref.params),
        gpu_sku=ref.gpu_sku,
    )
    by_version: dict[str, list[Point]] = defaultdict(list)
    for p in pts:
        if p.status == PointStatus.ok and p.median_us and p.flashinfer_version:
            by_version[p.flashinfer_version].append(p)
    envs: dict[int, dict[str, Any] | None] = dict(session.execute(
        select(Run.id, Run.environment).where(Run.id.in_({p.run_id for p in pts}))).all())
    for v in sort_versions(list(by_version)):
        group = by_version[v]
        noise = [
            (math.log(p.ci_high_us) - math.log(p.ci_low_us)) / (2 * 1.96)
            for p in group
            if p.ci_low_us and p.ci_high_us and p.ci_low_us > 0
        ]
        hist.releases.append(
            ReleasePoint(
                version=v,
                median_us=float(np.median([p.median_us for p in group])),
                points=len(group),
                run_ids=sorted({p.run_id for p in group}),
                noise=float(np.median(noise)) if noise else None,
                ci_low_us=_median_of([p.ci_low_us for p in group]),
                ci_high_us=_median_of([p.ci_high_us for p in group]),
                environment=context(envs.get(max(p.run_id for p in group))),
            )
        )
    for before, after in itertools.pairwise(hist.releases):
        changed = environment_changed(before.environment, after.environment)
        if changed:
            hist.environment_breaks.append(
                EnvironmentBreak(before.version, after.version, changed))
    if len(hist.releases) >= 2:
        hist.change_points, hist.drift, hist.noise = analyse(
            [r.version for r in hist.releases],
            [r.median_us for r in hist.releases],
            [r.noise for r in hist.releases if r.noise is not None],
            threshold,
        )
    breaks = {b.after_version: b.fields for b in hist.environment_breaks}
    for cp in hist.change_points:
        cp.environment_changed = breaks.get(cp.after_version or "", [])
    return hist
