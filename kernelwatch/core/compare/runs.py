"""Comparing a contender with a baseline, point by point, from the raw samples.

Per point the figure is the ratio of medians contender / baseline (> 1: the contender is
slower). Its 95% confidence interval comes from a percentile bootstrap: both sides are
resampled independently with replacement, the ratio of the resampled medians is taken
``resamples`` times, vectorised in numpy and seeded so a comparison is reproducible.

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

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.models import Comparison, Point, PointStatus, Regression, Run, Sample
from kernelwatch.core.stats import bootstrap_medians, resampled_medians

DEFAULT_THRESHOLD = 0.03
CONFIDENCE = 0.95
RESAMPLES = 2000

# Verdicts of a point.
REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
BASELINE_ONLY = "baseline_only"
CONTENDER_ONLY = "contender_only"
NOT_COMPARABLE = "not_comparable"  # matched, but not ok on at least one side
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, BASELINE_ONLY, CONTENDER_ONLY, NOT_COMPARABLE)


class UnknownRunsError(LookupError):
    """Some run ids do not exist (the API answers 404 naming them)."""

    def __init__(self, side: str, run_ids: Sequence[int]) -> None:
        self.side = side
        self.run_ids = list(run_ids)
        super().__init__(f"{side}: unknown run id(s) {', '.join(map(str, run_ids))}")


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str
    baseline_median: float
    contender_median: float
    n_baseline: int
    n_contender: int


def verdict_for(ratio: float, ci_low: float, ci_high: float, threshold: float) -> str:
    if ratio > 1.0 + threshold and ci_low > 1.0:
        return REGRESSION
    if ratio < 1.0 - threshold and ci_high < 1.0:
        return IMPROVEMENT
    return UNCHANGED


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


def percentile_ci(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[Any, Any]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha], axis=-1)
    return lo, hi


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
    est, _ = _compare_with_replicates(
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

    Pairing cancels what a block's two sides share. On the H200 a small decode point's
    harness repeat 1 ran ~3% faster than its repeat 2 and ~5% faster than its repeat 3, for
    both versions and in every round: pooled over 15 repeats, the median jumped between those
    levels under resampling and a +5.2% change seen in all 15 blocks got a CI of
    0.997-1.110, "not reproduced" (tests/fixtures/gpu/release/, 2xh200)."""
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
    lo, hi = percentile_ci(replicates, confidence)
    base = np.concatenate([b for b, _ in pairs])
    cont = np.concatenate([c for _, c in pairs])
    return RatioEstimate(
        ratio=ratio, ci_low=float(lo), ci_high=float(hi),
        verdict=verdict_for(ratio, float(lo), float(hi), threshold),
        baseline_median=float(np.median(base)), contender_median=float(np.median(cont)),
        n_baseline=int(base.size), n_contender=int(cont.size),
    )


def _compare_with_replicates(
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
    lo, hi = percentile_ci(reps, confidence)
    bm, cm = float(np.median(b)), float(np.median(c))
    ratio = cm / bm
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
    lo, hi = percentile_ci(reps, confidence)
    ratio = np.median(c, axis=-1) / np.median(b, axis=-1)
    verdict = np.full(ratio.shape, UNCHANGED, dtype=object)
    verdict[(ratio > 1.0 + threshold) & (lo > 1.0)] = REGRESSION
    verdict[(ratio < 1.0 - threshold) & (hi < 1.0)] = IMPROVEMENT
    return ratio, lo, hi, verdict


# --------------------------------------------------------------------------- results


@dataclass
class PointComparison:
    series_key: str
    kernel: str
    backend: str
    params: dict[str, Any]
    gpu_sku: str | None
    verdict: str
    threshold: float
    baseline_status: str | None = None
    contender_status: str | None = None
    baseline_error: str | None = None
    contender_error: str | None = None
    baseline_point_ids: list[int] = field(default_factory=list)
    contender_point_ids: list[int] = field(default_factory=list)
    baseline_median_us: float | None = None
    contender_median_us: float | None = None
    n_baseline: int = 0
    n_contender: int = 0
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def change_pct(self) -> float | None:
        return None if self.ratio is None else (self.ratio - 1.0) * 100.0


@dataclass
class GroupSummary:
    """Per kernel + backend (+ GPU SKU): the geometric mean of the compared points' ratios."""

    kernel: str
    backend: str
    gpu_sku: str | None
    points: int = 0
    compared: int = 0
    regressions: int = 0
    improvements: int = 0
    unchanged: int = 0
    baseline_only: int = 0
    contender_only: int = 0
    not_comparable: int = 0
    geomean_ratio: float | None = None
    geomean_ci_low: float | None = None
    geomean_ci_high: float | None = None
    worst_series_key: str | None = None
    worst_ratio: float | None = None
    worst_params: dict[str, Any] | None = None


@dataclass
class ComparisonResult:
    baseline_run_ids: list[int]
    contender_run_ids: list[int]
    baseline_label: str | None
    contender_label: str | None
    gpu_skus: list[str | None]
    threshold: float
    kernel_thresholds: dict[str, float]
    points: list[PointComparison]
    groups: list[GroupSummary]

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(VERDICTS, 0)
        for p in self.points:
            out[p.verdict] += 1
        return out

    @property
    def regressions(self) -> list[PointComparison]:
        return [p for p in self.points if p.verdict == REGRESSION]

    def summary(self) -> dict[str, Any]:
        return {
            "baseline_run_ids": self.baseline_run_ids,
            "contender_run_ids": self.contender_run_ids,
            "baseline_label": self.baseline_label,
            "contender_label": self.contender_label,
            "gpu_skus": self.gpu_skus,
            "threshold": self.threshold,
            "kernel_thresholds": self.kernel_thresholds,
            "confidence": CONFIDENCE,
            "counts": self.counts,
            "groups": [asdict(g) for g in self.groups],
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.summary()
        out["points"] = [{**asdict(p), "change_pct": p.change_pct} for p in self.points]
        return out

    def to_csv(self) -> str:
        cols = [
            "series_key", "kernel", "backend", "gpu_sku", "params", "verdict", "ratio", "ci_low",
            "ci_high", "change_pct", "threshold", "baseline_median_us", "contender_median_us",
            "n_baseline", "n_contender", "baseline_status", "contender_status",
        ]  # fmt: skip
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        for p in self.points:
            row = {**asdict(p), "change_pct": p.change_pct}
            row["params"] = ";".join(f"{k}={v}" for k, v in sorted(p.params.items()))
            writer.writerow(["" if row[c] is None else row[c] for c in cols])
        return buf.getvalue()


# --------------------------------------------------------------------------- from the database


@dataclass
class _Side:
    points: list[Point] = field(default_factory=list)

    def ok_samples(self, samples: PointSamples) -> tuple[np.ndarray, np.ndarray]:
        return pool_samples([p.id for p in self.points if p.status == PointStatus.ok], samples)

    def status(self) -> str | None:
        """ok when every run measured it ok; otherwise the first non-ok status."""
        bad = [p.status for p in self.points if p.status != PointStatus.ok]
        return bad[0] if bad else (PointStatus.ok.value if self.points else None)

    def error(self) -> str | None:
        return next((p.error for p in self.points if p.error), None)


def _load_runs(session: Session, run_ids: Sequence[int], side: str) -> list[Run]:
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    if not ids:
        raise ValueError(f"{side}: at least one run id is required")
    runs = session.scalars(select(Run).where(Run.id.in_(ids))).all()
    missing = sorted(set(ids) - {r.id for r in runs})
    if missing:
        raise UnknownRunsError(side, missing)
    return list(runs)


PointSamples = dict[int, list[tuple[float, int]]]
"""Per point id, its samples as (latency_us, repeat) in iteration order."""


def load_samples(session: Session, point_ids: Sequence[int]) -> PointSamples:
    out: PointSamples = defaultdict(list)
    ids = list(point_ids)
    for start in range(0, len(ids), 5000):  # bounded IN lists
        rows = session.execute(
            select(Sample.point_id, Sample.latency_us, Sample.repeat)
            .where(Sample.point_id.in_(ids[start : start + 5000]))
            .order_by(Sample.point_id, Sample.iteration)
        ).all()
        for pid, v, rep in rows:
            out[int(pid)].append((float(v), int(rep or 0)))
    return out


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


def run_label(runs: Sequence[Run]) -> str | None:
    versions = sorted({r.flashinfer_version or "torch" for r in runs})
    return ",".join(versions) if versions else None


def compare_runs(
    session: Session,
    baseline_run_ids: Sequence[int],
    contender_run_ids: Sequence[int],
    threshold: float = DEFAULT_THRESHOLD,
    kernel_thresholds: dict[str, float] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ComparisonResult:
    """Compare the points of the contender runs with those of the baseline runs. Points are
    matched by series key; a series measured by several runs of one side pools their samples."""
    if not (0 <= threshold < 1):
        raise ValueError(f"threshold: {threshold!r} must be in [0, 1), e.g. 0.03 for 3%")
    kernel_thresholds = dict(kernel_thresholds or {})
    base_runs = _load_runs(session, baseline_run_ids, "baseline")
    cont_runs = _load_runs(session, contender_run_ids, "contender")
    sides: dict[str, dict[str, _Side]] = {"b": defaultdict(_Side), "c": defaultdict(_Side)}
    for key, runs in (("b", base_runs), ("c", cont_runs)):
        pts = session.scalars(
            select(Point).where(Point.run_id.in_([r.id for r in runs])).order_by(Point.id)
        ).all()
        for p in pts:
            sides[key][p.series_key].points.append(p)
    ok_ids = [
        p.id
        for side in sides.values()
        for s in side.values()
        for p in s.points
        if p.status == PointStatus.ok
    ]
    samples = load_samples(session, ok_ids)

    keys = list(dict.fromkeys([*sides["b"], *sides["c"]]))
    points: list[PointComparison] = []
    replicates: dict[str, np.ndarray] = {}
    for i, key in enumerate(keys):
        b, c = sides["b"].get(key), sides["c"].get(key)
        ref = (b or c).points[0]  # type: ignore[union-attr]
        t = kernel_thresholds.get(ref.kernel, threshold)
        pc = PointComparison(
            series_key=key,
            kernel=ref.kernel,
            backend=ref.backend,
            params=dict(ref.params),
            gpu_sku=ref.gpu_sku,
            verdict=UNCHANGED,
            threshold=t,
        )
        if b is not None:
            pc.baseline_status, pc.baseline_error = b.status(), b.error()
            pc.baseline_point_ids = [p.id for p in b.points]
        if c is not None:
            pc.contender_status, pc.contender_error = c.status(), c.error()
            pc.contender_point_ids = [p.id for p in c.points]
        if b is None or c is None:
            pc.verdict = CONTENDER_ONLY if b is None else BASELINE_ONLY
            points.append(pc)
            continue
        (bs, bg), (cs, cg) = b.ok_samples(samples), c.ok_samples(samples)
        pc.n_baseline, pc.n_contender = int(bs.size), int(cs.size)
        if bs.size:
            pc.baseline_median_us = float(np.median(bs))
        if cs.size:
            pc.contender_median_us = float(np.median(cs))
        ok = pc.baseline_status == PointStatus.ok and pc.contender_status == PointStatus.ok
        # A non-positive latency is a broken measurement, not a speedup: never compared.
        if not ok or bs.size < 2 or cs.size < 2 or np.any(bs <= 0) or np.any(cs <= 0):
            pc.verdict = NOT_COMPARABLE
            points.append(pc)
            continue
        # A per-point seed derived from the position keeps replicates independent between
        # points (the geometric mean's CI needs that) and the whole result reproducible.
        est, reps = _compare_with_replicates(
            bs, cs, t, resamples, seed + i, CONFIDENCE, bg, cg
        )
        pc.ratio, pc.ci_low, pc.ci_high, pc.verdict = (
            est.ratio, est.ci_low, est.ci_high, est.verdict
        )
        replicates[key] = reps
        points.append(pc)

    groups = _group(points, replicates)
    skus = sorted({r.gpu_sku for r in [*base_runs, *cont_runs]}, key=lambda s: s or "")
    return ComparisonResult(
        baseline_run_ids=[r.id for r in base_runs],
        contender_run_ids=[r.id for r in cont_runs],
        baseline_label=run_label(base_runs),
        contender_label=run_label(cont_runs),
        gpu_skus=list(skus),
        threshold=threshold,
        kernel_thresholds=kernel_thresholds,
        points=points,
        groups=groups,
    )


def _group(points: list[PointComparison], replicates: dict[str, np.ndarray]) -> list[GroupSummary]:
    by: dict[tuple[str, str, str | None], list[PointComparison]] = defaultdict(list)
    for p in points:
        by[(p.kernel, p.backend, p.gpu_sku)].append(p)
    out = []
    for (kernel, backend, sku), pts in sorted(by.items(), key=lambda kv: str(kv[0])):
        g = GroupSummary(kernel=kernel, backend=backend, gpu_sku=sku, points=len(pts))
        for p in pts:
            attr = {
                REGRESSION: "regressions",
                IMPROVEMENT: "improvements",
                UNCHANGED: "unchanged",
                BASELINE_ONLY: "baseline_only",
                CONTENDER_ONLY: "contender_only",
                NOT_COMPARABLE: "not_comparable",
            }[p.verdict]
            setattr(g, attr, getattr(g, attr) + 1)
        compared = [p for p in pts if p.ratio is not None]
        g.compared = len(compared)
        if compared:
            logs = np.log(np.array([p.ratio for p in compared], dtype=np.float64))
            g.geomean_ratio = float(math.exp(float(logs.mean())))
            reps = np.log(np.stack([replicates[p.series_key] for p in compared]))
            lo, hi = percentile_ci(np.exp(reps.mean(axis=0)))
            g.geomean_ci_low, g.geomean_ci_high = float(lo), float(hi)
            worst = max(compared, key=lambda p: p.ratio or 0.0)
            g.worst_series_key, g.worst_ratio, g.worst_params = (
                worst.series_key, worst.ratio, worst.params
            )
        out.append(g)
    return out


def persist_comparison(
    session: Session,
    result: ComparisonResult,
    labels: tuple[str | None, str | None] | None = None,
    release_id: int | None = None,
) -> Comparison:
    """Store the comparison (its full result in ``summary``) and one open Regression per
    regressed point. The caller commits."""
    base_label, cont_label = labels or (result.baseline_label, result.contender_label)
    skus = [s for s in result.gpu_skus if s]
    comparison = Comparison(
        baseline_run_ids=result.baseline_run_ids,
        contender_run_ids=result.contender_run_ids,
        baseline_label=base_label,
        contender_label=cont_label,
        gpu_sku=skus[0] if len(skus) == 1 else (",".join(skus) or "cpu"),
        release_id=release_id,
        threshold=result.threshold,
        summary=result.to_dict(),
    )
    session.add(comparison)
    session.flush()
    for p in result.regressions:
        assert p.ratio is not None and p.ci_low is not None and p.ci_high is not None
        session.add(
            Regression(
                comparison_id=comparison.id,
                series_key=p.series_key,
                kernel=p.kernel,
                backend=p.backend,
                params=p.params,
                gpu_sku=p.gpu_sku,
                baseline_version=base_label,
                contender_version=cont_label,
                ratio=p.ratio,
                ci_low=p.ci_low,
                ci_high=p.ci_high,
                state="open",
            )
        )
    session.flush()
    return comparison
